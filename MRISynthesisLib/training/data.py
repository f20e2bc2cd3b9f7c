"""Training data: subjects (phantom or folders) -> network-ready tensors, exactly as at inference.

Each subject goes through ``preprocess.prepare`` (the pipeline's own forward step: canonical grid at the
model spacing around the brain, padded to the model multiple, per-contrast percentile normalisation,
0 outside the brain); the target maps are resampled onto that grid and scaled by the card's output scale.
Training then draws random brain-centred crops (with left-right flips) from a pool of such subjects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..preprocess import input_channel_count, prepare
from ..resample import resample_to
from ..volume import Volume, read_volume

TISSUE_CLASSES = ("wm", "gm", "deep_gm", "csf", "lesion")
HELDOUT_FIRST_SEED = 10_000  # phantom seeds from here on are held out: never used for training
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True)
class TaskData:
    """Where a task's training pairs come from.

    Args:
        inputs: per model input (channel order), the phantom maps it may be drawn from (one at random).
        targets: per model output, ``(phantom map, scale)`` with normalised = physical / scale; the scale
            ``BRAIN_MEDIAN`` divides by the map's median in the brain (images in arbitrary units, like DWI).
        pathologies: phantom pathologies to draw from.
        input_method: how inputs become channels (``preprocess.INPUT_METHODS``, the card's input method).
    """

    inputs: dict[str, tuple[str, ...]]
    targets: dict[str, tuple[str, float | str]]
    pathologies: tuple[str, ...] = ("none",)
    input_method: str = "percentile"

    @property
    def input_channels(self) -> int:
        """Network input channels (a perfusion series gives ``perfusion.MODEL_FRAMES``)."""
        return len(self.inputs) * input_channel_count(self.input_method)


BRAIN_MEDIAN = "brain-median"


def output_scale(scale: float | str) -> float:
    """The card's output scale (physical = normalised * scale) of a recipe target scale: a brain-median
    target is already in its output unit (relative to normal brain)."""
    return 1.0 if scale == BRAIN_MEDIAN else float(scale)
TASK_DATA = {
    "myelin-psr": TaskData(inputs={"t1w": ("mprage", "t1w_se"), "flair": ("flair",)},
                           targets={"psr": ("psr", 0.25)}, pathologies=("ms", "none")),
    # DWI has no physical unit (scanner gain): the model's DWI is relative to normal brain (median 1).
    "stroke-dwi-adc": TaskData(inputs={"ctp": ("ctp",)},
                               targets={"dwi": ("dwi_b1000", BRAIN_MEDIAN), "adc": ("adc", 1.0)},
                               pathologies=("stroke",), input_method="ctp-channels"),
}


def task_data(task_id: str) -> TaskData:
    if task_id not in TASK_DATA:
        raise InputError(f"no training recipe for task {task_id!r} (have {', '.join(TASK_DATA)})", name="--task")
    return TASK_DATA[task_id]


@dataclass
class Sample:
    """One subject or crop on the model grid. Shapes: ``inputs (C_in, D, H, W)``, ``target (C_out, D, H, W)``,
    ``brain (1, D, H, W)``, ``lesion (1, D, H, W)``, ``tissues (len(TISSUE_CLASSES), D, H, W)``; float32."""

    inputs: np.ndarray
    target: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray
    tissues: np.ndarray
    info: dict = field(default_factory=dict)


def make_sample(maps: dict[str, Volume], masks: dict[str, Volume], recipe: TaskData, spacing: float,
                multiple: int, rng: np.random.Generator, percentiles=(1.0, 99.0)) -> Sample:
    """Prepare one subject (``maps``/``masks`` keyed by phantom names, all on one grid) like the pipeline does."""
    chosen = {name: sources[int(rng.integers(len(sources)))] for name, sources in recipe.inputs.items()}
    missing = [s for s in chosen.values() if s not in maps] + [s for s, _ in recipe.targets.values() if s not in maps]
    if missing or "brain" not in masks:
        raise InputError(f"subject lacks {', '.join(missing or ['the brain mask'])}", name="--data")
    brain = masks["brain"]
    prepared = prepare({name: maps[source] for name, source in chosen.items()}, brain,
                       (spacing, spacing, spacing), multiple, percentiles, method=recipe.input_method)
    inside = prepared.mask > 0
    targets = []
    for source, scale in recipe.targets.values():
        on_grid = resample_to(maps[source], prepared.grid, "linear").array.astype(np.float32)
        if scale == BRAIN_MEDIAN:
            scale = max(float(np.median(on_grid[inside])), 1e-6)
        targets.append(np.where(inside, on_grid / scale, 0).astype(np.float32))

    def mask_on_grid(name: str) -> np.ndarray:
        if name not in masks:
            return np.zeros(prepared.mask.shape, np.float32)
        return (resample_to(masks[name], prepared.grid, "nearest").array > 0).astype(np.float32) * inside

    return Sample(prepared.inputs.astype(np.float32), np.stack(targets), inside[None].astype(np.float32),
                  mask_on_grid("lesion")[None], np.stack([mask_on_grid(n) for n in TISSUE_CLASSES]),
                  {"inputs": chosen})


def random_crop(sample: Sample, size: tuple[int, int, int], rng: np.random.Generator, flip: bool = True) -> Sample:
    """A ``size`` crop whose centre is a random brain voxel (zero-padded where the grid is smaller)."""
    arrays = [sample.inputs, sample.target, sample.brain, sample.lesion, sample.tissues]
    shape = np.array(sample.brain.shape[1:])
    size_array = np.array(size)
    brain_voxels = np.argwhere(sample.brain[0] > 0)
    centre = brain_voxels[rng.integers(len(brain_voxels))] if len(brain_voxels) else shape // 2
    start = np.clip(centre - size_array // 2, 0, np.maximum(shape - size_array, 0))
    cropped = []
    for array in arrays:
        piece = array[:, start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
        pad = [(0, 0)] + [(0, int(s - p)) for s, p in zip(size, piece.shape[1:])]
        piece = np.pad(piece, pad)
        if flip and rng.random() < 0.5:
            piece = piece[..., ::-1]  # left-right (canonical RAS grid: last axis is x)
        cropped.append(np.ascontiguousarray(piece, dtype=np.float32))
    return Sample(*cropped, info=sample.info)


def collate(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Stack crops into a batch dict of ``(B, ...)`` tensors."""
    return {key: torch.from_numpy(np.stack([getattr(s, key) for s in samples]))
            for key in ("inputs", "target", "brain", "lesion", "tissues")}


def clean_acquisition(seed: int) -> bool:
    """Every fourth training subject is simulated without acquisition randomisation, so a model learns both the
    clean and the randomised regime (evaluation scores both)."""
    return int(seed) % 4 == 3


def phantom_subjects(recipe: TaskData, seeds, spacing: float, multiple: int,
                     randomize_acquisition: bool | None = True) -> list[Sample]:
    """Generate and prepare one phantom subject per seed (pathology cycles through the recipe's list).

    ``randomize_acquisition=None`` follows :func:`clean_acquisition` per seed (the training mix)."""
    from ..phantom import generate_subject

    maps = sorted({s for sources in recipe.inputs.values() for s in sources} | {s for s, _ in recipe.targets.values()})
    samples = []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 7])
        pathology = recipe.pathologies[int(seed) % len(recipe.pathologies)]
        randomize = not clean_acquisition(seed) if randomize_acquisition is None else randomize_acquisition
        subject = generate_subject(int(seed), pathology=pathology, spacing=spacing,
                                   randomize_acquisition=randomize, maps=maps)
        sample = make_sample(subject.maps, subject.masks, recipe, spacing, multiple, rng)
        sample.info.update(seed=int(seed), pathology=pathology, randomize_acquisition=randomize)
        samples.append(sample)
    return samples


