"""Training losses: the autoencoders' (L1 + KL + edge, latent alignment), the diffusion stages' (diffusion
target, edge-aware loss at lesion boundaries, tissue-mean alignment) and the lesion-aware image-space terms (LAPT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def spatial_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward differences along D, H, W of ``(B, C, D, H, W)``; each output is padded back to the input shape."""
    grad_d = F.pad(image[:, :, 1:] - image[:, :, :-1], (0, 0, 0, 0, 0, 1))
    grad_h = F.pad(image[:, :, :, 1:] - image[:, :, :, :-1], (0, 0, 0, 1))
    grad_w = F.pad(image[..., 1:] - image[..., :-1], (0, 1))
    return grad_d, grad_h, grad_w


def edge_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 distance between the spatial gradients of ``prediction`` and ``target`` (``(B, C, D, H, W)``),
    optionally weighted per voxel by ``weight`` (broadcastable, e.g. a lesion-boundary emphasis)."""
    total = prediction.new_zeros(())
    for grad_p, grad_t in zip(spatial_gradients(prediction), spatial_gradients(target)):
        difference = (grad_p - grad_t).abs()
        if weight is None:
            total = total + difference.mean()
        else:
            total = total + (difference * weight).sum() / (weight.expand_as(difference).sum() + 1e-8)
    return total / 3


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(z_mu, z_sigma^2)`` from ``N(0, 1)``, summed over the latent and averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


def latent_alignment_loss(z_target: torch.Tensor, z_inputs: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the target and input latent means (same latent grid, ``(B, L, d, h, w)``)."""
    if z_target.shape != z_inputs.shape:
        raise ValueError(f"latent grids differ: target {tuple(z_target.shape)} vs inputs {tuple(z_inputs.shape)}")
    return F.mse_loss(z_target, z_inputs)


@dataclass
class AutoencoderLossWeights:
    """Weights of the stage-1 loss terms (KL is tiny: the latent should stay informative)."""

    l1: float = 1.0
    kl: float = 1e-6
    edge: float = 0.5
    alignment: float = 0.05


def autoencoder_loss(reconstruction: torch.Tensor, image: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor,
                     weights: AutoencoderLossWeights, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L1 + KL + edge terms of one autoencoder; returns the terms and their weighted ``total``.

    Args:
        reconstruction, image: ``(B, C, D, H, W)``.
        z_mu, z_sigma: ``(B, L, d, h, w)`` from ``AutoencoderKL.forward``.
        mask: optional ``(B, 1, D, H, W)`` brain mask; voxels outside count a tenth (they are zero anyway).
    """
    weight = None if mask is None else 0.1 + 0.9 * mask
    l1 = (reconstruction - image).abs()
    l1 = l1.mean() if weight is None else (l1 * weight).sum() / (weight.expand_as(l1).sum() + 1e-8)
    terms = {"l1": l1, "kl": kl_loss(z_mu, z_sigma), "edge": edge_loss(reconstruction, image, weight)}
    terms["total"] = weights.l1 * terms["l1"] + weights.kl * terms["kl"] + weights.edge * terms["edge"]
    return terms


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


def lesion_aware_losses(prediction: torch.Tensor, target: torch.Tensor, brain: torch.Tensor,
                        lesion: torch.Tensor) -> dict[str, torch.Tensor]:
    """LAPT's image-space terms on decoded images ``(B, C, D, H, W)``: mean L1 in the brain (``"image"``) and
    in the lesion (``"lesion"``, 0 for a batch without lesion voxels); masks ``(B, 1, D, H, W)``."""
    difference = (prediction - target).abs()
    channels = prediction.shape[1]

    def masked_mean(mask: torch.Tensor) -> torch.Tensor:
        return (difference * mask).sum() / (mask.sum() * channels).clamp(min=1.0)
    return {"image": masked_mean(brain), "lesion": masked_mean(lesion)}


def soft_threshold_dice_loss(values: torch.Tensor, truth: torch.Tensor, brain: torch.Tensor, threshold: float,
                             softness: float = 0.05) -> torch.Tensor:
    """1 - soft Dice (over the whole batch) between ``values < threshold`` inside the brain, made differentiable
    as ``sigmoid((threshold - values) / softness)``, and the true lesion; all ``(B, 1, D, H, W)``.

    A rule that thresholds a synthesized map (the infarct core: ADC < 0.62e-3 mm^2/s) is scored by its Dice,
    which a voxel-wise loss does not see: a penumbra predicted at 0.55 instead of 0.9 costs little L1 but
    turns the whole territory into false core. On a batch without lesion voxels the loss pushes every
    prediction above the threshold."""
    soft = torch.sigmoid((threshold - values) / softness) * brain
    return 1.0 - (2.0 * (soft * truth).sum() + 1.0) / (soft.sum() + truth.sum() + 1.0)


def threshold_margin_loss(values: torch.Tensor, truth_values: torch.Tensor, lesion: torch.Tensor,
                          brain: torch.Tensor, threshold: float, margin: float = 0.03) -> torch.Tensor:
    """Hinge on the threshold rule's side, in the map's physical unit; all ``(B, 1, D, H, W)``.

    Lesion voxels predicted above ``threshold - margin`` (missed lesion) and brain voxels outside the lesion
    predicted below ``threshold + margin`` (false lesion) are pulled back across, never beyond their true value
    (``truth_values``). Like a Dice, both kinds of error weigh the same per voxel and the sum is divided by the
    lesion's voxels plus the false ones, so a small lesion counts as much as a large one. Unlike
    :func:`soft_threshold_dice_loss` it leaves a correct prediction alone: the soft Dice's sigmoid tail also
    pushes normal tissue (ADC 0.75-0.9, just above 0.62) upwards, which biased the stroke model 0.2.0's
    normal-tissue ADC by +0.15e-3 mm^2/s (1.00 against 0.85 on held-out phantoms)."""
    outside = brain * (1.0 - lesion)
    missed = torch.relu(values - truth_values.clamp(min=threshold - margin)) * lesion
    false = torch.relu(truth_values.clamp(max=threshold + margin) - values) * outside
    return (missed.sum() + false.sum()) / (lesion.sum() + (false > 0).sum()).clamp(min=1)
