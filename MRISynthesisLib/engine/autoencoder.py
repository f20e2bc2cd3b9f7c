"""Stage-1 autoencoders: MONAI ``AutoencoderKL`` built from a card (their losses: ``training.losses``).

Two autoencoders share one latent grid: one for the anatomical inputs (e.g. T1w + FLAIR, 2 channels) and
one for the target map(s) (e.g. PSR). Their latents are pulled together by ``latent_alignment_loss`` so the
diffusion model starts from an input latent that already resembles the target latent.
"""

from __future__ import annotations

from monai.networks.nets import AutoencoderKL
from torch import nn

DEFAULT_AUTOENCODER = {"channels": [16, 32, 64], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8,
                       "norm": "group", "use_convtranspose": False}
NORMS = ("group", "none")


def build_autoencoder(in_channels: int, config: dict | None = None) -> AutoencoderKL:
    """An ``AutoencoderKL`` with ``in_channels`` = out channels and no attention (3D attention at full
    resolution costs too much memory). The grid shrinks by ``2 ** (len(channels) - 1)``.

    Args:
        in_channels: image channels (inputs: number of contrasts; target: number of maps).
        config: ``channels``, ``latent_channels``, ``num_res_blocks``, ``norm_num_groups``, ``norm`` (``"group"``:
            MONAI's GroupNorm; ``"none"``: no normalisation layers, see ``_remove_group_norms``),
            ``use_convtranspose`` (decoder upsamples with a learned transposed convolution instead of nearest
            interpolation + a full-resolution convolution: cheaper on CPU and an easy inverse of the encoder's
            strided convolution).
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
        use_convtranspose=bool(config["use_convtranspose"]),
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
