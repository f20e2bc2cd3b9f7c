"""Metrics against hand-computed values on tiny arrays."""

import math

import numpy as np
import pytest

from MRISynthesisLib import metrics


def test_mae_respects_mask_and_empty_mask_is_nan():
    target = np.zeros((2, 2, 2))
    prediction = target.copy()
    prediction[0, 0, 0] = 4.0  # outside the mask below: must not count
    prediction[1, 1, 1] = 1.0
    mask = np.zeros((2, 2, 2), bool)
    mask[1] = True  # 4 voxels, one error of 1
    assert metrics.mae(prediction, target, mask) == pytest.approx(0.25)
    assert metrics.mae(prediction, target) == pytest.approx(5.0 / 8)
    assert math.isnan(metrics.mae(prediction, target, np.zeros((2, 2, 2), bool)))


def test_psnr_hand_computed_and_perfect():
    target = np.array([[[0.0, 1.0], [2.0, 4.0]]])  # range 4
    prediction = target + np.array([[[1.0, -1.0], [0.0, 0.0]]])  # MSE = 2/4 = 0.5
    expected = 10 * math.log10(4.0**2 / 0.5)
    assert metrics.psnr(prediction, target) == pytest.approx(expected)
    assert metrics.psnr(prediction, target, data_range=2.0) == pytest.approx(10 * math.log10(4.0 / 0.5))
    assert metrics.psnr(target.copy(), target) == math.inf
    # errors outside the mask do not count: the masked part is perfect
    mask = np.array([[[False, False], [True, True]]])
    assert metrics.psnr(prediction, target, mask) == math.inf
    # range is taken inside the mask: {2, 4} -> 2
    prediction[0, 1, 1] = 5.0  # MSE in mask = 1/2
    assert metrics.psnr(prediction, target, mask) == pytest.approx(10 * math.log10(2.0**2 / 0.5))


