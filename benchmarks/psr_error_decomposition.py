"""Where the installed myelin-PSR model's error comes from: the subject's PSR levels or the spatial detail.

Per held-out phantom (seeds 10000.., as ``mrisynthesis evaluate``; clean and randomised acquisition), the model's
deterministic map (``residual=False``: the mean prediction the shipped card's map estimate uses) is scored three ways,
all with the project's headline PSNR (brain mask, truth's 0.5-99.5 percentiles, ``metrics.percentile_psnr``):

- ``raw``: the map as written.
- ``global affine``: after one least-squares gain and offset in the brain (a calibration of the overall level).
- ``tissue levels corrected``: after adding, inside each hard tissue class (WM, GM, deep GM, CSF), the median of
  (truth - map) there. What remains is the spatial error: blur at tissue borders, lesions, texture.

Also prints each tissue's median truth and map. Compare models with ``MRISYNTHESIS_HOME`` (a user model overrides
the bundled one). Usage: ``python benchmarks/psr_error_decomposition.py [--n 4] [--threads 2] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "psr_error_decomposition.json"
TISSUES = ("wm", "gm", "deep_gm", "csf")


def decompose(prediction: np.ndarray, truth: np.ndarray, masks: dict) -> dict:
    from MRISynthesisLib import metrics

    brain = masks["brain"]
    corrected, levels = prediction.astype(np.float64).copy(), {}
    for name in TISSUES:
        inside = masks[name] & brain
        if inside.sum() < 10:
            continue
        corrected[inside] += float(np.median(truth[inside] - prediction[inside]))
        levels[name] = {"truth": float(np.median(truth[inside])), "map": float(np.median(prediction[inside]))}
    return {"raw": metrics.percentile_psnr(prediction, truth, brain),
            "global affine": metrics.percentile_psnr(metrics.unit_calibrated(prediction, truth, brain), truth, brain),
            "tissue levels corrected": metrics.percentile_psnr(corrected, truth, brain), "levels": levels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="held-out phantoms per acquisition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    from MRISynthesisLib.atomic import atomic_write_text
    from MRISynthesisLib.evaluation.harness import diffusion_method, held_out_phantoms
    from MRISynthesisLib.model_store.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    card = ModelRegistry().card("myelin-psr")
    method = diffusion_method("myelin-psr", steps=10, samples=1, seed=0, residual=False)
    started, results = time.time(), {"model": {"id": card.id, "version": card.version, "source": card.source},
                                      "cases": {}, "summary": {}}
    for acquisition, randomise in (("clean", False), ("randomised", True)):
        rows = []
        for case in held_out_phantoms("myelin-psr", args.n, randomize_acquisition=randomise):
            prediction = method(case.inputs, case.masks["brain"])["psr"].array
            masks = {name: volume.array > 0 for name, volume in case.masks.items()}
            rows.append({"case": case.name, **decompose(prediction, case.targets["psr"].array, masks)})
            print(f"[{time.time() - started:5.0f} s] {case.name}: " + ", ".join(
                f"{key} {rows[-1][key]:.2f}" for key in ("raw", "global affine", "tissue levels corrected")),
                file=sys.stderr)
        results["cases"][acquisition] = rows
        results["summary"][acquisition] = {key: float(np.mean([r[key] for r in rows]))
                                           for key in ("raw", "global affine", "tissue levels corrected")}
    print(f"model myelin-psr {card.version} ({card.source}), mean PSNR dB over {args.n} held-out phantoms\n")
    print("| acquisition | raw | global affine | tissue levels corrected |\n|---|---|---|---|")
    for acquisition, summary in results["summary"].items():
        print(f"| {acquisition} | " + " | ".join(f"{v:.2f}" for v in summary.values()) + " |")
    results["seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
