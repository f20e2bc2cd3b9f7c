"""Lesion masks and statistics on hand-made volumes with known answers."""

import numpy as np
import pytest

from MRISynthesisLib.lesions import derive_lesions, label_lesions, lesion_table
from MRISynthesisLib.tasks import get_task
from MRISynthesisLib.volume import Volume

SHAPE = (40, 48, 44)
SPACING = (2.0, 2.0, 2.0)


def ball(centre, radius):
    z, y, x = np.indices(SHAPE)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def make_case(seed=0):
    """A brain with a strong left-right bias field on FLAIR, two FLAIR-bright lesions with low PSR."""
    rng = np.random.default_rng(seed)
    brain = ball((20, 24, 22), 17)
    lesions = ball((20, 18, 16), 3) | ball((14, 28, 26), 2)
    bias = np.exp(np.linspace(-0.5, 0.5, SHAPE[2]))[None, None, :]  # 2.7x brighter on one side
    flair = np.where(brain, 100 * bias * (1 + 0.8 * lesions) + rng.normal(0, 3, SHAPE), 0)
    psr = np.where(brain, np.where(lesions, 0.06, 0.15) + rng.normal(0, 0.005, SHAPE), 0)
    volume = lambda array: Volume(array.astype(np.float32), spacing=SPACING)  # noqa: E731
    return volume(brain), volume(flair), volume(psr), lesions


def test_rule_finds_bright_low_psr_lesions_despite_bias_field():
    brain, flair, psr, truth = make_case()
    found = derive_lesions(get_task("myelin-psr").lesion_rule, {"flair": flair}, {"psr": psr}, brain).array > 0
    dice = 2 * np.sum(found & truth) / (found.sum() + truth.sum())
    assert dice > 0.7
    # the MS rule does not depend on the synthesized map: a wrong PSR map leaves the overlay unchanged
    wrong = psr.with_array(np.where(brain.array > 0, 0.15, 0).astype(np.float32))
    same = derive_lesions(get_task("myelin-psr").lesion_rule, {"flair": flair}, {"psr": wrong}, brain).array > 0
    assert np.array_equal(found, same)
    labels = label_lesions(brain.with_array(found.astype(np.uint8)), min_volume_ml=0.02)
    assert labels.array.max() == 2


def test_labels_are_numbered_largest_first_and_small_ones_dropped():
    mask = np.zeros(SHAPE, np.uint8)
    mask[ball((10, 10, 10), 1)] = 1  # 7 voxels = 0.056 mL
    mask[ball((30, 30, 30), 3)] = 1
    labels = label_lesions(Volume(mask, spacing=SPACING), min_volume_ml=0.1).array
    assert labels.max() == 1 and labels[30, 30, 30] == 1 and labels[10, 10, 10] == 0
    both = label_lesions(Volume(mask, spacing=SPACING)).array
    assert both[30, 30, 30] == 1 and both[10, 10, 10] == 2


def test_table_reports_volume_means_and_ratio_to_normal_tissue():
    brain, _, psr, truth = make_case()
    labels = label_lesions(brain.with_array(truth.astype(np.uint8)))
    rows = lesion_table(labels, {"psr": psr}, brain)
    assert [row["id"] for row in rows] == [1, 2]
    first = rows[0]
    assert first["volume_ml"] == pytest.approx(ball((20, 18, 16), 3).sum() * 8 / 1000, abs=1e-4)
    assert first["mean_psr"] == pytest.approx(0.06, abs=0.002)
    assert first["nawm_psr"] == pytest.approx(0.15, abs=0.005)
    assert first["ratio_psr"] == pytest.approx(0.4, abs=0.03)


def test_stroke_core_rule_keeps_a_core_that_reaches_the_brain_surface():
    """ADC < 0.62 everywhere in the brain it holds, up to the cortical surface (no erosion); components under
    0.1 mL (12 voxels of 8 uL) are dropped."""
    rng = np.random.default_rng(1)
    brain = ball((20, 24, 22), 17)
    core = brain & ball((20, 24, 38), 7)  # a wedge cut by the brain surface
    speck = ball((12, 20, 14), 1)  # 7 voxels = 0.056 mL
    adc = np.where(brain, 0.8 + rng.normal(0, 0.03, SHAPE), 0)
    adc = np.where(core | speck, 0.45, adc)
    rule = get_task("stroke-dwi-adc").lesion_rule
    volume = lambda array: Volume(array.astype(np.float32), spacing=SPACING)  # noqa: E731
    found = label_lesions(derive_lesions(rule, {}, {"adc": volume(adc)}, volume(brain)), rule.min_volume_ml)
    assert np.array_equal(found.array > 0, core)
