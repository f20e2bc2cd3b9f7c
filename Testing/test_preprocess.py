"""Resampling in physical space, registration, brain mask and the invertible preprocessing."""

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.preprocess import CANONICAL_DIRECTION, canonical_grid, compute_brain_mask, normalise, prepare
from MRISynthesisLib.resample import overlap_fraction, register_rigid, resample_to
from MRISynthesisLib.volume import Volume

OBLIQUE = tuple(sitk.VersorRigid3DTransform((0.2, -0.1, 0.15, 0.96)).GetMatrix())


def ellipsoid_head(shape=(40, 48, 44), spacing=(1.2, 1.0, 2.0), direction=OBLIQUE, origin=(-30.0, -20.0, 10.0),
                   centre_mm=(0.0, 0.0, 0.0)):
    """A smooth 'brain' (bright ellipsoid with an inner structure) on an arbitrary grid, in physical space."""
    volume = Volume(np.zeros(shape, np.float32), origin, spacing, direction)
    k, j, i = np.indices(shape)
    points = volume.index_to_physical() @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    centre = grid_centre(volume) + np.asarray(centre_mm)
    x, y, z = (points[:3].T - centre).T
    radius = (x / 22) ** 2 + (y / 26) ** 2 + (z / 20) ** 2
    inner = ((x - 5) / 8) ** 2 + (y / 10) ** 2 + (z / 8) ** 2
    array = np.where(radius < 1, 100 + 20 * np.cos(x / 6), 0) + np.where(inner < 1, 60, 0)
    return volume.with_array(array.reshape(shape).astype(np.float32))


def grid_centre(volume):
    size = np.array(volume.shape[::-1]) - 1
    return (volume.index_to_physical() @ np.array([*(size / 2), 1.0]))[:3]


