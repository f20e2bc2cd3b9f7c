"""The bad-input corpus: every case exits non-zero with one clear line naming the input, writes nothing
and leaves the inputs untouched. Later issues append cases to ``CASES``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.cli import main
from MRISynthesisLib.volume import Volume, write_volume


def brain(shape=(24, 28, 24), spacing=(1.5, 1.5, 1.5), origin=(0.0, 0.0, 0.0), contrast=1.0, seed=0) -> Volume:
    """A small skull-stripped head: an ellipsoid with smooth texture, zero outside."""
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    radius = ((z - centre[0]) / 10) ** 2 + ((y - centre[1]) / 12) ** 2 + ((x - centre[2]) / 10) ** 2
    texture = np.random.default_rng(seed).normal(0, 5, shape)
    array = np.where(radius < 1, contrast * (100 + 30 * np.sin(x / 3.0)) + texture, 0).astype(np.float32)
    return Volume(array, origin, spacing)


def write(tmp: Path, name: str, volume: Volume) -> str:
    return str(write_volume(volume, tmp / f"{name}.nii.gz"))


def good_inputs(tmp: Path) -> list[str]:
    return ["--input", f"t1w={write(tmp, 't1w', brain())}", "--input", f"flair={write(tmp, 'flair', brain(contrast=0.5, seed=1))}"]


def huge_header(tmp: Path) -> str:
    """A NIfTI whose header claims 3000^3 float32 voxels (100 GB); the data is truncated on purpose."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.float32)
    path = tmp / "huge.nii"
    with open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    return str(path)


def replace_input(args: list[str], name: str, path: str) -> list[str]:
    return [f"{name}={path}" if a.startswith(f"{name}=") else a for a in args]


def with_volume(name: str, volume_factory):
    return lambda tmp: replace_input(good_inputs(tmp), name, write(tmp, f"bad-{name}", volume_factory()))


def nan_volume():
    volume = brain()
    volume.array[5, 5, 5] = np.nan
    return volume


def label_map():
    volume = brain()
    return volume.with_array(np.digitize(volume.array, [1, 80, 120]).astype(np.float32))


def far_away():
    return brain(origin=(500.0, 0.0, 0.0))


def series():
    volume = brain()
    return Volume(np.stack([volume.array] * 4), volume.origin, volume.spacing)


def two_d(tmp: Path) -> list[str]:
    path = tmp / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((30, 30), np.float32)), str(path))
    return replace_input(good_inputs(tmp), "flair", str(path))


def unreadable(tmp: Path) -> list[str]:
    path = tmp / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b this is not an image")
    return replace_input(good_inputs(tmp), "t1w", str(path))


def existing_output(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "psr.nii.gz").write_bytes(b"earlier result")
    return good_inputs(tmp)


def ctp_args(tmp: Path, path) -> list[str]:
    return ["--input", f"ctp={path}"]


def ctp_without_timing(tmp: Path) -> list[str]:
    """A 3D vector image (frames as components): no time axis to read the frame interval from."""
    path = tmp / "ctp.nrrd"
    frames = np.stack([brain().array * (1 + 0.1 * k) for k in range(4)], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(frames, isVector=True), str(path))
    return ctp_args(tmp, path)


def ctp_dicom_frames_of_different_grids(tmp: Path) -> list[str]:
    from test_perfusion import write_dicom_time_series

    head = brain().array[::2].astype(np.int16)
    write_dicom_time_series(tmp / "ctp", [head, head[:, :20], head], [0.0, 2.0, 4.0])
    return ctp_args(tmp, tmp / "ctp")


