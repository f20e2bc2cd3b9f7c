"""The stroke model as a user gets it (issue 11): ``synthesize`` on held-out phantom CT perfusion series, scored
against the phantom's truth, and the synthesized value ranges against a real DWI/ADC case.

1. Held-out phantoms (seeds from 10000, 2 mm, randomised acquisition): the product's pipeline on each 4D CTP
   (frames resampled to the model's 15, brain mask from the series, maps back on the series' grid), the mean of
   ``--samples`` samples in ``--steps`` steps. Scores: core Dice and volume error of the infarct-core overlay
   (ADC < 0.62e-3 mm^2/s, the product's rule), ADC MAE in the core and the brain, PSNR of ADC and DWI in the brain
   (truth's 0.5-99.5 percentiles; DWI relative to the brain median, like the model's unit), SSIM in the brain,
   MS-SSIM (three scales: five do not fit a 2 mm brain), DWI MAE in the core, the same PSNR with 2 steps (LAPT
   samples in 2), and seconds per case.
2. Realism: percentiles of ADC in the brain, the normal-tissue median, ADC in the core and DWI core/normal, for the
   synthesized maps, the phantoms' truth and the real ISLES case (``--real``; no CT perfusion exists for it, so
   only distributions compare).

Usage: ``python benchmarks/stroke_evaluation.py --model-home DIR [--heldout 6] [--first-seed 10000] [--samples 4]
[--steps 10] [--real ../shared/data/real/isles-strokecase0001]``; writes ``benchmarks/results/stroke_evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "stroke_evaluation.json"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "isles-strokecase0001"
PERCENTILES = (5, 25, 50, 75, 95)


def distribution(adc: np.ndarray, dwi: np.ndarray, brain: np.ndarray, core: np.ndarray) -> dict:
    """ADC percentiles in the brain, normal-tissue ADC median (brain outside the core, ADC < 1.5: no CSF), core
    ADC median, DWI core / normal-tissue median."""
    normal = brain & ~core & (adc < 1.5)
    return {"adc_brain_percentiles": [round(float(v), 3) for v in np.percentile(adc[brain], PERCENTILES)],
            "adc_normal_median": round(float(np.median(adc[normal])), 3),
            "adc_core_median": round(float(np.median(adc[core])), 3) if core.any() else None,
            "dwi_core_over_normal": round(float(np.median(dwi[core]) / np.median(dwi[normal])), 3)
            if core.any() else None}


def evaluate_case(seed: int, model_home: Path, steps: int, samples: int) -> dict:
    from MRISynthesisLib.metrics import mae, ms_ssim, percentile_psnr, ssim
    from MRISynthesisLib.phantom.generator import generate_subject
    from MRISynthesisLib.pipeline import SynthesisRequest, synthesize
    from MRISynthesisLib.segmentation.scores import dice

    subject = generate_subject(seed, "stroke", 2.0, randomize_acquisition=True, maps=("ctp", "adc", "dwi_b1000"))
    brain, core = subject.masks["brain"].array > 0, subject.masks["core"].array > 0
    truth_adc, truth_dwi = subject.maps["adc"].array, subject.maps["dwi_b1000"].array
    truth_dwi = truth_dwi / np.median(truth_dwi[brain])
    record = {"seed": seed, "core_ml": float(core.sum() * 8 / 1000)}
    for label, step_count in (("", steps), ("_2_steps", 2)):
        began = time.time()
        result = synthesize(SynthesisRequest("stroke-dwi-adc", {"ctp": subject.maps["ctp"]}, model_home=model_home,
                                             steps=step_count, samples=samples, seed=0))
        seconds = time.time() - began
        adc, dwi = result.outputs["adc"].array, result.outputs["dwi"].array
        found = result.lesions.array > 0
        csf = brain & ~core & (truth_adc > 2.5)
        record.update({f"adc_psnr{label}": percentile_psnr(adc, truth_adc, brain),
                       f"dwi_psnr{label}": percentile_psnr(dwi, truth_dwi, brain),
                       f"seconds{label}": seconds})
        if not label:
            record.update({"core_dice": dice(found, core), "found_ml": float(found.sum() * 8 / 1000),
                           "volume_error": abs(float(found.sum()) - float(core.sum())) / max(float(core.sum()), 1.0),
                           "adc_mae_core": mae(adc, truth_adc, core), "adc_mae_brain": mae(adc, truth_adc, brain),
                           "adc_ssim": ssim(adc, truth_adc, brain), "dwi_ssim": ssim(dwi, truth_dwi, brain),
                           "adc_ms_ssim": ms_ssim(adc, truth_adc, brain), "dwi_ms_ssim": ms_ssim(dwi, truth_dwi, brain),
                           "dwi_mae_core": mae(dwi, truth_dwi, core),
                           # CSF (true ADC > 2.5: ventricles, sulci), where the PSNR's range comes from
                           "adc_csf_median": float(np.median(adc[csf])),
                           "truth_csf_median": float(np.median(truth_adc[csf])),
                           "synthesized": distribution(adc, dwi, brain, core),
                           "truth": distribution(truth_adc, truth_dwi, brain, core)})
    return record


def real_distribution(folder: Path) -> dict | None:
    from MRISynthesisLib.volume import read_volume

    if not (folder / "adc.nii.gz").is_file():
        return None
    adc = read_volume(folder / "adc.nii.gz").array
    dwi = read_volume(folder / "dwi.nii.gz").array
    lesion = read_volume(folder / "lesion_predicted.nii.gz").array > 0
    brain = adc > 0
    return distribution(adc, dwi, brain, lesion & brain) | {"lesion_note": "the case's lesion mask (a prediction)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-home", type=Path, required=True, help="MRISYNTHESIS_HOME holding models/stroke-dwi-adc")
    parser.add_argument("--heldout", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=None,
                        help="first held-out seed (default 10000; a later range validates a choice between runs)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.training.data import HELDOUT_FIRST_SEED

    card = ModelRegistry(args.model_home).card("stroke-dwi-adc")
    first = HELDOUT_FIRST_SEED if args.first_seed is None else args.first_seed
    if first < HELDOUT_FIRST_SEED:
        parser.error(f"--first-seed must be >= {HELDOUT_FIRST_SEED} (lower seeds are training phantoms)")
    cases = [evaluate_case(seed, args.model_home, args.steps, args.samples) for seed in range(first, first + args.heldout)]
    keys = ("core_dice", "volume_error", "adc_mae_core", "adc_mae_brain", "dwi_mae_core", "adc_psnr", "dwi_psnr",
            "adc_ssim", "dwi_ssim", "adc_ms_ssim", "dwi_ms_ssim", "adc_psnr_2_steps", "dwi_psnr_2_steps", "seconds",
            "seconds_2_steps")
    summary = {key: float(np.mean([c[key] for c in cases])) for key in keys + ("adc_csf_median", "truth_csf_median")}
    for source in ("synthesized", "truth"):  # normal-tissue ADC, mean over the cases of each case's median
        summary[f"{source}_adc_normal_median"] = float(np.mean([c[source]["adc_normal_median"] for c in cases]))
    report = {"model": {"id": card.id, "version": card.version}, "steps": args.steps, "samples": args.samples,
              "summary": summary, "cases": cases, "real_case": real_distribution(args.real)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"| held-out (n={len(cases)}) | " + " | ".join(f"{k} {v:.3f}" for k, v in summary.items()) + " |")
    for case in cases:
        print(case["seed"], {k: round(case[k], 3) for k in ("core_ml", "found_ml", "core_dice", "adc_mae_core")})
    print("synthesized:", cases[0]["synthesized"], "\ntruth:", cases[0]["truth"], "\nreal:", report["real_case"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
