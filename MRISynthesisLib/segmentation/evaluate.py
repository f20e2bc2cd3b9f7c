"""Score lesion overlays — the trained segmenter (T1w + FLAIR, FLAIR alone) and the task's rule — on held-out
phantoms and on a real case with an expert mask. Used at export (numbers on the card) and by
``benchmarks/lesion_segmentation.py`` (the README table)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..lesions import make_overlay, voxel_ml
from ..preprocess import compute_brain_mask
from ..tasks import get_task
from ..volume import Volume, read_volume
from . import augment
from .data import CachedSubject
from .scores import score_segmentation

RULE_TASK = "myelin-psr"  # the MS lesion rule the segmenter replaces
METHODS = ("segmenter", "segmenter_flair_only", "rule")


def overlays(segmenter, inputs: dict[str, Volume], brain: Volume) -> dict[str, tuple[np.ndarray, float]]:
    """``{method: (binary mask, seconds)}`` for every method of ``METHODS``, made as the pipeline makes them
    (``lesions.make_overlay``)."""
    rule = get_task(RULE_TASK).lesion_rule
    results = {}
    for method in METHODS:
        started = time.perf_counter()
        given = inputs if method == "segmenter" else {"flair": inputs["flair"]}
        labels, _ = make_overlay(rule, given, {}, brain, None if method == "rule" else segmenter)
        results[method] = (labels.array > 0, time.perf_counter() - started)
    return results


def _mean(rows: list[dict]) -> dict:
    keys = [key for key, value in rows[0].items() if isinstance(value, (int, float))]
    return {key: round(float(np.mean([row[key] for row in rows])), 4) for key in keys}


def evaluate_cached_phantoms(segmenter, paths: list[Path], seed: int = 777,
                             randomisation: dict | None = None) -> dict:
    """Whole-volume scores on cached held-out phantoms, each with one fixed randomised acquisition (MPRAGE as T1w).

    ``randomisation``: keyword arguments of ``augment.randomise``; default its defaults (lesions as conspicuous as
    the physics makes them, as 0.1.0 was trained and first scored); ``augment.REAL_LIKE``: lesions at real
    lesions' contrast, texture, regional grey matter, rims.
    Returns ``{"subjects": [...], "mean": {method: {score: value}}}``."""
    rows = {method: [] for method in METHODS}
    subjects = []
    for index, path in enumerate(paths):
        subject = CachedSubject.load(Path(path))
        rng = np.random.default_rng([seed, index])
        images = augment.randomise({"t1w": subject.images["mprage"], "flair": subject.images["flair"]},
                                   subject.fractions, subject.brain, rng, **(randomisation or {}))
        geometry = {"origin": (0.0, 0.0, 0.0), "spacing": (1.0, 1.0, 1.0)}
        inputs = {name: Volume(array, **geometry) for name, array in images.items()}
        brain = Volume(subject.brain.astype(np.uint8), **geometry)
        entry = {"subject": Path(path).stem}
        for method, (mask, seconds) in overlays(segmenter, inputs, brain).items():
            score = {**score_segmentation(mask, subject.lesion, 0.001), "seconds": seconds}
            rows[method].append(score)
            entry[method] = {key: round(value, 4) if isinstance(value, float) else value for key, value in score.items()}
        subjects.append(entry)
    return {"subjects": subjects, "mean": {method: _mean(rows[method]) for method in METHODS}}


def evaluate_real_case(segmenter, folder: str | Path) -> dict:
    """Scores on a real case folder holding ``t1w``, ``flair`` and an expert ``lesions`` mask (NIfTI)."""
    folder = Path(folder)
    inputs = {name: read_volume(folder / f"{name}.nii.gz", name) for name in ("t1w", "flair")}
    truth = read_volume(folder / "lesions.nii.gz", "lesions").array > 0
    brain = compute_brain_mask(list(inputs.values()))
    result = {"case": folder.name}
    for method, (mask, seconds) in overlays(segmenter, inputs, brain).items():
        score = score_segmentation(mask, truth, voxel_ml(inputs["flair"]))
        result[method] = {key: round(value, 4) if isinstance(value, float) else value
                          for key, value in {**score, "seconds": seconds}.items()}
    return result
