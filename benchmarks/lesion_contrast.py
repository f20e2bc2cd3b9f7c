"""How the phantom's MS lesions and white matter compare with a real case's, without any model (issue 9).

1. Lesion contrast: for each lesion of 10-300 voxels (face-connected components of the truth), its mean over the
   median of a 4-voxel shell around it (brain, other lesions excluded), on FLAIR and T1w (MPRAGE for phantoms):
   the real case against clean validation phantoms (seeds from 60000, as in ``lesion_failure_analysis.py``).
2. Tissue levels (what ``segmentation.augment.REAL_LIKE`` is built on): FLAIR grey matter and lesions over white
   matter's median, and each lesion's T1w position between grey (0) and white matter (1), per lesion of >= 10
   voxels. Real case: tissue classes from a 3-level Otsu split of the T1w in the brain (eroded by one voxel,
   lesions excluded); phantoms: fractions > 0.95.
3. White-matter fine texture: FLAIR smoothed with sigma 1 voxel, divided by the white-matter median, 5th and 95th
   percentile inside eroded white matter (real case: T1w above its 70th brain percentile, away from lesions;
   phantoms: white-matter fraction > 0.95).

Usage: ``python benchmarks/lesion_contrast.py [--real ../shared/data/real/ms-patient07] [--phantoms 4]
[--labels ../shared/data/labels] [--cache DIR]``; writes ``benchmarks/results/lesion_contrast.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

RESULTS = Path(__file__).resolve().parent / "results" / "lesion_contrast.json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VALIDATION_FIRST_SEED = 60_000


def lesion_ratios(images: dict[str, np.ndarray], lesions: np.ndarray, brain: np.ndarray) -> dict[str, list[float]]:
    """Per lesion of 10-300 voxels: mean over its shell's median, for each image."""
    labels, count = ndimage.label(lesions)
    ratios = {name: [] for name in images}
    for index in range(1, count + 1):
        lesion = labels == index
        if not 10 <= lesion.sum() < 300:
            continue
        shell = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesions) & brain
        for name, image in images.items():
            ratios[name].append(float(image[lesion].mean() / np.median(image[shell])))
    return ratios


def tissue_levels(flair: np.ndarray, t1w: np.ndarray, white: np.ndarray, grey: np.ndarray,
                  lesions: np.ndarray) -> dict:
    """FLAIR grey matter and lesions over white matter (medians); T1w position of each lesion of >= 10 voxels
    between grey (0) and white matter (1) medians."""
    flair_wm, t1_wm, t1_gm = (float(np.median(image[mask])) for image, mask in
                              ((flair, white), (t1w, white), (t1w, grey)))
    labels, count = ndimage.label(lesions)
    positions = [(float(np.median(t1w[labels == i])) - t1_gm) / (t1_wm - t1_gm) for i in range(1, count + 1)
                 if (labels == i).sum() >= 10]
    return {"flair_gm_over_wm": round(float(np.median(flair[grey])) / flair_wm, 3),
            "flair_lesion_over_wm": round(float(np.median(flair[lesions])) / flair_wm, 3),
            "t1w_gm_over_wm": round(t1_gm / t1_wm, 3), "t1w_lesion_position": summary(positions)}


