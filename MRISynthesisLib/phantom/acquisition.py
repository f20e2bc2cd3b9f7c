"""Acquisition randomisation (SynthSR-style) of the weighted images; quantitative maps stay exact.

Per image, in acquisition order: small misregistration (rigid, +-2 mm / +-2 deg; none for the
T1-weighted images, which define the frame of the ground truth), slice thickness
(Gaussian slice profile along one axis, subsampling, linear interpolation back), smooth multiplicative
bias field (log std ~ 0.3 on a 4^3 grid), Rician noise, gamma (log std 0.25) and an arbitrary intensity
scale; then the skull-strip mask (moved with the image) is applied. The two DWI images share one
acquisition (bias, geometry, scale) with independent noise and no gamma, so ADC stays recoverable.
CT and CT perfusion are calibrated in HU: only Gaussian noise is added.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .fields import smooth_field

MR_IMAGES = ("mprage", "t1w_se", "t1ce", "t2w", "pdw", "flair", "dwi_b0", "dwi_b1000")
# The T1-weighted images define the subject's frame: the reference input of the MR tasks, on whose grid the
# pipeline writes its outputs. They are not moved, so the ground-truth maps and masks live in their frame
# (as on a real scan, where the truth would be registered to the reference); every other image keeps its own
# misregistration, which the pipeline's registration must undo. (CT and CT perfusion are never moved.)
REFERENCE_FRAME_IMAGES = ("mprage", "t1w_se", "t1ce")


def _draw_mr(rng: np.random.Generator, spacing: float, gamma: bool) -> dict:
    thick = bool(rng.random() < 0.5)
    return {
        "shift_mm": rng.uniform(-2.0, 2.0, 3).round(3).tolist(),
        "rotation_deg": rng.uniform(-2.0, 2.0, 3).round(3).tolist(),
        "slice_axis_zyx": int(rng.integers(3)),
        "slice_thickness_mm": round(float(rng.uniform(max(spacing, 3.0), 7.0)), 3) if thick else spacing,
        "bias_log_std": round(float(rng.uniform(0.0, 0.3)), 4),
        "bias_seed": int(rng.integers(2 ** 31)),
        "noise_fraction": round(float(rng.uniform(0.005, 0.05)), 5),
        "gamma": round(float(np.exp(rng.normal(0.0, 0.25))), 4) if gamma else 1.0,
        "scale": round(float(np.exp(rng.uniform(np.log(50.0), np.log(5000.0)))), 3),
    }


def draw_acquisition(rng: np.random.Generator, names, spacing: float, ctp_noise_hu: float) -> dict:
    """Acquisition parameters per weighted image name (JSON-serialisable)."""
    result = {}
    dwi = _draw_mr(rng, spacing, gamma=False)
    for name in names:
        if name in ("dwi_b0", "dwi_b1000"):
            result[name] = dict(dwi)
        elif name in MR_IMAGES:
            result[name] = _draw_mr(rng, spacing, gamma=True)
            if name in REFERENCE_FRAME_IMAGES:
                result[name].update(shift_mm=[0.0, 0.0, 0.0], rotation_deg=[0.0, 0.0, 0.0])
        elif name == "ct":
            result[name] = {"noise_hu": round(float(rng.uniform(2.0, 6.0)), 3)}
        elif name == "ctp":
            result[name] = {"noise_hu": float(ctp_noise_hu)}
    return result


def _misregister(image: np.ndarray, parameters: dict, spacing: float, interpolator) -> np.ndarray:
    moving = sitk.GetImageFromArray(image)
    moving.SetSpacing((spacing,) * 3)
    size = np.array(image.shape[::-1], float)
    moving.SetOrigin(tuple(-(size - 1) / 2 * spacing))
    transform = sitk.Euler3DTransform()
    transform.SetRotation(*np.deg2rad(parameters["rotation_deg"]))
    transform.SetTranslation(tuple(parameters["shift_mm"]))
    return sitk.GetArrayFromImage(sitk.Resample(moving, moving, transform, interpolator, 0.0))


def _slice_thickness(image: np.ndarray, axis: int, thickness: float, spacing: float) -> np.ndarray:
    """Blur with a Gaussian slice profile (FWHM = thickness), keep every ``thickness`` mm, interpolate back."""
    factor = thickness / spacing
    if factor <= 1.01:
        return image
    blurred = ndi.gaussian_filter1d(image, sigma=factor / 2.355, axis=axis, mode="nearest")
    n = image.shape[axis]
    kept = np.arange(0.0, n - 1 + 1e-6, factor)
    samples = np.take(blurred, np.round(kept).astype(int), axis=axis)
    # Linear interpolation from the kept slice positions back to every voxel position.
    position = np.clip(np.arange(n) / factor, 0, len(kept) - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(kept) - 1)
    weight = (position - lower).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = n
    weight = weight.reshape(shape)
    return (np.take(samples, lower, axis=axis) * (1 - weight) + np.take(samples, upper, axis=axis) * weight)


def apply_acquisition(image: np.ndarray, brain: np.ndarray, parameters: dict, spacing: float,
                      rng: np.random.Generator, reference: float | None = None) -> np.ndarray:
    """Apply one image's acquisition effects; ``image`` is ``(z, y, x)`` or ``(frames, z, y, x)`` float32.

    ``reference`` is the signal level noise and gamma are relative to (default: the image's brain maximum);
    images of one acquisition (DWI b0/b1000) pass the same value so their ratio survives.
    """
    if "noise_hu" in parameters:  # CT: calibrated HU, only quantum noise inside the brain
        noisy = image.astype(np.float32, copy=True)
        inside = noisy[..., brain]
        inside += rng.standard_normal(inside.shape, dtype=np.float32) * np.float32(parameters["noise_hu"])
        noisy[..., brain] = inside
        return noisy
    moved = _misregister(image.astype(np.float32), parameters, spacing, sitk.sitkLinear)
    mask = _misregister(brain.astype(np.uint8), parameters, spacing, sitk.sitkNearestNeighbor) > 0
    moved = _slice_thickness(moved, parameters["slice_axis_zyx"], parameters["slice_thickness_mm"], spacing)
    bias_rng = np.random.default_rng(parameters["bias_seed"])
    bias = smooth_field(bias_rng, image.shape, (4, 4, 4), parameters["bias_log_std"])
    if reference is None:
        reference = float(image[brain].max()) if brain.any() else 1.0
    reference = max(reference, 1e-12)
    # Noise, gamma and scale only where the skull-stripped output is non-zero.
    values = moved[mask] * np.exp(bias[mask])
    sigma = np.float32(parameters["noise_fraction"] * reference)
    real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(values.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary) / np.float32(reference)
    if parameters["gamma"] != 1.0:
        magnitude = magnitude ** np.float32(parameters["gamma"])
    out = np.zeros(image.shape, np.float32)
    out[mask] = np.float32(parameters["scale"]) * magnitude
    return out
