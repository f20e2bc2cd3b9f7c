"""The three training stages of the conditional latent diffusion model (DEMIST), one resumable loop.

- ``autoencoder``: the input and target ``AutoencoderKL`` together (L1 + KL + edge, plus latent alignment);
  ends by measuring the latent scale factors (1 / std of each latent).
- ``diffusion``: the generic latent denoiser (backbone), unconditional, on target latents.
- ``control``: backbone frozen; ControlNet + semantic token encoder + LoRA trained with the diffusion loss,
  the edge-aware loss on the decoded prediction (lesion boundaries weighted up) and tissue-mean alignment.

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
from torch import nn
from tqdm import tqdm

from ..engine.conditioning import initialise_controlnet
from ..engine.demist import DemistArchitecture, build_networks
from ..engine.lora import freeze, trainable_share
from ..engine.sampling import training_scheduler
from ..errors import InputError
from . import distributed
from .checkpoint import EMA, atomic_save_tensors, atomic_write_json, load_checkpoint, load_weights, save_checkpoint
from .config import StageConfig
from .data import CropStream, load_subjects, task_data
from .losses import (AutoencoderLossWeights, autoencoder_loss, diffusion_target, edge_aware_loss,
                     latent_alignment_loss, lesion_boundary_weight, predicted_clean_latent, tissue_mean_loss)

STAGES = ("autoencoder", "diffusion", "control")
STAGE_STEMS = {"autoencoder": ("autoencoder_inputs", "autoencoder_target"), "diffusion": ("unet",),
               "control": ("controlnet", "tokens", "lora")}
DEFAULT_ARCHITECTURE = {
    "autoencoder_inputs": {"channels": [8, 16, 64], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8,
                           "norm": "none"},
    "autoencoder_target": {"channels": [8, 16, 64], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8,
                           "norm": "none"},
    "unet": {"channels": [32, 64, 64], "attention_levels": [False, False, True], "num_res_blocks": 1,
             "num_head_channels": 32, "norm_num_groups": 16, "cross_attention_dim": 64},
    "controlnet": {"embedding_channels": 32},
    "tokens": {"grid": [2, 2, 2], "hidden": 64},
    "lora": {"rank": 4, "alpha": 4.0},
    "schedule": {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
                 "beta_end": 0.0195, "prediction_type": "v_prediction"},
}


@dataclass
class TrainConfig(StageConfig):
    """A DEMIST stage (``STAGES``): the shared settings plus its loss weights and architecture."""

    STAGES: ClassVar[tuple[str, ...]] = STAGES

    decode_every: int = 1
    edge_weight: float = 0.5
    tissue_weight: float = 0.5
    boundary_emphasis: float = 4.0
    architecture: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_ARCHITECTURE)))


class AutoencoderPair(nn.Module):
    """Both autoencoders as one module (one DDP wrapper): returns reconstructions and latent statistics."""

    def __init__(self, autoencoder_inputs: nn.Module, autoencoder_target: nn.Module):
        super().__init__()
        self.autoencoder_inputs, self.autoencoder_target = autoencoder_inputs, autoencoder_target

    def forward(self, inputs: torch.Tensor, target: torch.Tensor):
        """Reconstructions from the latent *means* (what the diffusion model uses; decoding samples of the
        posterior slows CPU training several-fold), with ``(reconstruction, z_mu, z_sigma)`` per autoencoder."""
        results = []
        for autoencoder, image in ((self.autoencoder_inputs, inputs), (self.autoencoder_target, target)):
            z_mu, z_sigma = autoencoder.encode(image)
            results.append((autoencoder.decode(z_mu), z_mu, z_sigma))
        return tuple(results)


def _stage_dir(config: TrainConfig, stage: str | None = None) -> Path:
    return Path(config.out) / (stage or config.stage)


def _load_final(config: TrainConfig, networks, stage: str) -> dict:
    """Load a finished earlier stage's weights into ``networks``; returns that stage's final state."""
    folder = _stage_dir(config, stage) / "final"
    if not (folder / "state.json").is_file():
        raise InputError(f"stage {stage!r} has not finished in {config.out} (run --stage {stage} first)",
                         name="--out")
    modules = {"autoencoder_inputs": networks.autoencoder_inputs, "autoencoder_target": networks.autoencoder_target,
               "unet": networks.denoiser.backbone}
    for stem in STAGE_STEMS[stage]:
        modules[stem].load_state_dict(load_weights(folder / f"{stem}.safetensors"), strict=True)
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def _architecture_for(config: TrainConfig) -> DemistArchitecture:
    architecture = DemistArchitecture.from_dict(config.architecture)
    # streams do not exist before the control stage
    return architecture if config.stage == "control" else architecture.without_streams()


def build_stage(config: TrainConfig, context: distributed.DistributedContext):
    """Networks, the trained modules (by stem), the module to wrap in DDP and the per-batch loss function."""
    recipe = task_data(config.task)
    architecture = _architecture_for(config)
    networks = build_networks(architecture, recipe.input_channels, len(recipe.targets))
    scheduler = training_scheduler(architecture.schedule)
    extra: dict = {}
    if config.stage == "autoencoder":
        pair = AutoencoderPair(networks.autoencoder_inputs, networks.autoencoder_target)
        trained = {"autoencoder_inputs": networks.autoencoder_inputs,
                   "autoencoder_target": networks.autoencoder_target}
        weights = AutoencoderLossWeights()
        model = distributed.wrap(pair.to(context.device), context)

        def losses(batch, step):
            (rec_i, mu_i, sigma_i), (rec_t, mu_t, sigma_t) = model(batch["inputs"], batch["target"])
            terms_i = autoencoder_loss(rec_i, batch["inputs"], mu_i, sigma_i, weights, batch["brain"])
            terms_t = autoencoder_loss(rec_t, batch["target"], mu_t, sigma_t, weights, batch["brain"])
            alignment = latent_alignment_loss(mu_t, mu_i)
            return {"total": terms_i["total"] + terms_t["total"] + weights.alignment * alignment,
                    "l1_inputs": terms_i["l1"], "l1_target": terms_t["l1"], "alignment": alignment}
        return networks, trained, losses, extra

    ae_state = _load_final(config, networks, "autoencoder")
    scale_inputs, scale_target = ae_state["latent_scale"]["inputs"], ae_state["latent_scale"]["target"]
    extra["latent_scale"] = ae_state["latent_scale"]
    freeze(networks.autoencoder_inputs).to(context.device).eval()
    freeze(networks.autoencoder_target).to(context.device).eval()
    denoiser = networks.denoiser
    if config.stage == "diffusion":
        trained = {"unet": denoiser.backbone}
    else:
        _load_final(config, networks, "diffusion")
        freeze(denoiser.backbone)
        initialise_controlnet(denoiser.controlnet, denoiser.backbone)  # ControlNet recipe: start from the backbone
        trained = {"controlnet": denoiser.controlnet, "tokens": denoiser.token_encoder, "lora": denoiser.lora}
        trainable, total, share = trainable_share(networks.autoencoder_inputs, networks.autoencoder_target,
                                                  denoiser)
        _, denoiser_total, denoiser_share = trainable_share(denoiser)
        extra["trainable"] = {"parameters": trainable, "total_parameters": total, "share": share,
                              "share_of_denoiser": denoiser_share, "denoiser_parameters": denoiser_total}
    model = distributed.wrap(denoiser.to(context.device), context)

    def losses(batch, step):
        with torch.no_grad():
            latent = networks.autoencoder_target.encode(batch["target"])[0] * scale_target
            condition = networks.autoencoder_inputs.encode(batch["inputs"])[0] * scale_inputs
        noise = torch.randn_like(latent)
        timesteps = torch.randint(0, scheduler.num_train_timesteps, (latent.shape[0],), device=latent.device)
        noisy = scheduler.add_noise(latent, noise, timesteps)
        prediction = model(noisy, timesteps, condition if config.stage == "control" else None)
        diffusion = F.mse_loss(prediction.float(), diffusion_target(scheduler, latent, noise, timesteps))
        terms = {"total": diffusion, "diffusion": diffusion}
        if config.stage == "control" and step % max(config.decode_every, 1) == 0:
            clean = predicted_clean_latent(scheduler, noisy, prediction, timesteps)
            decoded = networks.autoencoder_target.decode(clean / scale_target)
            # Trust the decoded estimate in proportion to the signal left at this timestep.
            trust = scheduler.alphas_cumprod.to(latent.device)[timesteps].mean()
            weight = lesion_boundary_weight(batch["lesion"], batch["brain"], config.boundary_emphasis)
            terms["edge"] = edge_aware_loss(decoded, batch["target"], weight)
            terms["tissue"] = tissue_mean_loss(decoded, batch["target"], batch["tissues"])
            terms["total"] = diffusion + trust * (config.edge_weight * terms["edge"]
                                                  + config.tissue_weight * terms["tissue"])
        return terms
    return networks, trained, losses, extra


@torch.no_grad()
def measure_latent_scales(networks, batches, count: int = 4) -> dict[str, float]:
    """1 / std of each autoencoder's latent mean over ``count`` batches (unit-variance latents for diffusion)."""
    z_inputs, z_target = [], []
    for _ in range(count):
        batch = next(batches)
        z_inputs.append(networks.autoencoder_inputs.encode(batch["inputs"])[0])
        z_target.append(networks.autoencoder_target.encode(batch["target"])[0])
    return {"inputs": float(1.0 / torch.cat(z_inputs).std().clamp(min=1e-6)),
            "target": float(1.0 / torch.cat(z_target).std().clamp(min=1e-6))}


