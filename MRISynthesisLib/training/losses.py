"""Stage-2 losses (DEMIST): diffusion target, edge-aware loss at lesion boundaries, tissue-mean alignment.

The stage-1 autoencoder losses live with the autoencoders (``engine.autoencoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.autoencoder import edge_loss


def diffusion_target(scheduler, latent: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser must predict: the noise (``epsilon``) or the velocity (``v_prediction``)."""
    if scheduler.prediction_type == "v_prediction":
        return scheduler.get_velocity(latent, noise, timesteps)
    return noise


def predicted_clean_latent(scheduler, noisy: torch.Tensor, prediction: torch.Tensor,
                           timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a network ``prediction`` at ``timesteps`` (``(B, L, d, h, w)``)."""
    alpha_prod = scheduler.alphas_cumprod.to(noisy.device)[timesteps].view(-1, 1, 1, 1, 1)
    alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
    if scheduler.prediction_type == "v_prediction":
        return alpha * noisy - sigma * prediction
    return (noisy - sigma * prediction) / alpha


def lesion_boundary_weight(lesion: torch.Tensor, brain: torch.Tensor, emphasis: float = 4.0,
                           width: int = 1) -> torch.Tensor:
    """Per-voxel weight ``(B, 1, D, H, W)``: 1 in the brain, ``1 + emphasis`` on the lesion boundary shell
    (dilation minus erosion by ``width`` voxels), 0.1 outside the brain."""
    kernel = 2 * width + 1
    dilated = F.max_pool3d(lesion, kernel, stride=1, padding=width)
    eroded = -F.max_pool3d(-lesion, kernel, stride=1, padding=width)
    shell = (dilated - eroded).clamp(0, 1)
    return (0.1 + 0.9 * brain) * (1 + emphasis * shell)


def edge_aware_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 of the maps plus weighted L1 of their spatial gradients (``(B, C, D, H, W)``)."""
    l1 = ((prediction - target).abs() * weight).sum() / (weight.expand_as(prediction).sum() + 1e-8)
    return l1 + edge_loss(prediction, target, weight)


def tissue_mean_loss(prediction: torch.Tensor, target: torch.Tensor, tissues: torch.Tensor,
                     min_voxels: int = 8) -> torch.Tensor:
    """Quantitative alignment: mean absolute difference of the per-class means of prediction and target.

    Args:
        prediction, target: ``(B, C, D, H, W)``.
        tissues: ``(B, K, D, H, W)`` class masks (e.g. WM, GM, deep GM, CSF, lesion); classes with fewer
            than ``min_voxels`` voxels in a crop are skipped.
    """
    masks = tissues.unsqueeze(2)  # (B, K, 1, D, H, W)
    count = masks.sum(dim=(3, 4, 5))  # (B, K, 1)
    predicted_mean = (prediction.unsqueeze(1) * masks).sum(dim=(3, 4, 5)) / count.clamp(min=1)
    target_mean = (target.unsqueeze(1) * masks).sum(dim=(3, 4, 5)) / count.clamp(min=1)
    present = (count >= min_voxels).float().expand_as(predicted_mean)
    if present.sum() == 0:
        return prediction.new_zeros(())
    return ((predicted_mean - target_mean).abs() * present).sum() / present.sum()
