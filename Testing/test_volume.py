"""Volume I/O: formats, 4D series, DICOM folders and exact geometry round trips."""

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.volume import Volume, read_volume, write_volume

OBLIQUE = tuple(sitk.VersorRigid3DTransform((0.3, -0.2, 0.1, 0.927)).GetMatrix())


def make_volume(shape=(12, 14, 16), spacing=(0.9, 1.1, 3.0), direction=OBLIQUE, seed=0):
    array = np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)
    return Volume(array, (-10.5, 20.25, 3.0), spacing, direction)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_roundtrip_keeps_voxels_and_geometry(tmp_path, suffix):
    volume = make_volume()
    path = write_volume(volume, tmp_path / f"image{suffix}")
    loaded = read_volume(path)
    assert loaded.same_grid(volume, tolerance=1e-5)
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert not list(tmp_path.glob(".partial-*")), "temporary files must not remain"


def test_4d_series_keeps_channel_axis(tmp_path):
    frames = np.stack([np.full((6, 7, 8), t, np.float32) + np.arange(8) for t in range(5)])
    series = Volume(frames, (1.0, 2.0, 3.0), (2.0, 2.0, 5.0))
    loaded = read_volume(write_volume(series, tmp_path / "ctp.nrrd"))
    assert loaded.array.shape == (5, 6, 7, 8) and loaded.channels == 5
    np.testing.assert_array_equal(loaded.array, frames)
    assert loaded.same_grid(series)


def test_true_4d_nifti_becomes_channels(tmp_path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.full((4, 5, 6), t, np.float32)) for t in range(3)])
    sitk.WriteImage(image, str(tmp_path / "fmri.nii.gz"))
    loaded = read_volume(tmp_path / "fmri.nii.gz")
    assert loaded.array.shape == (3, 4, 5, 6)
    assert loaded.array[2].max() == 2


def test_dicom_series_folder(tmp_path):
    volume = make_volume(shape=(5, 10, 12), spacing=(0.8, 0.8, 2.5), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    image = sitk.Cast(volume.to_sitk(), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {"0008|0060": "MR", "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1",
                           "0020|000d": "1.2.826.0.1.3680043.2.1125.1.2", "0020|0013": str(k),
                           "0020|0032": "\\".join(map(str, position)), "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0018|0050": "2.5", "0028|0030": "0.8\\0.8"}.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    loaded = read_volume(tmp_path)
    assert loaded.shape == (5, 10, 12)
    np.testing.assert_allclose(loaded.spacing, (0.8, 0.8, 2.5), atol=1e-4)
    np.testing.assert_allclose(loaded.origin, volume.origin, atol=1e-3)
    np.testing.assert_array_equal(loaded.array, sitk.GetArrayFromImage(image))


def test_write_refuses_unknown_format_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="unsupported output format"):
        write_volume(make_volume(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content,message", [(None, "not found"), (b"not an image", "cannot read")])
def test_read_errors_name_the_input(tmp_path, content, message):
    path = tmp_path / "t1.nii.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        read_volume(path, "t1w")
    assert str(error.value).startswith("t1w:")


def test_2d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.float32)), str(tmp_path / "slice.nii.gz"))
    with pytest.raises(InputError, match="2D image"):
        read_volume(tmp_path / "slice.nii.gz", "flair")
