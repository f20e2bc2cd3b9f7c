"""The DEMIST recipe's networks: two aligned ``AutoencoderKL`` (inputs, target), a frozen ``DiffusionModelUNet``
backbone and three switchable conditioning streams (ControlNet, cross-attention tokens, LoRA) for fine-tuning a
trained backbone. ``DemistArchitecture`` is the card's ``architecture`` for this family, parsed and validated once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError
from .autoencoder import DEFAULT_AUTOENCODER, build_autoencoder, downsampling_factor
from .conditioning import DEFAULT_TOKENS, DEFAULT_UNET, ConditionalDenoiser, SemanticTokenEncoder, build_controlnet, \
    build_unet
from .lora import DEFAULT_TARGETS, LoRAAdapter

FAMILY = "demist-ldm"
KEYS = {"family", "autoencoder_inputs", "autoencoder_target", "unet", "controlnet", "tokens", "lora", "schedule",
        "latent_scale"}


def _stream(data: dict, name: str) -> dict | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be an object or null, got {value!r}")
    return None if value is None else dict(value)


@dataclass(frozen=True)
class DemistArchitecture:
    """Network configurations of a ``demist-ldm`` card (a missing/null stream = that stream absent).

    Attributes:
        autoencoder_inputs / autoencoder_target: ``AutoencoderKL`` configs (full, defaults filled in).
        unet: backbone config (``engine.conditioning``); controlnet / tokens / lora: stream configs or None.
        schedule: noise schedule; latent_scale_inputs / latent_scale_target: 1 / std of each latent.
    """

    autoencoder_inputs: dict
    autoencoder_target: dict
    unet: dict
    controlnet: dict | None = None
    tokens: dict | None = None
    lora: dict | None = None
    schedule: dict = field(default_factory=dict)
    latent_scale_inputs: float = 1.0
    latent_scale_target: float = 1.0

    @classmethod
    def from_dict(cls, data: dict) -> "DemistArchitecture":
        if not isinstance(data, dict):
            raise ValueError(f"architecture must be an object, got {type(data).__name__}")
        if data.get("family", FAMILY) != FAMILY:
            raise ValueError(f"architecture family must be {FAMILY!r}, got {data.get('family')!r}")
        unknown = sorted(set(data) - KEYS)
        if unknown:
            raise ValueError(f"unknown {FAMILY} architecture entries: {', '.join(unknown)}")
        scales = data.get("latent_scale") or {}
        if not isinstance(scales, dict):
            raise ValueError(f"latent_scale must be an object with 'inputs' and 'target', got {scales!r}")
        architecture = cls(
            autoencoder_inputs={**DEFAULT_AUTOENCODER, **(data.get("autoencoder_inputs") or {})},
            autoencoder_target={**DEFAULT_AUTOENCODER, **(data.get("autoencoder_target") or {})},
            unet={**DEFAULT_UNET, **(data.get("unet") or {})},
            controlnet=_stream(data, "controlnet"), tokens=_stream(data, "tokens"), lora=_stream(data, "lora"),
            schedule=dict(data.get("schedule") or {}),
            latent_scale_inputs=float(scales.get("inputs", 1.0)),
            latent_scale_target=float(scales.get("target", 1.0)),
        )
        if downsampling_factor(architecture.autoencoder_inputs) != downsampling_factor(architecture.autoencoder_target):
            raise ValueError("the input and target autoencoders must share one latent grid (same number of levels)")
        if architecture.tokens is not None:
            architecture.tokens.setdefault("grid", list(DEFAULT_TOKENS["grid"]))
            architecture.tokens.setdefault("hidden", DEFAULT_TOKENS["hidden"])
        return architecture

    @property
    def factor(self) -> int:
        """Image grid / latent grid along each axis."""
        return downsampling_factor(self.autoencoder_target)

    def without_streams(self) -> "DemistArchitecture":
        """The same networks with every conditioning stream absent (the stages before ``control``)."""
        return DemistArchitecture(self.autoencoder_inputs, self.autoencoder_target, self.unet, None, None, None,
                                  self.schedule, self.latent_scale_inputs, self.latent_scale_target)


@dataclass
class Networks:
    """Every network of one latent-diffusion model (weights may still be untrained)."""

    autoencoder_inputs: nn.Module
    autoencoder_target: nn.Module
    denoiser: ConditionalDenoiser

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weights per file stem (the layout of a model folder)."""
        denoiser = self.denoiser
        result = {"autoencoder_inputs": self.autoencoder_inputs.state_dict(),
                  "autoencoder_target": self.autoencoder_target.state_dict(),
                  "unet": denoiser.backbone.state_dict()}
        for stem, module in (("controlnet", denoiser.controlnet), ("tokens", denoiser.token_encoder),
                             ("lora", denoiser.lora)):
            if module is not None:
                result[stem] = module.state_dict()
        return {stem: {k: v.detach().contiguous() for k, v in sd.items()} for stem, sd in result.items()}

    def load_state_dicts(self, state_dicts: dict[str, dict[str, torch.Tensor]], model_id: str = "model") -> None:
        """Load weights per file stem, strictly (every expected stem and key must be present)."""
        modules = {"autoencoder_inputs": self.autoencoder_inputs, "autoencoder_target": self.autoencoder_target,
                   "unet": self.denoiser.backbone, "controlnet": self.denoiser.controlnet,
                   "tokens": self.denoiser.token_encoder, "lora": self.denoiser.lora}
        for stem, module in modules.items():
            if module is None:
                continue
            if stem not in state_dicts:
                raise InputError(f"weights {stem!r} are missing (has {', '.join(sorted(state_dicts))})",
                                 name=f"model {model_id}")
            try:
                module.load_state_dict(state_dicts[stem], strict=True)
            except RuntimeError as error:
                raise InputError(f"weights {stem!r} do not fit the card's architecture: "
                                 f"{str(error).splitlines()[0]}", name=f"model {model_id}") from None


def build_networks(architecture: DemistArchitecture | dict, input_channels: int, output_channels: int) -> Networks:
    """Networks from a parsed architecture (a card dict is parsed first)."""
    if isinstance(architecture, dict):
        architecture = DemistArchitecture.from_dict(architecture)
    autoencoder_inputs = build_autoencoder(input_channels, architecture.autoencoder_inputs)
    autoencoder_target = build_autoencoder(output_channels, architecture.autoencoder_target)
    latent, condition = autoencoder_target.latent_channels, autoencoder_inputs.latent_channels
    backbone = build_unet(latent, architecture.unet)
    controlnet = tokens = lora = None
    if architecture.controlnet is not None:
        controlnet = build_controlnet(latent, condition, {**architecture.unet, **architecture.controlnet})
    if architecture.tokens is not None:
        tokens = SemanticTokenEncoder(condition, int(architecture.unet["cross_attention_dim"]),
                                      architecture.tokens["grid"], int(architecture.tokens["hidden"]))
    if architecture.lora is not None:
        lora = LoRAAdapter(backbone, int(architecture.lora.get("rank", 4)), float(architecture.lora.get("alpha", 4.0)),
                           tuple(architecture.lora.get("targets", DEFAULT_TARGETS)))
    return Networks(autoencoder_inputs, autoencoder_target, ConditionalDenoiser(backbone, controlnet, tokens, lora))
