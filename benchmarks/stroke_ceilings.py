"""How sharp must a stroke model's maps be to reach issue 11's 28 dB? Resolution oracles on held-out phantoms.

The PSNR of issue 11 (brain mask, both maps scaled by the truth's 0.5-99.5 percentiles) is dominated by the
cerebrospinal fluid (ADC ~3 against ~0.8 in tissue): thin sulci, the ventricles' walls and the brain's outer
voxels, which partial volume mixes with the CSF that lines the surface. A model that reads them from a noisy
2 mm CT perfusion series gets them blurred. This benchmark scores the *true* maps blurred by a Gaussian of
``sigma`` voxels inside the brain (normalised convolution: no smearing of the zero background into the brain),
so it states how much blur each PSNR allows; the constant map (brain median) is the floor. It also reports the
share of the squared error of a 1-voxel blur that falls in the brain's outer voxel layer and in CSF (ADC > 2).

Usage: ``python benchmarks/stroke_ceilings.py [--heldout 6] [--first-seed 10000]``; writes
``benchmarks/results/stroke_ceilings.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "results" / "stroke_ceilings.json"
SIGMAS = (0.5, 0.75, 1.0, 1.5)  # voxels of 2 mm


def blurred_in_mask(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``image`` restricted to ``mask`` (normalised convolution), 0 outside."""
    weight = ndi.gaussian_filter(mask.astype(np.float64), sigma)
    smooth = ndi.gaussian_filter(np.where(mask, image, 0.0).astype(np.float64), sigma)
    return np.where(mask, smooth / np.maximum(weight, 1e-6), 0.0).astype(np.float32)


def score_case(seed: int) -> dict:
    from MRISynthesisLib.metrics import percentile_psnr
    from MRISynthesisLib.phantom.generator import generate_subject

    subject = generate_subject(seed, "stroke", 2.0, randomize_acquisition=True, maps=("adc", "dwi_b1000"))
    brain = subject.masks["brain"].array > 0
    truths = {"adc": subject.maps["adc"].array, "dwi": subject.maps["dwi_b1000"].array}
    truths["dwi"] = truths["dwi"] / np.median(truths["dwi"][brain])  # the model's unit
    record = {"seed": seed}
    for name, truth in truths.items():
        record[f"{name}_constant"] = percentile_psnr(np.where(brain, np.median(truth[brain]), 0.0), truth, brain)
        for sigma in SIGMAS:
            record[f"{name}_blur_{sigma:g}"] = percentile_psnr(blurred_in_mask(truth, brain, sigma), truth, brain)
    error = (blurred_in_mask(truths["adc"], brain, 1.0) - truths["adc"]) ** 2
    outer = brain & ~ndi.binary_erosion(brain)
    csf = brain & (truths["adc"] > 2.0)
    record["adc_blur_1_error_share_outer_layer"] = float(error[outer].sum() / error[brain].sum())
    record["adc_blur_1_error_share_csf"] = float(error[csf & ~outer].sum() / error[brain].sum())
    record["outer_layer_share_of_brain"] = float(outer.sum() / brain.sum())
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cases = [score_case(seed) for seed in range(args.first_seed, args.first_seed + args.heldout)]
    mean = {key: float(np.mean([case[key] for case in cases])) for key in cases[0] if key != "seed"}
    print("| oracle | ADC PSNR dB | DWI PSNR dB |\n|---|---|---|")
    print(f"| constant (brain median) | {mean['adc_constant']:.1f} | {mean['dwi_constant']:.1f} |")
    for sigma in SIGMAS:
        print(f"| truth blurred, sigma {sigma:g} voxel ({2.355 * 2 * sigma:.1f} mm FWHM) | "
              f"{mean[f'adc_blur_{sigma:g}']:.1f} | {mean[f'dwi_blur_{sigma:g}']:.1f} |")
    print(f"\nSquared ADC error of the 1-voxel blur: {mean['adc_blur_1_error_share_outer_layer']:.0%} in the brain's "
          f"outer voxel layer ({mean['outer_layer_share_of_brain']:.0%} of the brain), "
          f"{mean['adc_blur_1_error_share_csf']:.0%} in the other CSF voxels (ADC > 2).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": [c["seed"] for c in cases], "mean": mean, "cases": cases}, indent=2)
                        + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
