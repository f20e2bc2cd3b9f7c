"""Export a finished training run as a model folder (card.json + safetensors), with held-out metrics.

Held-out metrics come from phantom subjects whose seeds are never used for training (10_000 and up, see
``data.training_seeds``), predicted with the exported weights exactly as ``SynthesisModel`` will at
inference (10 DPM-Solver++ steps, seed 0), compared in physical units inside the brain mask.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..engine.demist import build_networks
from ..engine.model import SynthesisModel
from ..errors import InputError
from ..model_store.export import write_model
from ..tasks import get_task
from .data import HELDOUT_FIRST_SEED, output_scale, phantom_subjects, task_data, training_seeds
from .loops import STAGE_STEMS, STAGES
from .checkpoint import load_weights



def _final_states(run_dir: Path, stages=STAGES) -> dict[str, dict]:
    """The ``final/state.json`` of every stage of a run (refuses a run with an unfinished stage)."""
    states = {}
    for stage in stages:
        path = run_dir / stage / "final" / "state.json"
        if not path.is_file():
            raise InputError(f"stage {stage!r} has not finished (no {path})", name="--out")
        states[stage] = json.loads(path.read_text(encoding="utf-8"))
    return states


def heldout_metrics(model: SynthesisModel, task_id: str, spacing: float, seeds: list[int], steps: int = 10,
                    sampler: str = "dpm++", samples: int = 1, randomize_acquisition: bool = True) -> dict:
    """PSNR (percentile-scaled, ``metrics.percentile_psnr``) / SSIM / MAE in the brain, lesion and NAWM MAE in
    physical units, of the mean of ``samples`` samples, averaged over held-out phantoms."""
    recipe = task_data(task_id)
    rule = get_task(task_id).lesion_rule
    per_subject, seconds = [], []
    for sample in phantom_subjects(recipe, seeds, spacing, model.multiple, randomize_acquisition):
        began = time.time()
        mean, _ = model.predict(torch.from_numpy(sample.inputs)[None], steps=steps, sampler=sampler, seed=0,
                                samples=samples)
        seconds.append(time.time() - began)
        brain = sample.brain[0] > 0
        for channel, (name, (_, scale)) in enumerate(recipe.targets.items()):
            prediction = mean[0, channel].numpy() * output_scale(scale)
            target = sample.target[channel] * output_scale(scale)
            lesion = sample.lesion[0] > 0
            nawm = (sample.tissues[0] > 0) & ~lesion
            per_subject.append({"output": name, "seed": sample.info["seed"], "pathology": sample.info["pathology"],
                                "psnr": metrics.percentile_psnr(prediction, target, brain),
                                "ssim": metrics.ssim(prediction, target, brain),
                                "mae": metrics.mae(prediction, target, brain),
                                "lesion_mae": metrics.mae(prediction, target, lesion) if lesion.any() else None,
                                "nawm_mae": metrics.mae(prediction, target, nawm),
                                "grid": list(sample.brain.shape[1:]),
                                **(_core_scores(rule, prediction, lesion, brain, spacing)
                                   if rule is not None and rule.low_output == name else {})})

    def average(key):
        values = [r[key] for r in per_subject if r.get(key) is not None and np.isfinite(r[key])]
        return float(np.mean(values)) if values else None

    return {"heldout_seeds": seeds, "steps": steps, "sampler": sampler, "samples": samples,
            "acquisition": "randomised" if randomize_acquisition else "clean",
            "region": "brain mask; PSNR after scaling both by the truth's 0.5-99.5 percentiles; MAE in physical units",
            "psnr_db": average("psnr"), "ssim": average("ssim"), "mae": average("mae"),
            "lesion_mae": average("lesion_mae"), "nawm_mae": average("nawm_mae"),
            **({"core_dice": average("core_dice"), "core_volume_error": average("core_volume_error")}
               if any("core_dice" in r for r in per_subject) else {}),
            "predict_seconds_mean": float(np.mean(seconds)), "subjects": per_subject}


def _core_scores(rule, prediction: np.ndarray, truth: np.ndarray, brain: np.ndarray, spacing: float) -> dict:
    """The task's lesion rule on a predicted map (e.g. the infarct core from ADC) against the true lesion mask:
    Dice and relative volume error."""
    from ..lesions import make_overlay
    from ..segmentation.scores import dice
    from ..volume import Volume

    geometry = {"spacing": (spacing,) * 3}
    labels, _ = make_overlay(rule, {}, {rule.low_output: Volume(prediction.astype(np.float32), **geometry)},
                             Volume(brain.astype(np.uint8), **geometry))
    found = labels.array > 0
    return {"core_dice": dice(found, truth),
            "core_volume_error": abs(float(found.sum()) - float(truth.sum())) / max(float(truth.sum()), 1.0)}


def export_run(run_dir: str | Path, task_id: str, folder: str | Path, model_id: str | None = None,
               version: str = "0.1.0", heldout: int = 4, command: str = "", extra_training: dict | None = None):
    """Gather the final weights of every stage of ``run_dir`` into a model folder; returns the ``ModelCard``."""
    run_dir = Path(run_dir)
    task = get_task(task_id)
    recipe = task_data(task_id)
    states = _final_states(run_dir)
    config = states["control"]["config"]
    for stage in ("diffusion", "control"):  # later stages must have been trained on these very latents
        if states[stage].get("latent_scale") != states["autoencoder"]["latent_scale"]:
            raise InputError(f"the autoencoder stage was re-run after the {stage} stage was trained (latent scales "
                             f"{states[stage].get('latent_scale')} vs {states['autoencoder']['latent_scale']}); "
                             f"re-run the later stages", name="--out")
    architecture = json.loads(json.dumps(config["architecture"]))
    architecture["latent_scale"] = states["autoencoder"]["latent_scale"]
    architecture["family"] = "demist-ldm"
    networks = build_networks(architecture, recipe.input_channels, len(recipe.targets))
    modules = {"autoencoder_inputs": networks.autoencoder_inputs, "autoencoder_target": networks.autoencoder_target,
               "unet": networks.denoiser.backbone, "controlnet": networks.denoiser.controlnet,
               "tokens": networks.denoiser.token_encoder, "lora": networks.denoiser.lora}
    for stage in STAGES:
        for stem in STAGE_STEMS[stage]:
            modules[stem].load_state_dict(load_weights(run_dir / stage / "final" / f"{stem}.safetensors"))
    state_dicts = networks.state_dicts()
    spacing = float(config["spacing"])
    fields = _card_base(task, recipe, spacing, int(config["multiple"]),
                        "Conditional 3D latent diffusion (frozen backbone + ControlNet + cross-attention tokens + "
                        "LoRA) trained on CPU on phantoms.", architecture, model_id, version)
    model = SynthesisModel(fields, state_dicts, device="cpu")
    seeds = list(range(HELDOUT_FIRST_SEED, HELDOUT_FIRST_SEED + heldout))
    fields["metrics"] = heldout_metrics(model, task_id, spacing, seeds) if heldout > 0 else {}
    stages = {stage: {k: states[stage].get(k) for k in ("steps", "duration_s", "sec_per_step", "command")}
              for stage in STAGES}
    for stage in STAGES:
        history = states[stage].get("history") or []
        if history:
            stages[stage]["loss_first"] = history[0]["total"]
            stages[stage]["loss_last"] = history[-1]["total"]
    fields["training"] = {
        "data": f"{config['data']} ({config['subjects']} subjects, pathologies {list(recipe.pathologies)}, "
                f"randomised acquisition, {config['crop']} crops at {spacing:g} mm)",
        "command": " && ".join([s["command"] for s in stages.values() if s.get("command")] + ([command] if command
                                                                                               else [])),
        "duration_s": float(sum(s["duration_s"] or 0 for s in stages.values())),
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                    f"{torch.get_num_threads()} threads",
        "seeds": {"training_seed": config["seed"], "heldout": seeds,
                  "training": training_seeds(config["seed"], int(config["subjects"]))
                  if config["data"] == "phantom" else []},
        "subjects": int(config["subjects"]),
        "stages": stages, "trainable": states["control"].get("trainable"),
        **(extra_training or {}),
    }
    return write_model(folder, fields, state_dicts)


def _card_base(task, recipe, spacing: float, multiple: int, description: str, architecture: dict,
               model_id: str | None, version: str) -> dict:
    """Card fields every exported model shares (the task, its inputs/outputs and their normalisation)."""
    return {
        "id": model_id or task.model_id, "version": version, "task": task.id, "title": task.title,
        "description": f"{task.description} {description}",
        "inputs": list(recipe.inputs), "outputs": list(recipe.targets),
        "spacing": [spacing] * 3, "multiple": int(multiple),
        "normalisation": {"inputs": {"method": recipe.input_method, "low": 1.0, "high": 99.0},
                          "outputs": {name: {"scale": output_scale(scale), "offset": 0.0}
                                      for name, (_, scale) in recipe.targets.items()}},
        "architecture": architecture, "licence": "Apache-2.0",
    }


def _half_precision(state_dicts: dict) -> dict:
    return {stem: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
            for stem, sd in state_dicts.items()}


def export_latent_residual_run(run_dir: str | Path, task_id: str, folder: str | Path, model_id: str | None = None,
                               version: str = "0.2.0", heldout: int = 4, samples: int = 4, steps: int = 10,
                               half: bool = True, command: str = "", map_estimate: str = "samples"):
    """Model folder from a finished latent-residual run (``training.latent_residual``), with held-out metrics
    of the mean of ``samples`` samples on clean and randomised phantoms; weights in float16 when ``half``
    (the card records what that costs against float32). ``map_estimate`` ("samples" or "predictor") is how the
    output map estimates the samples' expectation (``SynthesisModel.predict``)."""
    from ..engine.latent_residual import LatentResidualArchitecture, LatentResidualNetworks
    from .latent_residual import STAGES as RESIDUAL_STAGES
    from .latent_residual import ResidualTrainConfig, load_stage

    run_dir = Path(run_dir)
    task, recipe = get_task(task_id), task_data(task_id)
    states = _final_states(run_dir, RESIDUAL_STAGES)
    config = ResidualTrainConfig(**{**states["latent"]["config"], "resume": False})
    if not config.init_from and states["latent"]["architecture_update"]["latent_scale"] != \
            states["autoencoder"]["architecture_update"]["latent_scale"]:
        raise InputError("the autoencoder stage was re-run after the latent stage was trained; re-run --stage latent",
                         name="--out")
    architecture = LatentResidualArchitecture.from_dict({**config.architecture, "map_estimate": map_estimate,
                                                         **states["latent"]["architecture_update"]})
    networks = LatentResidualNetworks(architecture, recipe.input_channels, len(recipe.targets))
    for stage in RESIDUAL_STAGES:
        load_stage(config, networks, stage)
    state_dicts = networks.state_dicts()
    latent = ("a lossless space-to-depth latent" if not architecture.learned
              else "one shared MR autoencoder")
    estimate = ("the decoded mean prediction (the expectation of the samples)" if map_estimate == "predictor"
                else "the mean of K samples")
    head = (" (plus a local affine function of the input images, applied at full resolution)"
            if architecture.predictor_head == "local-affine" else "")
    fields = _card_base(task, recipe, config.spacing, config.multiple,
                        f"Latent mean predictor{head} + residual latent diffusion (CorrDiff-style) on {latent}, "
                        "trained on "
                        f"CPU on phantoms; the map is {estimate}, the uncertainty the standard deviation of K "
                        "samples.", architecture.to_dict(), model_id, version)
    seeds = list(range(HELDOUT_FIRST_SEED, HELDOUT_FIRST_SEED + heldout))
    shipped = _half_precision(state_dicts) if half else state_dicts

    def evaluate(weights, subjects: list[int]) -> dict:
        model = SynthesisModel(fields, {k: {n: t.float() for n, t in v.items()} for k, v in weights.items()}, "cpu")
        return {acquisition: heldout_metrics(model, task_id, config.spacing, subjects, steps=steps, samples=samples,
                                             randomize_acquisition=acquisition == "randomised")
                for acquisition in ("clean", "randomised")}
    fields["metrics"] = {"precision": "float16" if half else "float32"}
    if heldout:
        evaluated = evaluate(shipped, seeds)
        fields["metrics"].update({**evaluated["randomised"], "clean": evaluated["clean"]})
        if half:  # what float16 storage costs, on the first held-out subject of each acquisition
            full = evaluate(state_dicts, seeds[:1])
            # the same subject's rows (one per output) of the float16 evaluation
            fields["metrics"]["float16_cost_db"] = {
                acquisition: full[acquisition]["psnr_db"] - float(np.mean(
                    [row["psnr"] for row in evaluated[acquisition]["subjects"] if row["seed"] == seeds[0]]))
                for acquisition in ("clean", "randomised")}
    stages = {stage: {"steps": states[stage]["steps"], "duration_s": states[stage]["duration_s"],
                      "command": states[stage]["command"]} for stage in RESIDUAL_STAGES}
    fields["training"] = {
        "data": f"phantom ({config.subjects} subjects, pathologies {list(recipe.pathologies)}, randomised "
                f"acquisition with every 4th subject clean, {config.spacing:g} mm)",
        "command": " && ".join([s["command"] for s in stages.values() if s["command"]] + ([command] if command
                                                                                          else [])),
        "duration_s": float(sum(s["duration_s"] for s in stages.values())),
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                    f"{torch.get_num_threads()} threads, 2 shared CPU cores",
        "seeds": {"training_seed": config.seed, "heldout": seeds,
                  "training": training_seeds(config.seed, config.subjects) if config.data == "phantom" else []},
        "subjects": config.subjects, "stages": stages,
        "autoencoder_heldout_psnr_db": states["autoencoder"].get("heldout_reconstruction_psnr_db"),
    }
    if config.init_from:  # a continued run: the model it started from, with its own training record
        from ..model_store.registry import ModelRegistry

        previous = ModelRegistry().card(config.init_from)
        fields["training"]["continued_from"] = {"model": previous.id, "version": previous.version,
                                                "training": previous.training}
        fields["training"]["total_duration_s"] = fields["training"]["duration_s"] + float(
            previous.training.get("total_duration_s", previous.training.get("duration_s", 0.0)))
    return write_model(folder, fields, shipped)
