"""``mrisynthesis phantom``: files on disk, byte-identical reruns, bad input, aseg label maps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.cli import main
from MRISynthesisLib.phantom import generate_subject
from MRISynthesisLib.volume import read_volume

SHARED_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "labels"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_cli_writes_every_map_and_mask_on_one_grid_and_is_byte_identical(tmp_path, capsys):
    arguments = ["phantom", "--n", "2", "--seed", "3", "--pathology", "ms", "--spacing", "4",
                 "--randomize-acquisition"]
    assert main(arguments + ["--out", str(tmp_path / "a")]) == 0
    assert "sub-003" in capsys.readouterr().out
    subjects = sorted((tmp_path / "a").iterdir())
    assert [s.name for s in subjects] == ["sub-003", "sub-004"]
    folder = subjects[0]
    names = {p.name for p in folder.iterdir()}
    for name in ("t1", "t2", "pd", "psr", "adc", "mprage", "flair", "t2w", "dwi_b1000", "ctp"):
        assert f"{name}.nii.gz" in names
    for name in ("brain", "wm", "gm", "deep_gm", "csf", "lesion", "nawm", "black_hole", "enhancing"):
        assert f"mask_{name}.nii.gz" in names
    assert not any(n.startswith(".partial") for n in names)
    reference = read_volume(folder / "psr.nii.gz")
    for path in folder.glob("*.nii.gz"):
        volume = read_volume(path)
        assert volume.same_grid(reference), path.name
    assert sitk.ReadImage(str(folder / "mask_lesion.nii.gz")).GetPixelID() == sitk.sitkUInt8
    assert read_volume(folder / "ctp.nii.gz").channels > 1
    parameters = json.loads((folder / "parameters.json").read_text())
    assert parameters["seed"] == 3 and parameters["randomize_acquisition"] is True
    # The files match the in-memory subject.
    memory = generate_subject(3, "ms", spacing=4.0, randomize_acquisition=True)
    assert np.array_equal(read_volume(folder / "flair.nii.gz").array, memory.maps["flair"].array)
    # Same seed -> byte-identical files.
    assert main(arguments + ["--out", str(tmp_path / "b")]) == 0
    for name in ("sub-003", "sub-004"):
        assert digest(tmp_path / "a" / name) == digest(tmp_path / "b" / name)
    assert digest(tmp_path / "a" / "sub-003") != digest(tmp_path / "a" / "sub-004")


def test_cli_refuses_existing_output_without_overwrite(tmp_path, capsys):
    arguments = ["phantom", "--n", "1", "--seed", "0", "--pathology", "none", "--spacing", "6", "--maps", "mprage",
                 "--out", str(tmp_path)]
    assert main(arguments) == 0
    before = digest(tmp_path / "sub-000")
    assert main(arguments) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert digest(tmp_path / "sub-000") == before
    assert main(arguments + ["--overwrite"]) == 0
    assert digest(tmp_path / "sub-000") == before


@pytest.mark.parametrize("extra,message", [
    (["--n", "0"], "--n"), (["--spacing", "0.1"], "--spacing"), (["--seed", "-4"], "--seed"),
    (["--labels", "/nonexistent/labels"], "--labels"), (["--maps", "t9w"], "maps"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["phantom", "--out", str(out), "--spacing", "6"] + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["phantom", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--n", "--seed", "--pathology", "--spacing", "--labels", "--randomize-acquisition", "--out",
                   "--overwrite", "--shape", "--maps"):
        assert option in text


def _synthetic_aseg(path: Path) -> None:
    """A 96 mm ellipsoidal 'brain' with FreeSurfer labels: WM core, cortex shell, ventricles, CSF, scalp."""
    zz, yy, xx = np.meshgrid(*(np.arange(112) - 55.5,) * 3, indexing="ij")
    r = np.sqrt((xx / 44) ** 2 + (yy / 52) ** 2 + (zz / 40) ** 2)
    labels = np.zeros(r.shape, np.int16)
    labels[r < 1.15] = 507                                   # extra-cerebral (SynthSeg 500+)
    labels[r < 1.04] = 24                                    # CSF
    labels[r < 1.0] = 3                                      # cortex
    labels[r < 0.85] = 2                                     # cerebral WM
    labels[(r < 0.85) & (xx < 0)] = 41
    labels[(np.abs(xx) < 12) & (np.abs(yy) < 14) & (np.abs(zz + 5) < 8)] = 10   # thalamus
    labels[(np.abs(xx) > 3) & (np.abs(xx) < 9) & (np.abs(yy) < 25) & (np.abs(zz - 8) < 5)] = 4  # ventricles
    image = sitk.GetImageFromArray(labels)
    image.SetOrigin((-55.5, -55.5, -55.5))
    sitk.WriteImage(image, str(path))


def test_aseg_label_map_anatomy(tmp_path):
    path = tmp_path / "aseg.nii.gz"
    _synthetic_aseg(path)
    s = generate_subject(2, "ms", spacing=4.0, labels=path, maps=("mprage", "flair"))
    masks = {n: v.array.astype(bool) for n, v in s.masks.items()}
    assert all(masks[n].any() for n in ("wm", "gm", "deep_gm", "csf", "lesion"))
    assert s.parameters["anatomy"]["source"] == str(path)
    m = s.maps["mprage"].array
    assert m[masks["wm"] & ~masks["lesion"]].mean() > m[masks["gm"]].mean() > m[masks["csf"]].mean()
    # A folder of label maps: one is drawn per subject.
    assert main(["phantom", "--labels", str(tmp_path), "--spacing", "6", "--pathology", "glioma", "--maps", "t2w",
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "sub-000" / "mask_oedema.nii.gz").exists()


def test_bad_label_map_is_input_error(tmp_path):
    path = tmp_path / "empty.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(path))
    assert main(["phantom", "--labels", str(path), "--spacing", "6", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.skipif(not SHARED_LABELS.is_dir(), reason="shared SynthSeg label maps not available")
def test_real_synthseg_label_map():
    path = sorted(SHARED_LABELS.glob("*.nii.gz"))[0]
    s = generate_subject(0, "stroke", spacing=4.0, labels=path, maps=("mprage",))
    masks = {n: v.array.astype(bool) for n, v in s.masks.items()}
    assert 800 < masks["brain"].sum() * 64 / 1000 < 2200  # ml
    assert masks["core"].any() and masks["deep_gm"].any()
