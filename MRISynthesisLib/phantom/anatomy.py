"""Subject anatomy: a tissue-class label map, deformed per subject and resampled to the output grid.

Two sources, both turned into the same small set of tissue classes (``TISSUE_CLASSES``):

* the built-in MNI152 2009c symmetric template packaged with nilearn (GM/WM probability maps, 1 mm;
  no data file and no network needed), CSF = brain minus GM minus WM, deep GM and ventricles from
  depth inside the brain and a box around the basal ganglia (MNI coordinates);
* a FreeSurfer ``aseg``-style label map (e.g. SynthSeg training maps, 256^3 at 1 mm) given by path.

Each source also carries soft parenchyma fractions (WM and all GM, 0-255 per 1 mm voxel) for partial
volume: the MNI GM/WM probability maps themselves, or for aseg maps the one-hot labels smoothed slightly
(Gaussian, sigma 0.6 mm) so that tissue borders are about a voxel wide, as in a real 1 mm scan.

Per subject the source is mapped to a brain-centred output grid through a random affine (scale, rotation,
translation, left/right flip) plus a smooth elastic displacement; the labels are sampled with nearest
neighbour (hard classes, the masks), the fractions with linear interpolation (only inside the brain).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import InputError
from .fields import smooth_field

# Tissue classes of the anatomy label map (uint8).
BACKGROUND, WM, GM, DEEP_GM, CSF, VENTRICLE = 0, 1, 2, 3, 4, 5
TISSUE_CLASSES = {"background": BACKGROUND, "wm": WM, "gm": GM, "deep_gm": DEEP_GM, "csf": CSF,
                  "ventricle": VENTRICLE}

# FreeSurfer aseg label -> tissue class. Cerebellum and brainstem are folded into GM/WM (their
# relaxation times are close); labels >= 500 (SynthSeg extra-cerebral tissue) and 0 are background.
ASEG_TO_CLASS = {
    2: WM, 41: WM, 7: WM, 46: WM, 16: WM, 77: WM, 85: WM, 251: WM, 252: WM, 253: WM, 254: WM, 255: WM,
    3: GM, 42: GM, 8: GM, 47: GM, 17: GM, 53: GM, 18: GM, 54: GM, 30: GM, 62: GM,
    10: DEEP_GM, 11: DEEP_GM, 12: DEEP_GM, 13: DEEP_GM, 49: DEEP_GM, 50: DEEP_GM, 51: DEEP_GM,
    52: DEEP_GM, 26: DEEP_GM, 58: DEEP_GM, 28: DEEP_GM, 60: DEEP_GM,
    4: VENTRICLE, 43: VENTRICLE, 5: VENTRICLE, 44: VENTRICLE, 14: VENTRICLE, 15: VENTRICLE,
    72: VENTRICLE, 31: VENTRICLE, 63: VENTRICLE,
    24: CSF,
}

# Field of view of the default output grid (x, y, z mm): fits an adult brain with 15 % scaling.
DEFAULT_FOV_MM = (176.0, 208.0, 176.0)


@dataclass(frozen=True)
class SourceAnatomy:
    """A tissue-class label map on its own 1 mm grid.

    Attributes:
        labels: uint8 tissue classes, shape ``(z, y, x)``.
        fractions: uint8 ``(2, z, y, x)``: WM and GM (cortical + deep) fraction of each voxel times 255.
        index_to_physical: 4x4 matrix from ``(i, j, k, 1)`` (x, y, z index order) to LPS mm.
        centre: LPS mm of the brain centre (mean of non-background voxels).
        name: where it came from (``"mni152_2009"`` or a file path).
    """

    labels: np.ndarray
    fractions: np.ndarray
    index_to_physical: np.ndarray
    centre: np.ndarray
    name: str


def _matrix(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _crop_box(labels: np.ndarray, margin: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box of non-background voxels plus ``margin`` (keeps the cache small)."""
    nonzero = np.nonzero(labels)
    low = [max(int(a.min()) - margin, 0) for a in nonzero]
    high = [min(int(a.max()) + margin + 1, n) for a, n in zip(nonzero, labels.shape)]
    return tuple(slice(a, b) for a, b in zip(low, high))


