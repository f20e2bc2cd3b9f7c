"""The conditional latent denoiser: a frozen MONAI ``DiffusionModelUNet`` backbone plus three decoupled
conditioning streams (DEMIST), each switchable off for ablation:

- semantic: tokens pooled from the input latent, read by the backbone's cross-attention;
- spatial: a MONAI ``ControlNet`` fed the input latent, adding residuals at every scale;
- adaptive: LoRA on the backbone's attention projections (``engine.lora``).

With every stream off the denoiser is the unconditional backbone: its cross-attention then sees a single
all-zero "null" token, which is also what the backbone is trained with.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from torch import nn

from .lora import LoRAAdapter

DEFAULT_UNET = {"channels": [32, 64, 64], "attention_levels": [False, False, True], "num_res_blocks": 1,
                "num_head_channels": 32, "norm_num_groups": 16, "cross_attention_dim": 64}
DEFAULT_TOKENS = {"grid": [2, 2, 2], "hidden": 64}


def _unet_arguments(latent_channels: int, config: dict) -> dict:
    config = {**DEFAULT_UNET, **config}
    channels = [int(c) for c in config["channels"]]
    levels = [bool(a) for a in config["attention_levels"]]
    if len(levels) != len(channels):
        raise ValueError(f"unet attention_levels {levels} must have one entry per level of channels {channels}")
    # The middle block always has attention when cross-attention is on, so every level gets a head size.
    heads = [int(config["num_head_channels"])] * len(levels)
    return dict(spatial_dims=3, in_channels=latent_channels, num_res_blocks=int(config["num_res_blocks"]),
                channels=channels, attention_levels=levels, num_head_channels=heads,
                norm_num_groups=int(config["norm_num_groups"]), with_conditioning=True,
                cross_attention_dim=int(config["cross_attention_dim"]))


def build_unet(latent_channels: int, config: dict | None = None) -> DiffusionModelUNet:
    """The backbone denoiser of ``(B, latent_channels, d, h, w)`` latents (cross-attention enabled)."""
    return DiffusionModelUNet(out_channels=latent_channels, **_unet_arguments(latent_channels, config or {}))


def build_controlnet(latent_channels: int, condition_channels: int, config: dict | None = None,
                     backbone: DiffusionModelUNet | None = None) -> ControlNet:
    """A ControlNet mirroring the backbone's encoder; the condition (the input latent) is already on the latent
    grid, so its embedding does not downsample. Initialised from ``backbone`` when given (ControlNet recipe)."""
    controlnet = ControlNet(conditioning_embedding_in_channels=condition_channels,
                            conditioning_embedding_num_channels=[int((config or {}).get("embedding_channels", 32))],
                            **_unet_arguments(latent_channels, config or {}))
    if backbone is not None:
        initialise_controlnet(controlnet, backbone)
    return controlnet


def initialise_controlnet(controlnet: ControlNet, backbone: DiffusionModelUNet) -> None:
    """Copy the backbone's encoder and middle block into the ControlNet (its zero convolutions stay zero, so
    the untrained ControlNet adds nothing). Call after the backbone's trained weights are loaded."""
    result = controlnet.load_state_dict(backbone.state_dict(), strict=False)
    copied = set(controlnet.state_dict()) - set(result.missing_keys)
    if not any(key.startswith("down_blocks.") for key in copied):
        raise ValueError("the ControlNet does not mirror the backbone (no encoder weights matched)")


class SemanticTokenEncoder(nn.Module):
    """Input latent ``(B, C, d, h, w)`` -> tokens ``(B, prod(grid), token_dim)`` for cross-attention.

    Two convolutions, adaptive average pooling to a coarse ``grid`` (regional context) and a linear
    projection plus a learned position embedding per token.
    """

    def __init__(self, condition_channels: int, token_dim: int, grid=(2, 2, 2), hidden: int = 64):
        super().__init__()
        if condition_channels < 1 or token_dim < 1 or hidden < 1 or len(grid) != 3:
            raise ValueError("SemanticTokenEncoder needs positive channel counts and a 3-element grid")
        self.grid = tuple(int(g) for g in grid)
        self.features = nn.Sequential(
            nn.Conv3d(condition_channels, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv3d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.project = nn.Linear(hidden, token_dim)
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] * self.grid[2], token_dim))

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool3d(self.features(condition), self.grid)
        return self.project(pooled.flatten(2).transpose(1, 2)) + self.position


class ConditionalDenoiser(nn.Module):
    """Predicts the diffusion target (noise or velocity) of a target latent given the input latent.

    Args:
        backbone: the (frozen) unconditional denoiser.
        controlnet: spatial stream, or None.
        token_encoder: semantic stream, or None.
        lora: adaptive stream (hooks into ``backbone``), or None.

    Switch a stream off for ablation with ``use_semantic`` / ``use_spatial`` / ``use_lora`` (a missing stream is
    always off).
    """

    def __init__(self, backbone: DiffusionModelUNet, controlnet: ControlNet | None = None,
                 token_encoder: SemanticTokenEncoder | None = None, lora: LoRAAdapter | None = None):
        super().__init__()
        self.backbone, self.controlnet, self.token_encoder, self.lora = backbone, controlnet, token_encoder, lora
        self.use_semantic = token_encoder is not None
        self.use_spatial = controlnet is not None
        self.conditioning_scale = 1.0

    @property
    def use_lora(self) -> bool:
        return self.lora is not None and self.lora.enabled

    @use_lora.setter
    def use_lora(self, value: bool) -> None:
        if self.lora is not None:
            self.lora.enabled = bool(value)

    def null_context(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The single all-zero token the unconditional backbone is trained with: ``(B, 1, token_dim)``."""
        return like.new_zeros(batch, 1, self.backbone_context_dim)

    @property
    def backbone_context_dim(self) -> int:
        for module in self.backbone.modules():
            if hasattr(module, "attn2"):
                return module.attn2.to_k.in_features
        raise ValueError("the backbone has no cross-attention")

    def forward(self, latent: torch.Tensor, timesteps: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """``latent`` ``(B, L, d, h, w)`` noisy target latent, ``timesteps`` ``(B,)``, ``condition`` the input
        latent ``(B, Lc, d, h, w)`` (ignored when every stream is off) -> prediction ``(B, L, d, h, w)``."""
        needs_condition = (self.use_semantic and self.token_encoder is not None) or \
            (self.use_spatial and self.controlnet is not None)
        if needs_condition and condition is None:
            raise ValueError("a conditioning stream is on but no condition latent was given")
        if self.use_semantic and self.token_encoder is not None:
            context = self.token_encoder(condition)
        else:
            context = self.null_context(latent.shape[0], latent)
        down, mid = None, None
        if self.use_spatial and self.controlnet is not None:
            down, mid = self.controlnet(x=latent, timesteps=timesteps, controlnet_cond=condition,
                                        conditioning_scale=self.conditioning_scale, context=context)
        return self.backbone(latent, timesteps, context=context, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid)
