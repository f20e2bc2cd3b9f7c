"""Train the MS lesion segmenter on domain-randomised phantoms and write it as a model folder.

Reproducible command (the one recorded in the shipped card)::

    python -m MRISynthesisLib.segmentation.train --labels ../shared/data/labels --run /tmp/runs/lesion-segmenter \\
        --out /tmp/runs/ms-lesion-segmenter --steps 4500 --minutes 80 --real-case ../shared/data/real/ms-patient07

(then copy the model folder into ``MRISynthesisLib/model_store/bundled/``).

Data: ``--subjects`` wide-lesion-load MS phantoms at 1 mm (seeds from ``--first-seed``; anatomy from the label
maps of ``--labels``, every 4th subject the MNI template), cached under ``<run>/cache``; every volume is
randomised afresh (``augment.randomise``; ``--randomisation real-like`` for ``augment.REAL_LIKE``) and cut into
crops centred on lesions 70 % of the time; ``--real-background DIR`` adds real scans without MS with inserted
lesions (``real_background.py``, ``--real-share`` of the volumes); ``--init-from ID`` starts from an installed
segmenter. Loss: Dice + binary cross-entropy (skipping a real background's own pathology). AdamW with cosine
decay, EMA weights exported (float16). The run is resumable: run the same command again to continue from
``<run>/checkpoint`` (``--steps`` can be raised to train longer).
Held-out phantoms (seeds from ``HELDOUT_FIRST_SEED``) are scored on fixed crops during training
(``<run>/log.jsonl``) and as whole volumes at export (``evaluate.py``), with the rule's numbers beside.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import augment
from .architecture import STEM, SegmenterArchitecture
from .data import IGNORED, CachedSubject, cache_subject, random_crop, randomised_channels

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "model_store" / "bundled" / "ms-lesion-segmenter"
COMMAND_PREFIX = "python -m MRISynthesisLib.segmentation.train "
TRAIN_FIRST_SEED = 40_000
HELDOUT_FIRST_SEED = 50_000
RANDOMISATIONS = {"physics": {}, "real-like": augment.REAL_LIKE,
                  "real-like-t1": {**augment.REAL_LIKE, "t1_grey_white": augment.T1_GREY_WHITE}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m MRISynthesisLib.segmentation.train", description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=Path, default=None, help="folder of FreeSurfer aseg label maps "
                        "(../shared/data/labels); without it every subject uses the MNI template")
    parser.add_argument("--run", type=Path, required=True, help="run folder: subject cache, checkpoint, log")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write (its name = model id)")
    parser.add_argument("--subjects", type=int, default=48, help="training phantoms")
    parser.add_argument("--heldout", type=int, default=6, help="held-out phantoms scored at export")
    parser.add_argument("--first-seed", type=int, default=TRAIN_FIRST_SEED, help="seed of the first training phantom")
    parser.add_argument("--crop", type=int, default=64, help="crop edge in voxels (a multiple of 8)")
    parser.add_argument("--batch", type=int, default=4, help="crops per step")
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps (the cosine schedule's length)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--drop-t1w", type=float, default=0.25, help="probability that a crop has no T1w channel")
    parser.add_argument("--randomisation", choices=tuple(RANDOMISATIONS), default="physics",
                        help="physics: lesions as conspicuous as the phantom's physics makes them or more (0.1.0); "
                        "real-like: lesions at real lesions' contrast to grey and white matter, with tissue texture, "
                        "regional grey matter brightness and periventricular rims (augment.REAL_LIKE); "
                        "real-like-t1: the same with the T1w's grey/white ratio kept in augment.T1_GREY_WHITE")
    parser.add_argument("--lesion-contrast", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="range of the lesions' contrast factor relative to white matter's, instead of the "
                        "setting's (physics: 1.0 1.3; below 1: subtler than the physics)")
    parser.add_argument("--real-background", type=Path, nargs="*", default=[], metavar="DIR",
                        help="real scans without MS (T1w + FLAIR NIfTI in each folder, e.g. "
                        "../shared/data/real/brats-gli-00001) that get inserted lesions and join the training "
                        "subjects (real_background.py); their own FLAIR-bright pathology is ignored")
    parser.add_argument("--real-names", nargs=2, default=("t1w", "flair"), metavar=("T1W", "FLAIR"),
                        help="file names (without .nii.gz) of the T1w and FLAIR in --real-background folders")
    parser.add_argument("--real-variants", type=int, default=16, help="lesion sets drawn per real background")
    parser.add_argument("--real-share", type=float, default=0.5, help="share of training volumes drawn from the "
                        "real backgrounds (when there are any)")
    parser.add_argument("--init-from", metavar="ID", default=None, help="installed segmenter (e.g. "
                        "ms-lesion-segmenter) whose weights start a new run (ignored when resuming)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the crop sampler")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training process")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing randomised crops")
    parser.add_argument("--minutes", type=float, default=90.0, help="stop (and export) after this wall time")
    parser.add_argument("--export-only", action="store_true", help="export the checkpoint without training")
    parser.add_argument("--version", default="0.1.0", help="model version written in the card")
    parser.add_argument("--real-case", type=Path, default=None, help="evaluation only: a folder with t1w, flair "
                        "and lesions NIfTI files (e.g. ../shared/data/real/ms-patient07) scored at export")
    return parser


def randomisation_of(args) -> dict:
    """Keyword arguments of ``augment.randomise`` for the training crops."""
    randomisation = dict(RANDOMISATIONS[args.randomisation])
    if args.lesion_contrast:
        randomisation["lesion_contrast"] = tuple(args.lesion_contrast)
    return randomisation


def randomisation_text(args) -> str:
    """How the card describes the training randomisation."""
    randomisation = {"lesion_contrast": augment.LESION_CONTRAST_RANGE, **randomisation_of(args)}
    if randomisation["lesion_contrast"] is None:
        lesions = ("lesions {:g}-{:g}x white matter on FLAIR, {:g}-{:g} of the way from grey to white matter on T1w"
                   .format(*augment.LESION_FLAIR_RATIO, *augment.LESION_T1_POSITION))
    else:
        lesions = "lesions x{:g}-{:g} of white matter's factor".format(*randomisation["lesion_contrast"])
    extras = ", regional grey matter brightness, tissue texture, periventricular rims" if randomisation.get(
        "rim_probability") else ""
    if randomisation.get("t1_grey_white"):
        extras += ", T1w grey/white {:g}-{:g}".format(*randomisation["t1_grey_white"])
    return (f"contrast per tissue ({lesions}){extras}, resolution, bias, noise and gamma per volume "
            f"(--randomisation {args.randomisation})")


def real_background_text(args) -> str:
    """How the card describes the real backgrounds (empty without them)."""
    if not args.real_background:
        return ""
    cases = ", ".join(case.name for case in args.real_background)
    return (f"; plus {args.real_variants} lesion sets inserted into each real scan without MS ({cases}; its own "
            f"FLAIR-bright pathology ignored by the loss), lesion levels as real lesions', {args.real_share:.0%} of "
            "the training volumes")


def subject_seeds(first: int, count: int) -> list[int]:
    return list(range(first, first + count))


def labels_for(seed: int, labels: Path | None) -> Path | None:
    """Every 4th subject uses the MNI template so both anatomy sources are seen."""
    return None if labels is None or seed % 4 == 3 else labels


def build_cache(folder: Path, seeds: list[int], labels: Path | None, workers: int) -> list[Path]:
    from multiprocessing import get_context

    jobs = [(folder, seed, labels_for(seed, labels)) for seed in seeds]
    if workers <= 1:
        return [cache_subject(*job) for job in jobs]
    with get_context("fork").Pool(workers) as pool:
        return pool.starmap(cache_subject, jobs)


class CropStream(torch.utils.data.IterableDataset):
    """Endless ``(channels (B, C, S, S, S), lesion (B, 1, S, S, S))`` float32 batches; a fresh randomised
    acquisition of a random training subject every 4 batches (a real background with probability ``real_share``
    when there are any), crops centred on lesions 70 % of the time."""

    def __init__(self, paths, architecture: SegmenterArchitecture, crop: int, batch: int, drop_t1w: float, seed,
                 randomisation: dict | None = None, real_share: float = 0.5):
        self.paths, self.architecture, self.crop, self.batch = paths, architecture, crop, batch
        self.drop_t1w, self.seed, self.randomisation, self.real_share = drop_t1w, seed, randomisation, real_share

    def __iter__(self):
        torch.set_num_threads(1)
        rng = np.random.default_rng(self.seed)
        subjects = [CachedSubject.load(path) for path in self.paths]  # loaded in the worker process only
        real = [subject for subject in subjects if subject.is_real_background]
        phantoms = [subject for subject in subjects if not subject.is_real_background]
        while True:
            pool = real if real and (not phantoms or rng.random() < self.real_share) else phantoms
            subject = pool[int(rng.integers(len(pool)))]
            channels = randomised_channels(subject, self.architecture.inputs, self.architecture.percentiles, rng,
                                           self.drop_t1w, self.randomisation)
            target, centres = subject.target(), subject.sampling_brain()
            for _ in range(4):
                crops = [random_crop(channels, target, centres, self.crop, rng, 0.7) for _ in range(self.batch)]
                yield (torch.from_numpy(np.stack([c for c, _ in crops])),
                       torch.from_numpy(np.stack([m for _, m in crops]))[:, None])


def fixed_heldout_crops(paths, architecture, crop: int, count: int = 16, randomisation: dict | None = None):
    """Crops of held-out phantoms with a fixed randomisation in the run's own setting (``randomisation``: keyword
    arguments of ``augment.randomise``, its defaults when None): the held-out curve of ``log.jsonl``."""
    rng = np.random.default_rng(12345)
    crops = []
    for path in paths:
        subject = CachedSubject.load(path)
        channels = randomised_channels(subject, architecture.inputs, architecture.percentiles, rng,
                                       randomisation=randomisation)
        crops += [random_crop(channels, subject.lesion, subject.brain, crop, rng) for _ in range(count // len(paths))]
    return crops


def ignore_in_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, target)`` with the ``IGNORED`` voxels (a real background's own pathology) set to a confident
    "no lesion" in both: they add no error to Dice + cross-entropy and pass no gradient back."""
    ignored = target == IGNORED
    return logits.masked_fill(ignored, -30.0), target.masked_fill(ignored, 0.0)


