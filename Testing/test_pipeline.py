"""``synthesize`` end to end on files with a tiny real model: geometry, files, uncertainty, lesions,
registration, determinism, cancel. (Map quality is the evaluation harness's job, not this file's.)"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.errors import CancelledError
from MRISynthesisLib.pipeline import SynthesisRequest, synthesize
from MRISynthesisLib.volume import Volume, read_volume, write_volume

OBLIQUE = tuple(sitk.VersorRigid3DTransform((0.15, -0.1, 0.2, 0.96)).GetMatrix())


def head(shape, spacing, direction, origin, contrast, seed, centre=(0.0, 0.0, 0.0)) -> Volume:
    """An ellipsoid 'brain' centred at physical ``centre`` with a bright 'lesion' at +10 mm x."""
    volume = Volume(np.zeros(shape, np.float32), origin, spacing, direction)
    k, j, i = np.indices(shape)
    points = (volume.index_to_physical() @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)]))[:3].T
    x, y, z = (points - np.asarray(centre)).T
    brain = (x / 30) ** 2 + (y / 36) ** 2 + (z / 28) ** 2 < 1
    lesion = ((x - 10) ** 2 + y ** 2 + z ** 2) < 16
    noise = np.random.default_rng(seed).normal(0, 3, len(x))
    array = np.where(brain, contrast[0] + 20 * np.sin(x / 7) + noise, 0) + np.where(lesion, contrast[1], 0)
    return volume.with_array(array.reshape(shape).astype(np.float32))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """T1w on an oblique, anisotropic grid; FLAIR on a plain grid with other spacing; a lesion mask."""
    folder = tmp_path_factory.mktemp("case")
    t1w = head((36, 50, 44), (1.6, 1.4, 2.2), OBLIQUE, (-32.0, -38.0, -35.0), (300, -80), 0)
    flair = head((40, 44, 38), (1.8, 1.8, 1.8), (1, 0, 0, 0, 1, 0, 0, 0, 1), (-34.0, -40.0, -36.0), (200, 150), 1)
    lesion = flair.with_array((flair.array > 320).astype(np.uint8))
    paths = {name: str(write_volume(volume, folder / f"{name}.nii.gz"))
             for name, volume in (("t1w", t1w), ("flair", flair))}
    paths["lesions"] = str(write_volume(lesion, folder / "lesions.nii.gz", np.uint8))
    return paths


@pytest.fixture(autouse=True)
def model(tiny_model_home, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tiny_model_home))


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def request(case, output_dir=None, **options) -> SynthesisRequest:
    options = {"device": "cpu", "steps": 2, "seed": 0, **options}
    return SynthesisRequest("myelin-psr", {"t1w": case["t1w"], "flair": case["flair"]}, output_dir, **options)


def test_outputs_on_the_oblique_anisotropic_reference_and_all_files_written(case, tmp_path):
    before = {name: digest(path) for name, path in case.items()}
    stages = []
    result = synthesize(request(case, tmp_path / "out", samples=2, output_format="nrrd"),
                        progress=lambda stage, step, total: stages.append(stage))
    t1w = read_volume(case["t1w"])
    for name in ("psr", "psr_uncertainty", "lesions"):
        written = read_volume(result.files[name])
        assert written.origin == pytest.approx(t1w.origin, abs=1e-6)
        assert written.spacing == pytest.approx(t1w.spacing, abs=1e-6)
        assert written.direction == pytest.approx(t1w.direction, abs=1e-6)
        assert written.shape == t1w.shape
    psr, sd = result.outputs["psr"].array, result.uncertainty["psr"].array
    assert np.isfinite(psr).all() and (sd >= 0).all() and sd.max() > 0
    assert psr[t1w.array == 0].max() == 0, "nothing is synthesized outside the brain"
    assert set(stages) >= {"read", "align", "preprocess", "sample", "postprocess", "write"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["files"]["montage"].endswith("montage.png") and summary["samples"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["psr.nrrd", "psr_uncertainty.nrrd", "lesions.nrrd", "lesions.csv", "lesions.json", "montage.png",
         "summary.json"])
    assert {name: digest(path) for name, path in case.items()} == before, "inputs must never be modified"


def test_given_lesion_mask_gives_one_row_per_component(case):
    result = synthesize(request(case, lesions=case["lesions"], reference="flair"))
    flair_lesions = read_volume(case["lesions"]).array > 0
    assert result.summary["lesions"] == {"count": 1, "total_ml": pytest.approx(flair_lesions.sum() * 1.8 ** 3 / 1000,
                                                                                 abs=1e-3), "source": "given",
                                         "method": "the user's mask"}
    row = result.lesion_table[0]
    assert row["id"] == 1 and {"mean_psr", "nawm_psr", "ratio_psr", "centroid_lps"} <= set(row)
    assert row["centroid_lps"] == pytest.approx([10, 0, 0], abs=2.0)


def test_same_seed_same_maps_other_seed_other_maps(case):
    first = synthesize(request(case, seed=3)).outputs["psr"].array
    second = synthesize(request(case, seed=3)).outputs["psr"].array
    other = synthesize(request(case, seed=4)).outputs["psr"].array
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_inputs_that_do_not_overlap_are_registered(case, tmp_path):
    flair = read_volume(case["flair"])
    far = Volume(flair.array, tuple(np.asarray(flair.origin) + (90.0, 0.0, 0.0)), flair.spacing, flair.direction)
    inputs = {"t1w": case["t1w"], "flair": far}
    result = synthesize(SynthesisRequest("myelin-psr", inputs, device="cpu", steps=1))
    assert result.summary["registered"] == ["flair"]
    assert np.array_equal(far.array, flair.array), "in-memory inputs must not be modified either"


def test_cancel_during_sampling_writes_nothing(case, tmp_path):
    calls = []

    def cancel() -> bool:
        return "sample" in calls

    with pytest.raises(CancelledError):
        synthesize(request(case, tmp_path / "out", steps=4),
                   progress=lambda stage, step, total: calls.append(stage), cancel=cancel)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