def test_psnr_refuses_constant_truth_and_empty_mask():
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(np.ones((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="empty"):
        metrics.psnr(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), data_range=1.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(np.ones((2, 2, 2)), np.zeros((2, 2, 3)))


def test_ssim_perfect_constant_shift_and_mask():
    rng = np.random.default_rng(0)
    target = rng.random((16, 16, 16))
    mask = np.zeros(target.shape, bool)
    mask[3:13, 3:13, 3:13] = True
    assert metrics.ssim(target, target, mask) == pytest.approx(1.0)
    # A constant offset c changes only the luminance term: l = (2 mu^2 + 2 mu c + C1) / (2 mu^2 + 2 mu c + c^2 + C1)
    # per window; with the offset applied everywhere (not just in the mask) the mask zeroing creates an edge,
    # so compare against a whole-volume mask where every window sees the same shift.
    full = np.ones(target.shape, bool)
    shifted = metrics.ssim(target + 0.5, target, full, data_range=1.0)
    assert 0.0 < shifted < 1.0
    # Garbage outside the mask does not change the score on a mask far from the corruption.
    corrupted = target.copy()
    corrupted[~mask] = 100.0
    assert metrics.ssim(corrupted, target, mask) == pytest.approx(1.0)
    noisy = target + rng.normal(0, 0.3, target.shape)
    assert metrics.ssim(noisy, target, mask) < 0.9


def test_ssim_uniform_images_hand_computed():
    # Two constant images a and b: sigma terms are 0, SSIM = (2ab + C1) / (a^2 + b^2 + C1) everywhere.
    a, b, data_range = 0.6, 0.4, 1.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = metrics.ssim(np.full((12, 12, 12), b), np.full((12, 12, 12), a), data_range=data_range)
    assert value == pytest.approx(expected, rel=1e-6)


def test_boundary_and_edge_sharpness():
    labels = np.zeros((3, 3, 8), np.uint8)  # np.gradient needs >= 2 voxels per axis
    labels[..., 4:] = 1
    boundary = metrics.boundary_mask(labels)
    assert boundary[1, 1].tolist() == [False, False, False, True, True, False, False, False]
    target = labels.astype(float)  # a step of 1 between x=3 and x=4
    # central differences at the two boundary voxels: 0.5 each -> mean 0.5 (y/z gradients are 0)
    assert metrics.gradient_magnitude(target)[1, 1, 3] == pytest.approx(0.5)
    # boundary gradients 0.375 and 0.375 -> ratio 0.75
    blurred = np.broadcast_to(np.array([0, 0, 0, 0.25, 0.75, 1, 1, 1], float), labels.shape).copy()
    assert metrics.edge_sharpness(blurred, target, boundary) == pytest.approx(0.75)
    assert metrics.edge_sharpness(target, target, boundary) == pytest.approx(1.0)
    # spacing 2 mm halves every gradient of both images: the ratio stays
    assert metrics.edge_sharpness(blurred, target, boundary, (1.0, 1.0, 2.0)) == pytest.approx(0.75)
    assert math.isnan(metrics.edge_sharpness(target, target, np.zeros_like(boundary)))


def test_boundary_within_mask_drops_outer_outline():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:10, 2:10, 2:10] = 1  # the "brain"
    labels[2:10, 2:10, 6:10] = 2  # a second tissue
    edges = metrics.boundary_mask(labels, within=labels > 0)
    assert not edges[1].any() and not edges[2].any()  # the brain's own outline is excluded
    assert edges[5, 5, 5] and edges[5, 5, 6] and not edges[5, 5, 3]


def test_evaluate_map_keys_and_perfect_case():
    rng = np.random.default_rng(1)
    target = rng.random((14, 14, 14))
    brain = np.zeros(target.shape, bool)
    brain[2:12, 2:12, 2:12] = True
    wm = brain & (target > 0.5)
    lesion = np.zeros_like(brain)
    lesion[6:8, 6:8, 6:8] = True
    result = metrics.evaluate_map(target, target, {"brain": brain, "wm": wm, "lesion": lesion})
    assert result["psnr"] == math.inf and result["ssim"] == pytest.approx(1.0)
    assert result["mae"] == 0 and result["lesion_mae"] == 0 and math.isnan(result["nawm_mae"])
    assert result["edge_sharpness"] == pytest.approx(1.0)
    worse = metrics.evaluate_map(target * 0.5, target, {"brain": brain, "lesion": lesion})
    assert worse["edge_sharpness"] == pytest.approx(0.5)
    assert worse["lesion_mae"] == pytest.approx(0.5 * target[lesion].mean())


def test_calibrated_psnr_ignores_the_unit_and_is_hand_computable():
    """A prediction in another unit (gain and offset) scores perfectly; a noisy one gets the PSNR computed by
    hand: the least-squares line of the reference on the prediction, the reference's percentiles, clipping."""
    rng = np.random.default_rng(0)
    reference = np.zeros((10, 10, 10))
    reference[2:8, 2:8, 2:8] = rng.uniform(100, 200, (6, 6, 6))
    brain = reference > 0
    assert metrics.calibrated_psnr(3.0 * reference - 40.0, reference, brain) > 200  # exact up to rounding
    prediction = (reference + rng.normal(0, 5, reference.shape)) * 0.01 + 7
    gain, offset = np.polyfit(prediction[brain], reference[brain], 1)
    np.testing.assert_allclose(metrics.unit_calibrated(prediction, reference, brain), gain * prediction + offset)
    low, high = np.percentile(reference[brain], (0.5, 99.5))
    scaled_prediction = np.clip((gain * prediction[brain] + offset - low) / (high - low), 0, 1)
    scaled_reference = np.clip((reference[brain] - low) / (high - low), 0, 1)
    expected = 10 * math.log10(1.0 / np.mean((scaled_prediction - scaled_reference) ** 2))
    assert metrics.calibrated_psnr(prediction, reference, brain) == pytest.approx(expected, abs=1e-6)
    assert 22.0 < expected < 28.0  # noise SD 5 on a range of ~100


def test_ms_ssim_is_one_when_perfect_and_falls_with_noise():
    rng = np.random.default_rng(0)
    target = np.zeros((56, 56, 56))
    target[8:48, 8:48, 8:48] = 1.0 + np.sin(np.indices((40, 40, 40)).sum(axis=0) / 4.0)
    mask = target > 0
    assert metrics.ms_ssim(target, target, mask) == pytest.approx(1.0, abs=1e-5)
    scores = [metrics.ms_ssim(target + rng.normal(0, sd, target.shape), target, mask) for sd in (0.05, 0.2, 0.5)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0
