"""``mrisynthesis segment-lesions``: only the MS lesion overlay and its table, no synthesized map."""

from __future__ import annotations

import argparse
from pathlib import Path

from .synthesize import add_lesion_method, add_run_options, parse_inputs, run_with_progress


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment-lesions", help="MS lesion mask and per-lesion table from FLAIR (+ T1w)",
        description="Segment MS lesions from a FLAIR, with or without a T1-weighted image (task ms-lesions): the "
        "trained segmenter when its model is installed, the FLAIR rule otherwise (summary.json says which). Writes "
        "lesions (labels 1..n, largest first) on the reference grid, lesions.csv/json (volume, mean FLAIR, "
        "normal-appearing level, ratio, centroid), a PNG montage and summary.json (count, total volume, method). "
        "Nothing is written when an input is bad.",
        epilog="Example: mrisynthesis segment-lesions --input t1w=t1.nii.gz --input flair=flair.nii.gz --output out/")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                        help="flair=PATH (required) and optionally t1w=PATH: NIfTI, NRRD, MHA or a DICOM folder")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the results")
    parser.add_argument("--reference", metavar="NAME", help="input whose grid the mask shares (default: t1w if given)")
    parser.add_argument("--mask", metavar="PATH", help="brain mask (needed for images that are not skull-stripped)")
    add_lesion_method(parser)
    parser.add_argument("--device", default="auto", help="auto (CUDA if usable, else CPU), cpu, cuda or cuda:N")
    add_run_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import SynthesisRequest

    request = SynthesisRequest(
        task_id="ms-lesions", inputs=parse_inputs(args.input), output_dir=args.output, reference=args.reference,
        mask=args.mask, device=args.device, overwrite=args.overwrite, register=args.register,
        output_format=args.output_format, lesion_method=args.lesion_method)
    return run_with_progress(request, args.quiet)