def _finish(labels: np.ndarray, wm: np.ndarray, gm: np.ndarray, matrix: np.ndarray, name: str) -> SourceAnatomy:
    """Crop, quantise the fractions (0-1 floats, zeroed outside the labelled brain) and freeze."""
    box = _crop_box(labels)
    labels = np.ascontiguousarray(labels[box])
    brain = labels > 0
    fractions = np.stack([np.where(brain, np.round(np.clip(f[box], 0.0, 1.0) * 255.0), 0) for f in (wm, gm)])
    fractions = np.ascontiguousarray(fractions.astype(np.uint8))
    shifted = matrix.copy()
    shifted[:3, 3] = matrix[:3, :3] @ np.array([box[2].start, box[1].start, box[0].start], float) + matrix[:3, 3]
    k, j, i = (a.mean() for a in np.nonzero(labels))
    centre = (shifted @ np.array([i, j, k, 1.0]))[:3]
    labels.setflags(write=False)
    fractions.setflags(write=False)
    return SourceAnatomy(labels, fractions, shifted, centre, name)


def _sharpen(wm: np.ndarray, gm: np.ndarray, brain: np.ndarray, power: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """WM/GM fractions from population probabilities: ``p_t^power / sum_s p_s^power`` over WM, GM, CSF.

    A template's probabilities are blurred by between-subject variability (e.g. the MNI ventricles hold
    ~20 % "GM"); one subject's partial volume is sharper. The power keeps a soft border about a voxel
    wide while tissue interiors become pure.
    """
    csf = np.where(brain, np.clip(1.0 - wm - gm, 0.0, 1.0), 0.0)
    wm, gm, csf = (np.clip(f, 0.0, 1.0) ** power for f in (wm, gm, csf))
    total = np.maximum(wm + gm + csf, 1e-6)
    return wm / total, gm / total


def _nilearn_data_folder() -> Path:
    import nilearn

    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def mni_anatomy() -> SourceAnatomy:
    """The built-in anatomy from nilearn's packaged MNI152 2009 GM/WM probability maps (cached)."""
    folder = _nilearn_data_folder()
    images = {}
    for tissue in ("gm", "wm"):
        path = folder / f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz"
        if not path.exists():
            raise InputError(f"nilearn's packaged MNI152 file {path.name} is missing; reinstall nilearn", "anatomy")
        images[tissue] = sitk.ReadImage(str(path))
    gm = sitk.GetArrayFromImage(images["gm"]).astype(np.float32)
    wm = sitk.GetArrayFromImage(images["wm"]).astype(np.float32)
    matrix = _matrix(images["gm"])
    parenchyma = (gm + wm) > 127.5
    # Sulcal CSF and ventricles: what closing and hole filling add to the parenchyma.
    brain = ndi.binary_fill_holes(ndi.binary_closing(parenchyma, ndi.iterate_structure(
        ndi.generate_binary_structure(3, 1), 3)))
    # Depth inside the brain (mm), on a 2 mm grid: only compared with 10-12 mm thresholds, 8x cheaper.
    coarse = ndi.distance_transform_edt(brain[::2, ::2, ::2], sampling=2.0)
    depth = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: brain.shape[0], : brain.shape[1], : brain.shape[2]]
    labels = np.zeros(gm.shape, np.uint8)
    labels[brain] = CSF
    labels[parenchyma & (wm >= gm)] = WM
    labels[parenchyma & (wm < gm)] = GM
    # Physical (MNI ~ RAS, here LPS) coordinates of every voxel to locate the basal ganglia/thalamus box.
    k, j, i = np.indices(gm.shape, dtype=np.float32)
    x = matrix[0, 0] * i + matrix[0, 3]
    y = matrix[1, 1] * j + matrix[1, 3]
    z = matrix[2, 2] * k + matrix[2, 3]
    # LPS: x = -R (left positive), y = -A; the MNI box |x| < 32, A in [-40, 28], S in [-14, 24] mm.
    central = (np.abs(x) < 32) & (-y > -40) & (-y < 28) & (z > -14) & (z < 24)
    labels[(labels == GM) & central & (depth > 12)] = DEEP_GM
    labels[(labels == CSF) & (np.abs(x) < 32) & (depth > 10)] = VENTRICLE
    return _finish(labels, *_sharpen(wm / 255.0, gm / 255.0, brain), matrix, "mni152_2009")


