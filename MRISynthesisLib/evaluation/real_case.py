"""Plausibility checks on a real patient without a ground-truth map (e.g. ``ms-patient07``).

No qMT/PSR map exists for real data, so the checks are physiological orderings the map must show:

- PSR inside the expert lesion mask is below normal-appearing white matter (NAWM);
- WM > GM > CSF, with tissue classes from a 3-class multi-Otsu threshold of the T1w intensities inside the
  brain mask (CSF darkest, WM brightest on T1w). Lesion voxels (dilated by 2 voxels) are excluded from every
  class, and NAWM = WM class minus those voxels.

The folder must hold ``t1w`` and ``flair`` volumes (and ``lesions`` for the lesion check), on any grids; the
first input's grid is the reference, exactly as in the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu

from ..errors import InputError
from ..preprocess import compute_brain_mask
from ..resample import resample_to
from ..volume import Volume, read_volume
from .harness import Method, find_volume

LESION_MARGIN_VOXELS = 2


def load_real_case(folder: str | Path, input_names: list[str]) -> tuple[dict[str, Volume], Volume | None]:
    """Read ``<input>.nii.gz`` for each task input and ``lesions.nii.gz`` (optional) from ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("is not a folder", name=str(folder))
    inputs = {}
    for name in input_names:
        path = find_volume(folder, name)
        if path is None:
            raise InputError(f"has no {name} volume ({name}.nii.gz)", name=str(folder))
        inputs[name] = read_volume(path, name)
    reference = inputs[input_names[0]]
    inputs = {n: v if v.same_grid(reference) else resample_to(v, reference) for n, v in inputs.items()}
    lesion_path = find_volume(folder, "lesions")
    lesions = None
    if lesion_path is not None:
        lesions = read_volume(lesion_path, "lesions")
        lesions = resample_to(lesions.with_array((lesions.array > 0).astype(np.uint8)), reference, "nearest")
    return inputs, lesions


def tissue_classes(t1w: np.ndarray, brain: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``csf, gm, wm`` boolean masks from 3-class multi-Otsu thresholds of T1w inside ``brain`` minus ``exclude``."""
    inside = brain.copy() if exclude is None else brain & ~exclude
    low, high = threshold_multiotsu(t1w[inside], classes=3)
    return {"csf": inside & (t1w < low), "gm": inside & (t1w >= low) & (t1w < high), "wm": inside & (t1w >= high)}


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "median": float(np.median(values)), "voxels": int(values.size)}


def check_map(psr: np.ndarray, classes: dict[str, np.ndarray], lesion: np.ndarray | None) -> dict:
    """Tissue means/medians of one map and the two ordering checks (medians: robust to partial volume)."""
    result = {name: _stats(psr[mask]) for name, mask in classes.items()}
    result["wm_gt_gm_gt_csf"] = bool(result["wm"]["median"] > result["gm"]["median"] > result["csf"]["median"])
    if lesion is not None and lesion.any():
        result["lesion"] = _stats(psr[lesion])
        result["nawm"] = result["wm"]
        result["lesion_to_nawm_ratio"] = result["lesion"]["mean"] / result["nawm"]["mean"] \
            if result["nawm"]["mean"] else None
        result["lesion_below_nawm"] = bool(result["lesion"]["median"] < result["nawm"]["median"])
    return result


def evaluate_real_case(folder: str | Path, input_names: list[str], output: str, methods: dict[str, Method]) -> dict:
    """Run every method on the real case and check the orderings of map ``output`` (e.g. ``psr``).

    Returns ``{"folder", "classes": {voxel counts}, "methods": {name: check_map(...) + seconds}, "predictions"}``;
    ``predictions`` holds the output Volumes (dropped from JSON reports).
    """
    import time

    inputs, lesions = load_real_case(folder, input_names)
    if "t1w" not in inputs:
        raise InputError("the real-case checks need a t1w input for the tissue classes", name="--real")
    brain_volume = compute_brain_mask(list(inputs.values()))
    brain = brain_volume.array > 0
    lesion = (lesions.array > 0) & brain if lesions is not None else None
    exclude = ndimage.binary_dilation(lesion, iterations=LESION_MARGIN_VOXELS) if lesion is not None else None
    classes = tissue_classes(inputs["t1w"].array.astype(np.float32), brain, exclude)
    result = {"folder": str(folder), "brain_voxels": int(brain.sum()),
              "lesion_voxels": int(lesion.sum()) if lesion is not None else 0,
              "tissue_classes": "3-class multi-Otsu on T1w in the brain mask, lesions (+2 voxels) excluded",
              "methods": {}, "predictions": {}}
    for name, method in methods.items():
        started = time.perf_counter()
        outputs = method(inputs, brain_volume)
        checks = check_map(outputs[output].array, classes, lesion)
        checks["seconds"] = time.perf_counter() - started
        result["methods"][name] = checks
        result["predictions"][name] = outputs
    result["inputs"] = inputs
    result["lesions"] = lesions
    return result