def train(config: TrainConfig, context: distributed.DistributedContext | None = None) -> dict:
    """Run (or resume) one stage; returns the final state written to ``<out>/<stage>/final/state.json``."""
    context = context or distributed.DistributedContext()
    torch.manual_seed(config.seed * 1000 + context.rank)
    stage_dir = _stage_dir(config)
    subjects = load_subjects(config, task_data(config.task))
    networks, trained, losses, extra = build_stage(config, context)
    parameters = [p for m in trained.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-4)
    ema = EMA(trained, config.ema_decay)
    start, history, prior_duration, commands = 0, [], 0.0, []
    if config.resume:
        state = load_checkpoint(stage_dir / "checkpoint", trained, optimizer, ema)
        if state is not None:
            start, history = int(state["step"]), state.get("history", [])
            prior_duration = float(state.get("duration_s", history[-1]["elapsed_s"] if history else 0.0))
            commands = state.get("commands", [state.get("config", {}).get("command", "")])
    commands = [c for c in commands if c] + ([config.command] if config.command else [])
    batches = CropStream(subjects, tuple(config.crop), config.batch, [config.seed, context.rank, start])
    to_device = lambda b: {k: v.to(context.device) for k, v in b.items()}  # noqa: E731
    stage_dir.mkdir(parents=True, exist_ok=True)
    log = (stage_dir / "train.log").open("a", encoding="utf-8") if context.is_main else None
    if log is not None and extra.get("trainable"):
        log.write(json.dumps({"trainable": extra["trainable"]}) + "\n")
    began, window = time.time(), []
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.stage,
                    disable=not context.is_main, mininterval=5)
    for step in progress:
        tick = time.time()
        terms = losses(to_device(next(batches)), step)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema.update(step)
        values = {k: float(distributed.average(v, context)) for k, v in terms.items()}
        window.append(values)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            record = {"step": done, **mean, "sec_per_step": time.time() - tick,
                      "elapsed_s": prior_duration + time.time() - began}
            history.append(record)
            window = []
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            progress.set_postfix(loss=f"{mean['total']:.4f}")
        out_of_time = config.max_minutes > 0 and distributed.any_rank(
            time.time() - began > 60 * config.max_minutes, context)
        if context.is_main and (done % config.save_every == 0 or done == config.steps or out_of_time):
            save_checkpoint(stage_dir / "checkpoint", trained, optimizer, ema,
                            {"step": done, "config": asdict(config), "history": history, "commands": commands,
                             "duration_s": prior_duration + time.time() - began})
        distributed.barrier(context)
        if out_of_time:
            break
    else:
        done = max(start, config.steps)
    duration = time.time() - began
    ema.copy_to_parameters()
    final = {"stage": config.stage, "steps": done, "steps_this_run": done - start,
             "duration_s": prior_duration + duration, "duration_this_run_s": duration,
             "sec_per_step": (prior_duration + duration) / max(done, 1),
             "command": " && ".join(commands), "config": asdict(config), "history": history, **extra}
    if config.stage == "autoencoder":
        for module in trained.values():
            module.eval()
        final["latent_scale"] = measure_latent_scales(networks, map(to_device, batches))
    if context.is_main:
        for stem, module in trained.items():
            atomic_save_tensors(module.state_dict(), stage_dir / "final" / f"{stem}.safetensors")
        atomic_write_json(final, stage_dir / "final" / "state.json")
        log.close()
    distributed.barrier(context)
    return final