@functools.lru_cache(maxsize=24)
def aseg_anatomy(path: str) -> SourceAnatomy:
    """Tissue classes from a FreeSurfer aseg label map (cached per path)."""
    try:
        image = sitk.ReadImage(path)
    except RuntimeError:
        raise InputError(f"cannot read {path} as a label map", "labels") from None
    if image.GetDimension() != 3:
        raise InputError(f"{path} is not a 3D label map", "labels")
    aseg = sitk.GetArrayFromImage(image)
    if not np.allclose(aseg, np.round(aseg)):
        raise InputError(f"{path} holds non-integer values; a FreeSurfer aseg label map is needed", "labels")
    aseg = aseg.astype(np.int32)
    table = np.zeros(max(int(aseg.max()) + 1, 256), np.uint8)
    for label, tissue in ASEG_TO_CLASS.items():
        table[label] = tissue
    labels = table[np.clip(aseg, 0, len(table) - 1)]
    parenchyma = (labels == WM) | (labels == GM) | (labels == DEEP_GM)
    if parenchyma.sum() < 1000:
        raise InputError(f"{path} has no FreeSurfer brain labels (2/41 WM, 3/42 cortex)", "labels")
    # Extra-cerebral CSF (label 24) is kept only within 3 mm of the brain, as skull stripping does.
    near = ndi.binary_dilation(parenchyma | (labels == VENTRICLE), iterations=3)
    labels[(labels == CSF) & ~near] = BACKGROUND
    # Soft fractions: one-hot parenchyma labels smoothed slightly at 1 mm (sigma in voxels of the map).
    box = _crop_box(labels, margin=6)
    sigma = [0.6 / s for s in image.GetSpacing()[::-1]]
    wm = np.zeros(labels.shape, np.float32)
    gm = np.zeros(labels.shape, np.float32)
    wm[box] = ndi.gaussian_filter((labels[box] == WM).astype(np.float32), sigma, truncate=3.0)
    gm[box] = ndi.gaussian_filter(((labels[box] == GM) | (labels[box] == DEEP_GM)).astype(np.float32), sigma,
                                  truncate=3.0)
    return _finish(labels, wm, gm, _matrix(image), path)


def label_files(labels: str | os.PathLike) -> list[str]:
    """The label map files a ``--labels`` argument names (a file or a folder of ``*.nii[.gz]``)."""
    path = Path(labels)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.name.endswith((".nii", ".nii.gz", ".mgz", ".nrrd")))
        if not files:
            raise InputError(f"folder {path} holds no label maps (.nii/.nii.gz)", "labels")
        return files
    if not path.exists():
        raise InputError(f"file not found: {path}", "labels")
    return [str(path)]


def output_grid(spacing: float, shape: tuple[int, int, int] | None = None) -> tuple[tuple[int, int, int], tuple]:
    """Brain-centred output grid: shape ``(z, y, x)`` and origin (x, y, z) so that mm 0 is the centre."""
    if shape is None:
        shape = tuple(int(np.ceil(f / spacing / 8.0) * 8) for f in DEFAULT_FOV_MM[::-1])
    shape = tuple(int(s) for s in shape)
    origin = tuple(-(n - 1) / 2.0 * spacing for n in shape[::-1])
    return shape, origin


