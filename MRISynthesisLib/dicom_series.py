"""DICOM folders: a 3D series, or a 4D time series (CT perfusion) whose files repeat the slice positions.

A folder may hold several series; the one with the most files is read. When slice positions repeat, the
series is a time series: at each position the files are ordered by acquisition time, frame ``k`` is the
``k``-th file of every position, and the frame's time is the mean of its files' times (slices of one CT
perfusion frame are acquired a fraction of a second apart). The result is a ``(frames, z, y, x)`` ``Volume``
with ``metadata["frame_times_s"]``, measured from the first frame.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

POSITION_TAG = "0020|0032"
TIME_TAGS = ("0008|0032", "0008|0033")  # AcquisitionTime, ContentTime ("HHMMSS.FFFFFF")
TRIGGER_TIME_TAG = "0018|1060"  # ms
HALF_DAY_S = 12 * 3600.0


def _seconds(time_of_day: str) -> float:
    """DICOM TM ``HHMMSS.FFFFFF`` (or a shorter ``HHMM``) -> seconds after midnight."""
    text = time_of_day.strip().replace(":", "")
    hours, minutes = float(text[0:2] or 0), float(text[2:4] or 0)
    return 3600 * hours + 60 * minutes + float(text[4:] or 0)


def _header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader


def _acquisition_time(reader: sitk.ImageFileReader) -> float | None:
    for tag in TIME_TAGS:
        if reader.HasMetaDataKey(tag) and reader.GetMetaData(tag).strip():
            return _seconds(reader.GetMetaData(tag))
    if reader.HasMetaDataKey(TRIGGER_TIME_TAG) and reader.GetMetaData(TRIGGER_TIME_TAG).strip():
        return float(reader.GetMetaData(TRIGGER_TIME_TAG)) / 1000.0
    return None


def _read_files(files: list[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def read_dicom_folder(path: Path, label: str):
    """The largest series of a DICOM folder as a ``Volume`` (3D, or 4D for a time series).

    Raises:
        InputError: one line naming ``label`` when the time series has frames of different grids or
            slice counts, or no acquisition times.
    """
    from .volume import Volume

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
    headers = {file: _header(file) for file in files}
    by_position: dict[tuple, list[str]] = defaultdict(list)
    for file, header in headers.items():
        if header.HasMetaDataKey(POSITION_TAG):
            by_position[tuple(round(float(v), 3) for v in header.GetMetaData(POSITION_TAG).split("\\"))].append(file)
        else:  # no position: a slice of its own
            by_position[(file,)].append(file)
    counts = {len(group) for group in by_position.values()}
    if counts == {1}:
        return Volume.from_sitk(_read_files(list(files)))
    if len(counts) > 1:
        raise InputError(f"DICOM time series in {path.name} has frames of different slice counts "
                         f"({min(counts)}-{max(counts)} files per slice position); is a frame missing?", label)
    times = {file: _acquisition_time(header) for file, header in headers.items()}
    if any(value is None for value in times.values()):
        raise InputError(f"DICOM time series in {path.name} has no acquisition times (0008,0032) to order "
                         "its frames", label)
    if max(times.values()) - min(times.values()) > HALF_DAY_S:  # a scan of minutes that crossed midnight
        times = {file: t + 2 * HALF_DAY_S if t < HALF_DAY_S else t for file, t in times.items()}
    for group in by_position.values():
        group.sort(key=lambda file: times[file])
    frame_count = counts.pop()
    # Slice order within a frame: the series reader's own order (GDCM sorts along the slice normal).
    order = {file: index for index, file in enumerate(files)}
    frames, frame_times = [], []
    for k in range(frame_count):
        frame_files = sorted((group[k] for group in by_position.values()), key=order.__getitem__)
        frames.append(_read_files(frame_files))
        frame_times.append(float(np.mean([times[file] for file in frame_files])))
    first = frames[0]
    for index, frame in enumerate(frames[1:], start=2):
        if (frame.GetSize() != first.GetSize() or not np.allclose(frame.GetSpacing(), first.GetSpacing(), atol=1e-4)
                or not np.allclose(frame.GetOrigin(), first.GetOrigin(), atol=1e-3)
                or not np.allclose(frame.GetDirection(), first.GetDirection(), atol=1e-4)):
            raise InputError(f"DICOM time series in {path.name}: frame {index} has a different grid from frame 1 "
                             f"(size {frame.GetSize()} vs {first.GetSize()}); frames must share one grid", label)
    frame_times = np.asarray(frame_times) - frame_times[0]
    array = np.stack([sitk.GetArrayFromImage(frame) for frame in frames])
    return Volume(array, first.GetOrigin(), first.GetSpacing(), first.GetDirection(),
                  {"frame_times_s": [round(float(t), 4) for t in frame_times]})
