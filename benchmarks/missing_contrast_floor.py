"""Missing-contrast task (issue 12): the floor a model must beat on real scans, scored the way the issue asks.

For each validation case (``ms-patient07``, ``brats-gli-00001`` under ``--real``) and each target contrast, the
other three contrasts predict the target with a **per-voxel quadratic regression fitted on the very case it is
scored on** (all monomials up to degree 2 of the three inputs, each divided by its brain 99.5th percentile;
least squares on the brain voxels): an in-case fit no zero-shot model gets, but also no spatial context.

Score (``metrics.calibrated_psnr``): brain = reference > 0; one global gain and offset put the prediction into
the reference's unit; both scaled by the reference's 0.5-99.5 brain percentiles, clipped to [0, 1]; PSNR from
the MSE in the brain. A constant prediction (the brain mean) is scored beside it, and the degree-1 (affine) fit.

**phantom quadratic** is the zero-shot version: the same quadratic fitted on ``--phantoms`` clean phantom
subjects (2 mm; healthy, MS, glioma, stroke in turn; MPRAGE as T1w; inputs divided by their brain median), then
applied to the real case: how far the phantom's contrast relations are from these scanners' without any
spatial context.

Usage: ``python benchmarks/missing_contrast_floor.py [--real ../shared/data/real]``; writes
``benchmarks/results/missing_contrast_floor.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "missing_contrast_floor.json"
DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
# contrast -> file stem in each validation case
CASES = {
    "ms-patient07": {"t1w": "t1w", "t1ce": "t1post", "t2w": "t2w", "flair": "flair"},
    "brats-gli-00001": {"t1w": "t1n", "t1ce": "t1c", "t2w": "t2w", "flair": "t2f"},
}


def in_case_regression(others: list[np.ndarray], target: np.ndarray, brain: np.ndarray, degree: int) -> np.ndarray:
    """Fit and apply the per-voxel polynomial regression of ``target`` on ``others`` inside ``brain``."""
    from MRISynthesisLib.evaluation.baselines import LinearBaseline

    inputs = np.stack([image / np.percentile(image[brain], 99.5) for image in others])
    regression = LinearBaseline(len(others), 1, degree).fit([(inputs, target[None], brain)])
    return regression.predict(inputs, brain)[0]


def median_normalised(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return image / np.median(image[brain])


def phantom_regressions(count: int) -> dict:
    """Per target contrast, the quadratic of the other three fitted on ``count`` clean phantom subjects."""
    from MRISynthesisLib.evaluation.baselines import LinearBaseline
    from MRISynthesisLib.phantom.generator import generate_subject

    sources = {"t1w": "mprage", "t1ce": "t1ce", "t2w": "t2w", "flair": "flair"}
    regressions = {target: LinearBaseline(3, 1, 2) for target in sources}
    for index in range(count):
        pathology = ("none", "ms", "glioma", "stroke")[index % 4]
        subject = generate_subject(index, pathology, 2.0, maps=tuple(sources.values()))
        brain = subject.masks["brain"].array > 0
        images = {c: median_normalised(subject.maps[m].array.astype(np.float64), brain) for c, m in sources.items()}
        for target, regression in regressions.items():
            others = np.stack([image for name, image in images.items() if name != target])
            regression.add(others, images[target][None], brain)
    return {target: regression.solve() for target, regression in regressions.items()}


def main(argv: list[str] | None = None) -> int:
    from MRISynthesisLib.metrics import calibrated_psnr
    from MRISynthesisLib.volume import read_volume

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder holding the validation cases")
    parser.add_argument("--phantoms", type=int, default=8, help="phantom subjects for the zero-shot regression")
    args = parser.parse_args(argv)

    zero_shot = phantom_regressions(args.phantoms)
    rows = []
    for case, stems in CASES.items():
        folder = args.real / case
        if not folder.is_dir():
            print(f"skipping {case}: {folder} not found")
            continue
        images = {c: read_volume(folder / f"{stem}.nii.gz").array.astype(np.float64) for c, stem in stems.items()}
        for target_name, target in images.items():
            brain = target > 0
            others = [image for name, image in images.items() if name != target_name]
            rows.append({"case": case, "target": target_name,
                         "constant": calibrated_psnr(brain.astype(np.float64), target, brain),  # the brain mean
                         "affine": calibrated_psnr(in_case_regression(others, target, brain, 1), target, brain),
                         "quadratic": calibrated_psnr(in_case_regression(others, target, brain, 2), target, brain),
                         "phantom quadratic": calibrated_psnr(zero_shot[target_name].predict(
                             np.stack([median_normalised(image, brain) for image in others]), brain)[0],
                             target, brain)})
    if not rows:
        print("no validation case found; pass --real")
        return 1
    methods = ("constant", "affine", "quadratic", "phantom quadratic")
    print(f"{'case':<18}{'target':<8}" + "".join(f"{m:>19}" for m in methods))
    for row in rows:
        print(f"{row['case']:<18}{row['target']:<8}" + "".join(f"{row[m]:>19.2f}" for m in methods))
    means = {m: float(np.mean([row[m] for row in rows])) for m in methods}
    print(f"{'mean':<26}" + "".join(f"{means[m]:>19.2f}" for m in methods))
    RESULTS.write_text(json.dumps({"score": "metrics.calibrated_psnr (brain = reference > 0)", "phantoms": args.phantoms, "rows": rows,
                                   "mean_db": means}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
