"""Training of the default recipe (``engine.latent_residual``) in two resumable stages on 2 CPU cores.

- ``autoencoder``: measures the latent scale (1 / std of the latents) and the held-out reconstruction PSNR;
  with a learned latent (``"kind": "kl"``) it first trains the shared single-channel autoencoder on random
  crops of every input contrast and target map (L1 + KL + edge in the brain).
- ``latent``: the input and target latents of every training subject are computed once (whole volumes), then
  the mean predictor (MSE to the target latent) and the residual diffusion model (MSE on the v-prediction of
  ``(target - mean) * residual_scale``) train together on random latent crops. The residual scale follows a
  running estimate of the residual's standard deviation and is frozen into the card. For a small lesion
  that a rule reads off the map (the infarct core: ADC < 0.62), ``--lesion-crops`` centres crops on it and the
  decoded mean gets LAPT's image-space terms (L1 in the brain and in the lesion) and a rule term, soft Dice or
  a hinge on the threshold's side (``--image-weight``, ``--lesion-weight``, ``--rule-weight``, ``--rule-loss``).
  ``--freeze-denoiser`` continues a shipped model's mean predictor alone (its denoiser file stays unchanged).

Outputs per stage in ``<run>/<stage>/``: ``checkpoint/`` (resumable), ``final/`` (EMA weights + state.json),
``train.log`` (JSON lines).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import metrics
from ..engine.latent_residual import FAMILY, LatentResidualArchitecture, LatentResidualNetworks, mirror_latent
from ..engine.lora import freeze
from ..engine.sampling import training_scheduler
from ..errors import InputError
from ..tasks import get_task
from .checkpoint import EMA, atomic_save_tensors, atomic_write_json, load_checkpoint, load_weights, save_checkpoint
from .config import StageConfig
from .data import HELDOUT_FIRST_SEED, CropStream, load_subjects, output_scale, phantom_subjects, task_data
from .losses import (AutoencoderLossWeights, autoencoder_loss, diffusion_target, lesion_aware_losses,
                     soft_threshold_dice_loss, threshold_margin_loss)

STAGES = ("autoencoder", "latent")
RULE_LOSSES = ("dice", "margin")
STAGE_STEMS = {"autoencoder": ("autoencoder",), "latent": ("predictor", "denoiser")}  # learned-latent case
CHANNELS_LAST = torch.channels_last_3d
DEFAULT_ARCHITECTURE = {
    "family": FAMILY,
    "autoencoder": {"kind": "space-to-depth", "factor": 2},
    "predictor": {"channels": [32, 64, 128], "strides": [2, 2], "num_res_units": 2, "norm": "none",
                  "head": "local-affine"},
    "denoiser": {"channels": [16, 32, 64], "num_res_blocks": 1, "norm_num_groups": 16},
    "schedule": {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
                 "beta_end": 0.0195, "prediction_type": "v_prediction"},
}


@dataclass
class ResidualTrainConfig(StageConfig):
    """A latent-residual stage (``STAGES``): the shared settings, this recipe's defaults and its own fields."""

    STAGES: ClassVar[tuple[str, ...]] = STAGES

    steps: int = 2000
    batch: int = 4
    subjects: int = 64
    log_every: int = 20
    denoiser_crop: int = 16  # latent voxels: the residual is local, and the diffusion UNet is the costly part
    heldout: int = 2
    init_from: str = ""  # latent stage: start from this installed/bundled model's weights (continue a shipped run)
    lesion_crops: float = 0.0  # latent stage: share of crops centred on a lesion voxel
    image_weight: float = 0.0  # latent stage: L1 of the decoded mean in the brain (LAPT's image-space loss)
    lesion_weight: float = 0.0  # latent stage: L1 of the decoded mean in the lesion (LAPT's lesion-masked loss)
    rule_weight: float = 0.0  # latent stage: weight of the task's threshold-rule term (infarct core) on the decoded mean
    rule_loss: str = "dice"  # latent stage: that term, "dice" (soft Dice) or "margin" (hinge on the rule's side)
    freeze_denoiser: bool = False  # latent stage: train the mean predictor only (the denoiser stays as loaded)
    architecture: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_ARCHITECTURE)))

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.lesion_crops <= 1.0:
            raise InputError(f"must be between 0 and 1, got {self.lesion_crops}", name="--lesion-crops")
        if self.image_weight < 0 or self.lesion_weight < 0 or self.rule_weight < 0:
            raise InputError("loss weights must be >= 0", name="--image-weight")
        if self.rule_loss not in RULE_LOSSES:
            raise InputError(f"must be one of {', '.join(RULE_LOSSES)}, got {self.rule_loss!r}", name="--rule-loss")
        if self.freeze_denoiser and not self.init_from:
            raise InputError("a frozen denoiser must come from a trained model (--init-from)", name="--freeze-denoiser")
        if self.rule_weight > 0:
            rule_channel(self.task)  # refuses a task without a threshold rule on one of its outputs


