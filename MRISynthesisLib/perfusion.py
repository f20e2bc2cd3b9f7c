"""CT perfusion series in time: frame times, checks, and resampling onto the model's fixed frames.

Scanners differ in frame count (15-40 is common), interval (1-4 s, often irregular: dense during the bolus,
sparse after) and duration (40-60 s). The stroke model sees ``MODEL_FRAMES`` frames at fixed times after the
first frame (0, 4, ..., 56 s), so the bolus keeps its meaning in seconds whatever the protocol: each voxel's
curve is interpolated linearly in time, and a scan shorter than the model's window holds its last frame (the
tail of the curve changes slowly by then).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .volume import Volume

MODEL_FRAMES = 15
MODEL_INTERVAL_S = 4.0
MIN_FRAMES = 2


def frame_times(series: Volume, name: str = "ctp") -> np.ndarray:
    """Frame times (s, float64, from the first frame) of a 4D series, from its metadata
    (``frame_times_s`` or ``frame_interval_s``; see ``volume.py``).

    Raises:
        InputError: one line naming ``name`` for a 3D volume (no time axis), a single frame, missing timing
            or times that do not increase.
    """
    if series.array.ndim != 4:
        raise InputError("has no time axis (a 3D volume); a CT perfusion series is 4D: save it as 4D NIfTI/NRRD "
                         "or pass its DICOM folder", name)
    if series.channels < MIN_FRAMES:
        raise InputError(f"has {series.channels} frame; a perfusion series needs at least {MIN_FRAMES} time points",
                         name)
    if "frame_times_s" in series.metadata:
        times = np.asarray(series.metadata["frame_times_s"], np.float64)
    elif series.metadata.get("frame_interval_s", 0) > 0:
        times = np.arange(series.channels) * float(series.metadata["frame_interval_s"])
    else:
        raise InputError("has no frame timing; give a 4D file whose 4th spacing is the frame interval, or the "
                         "DICOM folder", name)
    if times.shape != (series.channels,):
        raise InputError(f"has {series.channels} frames but {times.size} frame times", name)
    if not np.all(np.diff(times) > 0):
        raise InputError("frame times do not increase; frames are out of order or repeated", name)
    return times - times[0]


def model_frame_times(count: int = MODEL_FRAMES, interval: float = MODEL_INTERVAL_S) -> np.ndarray:
    """The model's frame times (s): ``0, interval, ..., (count - 1) interval``."""
    return np.arange(count) * float(interval)


def resample_frames(series: Volume, name: str = "ctp", count: int = MODEL_FRAMES,
                    interval: float = MODEL_INTERVAL_S) -> Volume:
    """The series on the model's frames: ``(count, z, y, x)`` float32 on the same spatial grid, linear in
    time, holding the last frame beyond the end of the scan; ``metadata["frame_interval_s"] = interval``."""
    times = frame_times(series, name)
    target = model_frame_times(count, interval)
    upper = np.clip(np.searchsorted(times, target, side="right"), 1, len(times) - 1)
    lower = upper - 1
    weight = np.clip((target - times[lower]) / (times[upper] - times[lower]), 0.0, 1.0).astype(np.float32)
    frames = series.array.astype(np.float32, copy=False)
    out = np.empty((count, *series.shape), np.float32)
    for k in range(count):  # one output frame at a time keeps the working set at ~2 frames
        np.multiply(frames[lower[k]], 1 - weight[k], out=out[k])
        out[k] += weight[k] * frames[upper[k]]
    metadata = {key: value for key, value in series.metadata.items() if key != "frame_times_s"}
    return Volume(out, series.origin, series.spacing, series.direction, {**metadata, "frame_interval_s": interval})


BASELINE_FRAMES = 2         # frames at 0 and 4 s: before the bolus reaches the brain (arrival 5-10 s)
TISSUE_HU = (30.0, 20.0)    # baseline channel = (HU - 30) / 20: brain parenchyma near 0, CSF near -1
ENHANCEMENT_HU = 5.0        # enhancement channels = (frame - baseline) / 5 HU: grey matter peaks near 1 (phantom: 4-6 HU)


def ctp_channels(series: Volume, name: str = "ctp") -> np.ndarray:
    """Network channels of a CT perfusion series, ``(MODEL_FRAMES, z, y, x)`` float32: the pre-bolus baseline
    (mean of the first ``BASELINE_FRAMES`` model frames) and the enhancement of each later frame over it.

    CT is calibrated in HU, so the scaling is fixed (no per-scan percentiles): a voxel's enhancement curve
    keeps its physical meaning (its area is proportional to the blood volume, its peak time to the delay).
    """
    frames = resample_frames(series, name).array
    baseline = frames[:BASELINE_FRAMES].mean(axis=0)
    channels = [(baseline - TISSUE_HU[0]) / TISSUE_HU[1]]
    channels += [(frames[k] - baseline) / ENHANCEMENT_HU for k in range(1, MODEL_FRAMES)]
    return np.stack(channels).astype(np.float32)
