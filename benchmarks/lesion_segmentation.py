"""Lesion overlays scored against the truth: the trained segmenter (T1w + FLAIR, FLAIR alone) beside the rule.

1. **Held-out phantoms**: ``--phantoms`` wide-lesion-load MS phantoms at 1 mm (seeds from 50000, never trained
   on; anatomy from ``--labels`` and MNI as in training), each with one fixed randomised acquisition, twice: with
   lesions as conspicuous as the phantom's physics makes them (``augment.randomise``'s defaults, the first
   benchmark) and with real-like contrast (``augment.REAL_LIKE``: lesions at the real case's contrast to grey and
   white matter, tissue texture, regional grey matter brightness, periventricular rims).
2. **Real cases**: every folder of ``--real`` holding ``t1w``, ``flair`` and an expert ``lesions`` mask
   (default ``../shared/data/real/ms-patient07`` when present).
3. **Speed**: ``mrisynthesis segment-lesions`` end to end on the first real case (a 1 mm brain), wall time.

Scores (``segmentation/scores.py``): Dice, lesion-wise F1 (a lesion counts as detected when >= 10 % of it is
found), total volume and its relative difference. Goals (issue 9): real Dice >= 0.65, F1 >= 0.6, volume within
30 %; phantoms Dice >= 0.8; <= 30 s per 1 mm brain. Writes ``benchmarks/results/lesion_segmentation.json``.

Usage: ``python benchmarks/lesion_segmentation.py [--model-home DIR] [--labels DIR] [--phantoms 6] [--real DIR ...]
[--out JSON]``
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "lesion_segmentation.json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOALS = {"real_dice": 0.65, "real_f1": 0.6, "real_volume_difference": 0.3, "phantom_dice": 0.8, "seconds": 30.0}


def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = [f"{'data':<22} {'method':<22} {'Dice':>6} {'F1':>6} {'recall':>7} {'precision':>9} {'true mL':>8} "
             f"{'found mL':>8} {'vol diff':>8} {'s':>6}"]
    for data, method, score in rows:
        lines.append(f"{data:<22} {method:<22} {score['dice']:6.3f} {score['f1']:6.3f} {score['recall']:7.3f} "
                     f"{score['precision']:9.3f} {score['true_ml']:8.2f} {score['predicted_ml']:8.2f} "
                     f"{score['volume_difference']:8.2f} {score['seconds']:6.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-home", type=Path, default=None, help="MRISYNTHESIS_HOME (default: bundled model)")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels" if (SHARED / "labels").is_dir() else None)
    parser.add_argument("--phantoms", type=int, default=6, help="held-out phantoms")
    parser.add_argument("--real", type=Path, nargs="*",
                        default=[SHARED / "real" / "ms-patient07"] if (SHARED / "real" / "ms-patient07").is_dir() else [])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON report to write")
    args = parser.parse_args(argv)

    import torch

    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.segmentation import augment
    from MRISynthesisLib.segmentation.evaluate import evaluate_cached_phantoms, evaluate_real_case
    from MRISynthesisLib.segmentation.segmenter import DEFAULT_MODEL_ID, LesionSegmenter
    from MRISynthesisLib.segmentation.train import HELDOUT_FIRST_SEED, build_cache, subject_seeds

    torch.set_num_threads(args.threads)
    segmenter = LesionSegmenter.from_registry(ModelRegistry(args.model_home), DEFAULT_MODEL_ID)
    report = {"model": segmenter.label, "machine": f"{platform.machine()}, {args.threads} thread(s)", "goals": GOALS}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = build_cache(Path(folder), subject_seeds(HELDOUT_FIRST_SEED, args.phantoms), args.labels, 2)
        phantoms = evaluate_cached_phantoms(segmenter, paths)
        real_like = evaluate_cached_phantoms(segmenter, paths, randomisation=augment.REAL_LIKE)
    report["phantoms"], report["phantoms_real_like_contrast"] = phantoms, real_like
    rows += [(f"{args.phantoms} held-out phantoms", method, score) for method, score in phantoms["mean"].items()]
    rows += [("  real-like contrast", method, score) for method, score in real_like["mean"].items()]
    report["real"] = []
    for case in args.real:
        result = evaluate_real_case(segmenter, case)
        report["real"].append(result)
        rows += [(case.name, method, result[method]) for method in ("segmenter", "segmenter_flair_only", "rule")]
    if args.real:
        case = args.real[0]
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "MRISynthesisLib", "segment-lesions", "--input",
                       f"t1w={case / 't1w.nii.gz'}", "--input", f"flair={case / 'flair.nii.gz'}", "--output", folder,
                       "--quiet", "--device", "cpu"]
            environment = None
            if args.model_home is not None:
                import os

                environment = {**os.environ, "MRISYNTHESIS_HOME": str(args.model_home)}
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=environment)
            report["end_to_end_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{segmenter.label} on {report['machine']}")
    print(table(rows))
    if "end_to_end_seconds" in report:
        print(f"segment-lesions end to end on {args.real[0].name}: {report['end_to_end_seconds']} s "
              f"(goal <= {GOALS['seconds']:g} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
