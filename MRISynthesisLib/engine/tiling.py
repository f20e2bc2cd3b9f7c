"""Whole-volume inference within a memory budget.

The latent diffusion itself runs on the small latent grid (4x smaller per axis); the full-resolution
autoencoder passes dominate memory. ``estimate_autoencoder_bytes`` predicts their peak before anything is
allocated; when it exceeds the budget, ``tiled`` runs the encoder or decoder on overlapping tiles with
Gaussian blending (MONAI ``sliding_window_inference``, which also handles the grid-size change).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference

from ..checks import available_memory_bytes

# Activations alive at once in a MONAI AutoencoderKL pass, in units of (first-level channels x voxels):
# a residual block holds its input, two normalised/activated copies and the output; measured ~10 on CPU.
ACTIVATION_COPIES = 12
BUDGET_FRACTION = 0.5  # leave room for the rest of the pipeline, the OS and other programs


def estimate_autoencoder_bytes(channels: list[int], spatial_shape, dtype_bytes: int = 4) -> int:
    """Peak activation bytes of one AutoencoderKL encode or decode of a ``spatial_shape`` image (batch 1)."""
    return int(ACTIVATION_COPIES * channels[0] * math.prod(spatial_shape) * dtype_bytes)


def memory_budget(device: torch.device) -> int:
    """Bytes we allow one autoencoder pass to use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * BUDGET_FRACTION)
    return int(available_memory_bytes() * BUDGET_FRACTION)


def plan_tile(spatial_shape, bytes_per_voxel: float, budget: int, multiple: int) -> tuple[int, ...] | None:
    """The largest cubic-ish tile (each side a multiple of ``multiple``, never larger than the volume) whose
    estimate fits ``budget``; ``None`` when the whole volume fits."""
    if math.prod(spatial_shape) * bytes_per_voxel <= budget:
        return None
    side = (budget / bytes_per_voxel) ** (1 / 3)
    tile = tuple(max(multiple, min(int(side // multiple) * multiple, int(size))) for size in spatial_shape)
    return tile


def tiled(function: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: tuple[int, ...],
          overlap: float = 0.5) -> torch.Tensor:
    """Apply ``function`` (``(B, C, *tile) -> (B, C', *scaled tile)``) over overlapping tiles of ``image`` and
    blend with Gaussian weights. The output grid may be a fixed multiple of the input grid (decoders)."""
    if len(tile) != image.ndim - 2:
        raise ValueError(f"tile {tile} must have one size per spatial axis of {tuple(image.shape)}")
    return sliding_window_inference(image, roi_size=tile, sw_batch_size=1, predictor=function, overlap=overlap,
                                    mode="gaussian", padding_mode="replicate")
