"""Training subjects made of a real brain scan with MS lesions inserted into its white matter.

Phantoms lack the fine texture of real tissue: hippocampi, insulae and periventricular caps are FLAIR-bright in
real brains, and segmenters trained on phantoms alone took them for lesions (README, issue 9). A real T1w + FLAIR
of a brain without MS (e.g. ``../shared/data/real/brats-gli-00001``, a glioma case) shows that normal tissue as it
is; lesions drawn from the phantom's MS statistics (``phantom.pathology.multiple_sclerosis``: periventricular,
juxtacortical, deep, infratentorial and confluent, 'wide' load) are placed in its white matter, and the
segmenter's training stream randomises their level per draw (``augment.lesion_factor``: FLAIR 1.12-1.7x white
matter, T1w between grey and white matter), so that every voxel outside them is a real negative.

The scan's own pathology (a tumour and its oedema: FLAIR-bright components of >= ``EXCLUDE_MIN_ML``) is found
automatically, dilated and marked *ignored*: no lesion is drawn there and the loss skips it. Tissue classes come
from a 3-level Otsu split of the bias-corrected T1w (CSF, grey and white matter; ventricles are the large CSF
components deep in the brain), smoothed into partial-volume fractions as for the label-map phantoms.

Each variant is stored in the cache format of ``data.cache_subject`` plus an ``ignore`` mask, as
``<folder>/real-<case>-<variant>.npz``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from ..phantom.anatomy import CSF, GM, VENTRICLE, WM
from ..phantom.pathology import multiple_sclerosis
from ..phantom.tissue import TissueMaps, draw_tissue
from .data import FRACTION_SCALE, T1_SOURCES

EXCLUDE_MIN_ML = 1.0  # FLAIR-bright components this large are the scan's own pathology
EXCLUDE_MARGIN_MM = 12.0  # oedema fades out gradually: its margin is ignored too (8 mm left its fringe)
LESION_SPREAD = 0.1  # log std of each inserted lesion's own level around the draw's


def _bias_corrected(t1w: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """N4 bias correction (SimpleITK) of ``t1w`` inside ``brain``, at half resolution for speed."""
    image = sitk.GetImageFromArray(np.maximum(t1w, 0).astype(np.float32))
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    shrunk, shrunk_mask = sitk.Shrink(image, [2] * 3), sitk.Shrink(mask, [2] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([30, 20])
    corrector.Execute(shrunk, shrunk_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return (t1w / np.exp(sitk.GetArrayFromImage(log_bias))).astype(np.float32)


def tissue_classes(t1w: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """uint8 classes ``(WM, GM, CSF, VENTRICLE)`` of a T1-weighted brain (0 outside ``brain``)."""
    corrected = _bias_corrected(t1w, brain)
    low, high = threshold_multiotsu(corrected[brain], classes=3)
    classes = np.zeros(brain.shape, np.uint8)
    classes[brain] = np.where(corrected[brain] < low, CSF, np.where(corrected[brain] < high, GM, WM))
    deep = ndi.distance_transform_edt(brain) > 15.0
    components, count = ndi.label((classes == CSF) & deep)
    if count:
        sizes = ndi.sum(np.ones_like(components), components, np.arange(1, count + 1))
        ventricles = np.isin(components, 1 + np.flatnonzero(sizes >= 500))
        classes[ndi.binary_dilation(ventricles, iterations=2) & (classes == CSF)] = VENTRICLE
    return classes


def own_pathology(flair: np.ndarray, brain: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """Bool mask of the scan's own FLAIR-bright pathology (components >= ``EXCLUDE_MIN_ML``, robust z > 3
    in the brain, dilated by ``EXCLUDE_MARGIN_MM``); empty when there is none."""
    values = flair[brain]
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    bright = ndi.binary_opening((flair > median + 3 * spread) & brain, iterations=1)
    components, count = ndi.label(bright)
    if not count:
        return np.zeros(brain.shape, bool)
    sizes = ndi.sum(np.ones_like(components), components, np.arange(1, count + 1)) * spacing ** 3 / 1000.0
    large = np.isin(components, 1 + np.flatnonzero(sizes >= EXCLUDE_MIN_ML))
    if not large.any():
        return large
    return ndi.distance_transform_edt(~large, sampling=spacing) <= EXCLUDE_MARGIN_MM


def fractions_of(classes: np.ndarray, lesion_fraction: np.ndarray) -> dict[str, np.ndarray]:
    """Partial-volume fractions of ``augment.COMPARTMENTS``: the one-hot classes smoothed (sigma 0.6 voxel),
    renormalised in the brain, and the lesion's share taken out of them."""
    groups = {"wm": (WM,), "gm": (GM,), "csf": (CSF, VENTRICLE)}
    smooth = {name: ndi.gaussian_filter(np.isin(classes, labels).astype(np.float32), 0.6)
              for name, labels in groups.items()}
    total = sum(smooth.values())
    brain = classes > 0
    keep = 1.0 - lesion_fraction
    fractions = {name: np.where(brain, value / np.maximum(total, 1e-6), 0.0) * keep for name, value in smooth.items()}
    fractions["deep_gm"] = np.zeros(classes.shape, np.float32)
    fractions["lesion"] = lesion_fraction
    return fractions  # the keys of augment.COMPARTMENTS


