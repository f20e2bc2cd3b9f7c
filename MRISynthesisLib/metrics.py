"""Image-quality metrics for synthesized maps against a ground truth, restricted to masks.

All functions take numpy arrays of one grid (``(D, H, W)``, any axis order as long as all inputs share it)
and boolean-like masks of the same shape. Conventions, stated once so reports can quote them:

* **PSNR** (``psnr``): ``10 log10(R^2 / MSE)`` with the MSE over the mask and ``R`` = the ground truth's
  range (max - min) inside the mask unless ``data_range`` is given; ``inf`` for a perfect prediction.
  Computed with ``skimage.metrics.peak_signal_noise_ratio`` on the masked voxels. Reports use the
  percentile-scaled form (``percentile_psnr``, ``evaluate_map``): both maps mapped by the truth's 0.5-99.5
  brain percentiles to 0-1, then ``R = 1``, so a few extreme voxels cannot inflate the peak.
* **SSIM** (``ssim``): 3D SSIM of Wang et al. (Gaussian window sigma 1.5, 11^3 support, K1 0.01, K2 0.03,
  population covariance) from ``skimage.metrics.structural_similarity(..., full=True)`` over the whole
  volume with the same ``data_range`` as PSNR, then averaged over the mask voxels only (mask-aware reduction:
  the empty background, identical in both images, would otherwise inflate the score). Both images are
  zeroed outside the mask first so the region outside cannot leak into windows differently.
* **MS-SSIM** (``ms_ssim``): MONAI's multi-scale SSIM over three scales after percentile scaling and clipping.
* **MAE** (``mae``): mean absolute error in a mask (brain, lesion, normal-appearing WM); ``nan`` for an
  empty mask (e.g. lesion MAE of a healthy subject).
* **Edge sharpness** (``edge_sharpness``): mean gradient magnitude of the prediction divided by that of the
  ground truth on tissue/lesion boundary voxels (``boundary_mask``). 1 = as sharp as the truth, < 1 blurred.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

SSIM_SIGMA = 1.5


def _pair(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} must have the same shape")
    if mask is None:
        mask = np.ones(target.shape, bool)
    mask = np.asarray(mask) > 0
    if mask.shape != target.shape:
        raise ValueError(f"mask {mask.shape} must have the shape of the images {target.shape}")
    return prediction, target, mask


def data_range_in(target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Range (max - min) of ``target`` inside ``mask``: the PSNR/SSIM peak value used by default."""
    _, target, mask = _pair(target, target, mask)
    if not mask.any():
        raise ValueError("mask is empty")
    values = target[mask]
    return float(values.max() - values.min())


def mae(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error inside ``mask`` (all voxels when None); ``nan`` when the mask is empty."""
    prediction, target, mask = _pair(prediction, target, mask)
    if not mask.any():
        return math.nan
    return float(np.mean(np.abs(prediction[mask] - target[mask])))


def psnr(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over ``mask``; ``data_range`` defaults to ``data_range_in(target, mask)``.

    Returns ``inf`` when prediction equals target in the mask.
    """
    prediction, target, mask = _pair(prediction, target, mask)
    if not mask.any():
        raise ValueError("mask is empty")
    data_range = data_range_in(target, mask) if data_range is None else float(data_range)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range} (constant ground truth: pass data_range)")
    if np.array_equal(prediction[mask], target[mask]):
        return math.inf
    return float(peak_signal_noise_ratio(target[mask], prediction[mask], data_range=data_range))


