"""Training data of the lesion segmenter: a cache of clean phantoms and the randomised crops drawn from it.

Each cached subject (``<cache>/<seed>.npz``) holds the clean T1-weighted images (MPRAGE and spin echo),
the FLAIR, the partial-volume fractions, the brain and the lesion mask at 1 mm, cropped to the brain. Crops are
drawn from a freshly randomised copy (``augment.randomise``) normalised exactly as at inference
(``preprocess.normalise`` over the whole brain), centred on a lesion voxel with probability ``lesion_fraction``.
Real backgrounds (``real_background.py``) are cached the same way plus an ``ignore`` mask (their own pathology):
normalisation and crop centres leave it out and the crop target marks it ``IGNORED``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..preprocess import normalise
from . import augment

T1_SOURCES = ("mprage", "t1w_se")  # a "t1w" input is either sequence
FRACTION_SCALE = 255.0


def cache_subject(folder: Path, seed: int, labels: str | os.PathLike | None, spacing: float = 1.0) -> Path:
    """Simulate one wide-lesion-load MS subject (seed ``seed``) and store it as ``<folder>/<seed>.npz``."""
    from ..phantom.generator import generate_subject

    path = folder / f"{seed}.npz"
    if path.is_file():
        return path
    subject = generate_subject(seed, "ms", spacing, labels=labels, maps=("mprage", "t1w_se", "flair"),
                               lesion_load="wide")
    brain = subject.masks["brain"].array > 0
    index = np.argwhere(brain)
    low = np.maximum(index.min(axis=0) - 4, 0)
    high = np.minimum(index.max(axis=0) + 5, brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    arrays = {name: subject.maps[name].array[box].astype(np.float32) for name in ("mprage", "t1w_se", "flair")}
    for name in augment.COMPARTMENTS:
        fraction = subject.fractions[name].array[box] if name in subject.fractions else np.zeros_like(brain[box], float)
        arrays[f"fraction_{name}"] = np.round(np.clip(fraction, 0, 1) * FRACTION_SCALE).astype(np.uint8)
    arrays["brain"] = brain[box].astype(np.uint8)
    arrays["lesion"] = subject.masks["lesion"].array[box].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{seed}.partial.npz"
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)
    return path


IGNORED = 2  # value of the crop target where the loss is skipped (a real background's own pathology)
# Real backgrounds (``real_background.py``) carry their own texture, regional brightness and rims, and their tissue
# fractions come from a 3-level split of the T1w: only mild per-tissue contrast is added, lesion levels as real ones,
# and the FLAIR's grey/white ratio is widened (a scan's own may be lower than other scanners': FLAIR_GREY_WHITE).
REAL_BACKGROUND_RANDOMISATION = {"lesion_contrast": None, "contrast_range": (0.93, 1.07), "texture_std": (0.0, 0.0),
                                 "regional_std": (0.0, 0.0), "rim_probability": 0.0,
                                 "flair_grey_white": augment.FLAIR_GREY_WHITE}


@dataclass
class CachedSubject:
    images: dict[str, np.ndarray]
    fractions: dict[str, np.ndarray]
    brain: np.ndarray
    lesion: np.ndarray
    ignore: np.ndarray | None = None  # voxels the loss skips (only real backgrounds have them)

    @classmethod
    def load(cls, path: Path) -> "CachedSubject":
        with np.load(path) as data:
            return cls({name: data[name] for name in (*T1_SOURCES, "flair")},
                       {name: data[f"fraction_{name}"].astype(np.float32) / FRACTION_SCALE
                        for name in augment.COMPARTMENTS},
                       data["brain"] > 0, data["lesion"] > 0, data["ignore"] > 0 if "ignore" in data else None)

    @property
    def is_real_background(self) -> bool:
        return self.ignore is not None

    def target(self) -> np.ndarray:
        """uint8 crop target: 1 lesion, 0 not, ``IGNORED`` where the loss is skipped."""
        target = self.lesion.astype(np.uint8)
        if self.ignore is not None:
            target[self.ignore] = IGNORED
        return target

    def sampling_brain(self) -> np.ndarray:
        """Brain voxels crops are centred on and normalisation is computed over (the ignored ones excluded)."""
        return self.brain if self.ignore is None else self.brain & ~self.ignore


def randomised_channels(subject: CachedSubject, inputs: tuple[str, ...], percentiles: tuple[float, float],
                        rng: np.random.Generator, drop_t1w: float = 0.0,
                        randomisation: dict | None = None) -> np.ndarray:
    """``(len(inputs), D, H, W)`` float32: one randomised acquisition, normalised as at inference.

    ``t1w`` is MPRAGE or spin echo at random; with probability ``drop_t1w`` it is a channel of zeros (FLAIR alone).
    ``randomisation``: keyword arguments of ``augment.randomise`` (its defaults when None).
    """
    sources = {"t1w": T1_SOURCES[int(rng.integers(len(T1_SOURCES)))], "flair": "flair"}
    if subject.is_real_background:
        randomisation = {**(randomisation or {}), **REAL_BACKGROUND_RANDOMISATION}
    images = augment.randomise({name: subject.images[sources[name]] for name in inputs}, subject.fractions,
                               subject.brain, rng, **(randomisation or {}))
    channels = []
    for name in inputs:
        if name == "t1w" and rng.random() < drop_t1w:
            channels.append(np.zeros(subject.brain.shape, np.float32))
        else:
            # Percentiles without a real background's own pathology, which stays visible in the same unit.
            channels.append(normalise(images[name], subject.brain, *percentiles, reference=subject.sampling_brain())[0])
    return np.stack(channels)


def random_crop(channels: np.ndarray, lesion: np.ndarray, brain: np.ndarray, size: int, rng: np.random.Generator,
                lesion_fraction: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``^3 crop (zero-padded where the volume is smaller) centred on a lesion (``lesion == 1``) or brain
    voxel, with a random left-right flip. Returns ``(channels, lesion)`` float32 (``lesion`` keeps its values, e.g.
    ``IGNORED``)."""
    lesion_voxels = lesion == 1
    pool = np.argwhere(lesion_voxels) if rng.random() < lesion_fraction and lesion_voxels.any() else None
    if pool is None:
        pool = np.argwhere(brain[::4, ::4, ::4]) * 4
    centre = pool[rng.integers(len(pool))] + rng.integers(-size // 4, size // 4 + 1, 3)
    start = centre - size // 2
    out_channels = np.zeros((channels.shape[0], size, size, size), np.float32)
    out_lesion = np.zeros((size, size, size), np.float32)
    source = tuple(slice(max(int(s), 0), min(int(s) + size, n)) for s, n in zip(start, lesion.shape))
    target = tuple(slice(a.start - int(s), a.stop - int(s)) for a, s in zip(source, start))
    out_channels[(slice(None), *target)] = channels[(slice(None), *source)]
    out_lesion[target] = lesion[source]
    if rng.random() < 0.5:
        out_channels, out_lesion = out_channels[..., ::-1].copy(), out_lesion[..., ::-1].copy()
    return out_channels, out_lesion
