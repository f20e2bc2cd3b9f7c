"""How far intensity alone gets on a real MS case: FLAIR thresholds chosen on the case itself (an oracle, an upper
bound of any global intensity rule), and where the expert's lesions lie on the T1w.

For each region (the brain eroded by 3 voxels, as the product's rule; white matter of a 3-level Otsu split of the
bias-corrected T1w, ``segmentation.real_background.tissue_classes``, dilated by 1 or 2 voxels) and each FLAIR
threshold (1.15-1.70x the white matter median, with or without a binary opening) the overlay is scored against the
expert mask (``segmentation.scores.score_segmentation``); the best Dice per region is reported with its lesion-wise
F1 and volume. A segmenter that must reach Dice 0.65 has to beat these by far, from context and shape.

Usage: ``python benchmarks/lesion_rule_ceiling.py [--real ../shared/data/real/ms-patient07]`` (about 1 minute);
writes ``benchmarks/results/lesion_rule_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def ceiling(folder: Path) -> dict:
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from MRISynthesisLib.phantom.anatomy import GM, WM
    from MRISynthesisLib.segmentation.real_background import read_case, tissue_classes
    from MRISynthesisLib.segmentation.scores import score_segmentation

    t1w, flair = read_case(folder)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lesions.nii.gz"))) > 0
    brain = ndi.binary_fill_holes((t1w > 0) & (flair > 0))
    classes = tissue_classes(t1w, brain)
    white = classes == WM
    white_flair = float(np.median(flair[white]))
    grey_t1, white_t1 = float(np.median(t1w[classes == GM])), float(np.median(t1w[white]))
    eroded = ndi.binary_erosion(brain, iterations=3)
    regions = {"brain eroded 3 voxels": eroded,
               "white matter dilated 1 voxel": ndi.binary_dilation(white, iterations=1) & eroded,
               "white matter dilated 2 voxels": ndi.binary_dilation(white, iterations=2) & eroded}
    result = {"case": folder.name, "true_ml": round(float(truth.sum()) / 1000, 3),
              "expert_voxels_in_otsu_white_matter": round(float(white[truth].mean()), 3),
              "expert_t1w_position_grey_to_white": round((float(np.median(t1w[truth])) - grey_t1)
                                                         / (white_t1 - grey_t1), 3),
              "expert_flair_over_white_matter": round(float(np.median(flair[truth])) / white_flair, 3),
              "best_rule": {}}
    for name, region in regions.items():
        best = None
        for ratio in np.arange(1.15, 1.71, 0.03):
            for opening in (False, True):
                mask = (flair > ratio * white_flair) & region
                if opening:
                    mask = ndi.binary_opening(mask)
                score = score_segmentation(mask, truth, 0.001)
                if best is None or score["dice"] > best["dice"]:
                    best = {"flair_over_white_matter": round(float(ratio), 2), "opening": opening,
                            **{key: round(score[key], 3) for key in ("dice", "f1", "predicted_ml")}}
        result["best_rule"][name] = best
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=SHARED / "real" / "ms-patient07")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lesion_rule_ceiling.json")
    args = parser.parse_args(argv)
    if not (args.real / "lesions.nii.gz").is_file():
        print(f"no real case with an expert mask at {args.real}: nothing to measure")
        return 0
    result = ceiling(args.real)
    print(f"{'region':32s} {'FLAIR > x WM':>12s} {'opening':>8s} {'Dice':>6s} {'F1':>6s} {'mL':>6s}")
    for name, best in result["best_rule"].items():
        print(f"{name:32s} {best['flair_over_white_matter']:12.2f} {str(best['opening']):>8s} {best['dice']:6.3f} "
              f"{best['f1']:6.3f} {best['predicted_ml']:6.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
