"""Where the installed lesion segmenter fails on a real case, against validation phantoms.

1. Lesions found by size (face-connected components of the truth; found = >= 10 % of it marked, as in
   ``segmentation/scores.py``), on the real case and on validation phantoms (seeds from 60000: neither the
   training seeds 40000.. nor the benchmark's held-out 50000..), each with one fixed randomised acquisition.
2. Diagnostics on the real case: the FLAIR brightened by 25 % inside the expert mask (does the model need more
   lesion contrast?) and smoothed (is it noise?), lesions found by size again. Diagnostics only, not methods.
3. Threshold x minimum lesion volume on the real case (Dice, lesion F1, mL marked).

Usage: ``python benchmarks/lesion_failure_analysis.py [--real ../shared/data/real/ms-patient07] [--phantoms 4]
[--labels ../shared/data/labels] [--cache DIR]``; writes ``benchmarks/results/lesion_failure_analysis.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

RESULTS = Path(__file__).resolve().parent / "results" / "lesion_failure_analysis.json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VALIDATION_FIRST_SEED = 60_000
SIZE_BINS = ((1, 10), (10, 30), (30, 100), (100, 300), (300, 10**9))


def found_by_size(probability: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, list[int]]:
    """``{"lo-hi voxels": [found, total]}`` over the truth's face-connected components."""
    labels, count = ndimage.label(truth)
    result = {f"{low}-{high}": [0, 0] for low, high in SIZE_BINS}
    for index in range(1, count + 1):
        lesion = labels == index
        size, found = int(lesion.sum()), bool((probability[lesion] >= threshold).mean() >= 0.1)
        for low, high in SIZE_BINS:
            if low <= size < high:
                result[f"{low}-{high}"][0] += int(found)
                result[f"{low}-{high}"][1] += 1
    return result


def add(total: dict, part: dict) -> dict:
    return {key: [a + b for a, b in zip(total.get(key, [0, 0]), value)] for key, value in part.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=SHARED / "real" / "ms-patient07")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels")
    parser.add_argument("--phantoms", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=None, help="phantom cache folder (default: temporary)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    from MRISynthesisLib.lesions import label_lesions, voxel_ml
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.preprocess import compute_brain_mask
    from MRISynthesisLib.segmentation import augment
    from MRISynthesisLib.segmentation.data import CachedSubject, cache_subject
    from MRISynthesisLib.segmentation.scores import score_segmentation
    from MRISynthesisLib.segmentation.segmenter import LesionSegmenter
    from MRISynthesisLib.volume import Volume, read_volume

    torch.set_num_threads(args.threads)
    segmenter = LesionSegmenter.from_registry(ModelRegistry())
    report = {"model": segmenter.label, "real_case": args.real.name}

    phantoms: dict = {}
    with tempfile.TemporaryDirectory() as temporary:
        cache = args.cache or Path(temporary)
        labels = args.labels if args.labels.is_dir() else None
        for index, seed in enumerate(range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + args.phantoms)):
            subject = CachedSubject.load(cache_subject(cache, seed, labels))
            images = augment.randomise({"t1w": subject.images["mprage"], "flair": subject.images["flair"]},
                                       subject.fractions, subject.brain, np.random.default_rng([777, index]))
            geometry = {"origin": (0.0, 0.0, 0.0), "spacing": (1.0, 1.0, 1.0)}
            probability = segmenter.probability({name: Volume(array, **geometry) for name, array in images.items()},
                                                Volume(subject.brain.astype(np.uint8), **geometry)).array
            phantoms = add(phantoms, found_by_size(probability, subject.lesion))
    report["found_by_size"] = {"validation_phantoms": phantoms}

    inputs = {name: read_volume(args.real / f"{name}.nii.gz", name) for name in ("t1w", "flair")}
    truth = read_volume(args.real / "lesions.nii.gz", "lesions").array > 0
    brain = compute_brain_mask(list(inputs.values()))
    probability = segmenter.probability(inputs, brain)
    report["found_by_size"]["real"] = found_by_size(probability.array, truth)
    flair = inputs["flair"].array.astype(np.float32)
    for name, changed in (("real, FLAIR x1.25 inside the expert mask", flair * np.where(truth, 1.25, 1.0)),
                          ("real, FLAIR smoothed (sigma 0.7 voxel)", ndimage.gaussian_filter(flair, 0.7))):
        given = {"t1w": inputs["t1w"], "flair": inputs["flair"].with_array(changed.astype(np.float32))}
        report["found_by_size"][name] = found_by_size(segmenter.probability(given, brain).array, truth)

    sweep = {}
    for threshold in (0.2, 0.3, 0.4, 0.5, 0.6):
        for min_volume_ml in (0.0, 0.003, 0.01):
            mask = label_lesions(probability.with_array((probability.array >= threshold).astype(np.uint8)),
                                 min_volume_ml).array > 0
            score = score_segmentation(mask, truth, voxel_ml(inputs["flair"]))
            sweep[f"threshold {threshold}, min {min_volume_ml} mL"] = {
                key: round(float(score[key]), 3) for key in ("dice", "f1", "predicted_ml", "true_ml")}
    report["real_threshold_sweep"] = sweep

    print(f"{'lesions found (found/total)':<44}" + "".join(f"{f'{a}-{b}':>12}" for a, b in SIZE_BINS[:-1]) + f"{'300+':>12}")
    for name, row in report["found_by_size"].items():
        print(f"{name:<44}" + "".join(f"{f'{found}/{total}':>12}" for found, total in row.values()))
    dice = [row["dice"] for row in sweep.values()]
    print(f"threshold sweep on the real case: Dice {min(dice):.3f}-{max(dice):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
