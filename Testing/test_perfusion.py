"""CT perfusion series in time: frame timing from 4D files and DICOM time series, checks, and resampling onto
the stroke model's fixed frames."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.perfusion import frame_times, model_frame_times, resample_frames
from MRISynthesisLib.volume import Volume, read_volume, write_volume


def series_with_times(times, shape=(3, 4, 5)) -> Volume:
    """Voxel value = (voxel index + 1) * t, so linear interpolation in time is exact."""
    ramp = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    return Volume(np.stack([ramp * t for t in times]), (1.0, 2.0, 3.0), (0.8, 0.8, 2.5),
                  metadata={"frame_times_s": list(times)})


def test_resampling_is_linear_in_time_and_holds_the_last_frame():
    times = [10.0, 11.0, 13.0, 16.0, 20.0, 28.0, 40.0]  # irregular, dense early, starting at scan time 10 s
    series = series_with_times(times)
    resampled = resample_frames(series)
    target = model_frame_times()
    assert resampled.array.shape == (15, 3, 4, 5) and resampled.same_grid(series)
    assert resampled.metadata["frame_interval_s"] == 4.0 and "frame_times_s" not in resampled.metadata
    ramp = series.array[0] / times[0]
    for k, t in enumerate(target):  # the model's t is measured from the first frame (scan time 10 s)
        expected = ramp * min(t + 10.0, 40.0)  # past the end of the 30 s scan: the last frame
        np.testing.assert_allclose(resampled.array[k], expected, rtol=1e-5)


def test_frame_timing_comes_from_the_interval_or_the_times_and_is_checked():
    volume = Volume(np.random.default_rng(0).random((4, 3, 3, 3)).astype(np.float32),
                    metadata={"frame_interval_s": 1.5})
    np.testing.assert_allclose(frame_times(volume), [0.0, 1.5, 3.0, 4.5])
    with pytest.raises(InputError, match="no time axis"):
        frame_times(Volume(np.ones((3, 3, 3), np.float32)))
    with pytest.raises(InputError, match="1 frame"):
        frame_times(Volume(np.ones((1, 3, 3, 3), np.float32), metadata={"frame_interval_s": 1.0}))
    with pytest.raises(InputError, match="no frame timing"):
        frame_times(Volume(np.ones((4, 3, 3, 3), np.float32)))
    with pytest.raises(InputError, match="do not increase"):
        frame_times(series_with_times([0.0, 2.0, 2.0, 5.0]))
    with pytest.raises(InputError, match="4 frames but 3 frame times"):
        frame_times(Volume(np.ones((4, 3, 3, 3), np.float32), metadata={"frame_times_s": [0, 1, 2]}))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_4d_files_keep_the_frame_interval(tmp_path, suffix):
    series = Volume(np.random.default_rng(1).random((5, 6, 7, 8)).astype(np.float32), (1.0, -2.0, 3.0),
                    (0.9, 0.9, 2.0), metadata={"frame_interval_s": 2.5})
    loaded = read_volume(write_volume(series, tmp_path / f"ctp{suffix}"))
    assert loaded.same_grid(series) and loaded.channels == 5
    np.testing.assert_array_equal(loaded.array, series.array)
    np.testing.assert_allclose(frame_times(loaded), [0.0, 2.5, 5.0, 7.5, 10.0], atol=1e-5)


def write_dicom_time_series(folder, frames: list[np.ndarray], times_s: list[float], spacing=(0.9, 0.9, 5.0),
                            uid="1.2.826.0.1.3680043.8.498.1", start_s: float = 9 * 3600 + 59 * 60 + 50):
    """One CT file per (frame, slice) with the tags a scanner writes: position, orientation, pixel spacing,
    acquisition time (HHMMSS.FFFFFF from ``start_s`` after midnight, 09:59:50 by default, wrapping at
    midnight), one series UID; files named in a scrambled order."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    order = np.random.default_rng(0).permutation(sum(len(f) for f in frames))
    index = 0
    for k, (frame, time_s) in enumerate(zip(frames, times_s)):
        for z, plane in enumerate(frame):
            image = sitk.GetImageFromArray(plane.astype(np.int16))
            image.SetSpacing(spacing[:2])
            seconds = (start_s + time_s + 0.01 * z) % 86400  # slices of a frame a little apart
            clock = f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}"
            for tag, value in (("0008|0060", "CT"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
                               ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                               ("0008|0018", f"{uid}.3.{k}.{z}"), ("0020|0013", str(index + 1)),
                               ("0020|0032", f"-10\\-20\\{z * spacing[2]}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                               ("0028|0030", f"{spacing[1]}\\{spacing[0]}"), ("0018|0050", str(spacing[2])),
                               ("0008|0032", clock), ("0020|0100", str(k + 1))):
                image.SetMetaData(tag, value)
            writer.SetFileName(str(folder / f"IM{order[index]:04d}.dcm"))
            writer.Execute(image)
            index += 1


def test_dicom_time_series_becomes_frames_with_their_acquisition_times(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(-100, 300, (6, 10, 12)).astype(np.int16) for _ in range(4)]
    write_dicom_time_series(tmp_path / "ctp", frames, [0.0, 2.0, 4.5, 9.0])
    series = read_volume(tmp_path / "ctp", "ctp")
    assert series.array.shape == (4, 6, 10, 12)
    for k in range(4):
        np.testing.assert_array_equal(series.array[k], frames[k])
    np.testing.assert_allclose(frame_times(series), [0.0, 2.0, 4.5, 9.0], atol=0.01)
    np.testing.assert_allclose(series.spacing, (0.9, 0.9, 5.0), atol=1e-4)
    np.testing.assert_allclose(series.origin, (-10.0, -20.0, 0.0), atol=1e-4)


def test_dicom_time_series_across_midnight_keeps_its_frame_order(tmp_path):
    rng = np.random.default_rng(5)
    frames = [rng.integers(-100, 300, (3, 6, 8)).astype(np.int16) for _ in range(4)]
    write_dicom_time_series(tmp_path / "ctp", frames, [0.0, 4.0, 8.0, 12.0], start_s=23 * 3600 + 59 * 60 + 55)
    series = read_volume(tmp_path / "ctp", "ctp")  # clock times 23:59:55, 23:59:59, 00:00:03, 00:00:07
    for k in range(4):
        np.testing.assert_array_equal(series.array[k], frames[k])
    np.testing.assert_allclose(frame_times(series), [0.0, 4.0, 8.0, 12.0], atol=0.01)


def test_dicom_time_series_with_a_missing_slice_or_another_grid_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 100, (5, 8, 8)).astype(np.int16) for _ in range(3)]
    write_dicom_time_series(tmp_path / "missing", [frames[0], frames[1], frames[2][:4]], [0.0, 2.0, 4.0])
    with pytest.raises(InputError, match="different slice counts"):
        read_volume(tmp_path / "missing", "ctp")
    write_dicom_time_series(tmp_path / "grid", [frames[0], frames[1][:, :6], frames[2]], [0.0, 2.0, 4.0])
    with pytest.raises(InputError, match="frame 2 has a different grid"):
        read_volume(tmp_path / "grid", "ctp")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_irregular_frame_times_survive_nrrd_and_mha(tmp_path, suffix):
    times = [0.0, 1.0, 2.5, 4.5, 8.0]
    series = series_with_times(times)
    loaded = read_volume(write_volume(series, tmp_path / f"ctp{suffix}"))
    np.testing.assert_allclose(frame_times(loaded), times, atol=1e-4)
    np.testing.assert_array_equal(loaded.array, series.array)