def random_transform(rng: np.random.Generator, deform: bool = True) -> dict:
    """Draw the per-subject affine (scale +-15 %, rotation +-15 deg, shift +-4 mm, flip) and elastic std."""
    if not deform:
        return {"scale": [1.0, 1.0, 1.0], "rotation_deg": [0.0, 0.0, 0.0], "shift_mm": [0.0, 0.0, 0.0],
                "flip_lr": False, "elastic_std_mm": 0.0, "elastic_grid": [4, 5, 4]}
    return {
        "scale": rng.uniform(0.87, 1.13, 3).round(4).tolist(),
        "rotation_deg": rng.uniform(-15, 15, 3).round(3).tolist(),
        "shift_mm": rng.uniform(-4, 4, 3).round(3).tolist(),
        "flip_lr": bool(rng.random() < 0.5),
        "elastic_std_mm": float(round(rng.uniform(1.0, 3.5), 3)),
        "elastic_grid": [4, 5, 4],
    }


def _rotation(degrees) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def deform_labels(source: SourceAnatomy, transform: dict, spacing: float, shape: tuple[int, int, int],
                  origin: tuple, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample ``source`` onto the output grid through the subject's transform.

    Output point ``p`` (LPS mm, grid centred on 0) samples the source at
    ``centre + R S F (p + u(p)) + shift`` with ``u`` a cubic-spline upsampled random coarse displacement.

    Returns:
        uint8 tissue classes, shape ``shape`` ``(z, y, x)`` (nearest neighbour), and the WM and GM fractions
        (0-1, float32 ``(n,)``, linear interpolation) of the ``n`` brain voxels (classes > 0) in C order.
    """
    flip = np.diag([-1.0 if transform["flip_lr"] else 1.0, 1.0, 1.0])
    linear = _rotation(transform["rotation_deg"]) @ np.diag(transform["scale"]) @ flip
    # Source index of each output point: inverse(source matrix) @ (linear @ p + offset).
    to_index = np.linalg.inv(source.index_to_physical)
    offset = source.centre + np.asarray(transform["shift_mm"])
    matrix = to_index[:3, :3] @ linear * spacing           # per output index step
    start = to_index[:3, :3] @ (linear @ np.asarray(origin) + offset) + to_index[:3, 3]
    nz, ny, nx = shape
    grid_x = np.arange(nx, dtype=np.float32)
    grid_y = np.arange(ny, dtype=np.float32)
    grid_z = np.arange(nz, dtype=np.float32)
    elastic_std = float(transform["elastic_std_mm"])
    displacement = None
    if elastic_std > 0:
        coarse = tuple(transform["elastic_grid"][::-1])
        # In output voxels, components (x, y, z).
        displacement = [smooth_field(rng, shape, coarse, elastic_std / spacing) for _ in range(3)]
    coordinates = np.empty((3, nz, ny, nx), np.float32)
    for axis in range(3):  # source index axis (i, j, k) -> array axis (2, 1, 0)
        row = matrix[axis]
        values = (start[axis] + row[0] * grid_x[None, None, :] + row[1] * grid_y[None, :, None]
                  + row[2] * grid_z[:, None, None])
        if displacement is not None:
            values = values + row[0] * displacement[0] + row[1] * displacement[1] + row[2] * displacement[2]
        coordinates[2 - axis] = values
    classes = ndi.map_coordinates(source.labels, coordinates, order=0, mode="constant", cval=0, prefilter=False)
    # Fractions only where they are used: the brain voxels (a third of the grid).
    inside = coordinates[:, classes > 0]
    wm, gm = (ndi.map_coordinates(f, inside, order=1, mode="constant", cval=0, prefilter=False,
                                  output=np.float32) / np.float32(255.0) for f in source.fractions)
    return classes, wm, gm
