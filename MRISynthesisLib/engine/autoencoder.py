"""Stage-1 autoencoders: MONAI ``AutoencoderKL`` built from a card, and their training losses.

Two autoencoders share one latent grid: one for the anatomical inputs (e.g. T1w + FLAIR, 2 channels) and
one for the target map(s) (e.g. PSR). Their latents are pulled together by ``latent_alignment_loss`` so the
diffusion model starts from an input latent that already resembles the target latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from torch import nn

DEFAULT_AUTOENCODER = {"channels": [16, 32, 64], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8,
                       "norm": "group"}
NORMS = ("group", "none")


def build_autoencoder(in_channels: int, config: dict | None = None) -> AutoencoderKL:
    """An ``AutoencoderKL`` with ``in_channels`` = out channels and no attention (3D attention at full
    resolution costs too much memory). The grid shrinks by ``2 ** (len(channels) - 1)``.

    Args:
        in_channels: image channels (inputs: number of contrasts; target: number of maps).
        config: ``channels``, ``latent_channels``, ``num_res_blocks``, ``norm_num_groups``, ``norm`` (``"group"``:
            MONAI's GroupNorm; ``"none"``: no normalisation layers, see ``_remove_group_norms``).
    """
    config = {**DEFAULT_AUTOENCODER, **(config or {})}
    channels = [int(c) for c in config["channels"]]
    groups = int(config["norm_num_groups"])
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if len(channels) < 2 or any(c % groups for c in channels):
        raise ValueError(f"autoencoder channels {channels} must have >= 2 levels, each divisible by "
                         f"norm_num_groups={groups}")
    if config["norm"] not in NORMS:
        raise ValueError(f"autoencoder norm must be one of {NORMS}, got {config['norm']!r}")
    autoencoder = AutoencoderKL(
        spatial_dims=3, in_channels=in_channels, out_channels=in_channels,
        num_res_blocks=int(config["num_res_blocks"]), channels=channels,
        attention_levels=[False] * len(channels), latent_channels=int(config["latent_channels"]),
        norm_num_groups=groups, with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )
    if config["norm"] == "none":
        _remove_group_norms(autoencoder)
    return autoencoder


def _remove_group_norms(module: nn.Module) -> None:
    """Replace every GroupNorm by identity. Per-sample statistics erase a crop's absolute intensity level (the
    quantity we synthesise), make crops, tiles and whole volumes disagree and cost half the CPU time of a
    small autoencoder; without them the networks train faster on CPU and tiling is exact up to borders."""
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, nn.Identity())
        else:
            _remove_group_norms(child)


def downsampling_factor(config: dict | None = None) -> int:
    """How much smaller the latent grid is than the image grid along each axis."""
    config = {**DEFAULT_AUTOENCODER, **(config or {})}
    return 2 ** (len(config["channels"]) - 1)


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
