"""Compare stroke training runs at their latest checkpoint (the ablation of issue 11's loss terms).

Each run's EMA mean predictor (``<run>/latent/checkpoint``) maps validation phantoms (seeds from 10010, 2 mm,
randomised acquisition; the held-out report uses 10000-10005) to DWI and ADC; the ADC goes through the product's
core rule. Prints one row per run (step, core Dice, volume error, ADC MAE in the core, ADC and DWI PSNR in the
brain) and writes them to ``--output`` (JSON).

Usage: ``python benchmarks/stroke_checkpoint_eval.py RUN [RUN ...] [--cases 6] [--output FILE]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

VALIDATION_FIRST_SEED = 10_010


def evaluate_run(run: Path, subjects) -> dict:
    import torch
    from safetensors.torch import load_file

    from MRISynthesisLib import metrics
    from MRISynthesisLib.engine.latent_residual import LatentResidualArchitecture, LatentResidualNetworks
    from MRISynthesisLib.tasks import get_task
    from MRISynthesisLib.training.data import task_data
    from MRISynthesisLib.training.export import _core_scores

    state = json.loads((run / "latent" / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    scales = json.loads((run / "autoencoder" / "final" / "state.json").read_text(encoding="utf-8"))
    architecture = LatentResidualArchitecture.from_dict({**state["config"]["architecture"],
                                                         **scales["architecture_update"]})
    networks = LatentResidualNetworks(architecture, task_data("stroke-dwi-adc").input_channels, 2)
    ema = load_file(str(run / "latent" / "checkpoint" / "ema.safetensors"))
    networks.predictor.load_state_dict({k.removeprefix("predictor."): v for k, v in ema.items()
                                        if k.startswith("predictor.")})
    networks.eval()
    rule, rows = get_task("stroke-dwi-adc").lesion_rule, []
    for sample in subjects:
        with torch.no_grad():
            dwi, adc = networks.decode(networks.predict_mean(networks.encode(torch.from_numpy(sample.inputs)[None])))[0].numpy()
        brain, core = sample.brain[0] > 0, sample.lesion[0] > 0
        rows.append({**_core_scores(rule, adc, core, brain, 2.0), "adc_mae_core": metrics.mae(adc, sample.target[1], core),
                     "adc_psnr": metrics.percentile_psnr(adc, sample.target[1], brain),
                     "dwi_psnr": metrics.percentile_psnr(dwi, sample.target[0], brain)})
    config = state["config"]
    return {"run": str(run), "step": state["step"],
            "losses": {k: config.get(k, default) for k, default in (
                ("lesion_crops", 0.0), ("image_weight", 0.0), ("lesion_weight", 0.0), ("rule_weight", 0.0),
                ("rule_loss", "dice"), ("freeze_denoiser", False))},
            **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    from MRISynthesisLib.training.data import phantom_subjects, task_data

    seeds = list(range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + args.cases))
    subjects = phantom_subjects(task_data("stroke-dwi-adc"), seeds, 2.0, 16, randomize_acquisition=True)
    rows = [evaluate_run(run, subjects) for run in args.runs]
    for row in rows:
        print(f"{row['run']} step {row['step']} {row['losses']}: core Dice {row['core_dice']:.3f}, volume error "
              f"{row['core_volume_error']:.2f}, ADC MAE core {row['adc_mae_core']:.3f}, ADC {row['adc_psnr']:.1f} dB, "
              f"DWI {row['dwi_psnr']:.1f} dB")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"validation_seeds": seeds, "runs": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
