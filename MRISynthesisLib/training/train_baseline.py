"""Train the deterministic UNet baseline of a task on phantoms and write it as a model folder.

The baseline is a reference for ``mrisynthesis evaluate`` (model id ``<task>-unet-baseline``), not a product
model, and is not bundled with the package (its 10.8 MB of weights kept the Slicer extension's checkout over
100 MB). By default the model folder goes into the user model cache, ``ModelRegistry().models_dir``
(``$MRISYNTHESIS_HOME/models/<task>-unet-baseline``, default ``~/.mrisynthesis/models/...``), where the
registry, and so ``mrisynthesis evaluate``, finds it. The myelin-psr baseline of the README's tables
(2.70 M parameters, 4000 steps in 34 CPU-minutes on one thread) is reproduced by::

    python -m MRISynthesisLib.training.train_baseline --task myelin-psr \\
        --subjects 96 --steps 4000 --threads 1 --minutes 47

``--out DIR`` writes the folder elsewhere instead (its name is the model id); ``mrisynthesis models install DIR``
then copies it into the cache.

Data: ``training.data.phantom_subjects`` with seeds ``--first-seed .. --first-seed + --subjects - 1`` (default
0..47, the diffusion model's phantom stream and acquisition mix; the evaluation's held-out seeds start at
10000), prepared exactly
as the pipeline prepares inputs (``preprocess.prepare``), random brain-centred crops with left-right flips
(``training.data.CropStream``). Loss: L1 to the normalised target inside the brain. AdamW, cosine learning rate.
``--minutes`` only stops early as a safety net; the result of a run that hits it is written with the steps done.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

from ..model_store.registry import ModelRegistry


def default_out(task: str) -> Path:
    """Where the baseline of ``task`` goes by default: ``<user model cache>/<task>-unet-baseline``, the folder
    the registry (and ``mrisynthesis evaluate``) looks in; the cache honours ``$MRISYNTHESIS_HOME``."""
    return ModelRegistry().models_dir / f"{task}-unet-baseline"


# Parameters of the diffusion model the baseline is sized against: the default latent-residual myelin-psr
# architecture (autoencoder + mean predictor + residual denoiser) counts 2.96 M parameters.
DIFFUSION_PARAMETERS = 2_960_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m MRISynthesisLib.training.train_baseline",
        description="Train the deterministic 3D UNet regressor baseline on phantoms; writes card.json + "
        "unet.safetensors as a model folder, by default into the user model cache where 'mrisynthesis evaluate' "
        "finds it (the baseline is not bundled with MRISynthesis).")
    parser.add_argument("--task", default="myelin-psr", help="task id (needs a training recipe in training.data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="model folder to write (its name = model id); default: <task>-unet-baseline in the user "
                        "model cache ($MRISYNTHESIS_HOME/models, default ~/.mrisynthesis/models), where "
                        "'mrisynthesis evaluate' finds it")
    parser.add_argument("--subjects", type=int, default=48, help="training phantoms")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first training phantom")
    parser.add_argument("--spacing", type=float, default=2.0, help="model grid spacing in mm")
    parser.add_argument("--crop", type=int, default=64, help="crop edge in voxels (divisible by 16)")
    parser.add_argument("--batch", type=int, default=2, help="crops per step")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay to 5 %%)")
    parser.add_argument("--parameters", type=int, default=DIFFUSION_PARAMETERS,
                        help="size to match: the UNet width is chosen so its parameter count is closest")
    parser.add_argument("--norm", choices=["none", "instance", "batch"], default="none",
                        help="normalisation layers of the UNet (instance norm erases absolute levels)")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 (half the size; the "
                        "networks compute in float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the crop sampler")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--minutes", type=float, default=15.0, help="stop early after this wall time (safety net)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = default_out(args.task)
    import numpy as np
    import torch

    from ..evaluation.baselines import UNET_ARCHITECTURE_KIND, UNET_STEM, build_unet_regressor, channels_for_size
    from ..model_store.export import write_model
    from .data import CropStream, phantom_subjects, task_data

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.monotonic()
    multiple = 16
    if args.crop % multiple:
        raise SystemExit(f"--crop must be divisible by {multiple}")
    recipe = task_data(args.task)
    seeds = list(range(args.first_seed, args.first_seed + args.subjects))
    print(f"preparing {len(seeds)} phantoms (seeds {seeds[0]}..{seeds[-1]}) at {args.spacing} mm", flush=True)
    subjects = phantom_subjects(recipe, seeds, args.spacing, multiple, randomize_acquisition=None)
    prepared_s = time.monotonic() - started
    channels = channels_for_size(args.parameters, recipe.input_channels, len(recipe.targets))
    network = build_unet_regressor(recipe.input_channels, len(recipe.targets), channels, norm=args.norm)
    parameters = sum(p.numel() for p in network.parameters())
    print(f"UNet channels {channels}: {parameters / 1e6:.2f} M parameters; data ready in {prepared_s:.0f} s", flush=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)))
    batches = CropStream(subjects, (args.crop,) * 3, args.batch, [args.seed, 0, 0])
    network.train()
    losses, step = [], 0
    for step in range(1, args.steps + 1):
        batch = next(batches)
        prediction = network(batch["inputs"])
        brain = batch["brain"]
        loss = ((prediction - batch["target"]).abs() * brain).sum() / brain.sum().clamp(min=1) / prediction.shape[1]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps:
            elapsed = time.monotonic() - started
            print(json.dumps({"step": step, "loss": round(float(np.mean(losses[-10:])), 5),
                              "lr": round(schedule.get_last_lr()[0], 6), "elapsed_s": round(elapsed, 1)}), flush=True)
        if time.monotonic() - started > args.minutes * 60:
            print(f"time limit reached after {step} steps", flush=True)
            break
    duration = time.monotonic() - started
    network.eval()
    scale = {name: float(s) for name, (_, s) in recipe.targets.items()}
    card_fields = {
        "id": args.out.name, "version": "0.1.0", "task": args.task,
        "title": f"{args.task} deterministic UNet baseline",
        "description": "Baseline for the evaluation harness (not for clinical use): a MONAI UNet regressing the "
                       "normalised target directly from the normalised inputs, trained on phantoms with L1 loss.",
        "inputs": list(recipe.inputs), "outputs": list(recipe.targets), "spacing": [args.spacing] * 3,
        "multiple": multiple,
        "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 99.0},
                          "outputs": {name: {"scale": s, "offset": 0.0} for name, s in scale.items()}},
        "architecture": {"kind": UNET_ARCHITECTURE_KIND, "network": "monai.networks.nets.UNet", "channels": list(channels),
                         "strides": [2] * (len(channels) - 1), "num_res_units": 2, "norm": args.norm,
                         "roi": [args.crop] * 3, "parameters": parameters},
        "licence": "Apache-2.0",
        "training": {"data": f"phantom ({', '.join(recipe.pathologies)}), randomised acquisition (every 4th subject clean), "
                             f"{args.spacing} mm",
                     "command": "python -m MRISynthesisLib.training.train_baseline "
                                + shlex.join(sys.argv[1:] if argv is None else argv),
                     "duration_s": round(duration, 1), "hardware": f"{platform.processor() or platform.machine()}, "
                     f"{args.threads} CPU thread(s), shared", "seeds": seeds},
        "metrics": {"final_train_l1": round(float(np.mean(losses[-50:])), 5), "steps": step,
                    "crop": args.crop, "batch": args.batch},
    }
    weights = {k: v.half() if args.half and v.is_floating_point() else v for k, v in network.state_dict().items()}
    card = write_model(args.out, card_fields, {UNET_STEM: weights})
    print(f"wrote {card.folder} after {step} steps in {duration:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
