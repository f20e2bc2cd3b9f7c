"""Missing-contrast task (issue 12): a small UNet trained on domain-randomised phantoms, scored zero-shot on the
real validation cases against the floor of ``missing_contrast_floor.py`` ("a small UNet first").

Training data: ``--train`` phantom subjects at 2 mm (healthy, MS, glioma, stroke in turn; T1w = MPRAGE or spin
echo). Each step draws a random non-empty subset of {t1w, t1ce, t2w, flair} as present; every present contrast
gets its own randomised acquisition (``segmentation.augment.randomise``: per-tissue contrast in
``--contrast LOW HIGH``, blur or thick slices, bias, Rician noise, gamma) and is divided by its brain median.
Network input: the four contrasts (0 where absent) and four availability channels; output: the four clean
contrasts (brain median = 1, the subject's own protocol). Loss: L1 in the brain on the absent contrasts.

Scores, 3 -> 1 for each target: held-out phantoms (seeds from 10000, clean inputs, the project's percentile PSNR
in the brain) and the real cases at 1 mm (inputs downsampled to 2 mm, the prediction resampled back,
``metrics.calibrated_psnr``).

Usage: ``python benchmarks/missing_contrast_unet.py [--train 24] [--minutes 25] [--contrast 0.7 1.4]
[--real ../shared/data/real]``; writes ``benchmarks/results/missing_contrast_unet.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from missing_contrast_floor import CASES, DEFAULT_REAL, median_normalised

RESULTS = Path(__file__).resolve().parent / "results" / "missing_contrast_unet.json"
CONTRASTS = ("t1w", "t1ce", "t2w", "flair")
SOURCES = {"t1ce": "t1ce", "t2w": "t2w", "flair": "flair"}  # t1w: MPRAGE or spin echo, drawn per step
CROP = 64


def simulate(seed: int) -> dict:
    from MRISynthesisLib.phantom.generator import generate_subject

    pathology = ("none", "ms", "glioma", "stroke")[seed % 4]
    subject = generate_subject(seed, pathology, 2.0, maps=("mprage", "t1w_se", "t1ce", "t2w", "flair"))
    brain = subject.masks["brain"].array > 0
    return {"images": {n: subject.maps[n].array.astype(np.float32) for n in ("mprage", "t1w_se", *SOURCES)},
            "fractions": {n: v.array.astype(np.float32) for n, v in subject.fractions.items()}, "brain": brain}


def clean_images(subject: dict, t1_source: str) -> dict[str, np.ndarray]:
    sources = {"t1w": t1_source, **SOURCES}
    return {c: median_normalised(subject["images"][sources[c]], subject["brain"]) for c in CONTRASTS}


def network_input(images: dict[str, np.ndarray], present: list[str]) -> np.ndarray:
    """``(8, D, H, W)``: the four contrasts (0 where absent) then their availability."""
    shape = next(iter(images.values())).shape
    channels = [images[c] if c in present else np.zeros(shape, np.float32) for c in CONTRASTS]
    flags = [np.full(shape, float(c in present), np.float32) for c in CONTRASTS]
    return np.stack(channels + flags).astype(np.float32)


def training_pair(subject: dict, rng: np.random.Generator, contrast: tuple[float, float]):
    from MRISynthesisLib.segmentation import augment

    t1_source = ("mprage", "t1w_se")[int(rng.integers(2))]
    present = [c for c in CONTRASTS if rng.random() < 0.5] or [CONTRASTS[int(rng.integers(4))]]
    if len(present) == 4:
        present.pop(int(rng.integers(4)))
    sources = {"t1w": t1_source, **SOURCES}
    randomised = augment.randomise({c: subject["images"][sources[c]] for c in present}, subject["fractions"],
                                   subject["brain"], rng, contrast_range=contrast)
    inputs = network_input({c: median_normalised(a, subject["brain"]) for c, a in randomised.items()}, present)
    target = np.stack([clean_images(subject, t1_source)[c] for c in CONTRASTS])
    weight = np.stack([np.full(subject["brain"].shape, float(c not in present), np.float32) for c in CONTRASTS])
    return inputs, target, weight * subject["brain"][None]


def crop(arrays: list[np.ndarray], brain: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    voxels = np.argwhere(brain)
    centre = voxels[rng.integers(len(voxels))]
    start = np.clip(centre - CROP // 2, 0, np.maximum(np.array(brain.shape) - CROP, 0))
    box = (slice(None), *(slice(int(s), int(s) + CROP) for s in start))
    flip = rng.random() < 0.5
    return [np.ascontiguousarray(a[box][..., ::-1] if flip else a[box]) for a in arrays]


def train(subjects: list[dict], minutes: float, contrast: tuple[float, float], seed: int = 0):
    import torch

    from MRISynthesisLib.evaluation.baselines import build_unet_regressor, train_for_minutes

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = build_unet_regressor(8, 4, (12, 24, 48, 96, 192))

    def next_batch():
        batch = [crop(list(training_pair(s, rng, contrast)), s["brain"], rng)
                 for s in (subjects[int(rng.integers(len(subjects)))] for _ in range(2))]
        return tuple(torch.from_numpy(np.stack(parts)) for parts in zip(*batch))

    return network, train_for_minutes(network, next_batch, minutes, 1e-3, log_every=200)


def predict(network, inputs: np.ndarray) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        return sliding_window_inference(torch.from_numpy(inputs)[None], (CROP,) * 3, 1, network, overlap=0.25,
                                        mode="gaussian")[0].numpy()


def score_phantoms(network, seeds: list[int]) -> list[dict]:
    from MRISynthesisLib.metrics import percentile_psnr

    rows = []
    for seed in seeds:
        subject = simulate(seed)
        images = clean_images(subject, "mprage")
        for index, target in enumerate(CONTRASTS):
            output = predict(network, network_input(images, [c for c in CONTRASTS if c != target]))[index]
            rows.append({"seed": seed, "target": target,
                         "psnr": percentile_psnr(output, images[target], subject["brain"])})
    return rows


def score_real(network, real: Path) -> list[dict]:
    from scipy import ndimage

    from MRISynthesisLib.metrics import calibrated_psnr
    from MRISynthesisLib.resample import resample_to
    from MRISynthesisLib.volume import Volume, read_volume

    rows = []
    for case, stems in CASES.items():
        if not (real / case).is_dir():
            continue
        volumes = {c: read_volume(real / case / f"{stem}.nii.gz") for c, stem in stems.items()}
        reference = volumes["t1w"]
        size = np.ceil(np.array(reference.array.shape) / 2 / 16).astype(int) * 16  # 2 mm grid, multiple of 16
        coarse = Volume(np.zeros(size, np.float32), reference.origin, tuple(2.0 * s for s in reference.spacing),
                        reference.direction)
        small = {c: resample_to(v.with_array(ndimage.gaussian_filter(v.array.astype(np.float32), 0.85)), coarse)
                 for c, v in volumes.items()}
        for index, target in enumerate(CONTRASTS):
            present = [c for c in CONTRASTS if c != target]
            images = {c: median_normalised(small[c].array, small[c].array > 0) for c in present}
            output = coarse.with_array(predict(network, network_input(images, present))[index])
            truth = volumes[target].array.astype(np.float64)
            full = resample_to(output, volumes[target]).array
            rows.append({"case": case, "target": target, "psnr": calibrated_psnr(full, truth, truth > 0)})
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--contrast", type=float, nargs=2, default=[0.7, 1.4], metavar=("LOW", "HIGH"))
    parser.add_argument("--heldout", type=int, default=4)
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    subjects = [simulate(seed) for seed in range(args.train)]
    network, record = train(subjects, args.minutes, tuple(args.contrast))
    phantom_rows = score_phantoms(network, list(range(10_000, 10_000 + args.heldout)))
    real_rows = score_real(network, args.real)
    result = {"train_subjects": args.train, "contrast_range": args.contrast, "training": record,
              "phantom_3_to_1": phantom_rows, "real_3_to_1": real_rows,
              "phantom_mean_db": float(np.mean([r["psnr"] for r in phantom_rows])),
              "real_mean_db": float(np.mean([r["psnr"] for r in real_rows])) if real_rows else None}
    for row in real_rows:
        print(f"{row['case']:<18}{row['target']:<8}{row['psnr']:>8.2f}")
    print(f"phantom 3->1 mean {result['phantom_mean_db']:.2f} dB; real 3->1 mean {result['real_mean_db']} dB; "
          f"{record['steps']} steps in {record['minutes']} min")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