def heldout_dice(network, crops) -> float:
    from .scores import dice

    network.eval()
    predicted, truth = [], []
    with torch.no_grad():
        for channels, lesion in crops:
            predicted.append(network(torch.from_numpy(channels)[None])[0, 0].numpy() > 0)
            truth.append(lesion > 0)
    network.train()
    return dice(np.stack(predicted), np.stack(truth))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from monai.losses import DiceCELoss

    from ..training.checkpoint import EMA, load_checkpoint, save_checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.monotonic()
    args.run.mkdir(parents=True, exist_ok=True)
    with (args.run / "commands.txt").open("a", encoding="utf-8") as history:  # a resumed run keeps every command
        history.write(COMMAND_PREFIX + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")
    architecture = SegmenterArchitecture(roi=max(args.crop, 96))  # inference windows can be larger than crops
    cache = args.run / "cache"
    train_seeds = subject_seeds(args.first_seed, args.subjects)
    heldout_seeds = subject_seeds(HELDOUT_FIRST_SEED, args.heldout)
    print(f"caching {len(train_seeds)} + {len(heldout_seeds)} phantoms in {cache}", flush=True)
    train_paths = build_cache(cache, train_seeds, args.labels, max(args.workers, 2))
    heldout_paths = build_cache(cache, heldout_seeds, args.labels, max(args.workers, 2))
    if args.real_background:
        from .real_background import cache_real_backgrounds

        for case in args.real_background:
            train_paths += cache_real_backgrounds(cache, case, args.real_variants, args.seed, *args.real_names)
    print(f"cache ready after {time.monotonic() - started:.0f} s", flush=True)

    network = architecture.build()
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    ema = EMA({STEM: network}, decay=0.995)
    checkpoint_dir = args.run / "checkpoint"
    state = load_checkpoint(checkpoint_dir, {STEM: network}, optimizer, ema)
    if state is None and args.init_from:
        from ..model_store.registry import ModelRegistry

        weights = ModelRegistry().load_state_dicts(args.init_from)[STEM]  # sha256 verified
        network.load_state_dict({key: value.float() for key, value in weights.items()}, strict=True)
        ema = EMA({STEM: network}, decay=0.995)
        print(f"started from the weights of {args.init_from}", flush=True)
    state = state or {"step": 0, "seconds": 0.0}
    step, trained_seconds = int(state["step"]), float(state["seconds"])
    if step:
        print(f"resumed at step {step} ({trained_seconds / 60:.1f} training minutes)", flush=True)
    loss_function = DiceCELoss(sigmoid=True, batch=True)
    randomisation = randomisation_of(args)  # the training crops' setting, and the held-out curve's
    heldout_crops = fixed_heldout_crops(heldout_paths[:4], architecture, args.crop, randomisation=randomisation)
    log = (args.run / "log.jsonl").open("a", encoding="utf-8")
    if not args.export_only and step < args.steps:
        stream = CropStream(train_paths, architecture, args.crop, args.batch, args.drop_t1w, [args.seed, step],
                            randomisation, args.real_share)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                             prefetch_factor=4 if args.workers else None)
        session_start = time.monotonic()
        network.train()
        recent_losses = []
        for channels, lesion in loader:
            learning_rate = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0))))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            loss = loss_function(*ignore_in_loss(network(channels), lesion))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(step)
            step += 1
            recent_losses.append(float(loss.detach()))
            elapsed = time.monotonic() - session_start
            out_of_time = time.monotonic() - started > args.minutes * 60
            if step % 250 == 0 or step >= args.steps or out_of_time:
                backup = {key: p.detach().clone() for key, p in ema.parameters.items()}
                ema.copy_to_parameters()
                score = heldout_dice(network, heldout_crops)
                with torch.no_grad():
                    for key, parameter in ema.parameters.items():
                        parameter.copy_(backup[key])
                save_checkpoint(checkpoint_dir, {STEM: network}, optimizer, ema,
                                {"step": step, "seconds": trained_seconds + elapsed})
                entry = {"step": step, "loss": round(float(np.mean(recent_losses)), 4), "heldout_crop_dice": round(score, 4),
                         "lr": learning_rate, "training_minutes": round((trained_seconds + elapsed) / 60, 1)}
                recent_losses = []
                log.write(json.dumps(entry) + "\n")
                log.flush()
                print(entry, flush=True)
            if step >= args.steps or out_of_time:
                break
        trained_seconds += time.monotonic() - session_start
    log.close()
    ema.copy_to_parameters()
    export(args, architecture, network, step, trained_seconds, train_seeds, heldout_paths)
    return 0