def percentile_scaled(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray,
                      percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[np.ndarray, np.ndarray]:
    """Both images mapped by the truth's ``percentiles`` inside ``mask`` to 0 and 1 (no clipping)."""
    prediction, target, mask = _pair(prediction, target, mask)
    if not mask.any():
        raise ValueError("mask is empty")
    low, high = np.percentile(target[mask], percentiles)
    if high <= low:
        raise ValueError("the ground truth is constant inside the mask")
    return (prediction - low) / (high - low), (target - low) / (high - low)


def percentile_psnr(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The project's headline PSNR: ``psnr`` with data range 1 after ``percentile_scaled`` (brain mask, truth's
    0.5-99.5 percentiles); robust to a few extreme voxels that would inflate a max-min range."""
    scaled_prediction, scaled_target = percentile_scaled(prediction, target, mask)
    return psnr(scaled_prediction, scaled_target, mask, data_range=1.0)


def unit_calibrated(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``gain * prediction + offset`` with the one global gain and offset that fit ``reference`` best in ``mask``
    (least squares: a unit or level calibration, no change of shape)."""
    prediction, reference, mask = _pair(prediction, reference, mask)
    if not mask.any():
        raise ValueError("mask is empty")
    design = np.stack([prediction[mask], np.ones(int(mask.sum()))], axis=1).astype(np.float64)
    (gain, offset), *_ = np.linalg.lstsq(design, reference[mask].astype(np.float64), rcond=None)
    return gain * prediction + offset


def calibrated_psnr(prediction: np.ndarray, reference: np.ndarray, brain: np.ndarray) -> float:
    """PSNR of a synthesized contrast against a real scan whose unit is arbitrary (missing-contrast issue).

    The prediction is put into the reference's unit by :func:`unit_calibrated`, both are mapped by the
    reference's 0.5-99.5 percentiles in the brain to [0, 1] and clipped, and the PSNR comes from the MSE in the
    brain (data range 1).
    """
    prediction, reference, brain = _pair(prediction, reference, brain)
    scaled_prediction, scaled_reference = percentile_scaled(unit_calibrated(prediction, reference, brain),
                                                            reference, brain)
    return psnr(np.clip(scaled_prediction, 0, 1), np.clip(scaled_reference, 0, 1), brain, data_range=1.0)


def ssim(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> float:
    """3D SSIM (Gaussian window, sigma 1.5) averaged over the voxels of ``mask``; 1 for a perfect prediction."""
    prediction, target, mask = _pair(prediction, target, mask)
    if not mask.any():
        raise ValueError("mask is empty")
    if min(target.shape) < 11:
        raise ValueError(f"SSIM needs at least 11 voxels along every axis, got {target.shape}")
    data_range = data_range_in(target, mask) if data_range is None else float(data_range)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range} (constant ground truth: pass data_range)")
    _, ssim_map = structural_similarity(np.where(mask, target, 0.0), np.where(mask, prediction, 0.0),
                                        data_range=data_range, gaussian_weights=True, sigma=SSIM_SIGMA,
                                        use_sample_covariance=False, full=True)
    return float(np.mean(ssim_map[mask]))


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001)  # Wang et al.'s weights of the first three scales (ms_ssim makes them sum to 1)