def test_ctp_channels_are_the_pre_bolus_baseline_and_the_enhancement_in_fixed_hu_units():
    from MRISynthesisLib.perfusion import ENHANCEMENT_HU, TISSUE_HU, ctp_channels

    times = np.arange(0.0, 61.0, 2.0)  # 2 s frames over 60 s
    enhancement = np.where(times >= 8.0, 10.0 * np.exp(-(times - 8.0) / 6.0), 0.0)  # bolus after 8 s
    base = np.array([35.0, 5.0], np.float32)[:, None, None]  # parenchyma, CSF
    frames = np.stack([np.broadcast_to(base + e * np.array([1.0, 0.0])[:, None, None], (2, 3, 3))
                       for e in enhancement]).astype(np.float32)
    channels = ctp_channels(Volume(frames, metadata={"frame_interval_s": 2.0}))
    assert channels.shape == (15, 2, 3, 3)
    np.testing.assert_allclose(channels[0, :, 0, 0], [(35.0 - TISSUE_HU[0]) / TISSUE_HU[1],
                                                      (5.0 - TISSUE_HU[0]) / TISSUE_HU[1]], atol=1e-5)
    expected = np.interp(np.arange(1, 15) * 4.0, times, enhancement) / ENHANCEMENT_HU
    np.testing.assert_allclose(channels[1:, 0, 0, 0], expected, atol=1e-5)
    assert not channels[1:, 1].any()  # CSF does not enhance