# (case id, task, build args from tmp folder, extra CLI args, exit code, words the message must contain)
CASES = [
    ("missing-file", "myelin-psr", lambda t: replace_input(good_inputs(t), "t1w", str(t / "nope.nii.gz")), [], 2,
     ["t1w", "not found"]),
    ("unreadable-file", "myelin-psr", unreadable, [], 2, ["t1w", "cannot read"]),
    ("2d-image", "myelin-psr", two_d, [], 2, ["flair", "2D"]),
    ("4d-for-3d-input", "myelin-psr", with_volume("flair", series), [], 2, ["flair", "3D volume", "4D"]),
    ("nan-voxels", "myelin-psr", with_volume("t1w", nan_volume), [], 2, ["t1w", "NaN"]),
    ("all-zero", "myelin-psr", with_volume("flair", lambda: brain().with_array(np.zeros((24, 28, 24), np.float32))),
     [], 2, ["flair", "all zeros"]),
    ("label-map-as-intensity", "myelin-psr", with_volume("t1w", label_map), [], 2, ["t1w", "label map"]),
    ("no-overlap", "myelin-psr", with_volume("flair", far_away), ["--register", "never"], 2, ["flair", "overlap"]),
    ("extreme-anisotropy", "myelin-psr", with_volume("flair", lambda: brain(spacing=(0.5, 0.5, 6.0))), [], 2,
     ["flair", "anisotropic"]),
    ("too-large-for-memory", "myelin-psr", lambda t: replace_input(good_inputs(t), "t1w", huge_header(t)), [], 2,
     ["t1w", "GB"]),
    ("unknown-task", "no-such-task", good_inputs, [], 2, ["--task", "unknown task", "myelin-psr"]),
    ("missing-required-input", "myelin-psr", lambda t: good_inputs(t)[:2], [], 2, ["flair", "required"]),
    ("duplicate-input-names", "myelin-psr", lambda t: good_inputs(t) + good_inputs(t)[:2], [], 2, ["given twice"]),
    ("unknown-input-name", "myelin-psr", lambda t: good_inputs(t) + ["--input", f"t2w={t / 't1w.nii.gz'}"], [], 2,
     ["t2w", "no input"]),
    ("malformed-input", "myelin-psr", lambda t: good_inputs(t) + ["--input", "flair"], [], 2, ["NAME=PATH"]),
    ("output-not-writable", "myelin-psr", good_inputs, ["--output", "/proc/mrisynthesis-out"], 2,
     ["--output", "not writable"]),
    ("existing-outputs", "myelin-psr", existing_output, [], 2, ["--output", "--overwrite"]),
    ("model-not-installed", "missing-contrast", good_inputs, [], 3, ["missing-contrast", "mrisynthesis models install"]),
    ("gpu-not-available", "myelin-psr", good_inputs, ["--device", "cuda:7"], 2, ["--device", "CUDA"]),
    ("ctp-without-time-axis", "stroke-dwi-adc", lambda t: ctp_args(t, write(t, "ctp", brain())), [], 2,
     ["ctp", "no time axis"]),
    ("ctp-without-frame-timing", "stroke-dwi-adc", ctp_without_timing, [], 2, ["ctp", "no frame timing"]),
    ("ctp-frames-of-different-grids", "stroke-dwi-adc", ctp_dicom_frames_of_different_grids, [], 2,
     ["ctp", "different grid"]),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused_cleanly(command: list[str], case, tmp_path, capsys) -> None:
    """Run ``mrisynthesis COMMAND`` on the case's inputs: its exit code, one error line with its words, no file
    written or modified."""
    _, _, build, extra, exit_code, words = case
    args = build(tmp_path)
    before = snapshot(tmp_path)
    output = ["--output", str(tmp_path / "out")] if "--output" not in extra else []
    code = main([*command, *args, *output, *extra, "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == exit_code
    assert len(error) == 1 and error[0].startswith("mrisynthesis: error: ")
    for word in words:
        assert word in error[0], f"{word!r} missing from {error[0]!r}"
    assert snapshot(tmp_path) == before, "bad input must not write or modify anything"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path / "home"))  # no user models: only bundled ones
    assert_refused_cleanly(["synthesize", "--task", case[1]], case, tmp_path, capsys)


def test_memory_check_counts_reclaimable_cache_as_available():
    """The memory check uses psutil's 'available' (free + reclaimable cache), never the bare free pages, which
    refused syntheses on machines whose page cache was full."""
    import os

    import psutil

    from MRISynthesisLib.checks import available_memory_bytes

    free_pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = available_memory_bytes()
    assert abs(available - psutil.virtual_memory().available) < 0.05 * psutil.virtual_memory().total
    assert available >= 0.95 * free_pages


def existing_lesions(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "lesions.nii.gz").write_bytes(b"earlier result")
    return good_inputs(tmp)


# The same corpus through ``segment-lesions`` (its inputs are the T1w and FLAIR of myelin-psr).
SEGMENT_CASES = [case for case in CASES if case[1] == "myelin-psr" and case[0] != "existing-outputs"] + [
    ("existing-lesions", "ms-lesions", existing_lesions, [], 2, ["--output", "--overwrite"]),
]


@pytest.mark.parametrize("case", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_segment_lesions_refuses_bad_input_cleanly(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path / "home"))
    assert_refused_cleanly(["segment-lesions"], case, tmp_path, capsys)


def test_segment_lesions_without_the_segmenter_model_names_the_install_command(tmp_path, capsys, monkeypatch):
    from MRISynthesisLib.model_store import registry

    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundled-models")
    args = good_inputs(tmp_path)
    before = snapshot(tmp_path)
    code = main(["segment-lesions", *args, "--output", str(tmp_path / "out"), "--lesion-method", "segmenter", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(error) == 1
    assert "ms-lesion-segmenter" in error[0] and "mrisynthesis models install" in error[0]
    assert snapshot(tmp_path) == before


def test_label_map_check_does_not_sample_one_column():
    """An intensity image whose first column is air passes, whatever its row length (a phantom CTP series of
    22 x 88 x 104 x 88 voxels was refused as a label map when the check sampled every 88th voxel)."""
    from MRISynthesisLib.checks import check_intensities
    from MRISynthesisLib.errors import InputError

    image = np.random.default_rng(0).normal(100, 10, (100, 2000, 4)).astype(np.float32)
    image[..., 0] = 0  # 800 000 voxels: a stride of size // 200 000 = 4 visits only this column
    check_intensities(Volume(image, (0, 0, 0), (1, 1, 1)), "ctp")
    labels = np.random.default_rng(1).integers(0, 5, image.shape).astype(np.float32)
    with pytest.raises(InputError, match="label map"):
        check_intensities(Volume(labels, (0, 0, 0), (1, 1, 1)), "t1w")