def insert_lesions(classes: np.ndarray, ignore: np.ndarray, rng: np.random.Generator,
                   spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one 'wide' MS lesion set in the white matter outside ``ignore``.

    Returns ``(lesion mask (bool), lesion fraction (float32), connected lesion number (uint16) per voxel)``. Only
    the geometry is used: the phantom's tissue parameters drawn on the way are discarded.
    """
    allowed = np.where(ignore, 0, classes).astype(np.uint8)
    tissue = draw_tissue(rng, 3.0)
    maps = TissueMaps(allowed, tissue, rng)
    maps.maps["gd"] = np.zeros(classes.shape, np.float32)  # as the phantom generator adds it
    lesion = multiple_sclerosis(allowed, maps, tissue, rng, spacing, load="wide")[0]["lesion"]
    ids, _ = ndi.label(lesion)
    return lesion, maps.lesion_fraction.astype(np.float32), ids.astype(np.uint16)


def read_case(folder: Path, t1_name: str = "t1w", flair_name: str = "flair") -> tuple[np.ndarray, np.ndarray]:
    """``(t1w, flair)`` float32 arrays of ``<folder>/<name>.nii.gz`` (same grid required)."""
    arrays = []
    for name in (t1_name, flair_name):
        path = folder / f"{name}.nii.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a real background needs a T1w and a FLAIR")
        arrays.append(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"{folder}: T1w {arrays[0].shape} and FLAIR {arrays[1].shape} differ in grid")
    return arrays[0], arrays[1]


def cache_real_backgrounds(folder: Path, case: Path, variants: int, seed: int = 0, t1_name: str = "t1w",
                           flair_name: str = "flair") -> list[Path]:
    """``variants`` training subjects of the real scan in ``case`` with fresh lesion sets (cached; existing
    variants are reused)."""
    paths = [folder / f"real-{case.name}-{index}.npz" for index in range(variants)]
    if all(path.is_file() for path in paths):
        return paths
    t1w, flair = read_case(case, t1_name, flair_name)
    brain = ndi.binary_fill_holes((t1w > 0) & (flair > 0))
    classes = tissue_classes(t1w, brain)
    ignore = own_pathology(flair, brain)
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(paths):
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, index])
        lesion, fraction, ids = insert_lesions(classes, ignore, rng)
        # Each lesion its own level around the draw's (real lesions differ from one another).
        levels = np.exp(rng.normal(0.0, LESION_SPREAD, (2, int(ids.max()) + 1))).astype(np.float32)
        images = {}
        for row, (name, image) in enumerate((("t1w", t1w), ("flair", flair))):
            factor = np.where(fraction > 0, 1.0 + fraction * (levels[row][ids] - 1.0), 1.0)
            images[name] = (image * factor).astype(np.float32)
        arrays = {source: images["t1w"] for source in T1_SOURCES}
        arrays["flair"] = images["flair"]
        for name, value in fractions_of(classes, fraction).items():
            arrays[f"fraction_{name}"] = np.round(np.clip(value, 0, 1) * FRACTION_SCALE).astype(np.uint8)
        arrays.update(brain=brain.astype(np.uint8), lesion=lesion.astype(np.uint8), ignore=ignore.astype(np.uint8))
        temporary = folder / f".{path.stem}.partial.npz"
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, path)
    return paths