def test_a_perfusion_series_is_prepared_on_the_model_grid_as_ctp_channels():
    """``prepare(method="ctp-channels")`` resamples the series spatially first (a 1 mm series would not fit as
    15 float channels), then takes the channels: the same numbers as channels first, then resampling, since
    both steps are linear; zero outside the brain; channel names group the 15 channels under their input."""
    from MRISynthesisLib.perfusion import MODEL_FRAMES, ctp_channels
    from MRISynthesisLib.preprocess import arrange_channels, prepare
    from MRISynthesisLib.resample import resample_to

    rng = np.random.default_rng(3)
    times = [0.0, 2.0, 5.0, 9.0, 14.0, 20.0, 27.0, 35.0, 44.0, 54.0]
    hu = 30 + np.cumsum(rng.normal(0.0, 2.0, (len(times), 12, 14, 16)), axis=0).astype(np.float32)
    series = Volume(hu, (5.0, -3.0, 8.0), (1.1, 0.9, 2.5), metadata={"frame_times_s": times})
    mask = Volume(np.zeros((12, 14, 16), np.uint8), series.origin, series.spacing, series.direction)
    mask.array[2:10, 3:12, 3:14] = 1
    prepared = prepare({"ctp": series}, mask, (2.0, 2.0, 2.0), 4, method="ctp-channels")
    assert prepared.inputs.shape[0] == MODEL_FRAMES and prepared.channel_inputs == ["ctp"] * MODEL_FRAMES
    assert prepared.percentiles == {}  # fixed HU units: no per-scan statistics
    channels_first = Volume(ctp_channels(series), series.origin, series.spacing, series.direction)
    expected = resample_to(channels_first, prepared.grid).array
    inside = prepared.mask > 0
    np.testing.assert_allclose(prepared.inputs[:, inside], expected[:, inside], atol=1e-4)
    assert not prepared.inputs[:, ~inside].any()
    # The model's channel order: a missing optional input would be its own block of zero channels.
    arranged = arrange_channels(prepared.inputs, prepared.channel_inputs, ["ctp", "other"], MODEL_FRAMES)
    assert arranged.shape[0] == 2 * MODEL_FRAMES and not arranged[MODEL_FRAMES:].any()
    np.testing.assert_array_equal(arranged[:MODEL_FRAMES], prepared.inputs)
    with pytest.raises(InputError, match="no time axis"):
        prepare({"ctp": Volume(hu[0], series.origin, series.spacing)}, mask, (2.0, 2.0, 2.0), 4,
                method="ctp-channels")


def test_stroke_training_subjects_have_ctp_channels_and_dwi_relative_to_normal_brain():
    from MRISynthesisLib.perfusion import MODEL_FRAMES
    from MRISynthesisLib.training.data import phantom_subjects, task_data

    recipe = task_data("stroke-dwi-adc")
    assert recipe.input_channels == MODEL_FRAMES
    sample = phantom_subjects(recipe, [1], spacing=4.0, multiple=8)[0]
    brain, core = sample.brain[0] > 0, sample.lesion[0] > 0
    assert sample.inputs.shape == (MODEL_FRAMES, *brain.shape) and sample.target.shape == (2, *brain.shape)
    dwi, adc = sample.target
    assert np.median(dwi[brain]) == pytest.approx(1.0, abs=0.02)
    assert core.any() and dwi[core].mean() > 1.2 and adc[core].mean() < 0.62  # bright DWI, low ADC in the core
    assert 0.6 < np.median(adc[brain]) < 1.2  # 1e-3 mm^2/s, unscaled