def ms_ssim(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """3D multi-scale SSIM (MONAI ``compute_ms_ssim``, Gaussian window 11 / sigma 1.5) after the truth's
    0.5-99.5 percentile scaling in ``mask``, both images clipped to [0, 1] and zeroed outside ``mask``.

    Three scales, not Wang et al.'s five: five need more than 160 voxels along every axis (a 2 mm brain has ~90).
    The score is over the whole volume (MS-SSIM has no per-voxel map at coarse scales), so the zero background
    counts: compare numbers only between predictions of the same cases.
    """
    import torch
    from monai.metrics.regression import compute_ms_ssim

    prediction, target, mask = _pair(prediction, target, mask)
    scaled_prediction, scaled_target = percentile_scaled(prediction, target, mask)
    tensors = [torch.from_numpy(np.where(mask, np.clip(a, 0, 1), 0.0).astype(np.float32))[None, None]
               for a in (scaled_prediction, scaled_target)]
    weights = tuple(w / sum(MS_SSIM_WEIGHTS) for w in MS_SSIM_WEIGHTS)
    return float(compute_ms_ssim(*tensors, spatial_dims=3, data_range=1.0, weights=weights).item())


def boundary_mask(labels: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """Voxels whose 6-neighbourhood holds another label (both sides of every boundary of ``labels``).

    Args:
        labels: integer label map (e.g. 1 WM, 2 GM, 3 CSF, 4 lesion); 0 is a label too.
        within: keep only boundary voxels inside this mask (e.g. the brain, to skip the brain's outline).
    """
    labels = np.asarray(labels)
    footprint = ndimage.generate_binary_structure(labels.ndim, 1)
    edges = ndimage.grey_dilation(labels, footprint=footprint) != ndimage.grey_erosion(labels, footprint=footprint)
    if within is not None:
        edges &= ndimage.binary_erosion(np.asarray(within) > 0, footprint)
    return edges


def gradient_magnitude(image: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Central-difference gradient magnitude (per mm when ``spacing`` is given, in array axis order)."""
    image = np.asarray(image, dtype=np.float64)
    spacing = spacing or (1.0,) * image.ndim
    gradients = np.gradient(image, *spacing)
    return np.sqrt(sum(g * g for g in gradients))


def edge_sharpness(prediction: np.ndarray, target: np.ndarray, boundary: np.ndarray,
                   spacing: tuple[float, ...] | None = None) -> float:
    """Mean gradient magnitude of ``prediction`` / that of ``target`` on ``boundary`` voxels (``nan`` if none)."""
    prediction, target, boundary = _pair(prediction, target, boundary)
    if not boundary.any():
        return math.nan
    truth = float(gradient_magnitude(target, spacing)[boundary].mean())
    if truth == 0:
        return math.nan
    return float(gradient_magnitude(prediction, spacing)[boundary].mean()) / truth


def evaluate_map(prediction: np.ndarray, target: np.ndarray, masks: dict[str, np.ndarray],
                 spacing: tuple[float, ...] | None = None) -> dict[str, float]:
    """Every metric of one synthesized map against its ground truth.

    Args:
        prediction, target: ``(D, H, W)`` in physical units.
        masks: ``brain`` (required), and when available ``lesion``, ``nawm``, ``wm``, ``gm``, ``csf``
            (tissue classes for the boundaries of the edge-sharpness metric).
        spacing: voxel size in mm in array axis order (for gradients).

    Returns:
        ``psnr`` (dB) and ``ssim`` of both maps scaled by the truth's 0.5-99.5 brain percentiles
        (``percentile_scaled``, data range 1), ``psnr_truth_range`` (peak = the truth's max - min), ``mae``
        (brain), ``lesion_mae``, ``nawm_mae`` (``nan`` when absent or empty) and ``edge_sharpness``.
    """
    brain = np.asarray(masks["brain"]) > 0
    scaled_prediction, scaled_target = percentile_scaled(prediction, target, brain)
    labels = np.zeros(brain.shape, np.uint8)
    for value, name in enumerate(("wm", "gm", "deep_gm", "csf", "lesion"), start=1):
        if name in masks:
            labels[np.asarray(masks[name]) > 0] = value
    labels[~brain] = 0
    empty = np.zeros(brain.shape, bool)
    return {
        "psnr": psnr(scaled_prediction, scaled_target, brain, 1.0),
        "ssim": ssim(scaled_prediction, scaled_target, brain, 1.0),
        "psnr_truth_range": psnr(prediction, target, brain),
        "mae": mae(prediction, target, brain),
        "lesion_mae": mae(prediction, target, masks.get("lesion", empty)),
        "nawm_mae": mae(prediction, target, masks.get("nawm", empty)),
        "edge_sharpness": edge_sharpness(prediction, target, boundary_mask(labels, brain), spacing),
    }


def per_slice(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float,
              axis: int = 0, min_fraction: float = 0.1) -> dict[str, float]:
    """2D PSNR and SSIM averaged over slices along ``axis`` (axial for ``(z, y, x)`` arrays), for comparison
    with published slice-wise numbers. Slices whose mask holds less than ``min_fraction`` of the largest
    slice's mask area are skipped; same ``data_range`` and mask-aware SSIM reduction as the 3D metrics
    (2D Gaussian window, sigma 1.5). A perfect slice counts with PSNR capped at 100 dB.

    Returns ``{"psnr_2d": dB, "ssim_2d": value}`` (``nan`` when no slice qualifies).
    """
    prediction, target, mask = _pair(prediction, target, mask)
    prediction, target, mask = (np.moveaxis(a, axis, 0) for a in (prediction, target, mask))
    areas = mask.reshape(mask.shape[0], -1).sum(1)
    if areas.max() == 0 or min(target.shape[1:]) < 11:
        return {"psnr_2d": math.nan, "ssim_2d": math.nan}
    psnrs, ssims = [], []
    for index in np.flatnonzero(areas >= min_fraction * areas.max()):
        inside = mask[index]
        psnrs.append(min(psnr(prediction[index], target[index], inside, data_range), 100.0))
        _, ssim_map = structural_similarity(np.where(inside, target[index], 0.0),
                                            np.where(inside, prediction[index], 0.0), data_range=data_range,
                                            gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
                                            full=True)
        ssims.append(float(np.mean(ssim_map[inside])))
    return {"psnr_2d": float(np.mean(psnrs)), "ssim_2d": float(np.mean(ssims))}


def uncertainty_calibration(prediction: np.ndarray, target: np.ndarray, sd: np.ndarray,
                            mask: np.ndarray) -> dict[str, float]:
    """Is a sample standard deviation map a usable error estimate? Inside ``mask``:
    ``sd_error_correlation`` = Pearson correlation of ``|prediction - target|`` with ``sd``, and
    ``coverage_2sd`` = share of voxels whose error is within 2 SD (0.95 for calibrated Gaussian errors)."""
    prediction, target, mask = _pair(prediction, target, mask)
    sd = np.asarray(sd, np.float64)
    if not mask.any():
        return {"sd_error_correlation": math.nan, "coverage_2sd": math.nan}
    error = np.abs(prediction[mask] - target[mask])
    spread = sd[mask]
    correlation = float(np.corrcoef(error, spread)[0, 1]) if error.std() > 0 and spread.std() > 0 else math.nan
    return {"sd_error_correlation": correlation, "coverage_2sd": float(np.mean(error <= 2.0 * spread))}
