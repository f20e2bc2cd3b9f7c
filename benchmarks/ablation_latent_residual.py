"""Ablation of the installed latent-residual model on validation phantoms (seeds 20000.., neither training nor the
evaluation's held-out test seeds): the map as the deterministic mean prediction, as the mean of K residual-diffusion
samples, and one sample; plus the calibration of the samples' SD. Prints a table, writes JSON.

Usage: ``python benchmarks/ablation_latent_residual.py [--task myelin-psr] [--n 4] [--samples 4] [--threads 2]``
(this is how the shipped card's ``map_estimate`` was chosen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "ablation_latent_residual.json"
VALIDATION_FIRST_SEED = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="myelin-psr")
    parser.add_argument("--n", type=int, default=4, help="validation phantoms per acquisition")
    parser.add_argument("--samples", type=int, default=4, help="K of the sample mean")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    from MRISynthesisLib import metrics
    from MRISynthesisLib.atomic import atomic_write_text
    from MRISynthesisLib.engine.model import SynthesisModel
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.tasks import get_task
    from MRISynthesisLib.training.data import phantom_subjects, task_data

    torch.set_num_threads(args.threads)
    registry = ModelRegistry()
    card = registry.card(get_task(args.task).model_id)
    model = SynthesisModel.from_registry(registry, card.id, device="cpu")
    if model.residual_networks is None:
        raise SystemExit(f"{card.id} is not a latent-residual model")
    recipe = task_data(args.task)
    output, (_, scale) = next(iter(recipe.targets.items()))
    seeds = list(range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + args.n))
    scores: dict[str, dict[str, list]] = {}
    for acquisition in ("clean", "randomised"):
        for sample in phantom_subjects(recipe, seeds, float(card.spacing[0]), card.multiple,
                                       acquisition == "randomised"):
            inputs = torch.from_numpy(sample.inputs)[None]
            brain, truth = sample.brain[0] > 0, sample.target[0] * scale
            mean_k, sd_k = model.predict(inputs, steps=args.steps, samples=args.samples, seed=0, estimate="samples")
            maps = {"mean predictor": model.predict(inputs, residual=False)[0],
                    f"mean of {args.samples} samples": mean_k,
                    "one sample": model.predict(inputs, steps=args.steps, samples=1, seed=0, estimate="samples")[0]}
            for name, prediction in maps.items():
                values = prediction[0, 0].numpy() * scale
                scores.setdefault(name, {}).setdefault(acquisition, []).append(
                    metrics.percentile_psnr(values, truth, brain))
            calibration = metrics.uncertainty_calibration(maps["mean predictor"][0, 0].numpy() * scale, truth,
                                                          sd_k[0, 0].numpy() * scale, brain)
            for key, value in calibration.items():
                scores.setdefault(key, {}).setdefault(acquisition, []).append(value)
    summary = {name: {acquisition: float(np.mean(v)) for acquisition, v in per.items()} for name, per in scores.items()}
    print(f"{card.id} {card.version}, validation seeds {seeds}, {args.steps} steps")
    print(f"{'variant':28} {'clean':>8} {'randomised':>11}")
    for name, per in summary.items():
        print(f"{name:28} {per['clean']:>8.3f} {per['randomised']:>11.3f}")
    atomic_write_text(args.out, json.dumps({"model": {"id": card.id, "version": card.version}, "seeds": seeds,
                                            "samples": args.samples, "steps": args.steps,
                                            "psnr_db_and_calibration": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
