"""Digital brain phantom: physics orderings, exact relations, masks and determinism (issue 3).

Subjects are simulated at 4 mm (a few tenths of a second each) on several seeds and every pathology.
Voxels are partial-volume mixtures (``subject.fractions``): orderings that are statements about one tissue
(CSF nulling, CSF PSR = 0, CSF ADC) are checked on pure voxels, the others on the binary masks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.phantom import MAP_NAMES, PhantomStream, generate_subject
from MRISynthesisLib.phantom.mr_signal import flair, flair_null_ti, mprage, mprage_steady_state

SPACING = 4.0
SEEDS = (0, 1, 2)
PATHOLOGY_MASKS = {"ms": ("lesion", "nawm", "black_hole", "enhancing"), "stroke": ("lesion", "core", "penumbra"),
                   "glioma": ("lesion", "necrosis", "enhancing", "oedema"), "none": ("lesion",)}

_CACHE: dict = {}


def subject(seed: int, pathology: str, **kwargs):
    key = (seed, pathology, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = generate_subject(seed, pathology, spacing=SPACING, **kwargs)
    return _CACHE[key]


def arrays(s):
    return {n: v.array for n, v in s.maps.items()}, {n: v.array.astype(bool) for n, v in s.masks.items()}


def fractions(s):
    return {n: v.array for n, v in s.fractions.items()}


def mean(image, where):
    assert where.any(), "empty region"
    return float(image[where].mean())


ALL = [(seed, p) for p in ("ms", "stroke", "glioma", "none") for seed in SEEDS]


@pytest.mark.parametrize("seed,pathology", ALL)
def test_contract_names_types_grid(seed, pathology):
    s = subject(seed, pathology)
    assert set(s.maps) == set(MAP_NAMES)
    assert set(("brain", "wm", "gm", "deep_gm", "csf") + PATHOLOGY_MASKS[pathology]) == set(s.masks)
    reference = s.maps["t1"]
    for name, volume in s.maps.items():
        assert volume.array.dtype == np.float32, name
        assert volume.same_grid(reference), name
        assert np.isfinite(volume.array).all(), name
    assert s.maps["ctp"].array.ndim == 4 and s.maps["ctp"].channels == s.parameters["protocol"]["ctp"]["frames"]
    for name, volume in s.masks.items():
        assert volume.array.dtype == np.uint8 and set(np.unique(volume.array)) <= {0, 1}, name
        assert volume.same_grid(reference), name
    json.dumps(s.parameters)  # every drawn value is JSON-serialisable
    assert s.parameters["seed"] == seed and s.parameters["pathology"] == pathology


@pytest.mark.parametrize("seed,pathology", ALL)
def test_tissue_masks_partition_brain_and_pathology_masks_nest(seed, pathology):
    _, k = arrays(subject(seed, pathology))
    tissues = k["wm"].astype(int) + k["gm"] + k["deep_gm"] + k["csf"]
    assert (tissues == k["brain"]).all() and tissues.max() == 1
    assert not (k["lesion"] & ~k["brain"]).any()
    if pathology == "ms":
        assert k["lesion"].any()
        assert (k["nawm"] == (k["wm"] & ~k["lesion"])).all()
        assert not (k["black_hole"] & ~k["lesion"]).any() and not (k["enhancing"] & ~k["lesion"]).any()
    if pathology == "stroke":
        assert (k["lesion"] == k["core"]).all() and k["core"].any() and k["penumbra"].any()
        assert not (k["core"] & k["penumbra"]).any()
    if pathology == "glioma":
        parts = k["necrosis"].astype(int) + k["enhancing"] + k["oedema"]
        assert parts.max() == 1 and ((parts > 0) == k["lesion"]).all() and k["enhancing"].any()
    if pathology == "none":
        assert not k["lesion"].any()


@pytest.mark.parametrize("seed,pathology", ALL)
def test_mprage_flair_t2w_orderings(seed, pathology):
    m, k = arrays(subject(seed, pathology))
    healthy = ~k["lesion"] & ~k.get("penumbra", np.zeros_like(k["brain"])) & ~k.get("oedema", k["lesion"])
    wm, gm, csf = (k[t] & healthy for t in ("wm", "gm", "csf"))
    assert mean(m["mprage"], wm) > mean(m["mprage"], gm) > mean(m["mprage"], csf)
    assert 1.05 < mean(m["mprage"], wm) / mean(m["mprage"], gm) < 1.8
    # Nulling is a property of the CSF compartment: pure CSF keeps some signal (imperfect inversion, TI off
    # the null) but stays far below WM; CSF-mask voxels (partial volume with cortex) stay darker than WM.
    pure_csf = fractions(subject(seed, pathology))["csf"] >= 0.95
    assert 0.0 < mean(m["flair"], pure_csf) < 0.5 * mean(m["flair"], wm)
    assert mean(m["flair"], csf) < mean(m["flair"], wm)
    assert mean(m["flair"], gm) > mean(m["flair"], wm)
    t2w_csf = mean(m["t2w"], csf)
    for region in ("wm", "gm", "deep_gm", "lesion"):
        if k[region].any():
            assert t2w_csf > mean(m["t2w"], k[region] & ~k["csf"]), region
    if pathology == "ms":
        assert mean(m["mprage"], k["lesion"]) < mean(m["mprage"], k["nawm"])
        assert mean(m["flair"], k["lesion"]) > mean(m["flair"], k["nawm"])
    if pathology == "glioma":
        assert mean(m["flair"], k["oedema"]) > mean(m["flair"], wm)


@pytest.mark.parametrize("seed,pathology", ALL)
def test_psr_orderings(seed, pathology):
    m, k = arrays(subject(seed, pathology))
    f = fractions(subject(seed, pathology))
    psr = m["psr"]
    assert (f["csf"] == 1).any() and (psr[f["csf"] == 1] == 0).all() and (psr[~k["brain"]] == 0).all()
    assert mean(psr, k["wm"] & ~k["lesion"]) > mean(psr, k["gm"] & ~k["lesion"]) > mean(psr, k["csf"]) > 0
    if pathology == "ms":
        assert mean(psr, k["lesion"]) < mean(psr, k["nawm"])
        pure = f["lesion"] >= 0.99  # lesion compartment alone: 40-60 % (black holes 25-45 %) of NAWM
        if pure.any():
            assert 0.2 < mean(psr, pure) / mean(psr, k["nawm"] & (f["wm"] >= 0.99)) < 0.7
    # R1 follows PSR (strong correlation in parenchyma) without being a function of it (noise).
    tissue = k["brain"] & (f["csf"] == 0) & (f["lesion"] == 0)
    r1 = 1000.0 / m["t1"][tissue]
    correlation = np.corrcoef(psr[tissue], r1)[0, 1]
    assert 0.8 < correlation < 0.9999


@pytest.mark.parametrize("seed,pathology", ALL)
def test_dwi_exact_before_noise_and_stroke_core(seed, pathology):
    m, k = arrays(subject(seed, pathology))
    b = subject(seed, pathology).parameters["protocol"]["dwi"]["b"]
    np.testing.assert_allclose(m["dwi_b1000"], m["dwi_b0"] * np.exp(-b * 1e-3 * m["adc"]), rtol=1e-5, atol=1e-9)
    healthy_adc = m["adc"][k["brain"] & ~k["csf"] & ~k["lesion"]]
    assert 0.55 < float(np.median(healthy_adc)) < 0.95
    pure_csf = fractions(subject(seed, pathology))["csf"] == 1
    assert 2.9 < mean(m["adc"], pure_csf) < 3.3
    assert mean(m["adc"], k["csf"]) > 2.0 * float(np.median(healthy_adc))  # partial volume lowers the CSF mask
    if pathology == "stroke":
        assert m["adc"][k["core"]].max() < 0.62
        assert mean(m["adc"], k["penumbra"]) > 0.62
        assert m["tmax"][k["penumbra"]].min() > 6.0 and m["tmax"][k["core"]].min() > 6.0
        normal = k["brain"] & ~k["core"] & ~k["penumbra"] & ~k["csf"]
        # rCBF < 30 %: against the same voxels without the infarct (same seed, pathology "none").
        unaffected_cbf = mean(subject(seed, "none").maps["cbf"].array, k["core"])
        assert mean(m["cbf"], k["core"]) < 0.3 * unaffected_cbf
        assert mean(m["dwi_b1000"], k["core"]) > mean(m["dwi_b1000"], normal)


@pytest.mark.parametrize("seed", SEEDS)
def test_ctp_core_peaks_lower_and_later_than_normal_gm(seed):
    m, k = arrays(subject(seed, "stroke"))
    ctp = m["ctp"]
    normal_gm = k["gm"] & ~k["core"] & ~k["penumbra"]
    core_curve, gm_curve = ctp[:, k["core"]].mean(axis=1), ctp[:, normal_gm].mean(axis=1)
    core_curve, gm_curve = core_curve - core_curve[0], gm_curve - gm_curve[0]
    assert core_curve.max() < gm_curve.max()
    assert int(core_curve.argmax()) > int(gm_curve.argmax())
    # Central volume principle: CBV = CBF * MTT / 60, CT frame 0 (before arrival) is the unenhanced CT.
    np.testing.assert_allclose(m["cbv"], m["cbf"] * m["mtt"] / 60.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ctp[0], m["ct"], atol=1e-4)


@pytest.mark.parametrize("seed,pathology", ALL)
def test_t1ce_brighter_exactly_where_gadolinium(seed, pathology):
    m, k = arrays(subject(seed, pathology))
    gd = m["gd"] > 0
    assert (m["t1ce"][gd] > m["t1w_se"][gd]).all()
    assert (m["t1ce"][~gd] == m["t1w_se"][~gd]).all()
    if pathology == "ms":
        assert (gd == k["enhancing"]).all()
    if pathology == "glioma":
        assert (gd == k["enhancing"]).all() and gd.any()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pathology", ["ms", "stroke", "glioma"])
def test_maps_change_exactly_inside_pathology_masks(seed, pathology):
    """Same seed with and without pathology: maps differ exactly where the lesion compartment is (fraction > 0),
    which is exactly the union of the pathology masks (a mask voxel's lesion takes >= half of its parenchyma,
    so >= 1/8 of the voxel; 0 outside), plus for MS wherever the voxel holds WM (the normal-appearing WM
    compartment loses 5-10 % PSR)."""
    sick, healthy = subject(seed, pathology), subject(seed, "none")
    k = {n: v.array.astype(bool) for n, v in sick.masks.items()}
    lesion_fraction = sick.fractions["lesion"].array
    union = np.zeros_like(k["brain"])
    for name in PATHOLOGY_MASKS[pathology]:
        if name != "nawm":
            union |= k[name]
    assert (union == (lesion_fraction > 0)).all() and (lesion_fraction[union] >= 0.125).all()
    allowed = union | (healthy.fractions["wm"].array > 0) if pathology == "ms" else union
    changed = np.zeros_like(allowed)
    for name in sick.maps:
        difference = sick.maps[name].array != healthy.maps[name].array
        if difference.ndim == 4:
            difference = difference.any(axis=0)
        assert not (difference & ~allowed).any(), f"{name} changed outside the {pathology} masks"
        changed |= difference
    assert (changed == allowed).all(), "some pathology voxels are identical to the healthy subject"
    for name in ("brain", "wm", "gm", "deep_gm", "csf"):
        assert (sick.masks[name].array == healthy.masks[name].array).all()


def test_partial_volume_fractions_and_mixture():
    """Fractions sum to 1 in the brain, borders are mixed, and maps are the fraction-weighted tissue mean."""
    s = subject(1, "none")
    f = fractions(s)
    brain = s.masks["brain"].array.astype(bool)
    total = sum(f.values())
    np.testing.assert_allclose(total[brain], 1.0, atol=1e-5)
    assert (total[~brain] == 0).all()
    mixed = brain & (np.max(np.stack([f[n] for n in ("wm", "gm", "deep_gm", "csf")]), axis=0) < 0.8)
    assert mixed.mean() > 0.1 * brain.mean()  # a real share of the brain voxels are tissue mixtures
    tissues = s.parameters["tissue"]["tissues"]
    expected = sum(f[n] * tissues[n]["pd"] for n in ("wm", "gm", "deep_gm", "csf"))
    # PD texture is 0.5 x 1-3 %: the map equals the fraction-weighted mean of the tissue PDs within 10 %.
    np.testing.assert_allclose(s.maps["pd"].array[brain], expected[brain], rtol=0.1)
    m, k = arrays(s)
    flair = m["flair"]
    # FLAIR rises with the parenchyma share of a voxel (CSF compartment is nulled): not piecewise constant.
    csf_share = f["csf"][brain & ~k["wm"]]
    assert np.corrcoef(csf_share, flair[brain & ~k["wm"]])[0, 1] < -0.5


def test_determinism_by_seed():
    for randomize in (False, True):
        a = generate_subject(7, "ms", spacing=SPACING, randomize_acquisition=randomize)
        b = generate_subject(7, "ms", spacing=SPACING, randomize_acquisition=randomize)
        assert a.parameters == b.parameters
        for name in a.maps:
            assert np.array_equal(a.maps[name].array, b.maps[name].array), name
        for name in a.masks:
            assert np.array_equal(a.masks[name].array, b.masks[name].array), name
    c = generate_subject(8, "ms", spacing=SPACING)
    assert not np.array_equal(a.maps["t1"].array, c.maps["t1"].array)


def test_randomized_acquisition_changes_only_weighted_images():
    clean = subject(3, "ms")
    noisy = subject(3, "ms", randomize_acquisition=True)
    for name in ("t1", "t2", "pd", "psr", "adc", "cbf", "gd"):
        assert np.array_equal(clean.maps[name].array, noisy.maps[name].array), name
    for name in ("mprage", "flair", "t2w", "t1w_se", "dwi_b0", "ct", "ctp"):
        assert not np.array_equal(clean.maps[name].array, noisy.maps[name].array), name
        assert (noisy.maps[name].array[..., clean.masks["brain"].array == 0] == 0).mean() > 0.95, name
    params = noisy.parameters["acquisition"]
    assert params["dwi_b0"]["scale"] == params["dwi_b1000"]["scale"]
    assert set(params) >= {"mprage", "flair", "t2w", "ctp"}


def test_mprage_table_matches_direct_simulation_and_flair_null():
    t1 = np.array([300.0, 850.0, 1300.0, 1700.0, 4300.0], np.float32)
    ones = np.ones_like(t1)
    direct = mprage_steady_state(t1, 2300, 900, 9, 7.0, 176)
    table = mprage(ones, t1, ones * 1e9, 2300, 900, 9, 7.0, 176, te=0.0)
    np.testing.assert_allclose(table, direct, rtol=1e-4)
    assert direct[1] > direct[2] > direct[3] > direct[4] > 0
    ti = flair_null_ti(4300.0, 9000.0)
    assert 2250 < ti < 2550
    assert abs(float(flair(ones[:1], np.float32([4300.0]), np.float32([1800.0]), 9000.0, 100.0, ti)[0])) < 1e-5


def test_field_strength_changes_relaxation():
    low = generate_subject(4, "none", spacing=SPACING, field_strength=1.5, maps=("mprage",))
    high = generate_subject(4, "none", spacing=SPACING, field_strength=3.0, maps=("mprage",))
    wm = low.masks["wm"].array.astype(bool)
    assert low.maps["t1"].array[wm].mean() < 800 < 830 < high.maps["t1"].array[wm].mean()


def test_shape_option_and_map_selection():
    s = generate_subject(1, "ms", spacing=SPACING, shape=(32, 40, 32), maps=("mprage", "flair"))
    assert s.maps["mprage"].shape == (32, 40, 32) and s.masks["brain"].shape == (32, 40, 32)
    assert "ctp" not in s.maps and "t1" in s.maps and "flair" in s.maps
    brain = s.masks["brain"].array
    assert brain.sum() > 0.3 * brain.size
    centre = np.argwhere(brain).mean(axis=0)
    assert np.all(np.abs(centre - (np.array(brain.shape) - 1) / 2) < 4)


def test_stream_is_reproducible_and_balanced():
    stream = PhantomStream(seed=5, pathologies=("ms", "none"), spacing=SPACING, count=3, maps=("mprage",))
    first = list(stream)
    second = list(PhantomStream(seed=5, pathologies=("ms", "none"), spacing=SPACING, count=3, maps=("mprage",)))
    assert [s.parameters["pathology"] for s in first] == ["ms", "none", "ms"] and len(stream) == 3
    for a, b in zip(first, second):
        assert np.array_equal(a.maps["mprage"].array, b.maps["mprage"].array)
    assert not np.array_equal(first[0].maps["t1"].array, first[2].maps["t1"].array)


@pytest.mark.parametrize("kwargs,name", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"pathology": "tumour"}, "pathology"),
    ({"spacing": 0.1}, "spacing"), ({"spacing": "2"}, "spacing"), ({"shape": (10, 10)}, "shape"),
    ({"maps": ("mprage", "t3w")}, "maps"), ({"labels": "/nonexistent/aseg.nii.gz"}, "labels"),
    ({"field_strength": 7.0}, "field_strength"),
])
def test_bad_arguments_raise_input_error(kwargs, name):
    arguments = {"seed": 0, "pathology": "ms", "spacing": SPACING} | kwargs
    with pytest.raises(InputError) as error:
        generate_subject(**arguments)
    assert error.value.name == name