def real_tissue_classes(t1w: np.ndarray, brain: np.ndarray, lesions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(white, grey) masks of a real case from a 3-level Otsu split of the T1w, eroded, lesions excluded."""
    from skimage.filters import threshold_multiotsu

    low, high = threshold_multiotsu(t1w[brain & ~lesions], classes=3)
    inside = ndimage.binary_erosion(brain, iterations=2) & ~ndimage.binary_dilation(lesions, iterations=2)
    white = ndimage.binary_erosion(t1w > high) & inside
    grey = ndimage.binary_erosion((t1w > low) & (t1w <= high)) & inside
    return white, grey


def texture(flair: np.ndarray, white: np.ndarray) -> list[float]:
    """5th and 95th percentile of the sigma-1 smoothed FLAIR over its median, in eroded white matter."""
    white = ndimage.binary_erosion(white, iterations=2)
    smoothed = ndimage.gaussian_filter(flair.astype(np.float32), 1.0)[white]
    return [round(float(v), 3) for v in np.percentile(smoothed / np.median(flair[white]), [5, 95])]


def summary(ratios: list[float]) -> dict:
    if not ratios:
        return {"lesions": 0}
    return {"lesions": len(ratios), "median": round(float(np.median(ratios)), 3),
            "p25_p75": [round(float(v), 3) for v in np.percentile(ratios, [25, 75])]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=SHARED / "real" / "ms-patient07")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels")
    parser.add_argument("--phantoms", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=None, help="phantom cache folder (default: temporary)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from MRISynthesisLib.preprocess import compute_brain_mask
    from MRISynthesisLib.segmentation.data import CachedSubject, cache_subject
    from MRISynthesisLib.volume import read_volume

    t1w, flair = (read_volume(args.real / f"{name}.nii.gz", name) for name in ("t1w", "flair"))
    truth = read_volume(args.real / "lesions.nii.gz", "lesions").array > 0
    brain = compute_brain_mask([t1w, flair]).array > 0
    real = lesion_ratios({"flair": flair.array, "t1w": t1w.array}, truth, brain)
    white = brain & ~ndimage.binary_dilation(truth, iterations=3) & (t1w.array > np.percentile(t1w.array[brain], 70))
    report = {"real_case": args.real.name,
              "real": {"flair": summary(real["flair"]), "t1w": summary(real["t1w"]),
                       "levels": tissue_levels(flair.array, t1w.array, *real_tissue_classes(t1w.array, brain, truth),
                                               truth),
                       "wm_texture_p5_p95": texture(flair.array, white)}, "phantoms": []}
    with tempfile.TemporaryDirectory() as temporary:
        cache = args.cache or Path(temporary)
        labels = args.labels if args.labels.is_dir() else None
        for seed in range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + args.phantoms):
            subject = CachedSubject.load(cache_subject(cache, seed, labels))
            ratios = lesion_ratios({"flair": subject.images["flair"], "t1w": subject.images["mprage"]},
                                   subject.lesion, subject.brain)
            white = (subject.fractions["wm"] > 0.95) & ~ndimage.binary_dilation(subject.lesion, iterations=3)
            levels = tissue_levels(subject.images["flair"], subject.images["mprage"], subject.fractions["wm"] > 0.95,
                                   subject.fractions["gm"] > 0.95, subject.lesion)
            report["phantoms"].append({"seed": seed, "flair": summary(ratios["flair"]), "t1w": summary(ratios["t1w"]),
                                       "levels": levels, "wm_texture_p5_p95": texture(subject.images["flair"], white)})
    print(f"{'data':<16} {'FLAIR lesion/shell':>22} {'T1w lesion/shell':>20} {'WM texture p5-p95':>20} "
          f"{'FLAIR GM/WM':>11} {'FLAIR les/WM':>12} {'T1w GM/WM':>9} {'T1w lesion position':>20}")
    for name, row in [(args.real.name, report["real"])] + [(str(r["seed"]), r) for r in report["phantoms"]]:
        cells = [f"{row[k].get('median', float('nan')):.2f} (n={row[k]['lesions']})" for k in ("flair", "t1w")]
        levels = row["levels"]
        position = levels["t1w_lesion_position"]
        print(f"{name:<16} {cells[0]:>22} {cells[1]:>20} {str(row['wm_texture_p5_p95']):>20} "
              f"{levels['flair_gm_over_wm']:11.2f} {levels['flair_lesion_over_wm']:12.2f} "
              f"{levels['t1w_gm_over_wm']:9.2f} "
              f"{position.get('median', float('nan')):8.2f} {str(position.get('p25_p75', '')):>11}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
