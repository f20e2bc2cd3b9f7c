"""``mrisynthesis evaluate``: a task's installed model versus two baselines on held-out data with ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..tasks import QUALITY_SAMPLES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="measure a task's model against baselines on held-out subjects",
        description="Evaluate the installed model of a task on held-out subjects with ground truth, through the same "
        "pipeline users run (mrisynthesis synthesize), next to two baselines given identical inputs: a per-voxel "
        "quadratic regression of the normalised inputs (fitted on training phantoms) and a deterministic 3D UNet "
        "regressor (model <task>-unet-baseline, when installed; it is not bundled: 'python -m "
        "MRISynthesisLib.training.train_baseline --task <task>' trains it into the user model cache). Metrics in "
        "the brain mask, both maps scaled by the truth's 0.5-99.5 percentiles: PSNR, 3D SSIM (mask-averaged), MAE, "
        "lesion MAE, normal-appearing-WM MAE, edge sharpness (gradient ratio at tissue/lesion boundaries), and "
        "slice-wise 2D PSNR/SSIM. Writes evaluation.json, evaluation.md (table) and montage.png into --out.",
        epilog="Example: mrisynthesis evaluate --task myelin-psr --n 6 --real ../shared/data/real/ms-patient07 "
        "--out eval/. Held-out phantom seeds are --seed .. --seed+N-1 (default 10000..); they must not overlap the "
        "training seeds recorded in the model cards (checked). Exit codes: 0 success, 2 bad input, 3 model not "
        "installed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", required=True, help="task id (see 'mrisynthesis tasks')")
    parser.add_argument("--data", default="phantom", metavar="phantom|DIR",
                        help="'phantom' = simulated held-out subjects, or a folder of subject folders with the input "
                        "maps, the target map(s) and mask_brain (+ mask_lesion, mask_wm...) as written by "
                        "'mrisynthesis phantom'")
    parser.add_argument("--n", type=int, default=4, help="number of held-out subjects (pathologies alternate, e.g. ms/none)")
    parser.add_argument("--seed", type=int, default=10_000, help="seed of the first held-out phantom")
    parser.add_argument("--acquisition", choices=["both", "randomized", "clean"], default="both",
                        help="held-out phantom images: 'randomized' like most training data (misregistration of the "
                        "non-reference inputs up to 2 mm / 2 deg, thick slices, bias field, noise, gamma), 'clean' "
                        "(ideal images), or 'both' (one report each in --out/clean and --out/randomized)")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="a real case folder with t1w, flair and lesions volumes: checks target in lesions < NAWM "
                        "and WM > GM > CSF (tissue classes by multi-Otsu on T1w)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the reports")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps of the diffusion model")
    parser.add_argument("--samples", type=int, default=QUALITY_SAMPLES["balanced"],
                        help="samples averaged per case (what users get: the 'balanced' preset's K)")
    parser.add_argument("--sampler", choices=["dpm++", "ddim"], default="dpm++", help="diffusion sampler")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the diffusion sampling noise")
    parser.add_argument("--fit-subjects", type=int, default=4,
                        help="training phantoms (seeds 0..N-1) for fitting the linear baseline")
    parser.add_argument("--baseline-model", metavar="ID",
                        help="UNet baseline model id (default <task>-unet-baseline; skipped when not installed)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--overwrite", action="store_true", help="replace reports already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import InputError
    from ..evaluation.run import run_evaluation

    if args.threads is not None:
        if args.threads < 1:
            raise InputError("must be at least 1", name="--threads")
        import torch

        torch.set_num_threads(args.threads)
    if args.data != "phantom" and not Path(args.data).is_dir():
        raise InputError("must be 'phantom' or a folder of subject folders", name="--data")
    if args.seed < 0:
        raise InputError("must be a non-negative integer", name="--seed")

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[evaluate] {message}", file=sys.stderr, flush=True)

    both = args.acquisition == "both" and args.data == "phantom"
    acquisitions = ("clean", "randomized") if both else (
        "randomized" if args.acquisition == "both" else args.acquisition,)
    for acquisition in acquisitions:
        result = run_evaluation(args.task, args.out / acquisition if both else args.out, data=args.data, n=args.n,
                                first_seed=args.seed, steps=args.steps, samples=args.samples,
                                sample_seed=args.sample_seed, sampler=args.sampler, device=args.device,
                                fit_subjects=args.fit_subjects, baseline_model=args.baseline_model,
                                real=args.real if acquisition == acquisitions[-1] else None,
                                overwrite=args.overwrite, acquisition=acquisition, progress=progress)
        print(Path(result["files"]["evaluation.md"]).read_text(encoding="utf-8"))
        print(json.dumps({"acquisition": acquisition, "goals": result["goals"], "files": result["files"]}, indent=2))
    return 0
