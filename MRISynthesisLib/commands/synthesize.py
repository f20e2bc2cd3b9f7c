"""``mrisynthesis synthesize``: run a task on image files and write maps, lesions, montage and summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..tasks import QUALITY_SAMPLES, QUALITY_STEPS


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """``["t1w=a.nii.gz", "flair=b.nii.gz"]`` -> dict; refuses malformed and duplicate names."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise InputError(f"expected NAME=PATH, got {pair!r}", "--input")
        if name in inputs:
            raise InputError(f"input {name!r} is given twice", "--input")
        inputs[name] = path
    return inputs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synthesize", help="synthesize maps from input images",
        description="Synthesize the task's maps from input images. Outputs are written on the exact grid "
        "(origin, spacing, direction) of the reference input: one NIfTI per map, an uncertainty map per map when "
        "--samples > 1, a lesion label map with per-lesion CSV/JSON tables, a PNG montage and summary.json. "
        "Nothing is written when an input is bad or the run is cancelled.",
        epilog="Example: mrisynthesis synthesize --task myelin-psr --input t1w=t1.nii.gz --input flair=flair.nii.gz "
        "--output out/",
    )
    parser.add_argument("--task", required=True, help="task id (see 'mrisynthesis tasks')")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                        help="an input image: NIfTI, NRRD, MHA or a DICOM series folder; repeat per input")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the results")
    parser.add_argument("--reference", metavar="NAME", help="input whose grid the outputs share (default: first input)")
    parser.add_argument("--mask", metavar="PATH", help="brain mask (needed for images that are not skull-stripped)")
    parser.add_argument("--lesions", metavar="PATH", help="lesion mask to use instead of the task's lesion rule")
    add_lesion_method(parser)
    parser.add_argument("--device", default="auto", help="auto (CUDA if usable, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, help="sampling steps (default from --quality)")
    parser.add_argument("--quality", choices=list(QUALITY_STEPS), default="balanced",
                        help="preset for --steps and --samples: " + ", ".join(
                            f"{k}={v} steps x {QUALITY_SAMPLES[k]} samples" for k, v in QUALITY_STEPS.items()))
    parser.add_argument("--sampler", choices=["dpm++", "ddim"], default="dpm++", help="diffusion sampler")
    parser.add_argument("--samples", type=int,
                        help="number of samples whose mean is the output map (default from --quality: "
                        + ", ".join(f"{k}={v}" for k, v in QUALITY_SAMPLES.items())
                        + "); > 1 also writes their per-voxel standard deviation as the uncertainty map")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same device -> same result)")
    add_run_options(parser)
    parser.set_defaults(func=run)


def add_run_options(parser) -> None:
    """Options every command that runs the pipeline shares: registration, file format, overwrite, progress."""
    parser.add_argument("--register", choices=["auto", "always", "never"], default="auto",
                        help="rigid registration of inputs to the reference: auto = only when they do not overlap")
    parser.add_argument("--format", dest="output_format", choices=["nii.gz", "nii", "nrrd"], default="nii.gz",
                        help="file format of the written volumes")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_lesion_method(parser) -> None:
    parser.add_argument("--lesion-method", choices=["auto", "segmenter", "rule"], default="auto",
                        help="how the lesion overlay is made when no --lesions mask is given: auto = the task's "
                        "trained segmenter when installed, else its rule")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import SynthesisRequest

    request = SynthesisRequest(
        task_id=args.task, inputs=parse_inputs(args.input), output_dir=args.output, reference=args.reference,
        mask=args.mask, lesions=args.lesions, device=args.device, steps=args.steps or QUALITY_STEPS[args.quality],
        samples=args.samples or QUALITY_SAMPLES[args.quality], seed=args.seed, sampler=args.sampler, overwrite=args.overwrite,
        register=args.register, output_format=args.output_format, lesion_method=args.lesion_method)
    return run_with_progress(request, args.quiet)


def run_with_progress(request, quiet: bool) -> int:
    """Run ``request`` with a progress bar on stderr and print the summary (JSON) on stdout."""
    from tqdm import tqdm

    from ..pipeline import synthesize

    bar = tqdm(total=100, unit="%", disable=quiet, bar_format="{desc:<12}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
    weights = {"read": (0, 5), "align": (5, 10), "preprocess": (10, 15), "sample": (15, 90), "postprocess": (90, 95),
               "segment": (90, 95), "write": (95, 100)}

    def progress(stage: str, step: int, total: int) -> None:
        start, end = weights.get(stage, (0, 100))
        bar.set_description_str(stage)
        bar.n = start + (end - start) * (step / total if total else 1)
        bar.refresh()

    try:
        result = synthesize(request, progress)
    finally:
        bar.close()
    print(json.dumps(result.summary, indent=2))
    return 0