def export(args, architecture: SegmenterArchitecture, network, steps: int, seconds: float, train_seeds: list[int],
           heldout_paths: list[Path]) -> None:
    """Write the model folder (float16 weights) with held-out (and, if given, real-case) metrics on its card."""
    from ..model_store.export import write_model
    from .evaluate import evaluate_cached_phantoms, evaluate_real_case
    from .segmenter import LesionSegmenter

    # Score what users get: the float16 weights that are written, computed in float32.
    state = {key: value.detach().half() for key, value in network.state_dict().items()}
    network.load_state_dict({key: value.float() for key, value in state.items()})
    network.eval()
    segmenter = LesionSegmenter(network, architecture, (1.0, 1.0, 1.0), args.out.name, args.version)
    metrics = {"heldout_phantoms": evaluate_cached_phantoms(segmenter, heldout_paths)["mean"]}
    if args.real_case is not None:
        metrics["real_case"] = evaluate_real_case(segmenter, args.real_case)
    parameters = sum(p.numel() for p in network.parameters())
    history = args.run / "commands.txt"
    command = " && ".join(line for line in history.read_text().splitlines() if line) if history.is_file() else ""
    card = {
        "id": args.out.name, "version": args.version, "task": "ms-lesions", "title": "MS lesion segmenter (T1w + FLAIR)",
        "description": "MONAI UNet trained on domain-randomised phantoms (SynthSeg-style): white-matter lesions from "
                       "FLAIR with or without a T1-weighted image. Research use only.",
        "inputs": list(architecture.inputs), "outputs": ["lesion"], "spacing": [1.0, 1.0, 1.0],
        "multiple": architecture.multiple,
        "normalisation": {"inputs": {"method": "percentile", "low": architecture.percentiles[0],
                                     "high": architecture.percentiles[1]},
                          "outputs": {"lesion": {"scale": 1.0, "offset": 0.0}}},
        "architecture": {**architecture.to_dict(), "parameters": parameters},
        "licence": "Apache-2.0",
        "training": {"data": f"{len(train_seeds)} MS phantoms (wide lesion load) at 1 mm, anatomy from "
                             f"{'the label maps of ' + str(args.labels) if args.labels else 'MNI'} and MNI, randomised "
                             + randomisation_text(args) + real_background_text(args),
                     "command": command, "steps": steps, "duration_s": round(seconds, 1),
                     "hardware": f"{platform.machine()}, {args.threads} CPU thread(s) + {args.workers} data worker(s)",
                     "seeds": [train_seeds[0], train_seeds[-1]], "heldout_seeds": [HELDOUT_FIRST_SEED,
                                                                                  HELDOUT_FIRST_SEED + len(heldout_paths) - 1]},
        "metrics": metrics,
    }
    write_model(args.out, card, {STEM: state})
    print(json.dumps(metrics, indent=1), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
