"""The default recipe: one latent space shared by every MR contrast and map, a deterministic latent mean
predictor and a latent diffusion model of the residual (CorrDiff-style), small enough to train to quality on
2 CPU cores.

- latent: ``space-to-depth`` (default; each 2x2x2 block of voxels becomes 8 channels on a grid 2x coarser:
  lossless and free) or ``kl`` (a learned single-channel MONAI ``AutoencoderKL``). Either way a ``(B, C, D, H,
  W)`` image is encoded channel by channel into ``(B, C * L, D/2, H/2, W/2)``. Measured on held-out phantoms,
  the learned autoencoder capped reconstruction far below the 32 dB the maps need after the CPU minutes it
  got (README, "Measured results"), while the rearrangement is exact and keeps the 8x smaller grid.
- ``predictor``: a MONAI ``UNet`` from the input latents to the target latent's conditional mean (MSE). With
  ``head = "local-affine"`` it also outputs, per latent voxel, the coefficients of an affine function of the
  input images (``a + sum_c b_c * input_c``), upsampled trilinearly and applied at full image resolution:
  partial volume mixes both the weighted signals and a tissue map linearly, so smooth coefficients give
  edges as sharp as the inputs' (HDRNet-style local affine models), which the sub-voxel channels of the
  ``direct`` head must learn voxel by voxel (the shipped map was as blurred as the truth smoothed by ~0.7 voxel).
- ``denoiser``: a MONAI ``DiffusionModelUNet`` that samples the residual ``target latent - mean``, given the
  noisy residual, the input latents and the mean (concatenated as channels).

The output map is the mean of K decoded samples ``mean + residual_k``; their SD is the uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet, UNet
from torch import nn

from .autoencoder import build_autoencoder, downsampling_factor
from .sampling import denoise

FAMILY = "latent-residual"
MAP_ESTIMATES = ("samples", "predictor")  # how the output map estimates the samples' expectation
PREDICTOR_HEADS = ("direct", "local-affine")


def _ints(values, name: str) -> tuple[int, ...]:
    try:
        result = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of integers, got {values!r}") from None
    if not result or any(v < 1 for v in result):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return result


@dataclass(frozen=True)
class LatentResidualArchitecture:
    """The card's ``architecture`` for ``family = "latent-residual"``, parsed and validated once.

    Attributes:
        autoencoder: ``{"kind": "space-to-depth", "factor": 2}`` or ``{"kind": "kl", ...AutoencoderKL config
            (engine.autoencoder.build_autoencoder)}``, single channel.
        predictor_channels / predictor_strides / predictor_res_units / predictor_norm: the MONAI ``UNet`` mean
            predictor (norm "none" by default).
        predictor_head: ``"direct"`` (the target latent) or ``"local-affine"`` (that plus a local affine
            function of the input images, see the module docstring).
        denoiser_channels / denoiser_res_blocks / denoiser_groups: the ``DiffusionModelUNet`` of the residual.
        schedule: noise schedule (``engine.sampling``).
        latent_scale: multiplies autoencoder latents (unit variance for the networks).
        residual_scale: multiplies the residual before diffusion (unit variance).
        map_estimate: the output map is the samples' empirical mean (``"samples"``) or the decoded mean
            prediction they converge to (``"predictor"``); the uncertainty is the samples' SD either way.
    """

    autoencoder: dict = field(default_factory=lambda: {"kind": "space-to-depth", "factor": 2})
    predictor_channels: tuple[int, ...] = (32, 64, 128)
    predictor_strides: tuple[int, ...] = (2, 2)
    predictor_res_units: int = 2
    predictor_norm: str = "none"
    predictor_head: str = "direct"
    denoiser_channels: tuple[int, ...] = (32, 64)
    denoiser_res_blocks: int = 1
    denoiser_groups: int = 16
    schedule: dict = field(default_factory=dict)
    latent_scale: float = 1.0
    residual_scale: float = 1.0
    map_estimate: str = "samples"

    @classmethod
    def from_dict(cls, data: dict) -> "LatentResidualArchitecture":
        if not isinstance(data, dict) or data.get("family") != FAMILY:
            raise ValueError(f"architecture family must be {FAMILY!r}")
        predictor, denoiser = data.get("predictor") or {}, data.get("denoiser") or {}
        architecture = cls(
            autoencoder=dict(data.get("autoencoder") or {"kind": "space-to-depth", "factor": 2}),
            predictor_channels=_ints(predictor.get("channels", cls.predictor_channels), "predictor channels"),
            predictor_strides=_ints(predictor.get("strides", cls.predictor_strides), "predictor strides"),
            predictor_res_units=int(predictor.get("num_res_units", cls.predictor_res_units)),
            predictor_norm=str(predictor.get("norm", cls.predictor_norm)),
            predictor_head=str(predictor.get("head", cls.predictor_head)),
            denoiser_channels=_ints(denoiser.get("channels", cls.denoiser_channels), "denoiser channels"),
            denoiser_res_blocks=int(denoiser.get("num_res_blocks", cls.denoiser_res_blocks)),
            denoiser_groups=int(denoiser.get("norm_num_groups", cls.denoiser_groups)),
            schedule=dict(data.get("schedule") or {}),
            latent_scale=float(data.get("latent_scale", 1.0)),
            residual_scale=float(data.get("residual_scale", 1.0)),
            map_estimate=str(data.get("map_estimate", "samples")),
        )
        if architecture.map_estimate not in MAP_ESTIMATES:
            raise ValueError(f"map_estimate must be one of {MAP_ESTIMATES}, got {architecture.map_estimate!r}")
        if len(architecture.predictor_strides) != len(architecture.predictor_channels) - 1:
            raise ValueError("predictor strides need one entry fewer than predictor channels")
        if any(c % architecture.denoiser_groups for c in architecture.denoiser_channels):
            raise ValueError(f"denoiser channels {architecture.denoiser_channels} must be divisible by "
                             f"norm_num_groups {architecture.denoiser_groups}")
        if architecture.predictor_norm not in ("none", "instance", "batch"):
            raise ValueError(f"predictor norm must be 'none', 'instance' or 'batch', got {architecture.predictor_norm!r}")
        if architecture.predictor_head not in PREDICTOR_HEADS:
            raise ValueError(f"predictor head must be one of {PREDICTOR_HEADS}, got {architecture.predictor_head!r}")
        if architecture.predictor_head == "local-affine" and architecture.learned:
            raise ValueError("the local-affine head needs the exact space-to-depth latent (it decodes the inputs "
                             "at every step)")
        if architecture.latent_scale <= 0 or architecture.residual_scale <= 0:
            raise ValueError("latent_scale and residual_scale must be positive")
        if architecture.autoencoder.get("kind", "space-to-depth") not in ("space-to-depth", "kl"):
            raise ValueError(f"autoencoder kind must be 'space-to-depth' or 'kl', got "
                             f"{architecture.autoencoder.get('kind')!r}")
        if architecture.factor < 1:
            raise ValueError(f"autoencoder factor must be >= 1, got {architecture.factor}")
        return architecture

    def to_dict(self) -> dict:
        return {"family": FAMILY, "autoencoder": self.autoencoder,
                "predictor": {"channels": list(self.predictor_channels), "strides": list(self.predictor_strides),
                              "num_res_units": self.predictor_res_units, "norm": self.predictor_norm,
                              "head": self.predictor_head},
                "denoiser": {"channels": list(self.denoiser_channels), "num_res_blocks": self.denoiser_res_blocks,
                             "norm_num_groups": self.denoiser_groups},
                "schedule": self.schedule, "latent_scale": self.latent_scale,
                "residual_scale": self.residual_scale, "map_estimate": self.map_estimate}

    @property
    def learned(self) -> bool:
        """True for a learned ``AutoencoderKL`` latent, False for the lossless space-to-depth rearrangement."""
        return self.autoencoder.get("kind", "space-to-depth") == "kl"

    @property
    def factor(self) -> int:
        """Image grid / latent grid along each axis."""
        return downsampling_factor(self.autoencoder) if self.learned else int(self.autoencoder.get("factor", 2))

    @property
    def latent_channels(self) -> int:
        """Latent channels per image channel."""
        return int(self.autoencoder.get("latent_channels", 4)) if self.learned else self.factor ** 3

    @property
    def multiple(self) -> int:
        """Image sizes must be divisible by this (autoencoder and predictor downsampling)."""
        stride = 1
        for s in self.predictor_strides:
            stride *= s
        return self.factor * max(stride, 2 ** (len(self.denoiser_channels) - 1))


def space_to_depth(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, 1, D, H, W)`` -> ``(N, factor**3, D/f, H/f, W/f)``: every ``f^3`` block becomes channels."""
    n, _, d, h, w = images.shape
    f = factor
    blocks = images.reshape(n, d // f, f, h // f, f, w // f, f)
    return blocks.permute(0, 2, 4, 6, 1, 3, 5).reshape(n, f ** 3, d // f, h // f, w // f)


def depth_to_space(latent: torch.Tensor, factor: int) -> torch.Tensor:
    """The exact inverse of :func:`space_to_depth`."""
    n, _, d, h, w = latent.shape
    f = factor
    blocks = latent.reshape(n, f, f, f, d, h, w).permute(0, 4, 1, 5, 2, 6, 3)
    return blocks.reshape(n, 1, d * f, h * f, w * f)


def mirror_latent(latent: torch.Tensor, architecture: "LatentResidualArchitecture") -> torch.Tensor:
    """The latent of the left-right mirrored image (last axis), for ``(B, C * L, d, h, w)`` latents of the
    space-to-depth kind: the grid is flipped and so is the x offset inside every block (flipping the grid alone
    would describe a scrambled image, not a mirrored one)."""
    if architecture.learned:
        raise ValueError("a learned latent has no exact mirror; mirror the images before encoding")
    f = architecture.factor
    b, c, d, h, w = latent.shape
    blocks = latent.reshape(b, c // f ** 3, f, f, f, d, h, w)
    return blocks.flip(4, 7).reshape(b, c, d, h, w)


class LatentResidualNetworks(nn.Module):
    """The three networks of one model and the encode/decode conventions.

    Args:
        architecture: the parsed architecture.
        input_channels: number of input contrasts ``C_in``.
        output_channels: number of target maps ``C_out``.
    """

    def __init__(self, architecture: LatentResidualArchitecture, input_channels: int, output_channels: int):
        super().__init__()
        if input_channels < 1 or output_channels < 1:
            raise ValueError("a model needs at least one input and one output channel")
        self.architecture = architecture
        self.input_channels, self.output_channels = int(input_channels), int(output_channels)
        latent = architecture.latent_channels
        # local-affine head: (1 + C_in) coefficients per output map, after the direct latent channels
        self.affine_channels = (input_channels + 1) * output_channels \
            if architecture.predictor_head == "local-affine" else 0
        self.autoencoder = build_autoencoder(1, architecture.autoencoder) if architecture.learned else None
        self.predictor = UNet(spatial_dims=3, in_channels=latent * input_channels,
                              out_channels=latent * output_channels + self.affine_channels,
                              channels=architecture.predictor_channels,
                              strides=architecture.predictor_strides, num_res_units=architecture.predictor_res_units,
                              # no per-sample statistics: they would erase the absolute PSR level (and make crops
                              # and whole volumes disagree); instance norm kept it near the constant-map score
                              norm=None if architecture.predictor_norm == "none" else architecture.predictor_norm)
        self.denoiser = DiffusionModelUNet(
            spatial_dims=3, in_channels=latent * (2 * output_channels + input_channels),
            out_channels=latent * output_channels, channels=architecture.denoiser_channels,
            attention_levels=[False] * len(architecture.denoiser_channels),
            num_res_blocks=architecture.denoiser_res_blocks, norm_num_groups=architecture.denoiser_groups)

    # Shapes: images (B, C, D, H, W) <-> latents (B, C * L, D/f, H/f, W/f).
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latent means of every channel of ``images``, concatenated channel-major."""
        batch, channels = images.shape[:2]
        flat = images.reshape(batch * channels, 1, *images.shape[2:])
        z_mu = self.autoencoder.encode(flat)[0] if self.autoencoder is not None else \
            space_to_depth(flat, self.architecture.factor)
        return (z_mu * self.architecture.latent_scale).reshape(batch, channels * z_mu.shape[1], *z_mu.shape[2:])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, D, H, W)`` from scaled latents ``(B, C * L, d, h, w)``."""
        batch, size = latent.shape[0], self.architecture.latent_channels
        channels = latent.shape[1] // size
        flat = latent.reshape(batch * channels, size, *latent.shape[2:]) / self.architecture.latent_scale
        images = self.autoencoder.decode(flat) if self.autoencoder is not None else \
            depth_to_space(flat, self.architecture.factor)
        return images.reshape(batch, channels, *images.shape[2:])

    def predict_mean(self, condition: torch.Tensor) -> torch.Tensor:
        """Conditional mean of the target latent ``(B, C_out * L, d, h, w)`` from input latents."""
        output = self.predictor(condition)
        if not self.affine_channels:
            return output
        direct, coefficients = output[:, :-self.affine_channels], output[:, -self.affine_channels:]
        return direct + self.encode(self.local_affine(coefficients, self.decode(condition)))

    def local_affine(self, coefficients: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``a + sum_c b_c * images_c`` per output map: coefficients ``(B, C_out * (1 + C_in), d, h, w)`` on the
        latent grid, upsampled trilinearly to the images ``(B, C_in, D, H, W)``; returns ``(B, C_out, D, H, W)``."""
        batch, inputs = images.shape[:2]
        upsampled = F.interpolate(coefficients, size=images.shape[2:], mode="trilinear", align_corners=False)
        upsampled = upsampled.reshape(batch, self.output_channels, 1 + inputs, *images.shape[2:])
        return upsampled[:, :, 0] + (upsampled[:, :, 1:] * images[:, None]).sum(dim=2)

    def denoise_residual(self, noisy_residual: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                         mean: torch.Tensor) -> torch.Tensor:
        """The diffusion model's prediction for the scaled residual (same shape as ``noisy_residual``)."""
        return self.denoiser(torch.cat([noisy_residual, condition, mean], dim=1), timesteps)

    @property
    def stems(self) -> tuple[str, ...]:
        """Weight files of this model (the space-to-depth latent has none)."""
        return ("autoencoder", "predictor", "denoiser") if self.autoencoder is not None else ("predictor", "denoiser")

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        return {stem: {k: v.detach().contiguous() for k, v in getattr(self, stem).state_dict().items()}
                for stem in self.stems}

    def load_state_dicts(self, state_dicts: dict[str, dict[str, torch.Tensor]]) -> None:
        """Strict load per stem; raises ``KeyError`` / ``RuntimeError`` naming what does not fit."""
        for stem in self.stems:
            if stem not in state_dicts:
                raise KeyError(f"weights {stem!r} are missing (has {', '.join(sorted(state_dicts))})")
            getattr(self, stem).load_state_dict(state_dicts[stem], strict=True)


@torch.inference_mode()
def sample_latents(networks: LatentResidualNetworks, condition: torch.Tensor, sampler, steps: int, samples: int,
                   generator: torch.Generator, emit: Callable[[torch.Tensor], None],
                   progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                   residual: bool = True) -> None:
    """Draw ``samples`` target latents ``mean + residual_k`` and pass each to ``emit`` (e.g. decode + running
    moments), so memory stays at one sample whatever K is.

    Args:
        condition: scaled input latents ``(1, C_in * L, d, h, w)``.
        sampler: a sampler from ``engine.sampling.make_sampler`` on the model's schedule.
        generator: seeded CPU generator of the initial noise of every sample.
        residual: False emits the mean prediction once (no diffusion; deterministic).
    """
    mean = networks.predict_mean(condition)
    if not residual:
        emit(mean)
        if progress is not None:
            progress(1, 1)
        return
    scale = networks.architecture.residual_scale

    def predict_output(noisy, timesteps):
        return networks.denoise_residual(noisy, timesteps, condition, mean)

    for index in range(samples):
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        scaled = denoise(predict_output, noise, sampler, steps, progress, cancel,
                         step_offset=index * steps, total_steps=samples * steps)
        emit(mean + scaled / scale)
