"""``mrisynthesis phantom``: write simulated subjects (every map and mask as NIfTI plus parameters.json)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import InputError

PATHOLOGY_CHOICES = ("ms", "stroke", "glioma", "none")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom", help="simulate digital brain phantoms with exact ground truth",
        description="Simulate N subjects from MR physics (tissue parameters first, images from the signal "
        "equations): quantitative maps t1, t2, pd, psr, adc, cbf, cbv, mtt, tmax, gd; weighted images mprage, "
        "t1w_se, t1ce, t2w, pdw, flair, dwi_b0, dwi_b1000, ct and the 4D ctp series; masks brain, wm, gm, "
        "deep_gm, csf, lesion (+ nawm/black_hole/enhancing for ms, core/penumbra for stroke, "
        "necrosis/enhancing/oedema for glioma). Each subject goes to OUT/sub-XXX/ as <map>.nii.gz, "
        "mask_<name>.nii.gz and parameters.json (every drawn value), all on one grid. The same seed gives "
        "byte-identical files.",
        epilog="Example: mrisynthesis phantom --n 4 --seed 0 --pathology ms --spacing 2 --out phantoms/ms",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=1, help="number of subjects")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the first subject; subject i uses "
                        "seed + i")
    parser.add_argument("--pathology", choices=PATHOLOGY_CHOICES, default="ms", help="lesions to insert")
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic voxel size in mm (0.5-8)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="output grid in voxels, centred on the brain (default: a 176x208x176 mm box)")
    parser.add_argument("--labels", default=None, help="FreeSurfer aseg label map (.nii.gz) or a folder of them "
                        "(one drawn per subject); default: built-in MNI152 2009 anatomy from nilearn")
    parser.add_argument("--field-strength", type=float, choices=(1.5, 3.0), default=None,
                        help="field strength in T (default: drawn per subject)")
    parser.add_argument("--maps", nargs="+", default=None, metavar="MAP",
                        help="write only these maps (default: all); quantitative maps are always written")
    parser.add_argument("--randomize-acquisition", action="store_true",
                        help="bias field, Rician noise, gamma, slice thickness, misregistration and intensity "
                        "scale on the weighted images (quantitative maps stay exact)")
    parser.add_argument("--out", required=True, help="output folder (subjects go to OUT/sub-XXX/)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing subject folders")
    parser.set_defaults(func=run)


def _check(args) -> list[Path]:
    if args.n < 1 or args.n > 100000:
        raise InputError(f"must be between 1 and 100000, got {args.n}", "--n")
    if args.seed < 0:
        raise InputError(f"must be >= 0, got {args.seed}", "--seed")
    if not 0.5 <= args.spacing <= 8.0:
        raise InputError(f"must be between 0.5 and 8 mm, got {args.spacing}", "--spacing")
    if args.labels is not None and not Path(args.labels).exists():
        raise InputError(f"not found: {args.labels}", "--labels")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder", "--out")
    folders = [out / f"sub-{args.seed + i:03d}" for i in range(args.n)]
    existing = [f for f in folders if f.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing[0]} already exists; pass --overwrite to replace it", "--out")
    return folders


def run(args) -> int:
    from ..phantom import generate_subject
    from ..phantom.anatomy import label_files
    from ..phantom.generator import validate_arguments

    folders = _check(args)
    if args.labels is not None:
        label_files(args.labels)  # fails early on an empty folder
    validate_arguments(args.seed, args.pathology, args.spacing, args.shape, args.maps)
    for index, folder in enumerate(folders):
        subject = generate_subject(args.seed + index, args.pathology, args.spacing, args.labels,
                                   args.randomize_acquisition, shape=args.shape, maps=args.maps,
                                   field_strength=args.field_strength)
        # Write next to the target, then swap, so an interrupted run never leaves a half-written subject.
        partial = folder.parent / f".partial-{folder.name}"
        shutil.rmtree(partial, ignore_errors=True)
        subject.write(partial)
        if folder.exists():
            shutil.rmtree(folder)
        partial.replace(folder)
        lesion_ml = float(subject.masks["lesion"].array.sum()) * args.spacing ** 3 / 1000.0
        print(f"{folder}: {args.pathology}, {subject.parameters['tissue']['field_strength_t']} T, "
              f"lesion {lesion_ml:.1f} ml, {len(subject.maps)} maps, {len(subject.masks)} masks")
    return 0