def _final_dir(config: ResidualTrainConfig, stage: str) -> Path:
    return Path(config.out) / stage / "final"


def rule_channel(task_id: str) -> tuple[int, float, float]:
    """``(target channel, scale to physical units, threshold)`` of the task's lesion rule on a synthesized map
    (the infarct core: ADC below 0.62e-3 mm^2/s), for ``--rule-weight``."""
    rule, recipe = get_task(task_id).lesion_rule, task_data(task_id)
    if rule is None or rule.low_absolute is None or rule.low_output not in recipe.targets:
        raise InputError(f"task {task_id} has no threshold rule on a synthesized map", name="--rule-weight")
    channel = list(recipe.targets).index(rule.low_output)
    return channel, output_scale(recipe.targets[rule.low_output][1]), float(rule.low_absolute)


def load_stage(config: ResidualTrainConfig, networks: LatentResidualNetworks, stage: str) -> dict:
    """Load a finished stage's weights into ``networks``; returns its final state."""
    folder = _final_dir(config, stage)
    if not (folder / "state.json").is_file():
        raise InputError(f"stage {stage!r} has not finished in {config.out} (run --stage {stage} first)",
                         name="--out")
    for stem in STAGE_STEMS[stage]:
        if getattr(networks, stem) is not None:
            getattr(networks, stem).load_state_dict(load_weights(folder / f"{stem}.safetensors"), strict=True)
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def _single_channel(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Every input and target channel of a crop batch as its own image: ``(B * C, 1, D, H, W)`` + brain mask."""
    images = torch.cat([batch["inputs"], batch["target"]], dim=1)
    channels = images.shape[1]
    brain = batch["brain"].repeat_interleave(channels, dim=0)
    # channels-last 3D convolutions run ~1.8x faster on CPU (oneDNN).
    return images.reshape(-1, 1, *images.shape[2:]).contiguous(memory_format=CHANNELS_LAST), brain


class LatentCrops:
    """Endless batches of random latent crops from precomputed whole-subject latents, left-right mirrored at
    random (``mirror``: the latent's own exact mirror, or None for no mirroring), with the matching image-grid
    crops of the brain and lesion masks (``factor``: image voxels per latent voxel).

    ``lesion_crops``: the share of crops centred on a lesion voxel (the rest are placed uniformly); a small
    lesion such as an infarct core is otherwise seen too rarely to be learned (issue 11's baselines)."""

    def __init__(self, latents: list[dict[str, torch.Tensor]], crop: tuple[int, int, int], batch: int, seed,
                 mirror=None, factor: int = 1, lesion_crops: float = 0.0):
        self.latents, self.crop, self.batch, self.mirror = latents, crop, batch, mirror
        self.factor, self.lesion_crops = int(factor), float(lesion_crops)
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        return self

    def _start(self, item: dict, shape: np.ndarray, size: np.ndarray) -> list[int]:
        lesion = item.get("lesion_voxels")
        if lesion is not None and len(lesion) and self.rng.random() < self.lesion_crops:
            centre = lesion[int(self.rng.integers(len(lesion)))] // self.factor
            return [int(v) for v in np.clip(centre - size // 2, 0, shape - size)]
        return [int(self.rng.integers(0, s - c + 1)) for s, c in zip(shape, size)]

    def __next__(self) -> dict[str, torch.Tensor]:
        pieces = {"condition": [], "target": [], "brain": [], "lesion": []}
        for index in self.rng.integers(len(self.latents), size=self.batch):
            item = self.latents[int(index)]
            shape = np.array(item["target"].shape[1:])
            size = np.minimum(self.crop, shape)
            start = self._start(item, shape, size)
            flip = self.mirror is not None and self.rng.random() < 0.5
            for key in ("condition", "target"):
                piece = item[key][(slice(None),) + tuple(slice(b, b + c) for b, c in zip(start, size))]
                pieces[key].append(self.mirror(piece[None])[0] if flip else piece)
            for key in ("brain", "lesion"):
                piece = item[key][(slice(None),) + tuple(slice(b * self.factor, (b + c) * self.factor)
                                                         for b, c in zip(start, size))]
                pieces[key].append(piece.flip(-1) if flip else piece)
        return {key: torch.stack(value) for key, value in pieces.items()}


def _sub_crop(shape, size: int, rng: np.random.Generator) -> tuple:
    """Index of one random ``size``-cube (clipped to ``shape``) of a ``(B, C, d, h, w)`` batch."""
    starts = [int(rng.integers(0, max(s - size, 0) + 1)) for s in shape]
    return (slice(None), slice(None)) + tuple(slice(b, b + size) for b in starts)


@torch.no_grad()
def _encode_subjects(networks: LatentResidualNetworks, subjects) -> list[dict[str, torch.Tensor]]:
    latents = []
    for sample in subjects:
        inputs = torch.from_numpy(sample.inputs)[None]
        target = torch.from_numpy(sample.target)[None]
        latents.append({"condition": networks.encode(inputs)[0], "target": networks.encode(target)[0],
                        "brain": torch.from_numpy(sample.brain), "lesion": torch.from_numpy(sample.lesion),
                        "lesion_voxels": np.argwhere(sample.lesion[0] > 0)})
    return latents


@torch.no_grad()
def reconstruction_psnr(networks: LatentResidualNetworks, subjects) -> dict[str, float]:
    """Mean PSNR (brain, truth's 0.5-99.5 percentiles) of autoencoder round trips, per channel kind."""
    scores: dict[str, list[float]] = {"inputs": [], "target": []}
    for sample in subjects:
        brain = sample.brain[0] > 0
        for kind in scores:
            images = torch.from_numpy(getattr(sample, kind))[None]
            decoded = networks.decode(networks.encode(images))[0].numpy()
            for channel in range(images.shape[1]):
                scores[kind].append(metrics.percentile_psnr(decoded[channel], images[0, channel].numpy(), brain))
    return {kind: float(np.mean(values)) for kind, values in scores.items()}


def _init_from_model(networks: LatentResidualNetworks, model_id: str) -> dict:
    """Load an installed or bundled model's predictor and denoiser (hash-checked by the registry) into
    ``networks``; returns its ``latent_scale`` and ``residual_scale``, which the continued training keeps."""
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    card = registry.card(model_id)
    saved = LatentResidualArchitecture.from_dict(card.architecture)
    # Scales are measured per run and the map estimate is chosen at export: neither changes the networks.
    measured = {"latent_scale": 0, "residual_scale": 0, "map_estimate": ""}
    current = networks.architecture
    grows_head = saved.predictor_head == "direct" and current.predictor_head == "local-affine"

    def comparable(architecture: LatentResidualArchitecture) -> dict:
        described = architecture.to_dict() | measured
        if grows_head:
            described["predictor"] = {**described["predictor"], "head": ""}
        return described
    if comparable(saved) != comparable(current):
        raise InputError(f"model {model_id} has another architecture than this run; pass the same --architecture",
                         name="--init-from")
    weights = registry.load_state_dicts(model_id)
    for stem in ("predictor", "denoiser"):
        state = {k: v.float() for k, v in weights[stem].items()}
        if stem == "predictor" and grows_head:
            state = grow_output_channels(state, networks.predictor.state_dict())
        getattr(networks, stem).load_state_dict(state, strict=True)
    return {"latent_scale": saved.latent_scale, "residual_scale": saved.residual_scale}


def grow_output_channels(saved: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A direct-head predictor's weights in a network with extra output channels (the local-affine head's
    coefficients): tensors that grew keep the saved values in their leading slice and zeros elsewhere, so the
    grown network starts as exactly the saved one (zero coefficients) and the new channels learn from there."""
    grown = {}
    for key, tensor in target.items():
        if key not in saved:
            raise InputError(f"the saved predictor lacks {key}", name="--init-from")
        old = saved[key]
        if old.shape == tensor.shape:
            grown[key] = old
            continue
        if old.dim() != tensor.dim() or any(o > n for o, n in zip(old.shape, tensor.shape)):
            raise InputError(f"cannot grow {key} from {tuple(old.shape)} to {tuple(tensor.shape)}", name="--init-from")
        grown[key] = torch.zeros_like(tensor)
        grown[key][tuple(slice(0, o) for o in old.shape)] = old
    return grown


def build_stage(config: ResidualTrainConfig):
    """Networks, trained modules by stem, the loss function, the batch stream and stage extras."""
    recipe = task_data(config.task)
    architecture = LatentResidualArchitecture.from_dict(config.architecture)
    networks = LatentResidualNetworks(architecture, recipe.input_channels, len(recipe.targets))
    subjects = load_subjects(config, recipe)
    if config.stage == "autoencoder" and not architecture.learned:
        return networks, {}, None, CropStream(subjects, tuple(config.crop), config.batch, [config.seed, 0]), {}
    if config.stage == "autoencoder":
        weights = AutoencoderLossWeights(alignment=0.0)
        networks.autoencoder.to(memory_format=CHANNELS_LAST)
        crops = CropStream(subjects, tuple(config.crop), config.batch, [config.seed, 0])

        def losses(batch, step):
            images, brain = _single_channel(batch)
            z_mu, z_sigma = networks.autoencoder.encode(images)
            terms = autoencoder_loss(networks.autoencoder.decode(z_mu), images, z_mu, z_sigma, weights, brain)
            return {"total": terms["total"], "l1": terms["l1"], "edge": terms["edge"]}
        return networks, {"autoencoder": networks.autoencoder}, losses, crops, {}

    state = load_stage(config, networks, "autoencoder")
    residual_std = torch.tensor(1.0)
    if config.init_from:
        state["architecture_update"] = _init_from_model(networks, config.init_from)
        residual_std.fill_(1.0 / state["architecture_update"]["residual_scale"])
    architecture = LatentResidualArchitecture.from_dict({**config.architecture, **state["architecture_update"]})
    networks.architecture = architecture
    if networks.autoencoder is not None:
        freeze(networks.autoencoder).eval()
    if config.freeze_denoiser:
        freeze(networks.denoiser).eval()
    latents = _encode_subjects(networks, subjects)
    factor = architecture.factor
    mirror = None if architecture.learned else (lambda latent: mirror_latent(latent, architecture))
    crops = LatentCrops(latents, tuple(int(c) // factor for c in config.crop), config.batch, [config.seed, 1], mirror,
                        factor, config.lesion_crops)
    scheduler = training_scheduler(architecture.schedule)

    def losses(batch, step):
        mean = networks.predict_mean(batch["condition"])
        predictor = F.mse_loss(mean, batch["target"])
        terms = {}
        if config.image_weight > 0 or config.lesion_weight > 0 or config.rule_weight > 0:
            decoded, decoded_target = networks.decode(mean), networks.decode(batch["target"])
            terms = lesion_aware_losses(decoded, decoded_target, batch["brain"], batch["lesion"])
            predictor = predictor + config.image_weight * terms["image"] + config.lesion_weight * terms["lesion"]
            if config.rule_weight > 0:
                channel, scale, threshold = rule_channel(config.task)
                values = decoded[:, channel:channel + 1] * scale
                if config.rule_loss == "margin":
                    terms["rule"] = threshold_margin_loss(values, decoded_target[:, channel:channel + 1] * scale,
                                                          batch["lesion"], batch["brain"], threshold)
                else:
                    terms["rule"] = soft_threshold_dice_loss(values, batch["lesion"], batch["brain"], threshold)
                predictor = predictor + config.rule_weight * terms["rule"]
        if config.freeze_denoiser:  # the loaded denoiser keeps the residual scale it was trained with
            return {"total": predictor, "predictor": predictor, "residual_std": residual_std.clone(), **terms}
        residual = (batch["target"] - mean.detach())
        residual_std.mul_(0.99).add_(0.01 * residual.std().clamp(min=1e-4))
        region = _sub_crop(residual.shape[2:], config.denoiser_crop, crops.rng)
        scaled = residual[region] / residual_std
        noise = torch.randn_like(scaled)
        timesteps = torch.randint(0, scheduler.num_train_timesteps, (scaled.shape[0],))
        noisy = scheduler.add_noise(scaled, noise, timesteps)
        prediction = networks.denoise_residual(noisy, timesteps, batch["condition"][region], mean.detach()[region])
        diffusion = F.mse_loss(prediction, diffusion_target(scheduler, scaled, noise, timesteps))
        return {"total": predictor + diffusion, "predictor": predictor, "diffusion": diffusion,
                "residual_std": residual_std.clone(), **terms}

    extra = {"architecture_update": {"latent_scale": architecture.latent_scale}, "residual_std": residual_std}
    return networks, {"predictor": networks.predictor, "denoiser": networks.denoiser}, losses, crops, extra


def train(config: ResidualTrainConfig) -> dict:
    """Run (or resume) one stage; returns the final state written to ``<out>/<stage>/final/state.json``."""
    torch.manual_seed(config.seed)
    stage_dir = Path(config.out) / config.stage
    networks, trained, losses, batches, extra = build_stage(config)
    if not trained:  # nothing to learn (space-to-depth latent): only measure the latent scale
        config.steps = 0
    parameters = [p for m in trained.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters or [torch.zeros(1, requires_grad=True)], lr=config.lr,
                                  weight_decay=1e-4)
    ema = EMA(trained, config.ema_decay)
    start, history, prior_duration, commands = 0, [], 0.0, []
    if config.resume:
        state = load_checkpoint(stage_dir / "checkpoint", trained, optimizer, ema)
        if state is not None:
            for group in optimizer.param_groups:  # the command line's learning rate wins over the checkpoint's
                group["lr"] = config.lr
            start, history = int(state["step"]), state.get("history", [])
            prior_duration = float(state.get("duration_s", 0.0))
            commands = state.get("commands", [])
            if "residual_std" in extra and history:
                extra["residual_std"].fill_(history[-1]["residual_std"])
            batches.rng = np.random.default_rng([config.seed, 2, start])
    commands = [c for c in commands if c] + ([config.command] if config.command else [])
    stage_dir.mkdir(parents=True, exist_ok=True)
    began, window, done = time.time(), [], start
    with (stage_dir / "train.log").open("a", encoding="utf-8") as log:
        progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.stage,
                        mininterval=10)
        for step in progress:
            terms = losses(next(batches), step)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            ema.update(step)
            window.append({k: float(v.detach()) for k, v in terms.items()})
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                record = {"step": done, **{k: float(np.mean([w[k] for w in window])) for k in window[-1]},
                          "elapsed_s": prior_duration + time.time() - began}
                history.append(record)
                window = []
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.set_postfix(loss=f"{record['total']:.4f}")
            out_of_time = config.max_minutes > 0 and time.time() - began > 60 * config.max_minutes
            if done % config.save_every == 0 or done == config.steps or out_of_time:
                save_checkpoint(stage_dir / "checkpoint", trained, optimizer, ema,
                                {"step": done, "config": asdict(config), "history": history, "commands": commands,
                                 "duration_s": prior_duration + time.time() - began})
            if out_of_time:
                break
    duration = time.time() - began
    ema.copy_to_parameters()
    for module in trained.values():
        module.eval()
    final = {"stage": config.stage, "steps": done, "steps_this_run": done - start,
             "duration_s": prior_duration + duration, "command": " && ".join(commands),
             "config": asdict(config), "history": history}
    heldout = phantom_subjects(task_data(config.task), range(HELDOUT_FIRST_SEED, HELDOUT_FIRST_SEED + config.heldout),
                               config.spacing, config.multiple) if config.heldout > 0 else []
    if config.stage == "autoencoder":
        with torch.no_grad():
            sample = next(batches)
            images, _ = _single_channel(sample)
            latent_std = float(networks.encode(images).std().clamp(min=1e-6))
        final["architecture_update"] = {"latent_scale": 1.0 / latent_std}
        networks.architecture = LatentResidualArchitecture.from_dict(
            {**config.architecture, **final["architecture_update"]})
        final["heldout_reconstruction_psnr_db"] = reconstruction_psnr(networks, heldout) if heldout else {}
    else:
        final["architecture_update"] = {**extra["architecture_update"],
                                        "residual_scale": float(1.0 / extra["residual_std"])}
    for stem, module in trained.items():
        atomic_save_tensors(module.state_dict(), stage_dir / "final" / f"{stem}.safetensors")
    atomic_write_json(final, stage_dir / "final" / "state.json")
    return final