def _find_volume(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in VOLUME_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def folder_subjects(root: str | Path, recipe: TaskData, spacing: float, multiple: int, seed: int = 0,
                    limit: int | None = None) -> list[Sample]:
    """Prepare every subject folder under ``root`` (as written by ``mrisynthesis phantom``: one volume file per
    map and mask: ``<map>.nii.gz`` and ``mask_<name>.nii.gz``, e.g. ``flair.nii.gz``, ``mask_brain.nii.gz``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("is not a folder of subject folders", name=str(root))
    wanted_maps = {s for sources in recipe.inputs.values() for s in sources} | {s for s, _ in recipe.targets.values()}
    samples = []
    rng = np.random.default_rng(seed)
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:limit]:
        maps = {n: read_volume(p, n) for n in wanted_maps if (p := _find_volume(folder, (n,)))}
        masks = {n: read_volume(p, n) for n in ("brain", *TISSUE_CLASSES)
                 if (p := _find_volume(folder, (f"mask_{n}", f"masks/{n}", f"{n}_mask")))}
        sample = make_sample(maps, masks, recipe, spacing, multiple, rng)
        sample.info["folder"] = folder.name
        samples.append(sample)
    if not samples:
        raise InputError("contains no subject folders", name=str(root))
    return samples


class CropStream:
    """Endless batches of random crops from a fixed list of prepared subjects.

    Args:
        subjects: prepared ``Sample``s (whole subjects on the model grid).
        crop: crop size ``(D, H, W)``, each divisible by the model multiple.
        batch: crops per batch.
        seed: the crop RNG seed (combine with the rank and the start step for DDP and resuming).
    """

    def __init__(self, subjects: list[Sample], crop: tuple[int, int, int], batch: int, seed):
        if not subjects:
            raise ValueError("CropStream needs at least one subject")
        self.subjects, self.crop, self.batch = subjects, tuple(int(c) for c in crop), int(batch)
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        picks = self.rng.integers(len(self.subjects), size=self.batch)
        return collate([random_crop(self.subjects[int(i)], self.crop, self.rng) for i in picks])


def _save_sample(sample: Sample, path: Path) -> None:
    from .checkpoint import atomic_save_tensors, atomic_write_json

    tensors = {k: torch.from_numpy(np.ascontiguousarray(getattr(sample, k)))
               for k in ("inputs", "target", "brain", "lesion", "tissues")}
    atomic_save_tensors(tensors, path)
    atomic_write_json(sample.info, path.with_suffix(".json"))


def _load_sample(path: Path) -> Sample:
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    info_path = path.with_suffix(".json")
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return Sample(**{k: arrays[k] for k in ("inputs", "target", "brain", "lesion", "tissues")}, info=info)


def training_seeds(seed: int, count: int) -> list[int]:
    """Phantom seeds used for training with ``--seed seed``; held-out evaluation uses 10_000 and up."""
    first = 0 if seed == 0 else 100_000 * seed
    return list(range(first, first + count))


def load_subjects(config, recipe: TaskData) -> list[Sample]:
    """The training subjects of a run: phantoms (cached as safetensors in ``<out>/subjects/``) or folders."""
    if config.data != "phantom":
        return folder_subjects(config.data, recipe, config.spacing, config.multiple, config.seed, config.subjects)
    cache = Path(config.out) / "subjects" / f"{config.task}_{config.spacing:g}mm_x{config.multiple}"
    samples = []
    for seed in training_seeds(config.seed, config.subjects):
        path = cache / f"{seed}.safetensors"
        if path.is_file():
            samples.append(_load_sample(path))
            continue
        sample = phantom_subjects(recipe, [seed], config.spacing, config.multiple, randomize_acquisition=None)[0]
        _save_sample(sample, path)
        samples.append(sample)
    return samples