def test_resample_is_physical_not_arraywise():
    reference = ellipsoid_head()
    half_extent = np.array([34, 40, 36]) * 1.5 / 2
    other_grid = Volume(np.zeros((36, 40, 34), np.float32), tuple(grid_centre(reference) - half_extent + 7.0),
                        (1.5, 1.5, 1.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    # Same object rendered on a different grid must land where the reference has it.
    moved = ellipsoid_head(other_grid.shape, other_grid.spacing, other_grid.direction, other_grid.origin,
                           centre_mm=grid_centre(reference) - grid_centre(other_grid))
    back = resample_to(moved, reference)
    assert back.same_grid(reference)
    inside = (reference.array > 0) & (back.array > 0)
    agreement = np.mean(np.abs(back.array[inside] - reference.array[inside]) < 15)
    assert agreement > 0.85
    assert overlap_fraction(moved, reference) > 0.9


def test_registration_recovers_a_large_shift():
    reference = ellipsoid_head(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1.5, 1.5, 1.5), shape=(40, 48, 44))
    shifted = Volume(reference.array, tuple(np.asarray(reference.origin) + (80.0, 0.0, 0.0)), reference.spacing,
                     reference.direction)
    assert overlap_fraction(shifted, reference) < 0.2
    transform = register_rigid(shifted, reference)
    aligned = resample_to(shifted, reference, transform=transform)
    inside = reference.array > 0
    assert np.corrcoef(aligned.array[inside], reference.array[inside])[0, 1] > 0.9
    assert transform.GetParameters()[3] == pytest.approx(80.0, abs=0.5)
    # The same inputs give the same transform on every call (the metric's samples are seeded)
    # (up to the last bits that the threads' summation order moves)
    np.testing.assert_allclose(register_rigid(shifted, reference).GetParameters(), transform.GetParameters(), atol=1e-6)


def test_brain_mask_from_skull_stripped_and_unstripped():
    brain = ellipsoid_head()
    stripped_mask = compute_brain_mask([brain])
    assert np.array_equal(stripped_mask.array > 0, brain.array > 0)
    rng = np.random.default_rng(0)
    with_background = brain.with_array(brain.array + rng.normal(8, 2, brain.shape).astype(np.float32))
    mask = compute_brain_mask([with_background]).array > 0
    dice = 2 * np.sum(mask & (brain.array > 0)) / (mask.sum() + (brain.array > 0).sum())
    assert dice > 0.9


def test_normalise_is_exactly_invertible_in_mask():
    rng = np.random.default_rng(1)
    array = rng.gamma(2, 50, (10, 12, 14)).astype(np.float32)
    mask = np.zeros(array.shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    scaled, (low, high) = normalise(array, mask, 1, 99)
    assert scaled[mask == 0].max() == 0
    np.testing.assert_allclose(scaled[mask > 0] * (high - low) + low, array[mask > 0], rtol=1e-5)
    assert np.mean((scaled[mask > 0] >= 0) & (scaled[mask > 0] <= 1)) > 0.97


@pytest.mark.parametrize("spacing,multiple", [((2.0, 2.0, 2.0), 8), ((1.5, 1.5, 1.5), 16)])
def test_model_grid_is_canonical_cropped_and_padded(spacing, multiple):
    head = ellipsoid_head()
    mask = compute_brain_mask([head])
    grid = canonical_grid(mask, spacing, multiple)
    assert grid.direction == CANONICAL_DIRECTION and grid.spacing == spacing
    assert all(s % multiple == 0 for s in grid.shape)
    on_grid = resample_to(mask, grid, "nearest").array
    assert on_grid.sum() * np.prod(spacing) == pytest.approx((mask.array > 0).sum() * np.prod(head.spacing), rel=0.1)
    # The whole brain fits: no foreground on the grid border.
    assert not on_grid[[0, -1]].any() and not on_grid[:, [0, -1]].any() and not on_grid[:, :, [0, -1]].any()


def test_prepare_then_inverse_returns_to_the_oblique_anisotropic_reference():
    head = ellipsoid_head()
    mask = compute_brain_mask([head])
    prepared = prepare({"t1w": head}, mask, (1.0, 1.0, 1.0), 8)
    assert prepared.inputs.shape[0] == 1 and prepared.inputs.dtype == np.float32
    back = prepared.inverse(prepared.inputs[0], *_scale_of(prepared, "t1w"))
    # Geometry is the reference's exactly, not approximately.
    assert back.origin == head.origin and back.spacing == head.spacing and back.direction == head.direction
    inside = mask.array > 0
    error = np.abs(back.array[inside] - head.array[inside])
    assert np.median(error) < 3.0 and back.array[~inside].max() == 0


def _scale_of(prepared, name):
    low, high = prepared.percentiles[name]
    return high - low, low


def test_ct_brain_mask_cuts_the_brain_from_scalp_and_air():
    """A CT perfusion series with skull, scalp (same HU as brain) and air: the CT window, not Otsu (which
    takes the -1000 HU air for the brightest class in absolute value), finds the brain."""
    from scipy import ndimage

    from MRISynthesisLib.phantom.generator import generate_subject
    from MRISynthesisLib.segmentation.scores import dice

    subject = generate_subject(4, "stroke", 4.0, randomize_acquisition=True, maps=("ctp",))
    ctp, brain = subject.maps["ctp"], np.pad(subject.masks["brain"].array > 0, 5)
    ball = ndimage.generate_binary_structure(3, 1)
    gap, skull, scalp = (ndimage.binary_dilation(brain, ball, iterations=n) for n in (1, 3, 4))
    head = np.full(brain.shape, -1000.0, np.float32)  # air
    head[scalp], head[skull & ~gap], head[gap & ~brain] = 40.0, 1100.0, 8.0  # scalp, bone, CSF
    noise = np.random.default_rng(0).normal(0.0, 5.0, (len(ctp.array), *brain.shape)).astype(np.float32)
    frames = np.where(brain, np.pad(ctp.array, [(0, 0)] + [(5, 5)] * 3), head + noise)
    series = Volume(frames, ctp.origin, ctp.spacing, ctp.direction, ctp.metadata)
    assert dice(compute_brain_mask([series], "CT").array > 0, brain) > 0.9
    assert dice(compute_brain_mask([series]).array > 0, brain) < 0.5  # the MR rule on CT
