"""``SynthesisModel``: a model card + its weights -> normalised input volumes in, mean and std maps out.

The card's ``architecture`` is parsed once into a typed object by its ``family``: ``latent-residual`` (the
default recipe, ``engine.latent_residual``) or ``demist-ldm`` (frozen backbone + ControlNet + tokens + LoRA,
``engine.demist``). Weight files are keyed by the networks' stems.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ..errors import InputError
from ..preprocess import input_channel_count
from .demist import DemistArchitecture, build_networks
from .latent_residual import FAMILY as RESIDUAL_FAMILY
from .latent_residual import MAP_ESTIMATES, LatentResidualArchitecture, LatentResidualNetworks, sample_latents
from .sampling import SAMPLERS, RunningMoments, denoise, make_sampler
from .tiling import estimate_autoencoder_bytes, memory_budget, plan_tile, tiled


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)", name="--device") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InputError(f"no usable CUDA GPU (torch {torch.__version__} is {build}); use --device cpu or "
                             "auto, or install a CUDA build of torch", name="--device")
        if resolved.index is not None and resolved.index >= count:
            raise InputError(f"{device} does not exist; this machine has {count} CUDA GPU(s)", name="--device")
    return resolved


def _card_dict(card) -> dict:
    if isinstance(card, dict):
        return card
    if hasattr(card, "to_dict"):
        return card.to_dict()
    raise TypeError(f"expected a ModelCard or a card dict, got {type(card).__name__}")


class SynthesisModel:
    """A ready-to-sample model.

    Args:
        card: a ``ModelCard`` (or its dict): inputs, outputs, multiple, architecture.
        state_dicts: weights per file stem (``ModelRegistry.load_state_dicts``, which verifies sha256 first).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``...
    """

    def __init__(self, card, state_dicts: dict[str, dict[str, torch.Tensor]], device: str | torch.device = "auto"):
        self.card = _card_dict(card)
        self.model_id = self.card.get("id", "model")
        self.inputs, self.outputs = list(self.card["inputs"]), list(self.card["outputs"])
        method = self.card.get("normalisation", {}).get("inputs", {}).get("method", "percentile")
        self.input_channels = len(self.inputs) * input_channel_count(method)  # a perfusion series gives several
        self.multiple = int(self.card.get("multiple", 1))
        self.architecture = self.card["architecture"]
        self.device = resolve_device(device)
        self.residual_networks = None
        if isinstance(self.architecture, dict) and self.architecture.get("family") == RESIDUAL_FAMILY:
            self._init_latent_residual(state_dicts)
            return
        try:
            self.demist = DemistArchitecture.from_dict(self.architecture)
        except ValueError as error:
            raise InputError(f"card architecture is invalid: {error}", name=f"model {self.model_id}") from None
        self.networks = build_networks(self.demist, len(self.inputs), len(self.outputs))
        self.networks.load_state_dicts(state_dicts, self.model_id)
        for module in (self.networks.autoencoder_inputs, self.networks.autoencoder_target, self.networks.denoiser):
            module.to(self.device).eval()
        self.scale_inputs, self.scale_target = self.demist.latent_scale_inputs, self.demist.latent_scale_target
        self.factor = self.demist.factor
        self.schedule = self.demist.schedule

    def _init_latent_residual(self, state_dicts) -> None:
        try:
            architecture = LatentResidualArchitecture.from_dict(self.architecture)
        except ValueError as error:
            raise InputError(f"card architecture is invalid: {error}", name=f"model {self.model_id}") from None
        networks = LatentResidualNetworks(architecture, self.input_channels, len(self.outputs))
        try:
            networks.load_state_dicts(state_dicts)
        except (KeyError, RuntimeError) as error:
            message = str(error).strip("'\"").splitlines()[0]
            raise InputError(f"weights do not fit the card's architecture: {message}",
                             name=f"model {self.model_id}") from None
        self.residual_networks = networks.to(self.device).eval()
        self.factor = architecture.factor
        self.schedule = architecture.schedule

    @classmethod
    def from_registry(cls, registry, model_id: str, device: str | torch.device = "auto") -> "SynthesisModel":
        """Load an installed model (raises ``ModelNotInstalledError`` with the install command otherwise)."""
        return cls(registry.card(model_id), registry.load_state_dicts(model_id), device)

    # ----------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _autoencoder_pass(self, function, image: torch.Tensor, channels: list[int], tile, grid_factor: int):
        """Run ``function`` whole or tiled; ``image`` spatial size times ``grid_factor`` is the full-res size."""
        full_shape = [s * grid_factor for s in image.shape[2:]]
        if tile is None:
            bytes_per_voxel = estimate_autoencoder_bytes(channels, [1, 1, 1])
            plan = plan_tile(full_shape, bytes_per_voxel, memory_budget(self.device), self.multiple)
        else:
            plan = None if tile is False else tuple(int(t) for t in tile)
        if plan is None:
            return function(image)
        plan = tuple(max(1, p // grid_factor) for p in plan)
        return tiled(function, image, plan)

    @torch.inference_mode()
    def encode_inputs(self, inputs: torch.Tensor, tile=None) -> torch.Tensor:
        """Normalised inputs ``(1, C_in, D, H, W)`` -> scaled input latent ``(1, Lc, D/f, H/f, W/f)``."""
        autoencoder = self.networks.autoencoder_inputs
        channels = self.demist.autoencoder_inputs["channels"]
        z_mu = self._autoencoder_pass(lambda x: autoencoder.encode(x)[0], inputs, channels, tile, 1)
        return z_mu * self.scale_inputs

    @torch.inference_mode()
    def decode_target(self, latent: torch.Tensor, tile=None) -> torch.Tensor:
        """Scaled target latent ``(1, L, d, h, w)`` -> normalised target maps ``(1, C_out, d*f, h*f, w*f)``."""
        autoencoder = self.networks.autoencoder_target
        channels = self.demist.autoencoder_target["channels"]
        return self._autoencoder_pass(autoencoder.decode, latent / self.scale_target, channels, tile, self.factor)

    def _check_inputs(self, inputs) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise InputError(f"must be a torch.Tensor, got {type(inputs).__name__}", name="inputs")
        expected = self.input_channels
        if inputs.ndim != 5 or inputs.shape[0] != 1 or inputs.shape[1] != expected:
            raise InputError(f"must have shape (1, {expected}, D, H, W) for {', '.join(self.inputs)}, got "
                             f"{tuple(inputs.shape)}", name="inputs")
        if any(size % self.multiple for size in inputs.shape[2:]):
            raise InputError(f"grid {tuple(inputs.shape[2:])} must be divisible by {self.multiple}", name="inputs")
        if not torch.isfinite(inputs).all():
            raise InputError("contains NaN or infinite values", name="inputs")
        return inputs.to(self.device, torch.float32)

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, steps: int = 10, samples: int = 1, seed: int = 0,
                sampler: str = "dpm++", progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, eta: float = 0.0, tile=None, residual: bool = True,
                estimate: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the output maps ``samples`` times and return their per-voxel mean and standard deviation.

        Args:
            inputs: float32 ``(1, C_in, D, H, W)``, normalised per the card, D/H/W divisible by ``multiple``.
            steps: denoising steps per sample (any number from 1 to the training timesteps).
            samples: independent samples; ``std`` is zeros when 1.
            seed: seeds the initial noise (and DDIM/DDPM step noise): same seed -> same result on CPU.
            sampler: ``"dpm++"`` (DPM-Solver++(2M)), ``"ddim"`` (``eta`` 0 = deterministic) or ``"ddpm"``.
            progress: ``progress(step, total)`` after every step; ``total = steps * samples``.
            cancel: polled between steps; returning True raises ``CancelledError``.
            tile: None = tile the autoencoders only when the memory estimate needs it; False = never;
                a tuple = this full-resolution tile size.
            residual: latent-residual models only: False skips the diffusion model and decodes the deterministic
                mean prediction (the ablation "predictor only"; ``std`` is then zeros).
            estimate: latent-residual models only: how the output map estimates the samples' expectation:
                ``"samples"`` (their empirical mean) or ``"predictor"`` (the decoded mean prediction, which the
                samples' mean converges to as K grows: same expectation, no Monte Carlo noise); ``std`` is the
                samples' SD either way. Default: the card's ``map_estimate``.

        Returns:
            ``(mean, std)``: float32 ``(1, C_out, D, H, W)`` on the CPU, normalised output units.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}", name="sampler")
        if not isinstance(steps, int) or steps < 1 or not isinstance(samples, int) or samples < 1:
            raise InputError(f"steps and samples must be positive integers, got {steps} and {samples}",
                             name="steps")
        inputs = self._check_inputs(inputs)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        moments = RunningMoments()
        if self.residual_networks is not None:
            networks = self.residual_networks
            channels = list(networks.architecture.autoencoder.get("channels", [16]))
            estimate = estimate or networks.architecture.map_estimate
            if estimate not in MAP_ESTIMATES:
                raise InputError(f"must be one of {', '.join(MAP_ESTIMATES)}, got {estimate!r}", name="estimate")

            def decode(latent):
                return self._autoencoder_pass(networks.decode, latent, channels, tile, self.factor).float()
            with self._autocast():
                condition = self._autoencoder_pass(networks.encode, inputs, channels, tile, 1).float()
                sample_latents(networks, condition, make_sampler(sampler, self.schedule, eta, generator), steps,
                               samples, generator, lambda latent: moments.add(decode(latent)), progress, cancel,
                               residual)
                mean = moments.mean
                if residual and estimate == "predictor":
                    mean = decode(networks.predict_mean(condition))
            return mean.cpu(), moments.std().cpu()
        with self._autocast():
            condition = self.encode_inputs(inputs, tile).float()
            latent_shape = (1, self.networks.autoencoder_target.latent_channels, *condition.shape[2:])
            scheduler = make_sampler(sampler, self.schedule, eta, generator)

            def predict_output(latent, timesteps):
                return self.networks.denoiser(latent, timesteps, condition)

            for index in range(samples):
                noise = torch.randn(latent_shape, generator=generator).to(self.device)
                latent = denoise(predict_output, noise, scheduler, steps, progress, cancel,
                                 step_offset=index * steps, total_steps=samples * steps)
                moments.add(self.decode_target(latent, tile).float())
        return moments.mean.cpu(), moments.std().cpu()
