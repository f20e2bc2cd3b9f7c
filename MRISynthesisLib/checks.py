"""Input checks that turn bad input into one clear ``InputError`` before any work or any write.

Each check names the input and the problem. ``probe_file`` reads only the header, so a volume too
large for memory is refused before its voxels are allocated.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .tasks import InputSpec
from .volume import READ_SUFFIXES, Volume

MAX_ANISOTROPY = 10.0
# Working set per model-grid voxel: inputs, latents, samples and float64 resampling buffers together.
BYTES_PER_MODEL_VOXEL = 64
BYTES_PER_INPUT_VOXEL = 12  # the read array plus a float32 copy for resampling


def available_memory_bytes() -> int:
    """Memory a new allocation can get without swapping (``psutil.virtual_memory().available``: free memory plus
    reclaimable page cache; ``sysconf``'s free pages alone refused far too early on machines with a full cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class FileInfo:
    """Header facts of an image file: ``size`` (x, y, z[, t]), spacing (x, y, z)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    components: int

    @property
    def voxels(self) -> int:
        return int(np.prod(self.size)) * self.components


def probe_file(path: str | os.PathLike, name: str) -> FileInfo:
    """Read only the header of ``path`` (DICOM folders are accepted as they are)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}", name)
    if path.is_dir():
        return FileInfo((0, 0, 0), (1.0, 1.0, 1.0), 1)  # DICOM: sizes checked after reading
    if not path.name.lower().endswith(READ_SUFFIXES) and not path.name.lower().endswith(".dcm"):
        raise InputError(f"{path.name} is not a supported image file (NIfTI, NRRD, MHA or a DICOM folder)", name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read {path} as an image (corrupt or unsupported file)", name) from None
    return FileInfo(tuple(reader.GetSize()), tuple(reader.GetSpacing()), reader.GetNumberOfComponents())


def check_nifti_finite(path: str | os.PathLike, name: str) -> None:
    """Refuse NaN/Inf voxels in a float NIfTI file.

    ITK's NIfTI reader silently turns NaN into 0, so the check reads the raw data with nibabel.
    """
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return
    import nibabel

    image = nibabel.load(str(path))
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return
    data = np.asanyarray(image.dataobj)
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputError(f"contains {bad} NaN or infinite voxels; fix or mask them before synthesis", name)


def check_memory(voxels: int, bytes_per_voxel: int, what: str, name: str, limit: int | None = None) -> None:
    """Refuse work whose estimated working set exceeds ``limit`` (default: available memory)."""
    limit = limit or available_memory_bytes()
    needed = voxels * bytes_per_voxel
    if needed > limit:
        raise InputError(f"{what} needs about {needed / 1024**3:.1f} GB but only {limit / 1024**3:.1f} GB is available; "
                         "crop the volume, use fewer --samples or a machine with more memory", name)


def check_geometry(volume: Volume, spec: InputSpec | None, name: str) -> None:
    """Dimensionality for the task (a series has >= 2 frames; a CT series, perfusion, has frame timing) and
    spacing anisotropy."""
    if spec is not None:
        wants_series = spec.channels == "series"
        if wants_series and volume.array.ndim != 4:
            raise InputError(f"expects a 4D series ({spec.description}) but got a 3D volume (no time axis, or a "
                             "single frame)", name)
        if wants_series and spec.modality == "CT":  # CT perfusion: frames, timing (perfusion.frame_times)
            from .perfusion import frame_times

            frame_times(volume, name)
        elif wants_series and volume.channels < 2:
            raise InputError(f"is a series with {volume.channels} frame; {spec.description} needs at least 2", name)
        if not wants_series and volume.array.ndim != 3:
            raise InputError(f"expects a 3D volume but got a 4D image with {volume.channels} frames", name)
    if min(volume.shape) < 4:
        raise InputError(f"is too small for a 3D volume (size {volume.shape[::-1]}); is it a single slice?", name)
    ratio = max(volume.spacing) / min(volume.spacing)
    if ratio > MAX_ANISOTROPY:
        raise InputError(f"voxel spacing {tuple(round(s, 2) for s in volume.spacing)} mm is anisotropic beyond "
                         f"{MAX_ANISOTROPY:.0f}:1 ({ratio:.1f}:1); resample it or use a 3D acquisition", name)


def check_intensities(volume: Volume, name: str, allow_labels: bool = False) -> None:
    """Finite, not constant, and not a label map given where an intensity image is expected."""
    data = volume.array
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        count = int(data.size - np.isfinite(data).sum())
        raise InputError(f"contains {count} NaN or infinite voxels; fix or mask them before synthesis", name)
    if not np.any(data):
        raise InputError("is all zeros", name)
    if np.ptp(data) == 0:
        raise InputError(f"is constant (every voxel = {data.flat[0]})", name)
    if allow_labels:
        return
    # random voxels, not a stride: a stride that is a multiple of a row length samples one column (often air)
    flat = data.ravel()
    sample = flat[np.random.default_rng(0).integers(0, flat.size, 200_000)] if flat.size > 200_000 else flat
    integral = np.issubdtype(data.dtype, np.integer) or np.all(np.mod(sample, 1) == 0)
    if integral and len(np.unique(sample)) <= 32:
        raise InputError(f"looks like a label map or mask ({len(np.unique(sample))} distinct integer values), "
                         "not an intensity image; pass masks with --mask / --lesions", name)


def check_mask(volume: Volume, name: str) -> None:
    """A mask must be a 3D binary or label image with some foreground."""
    if volume.array.ndim != 3:
        raise InputError("a mask must be a 3D image", name)
    if not np.isfinite(volume.array).all() or not np.any(volume.array > 0):
        raise InputError("mask is empty (no voxel > 0)", name)


def check_output_dir(folder: Path, names: list[str], overwrite: bool) -> None:
    """The output folder is writable and would not silently replace earlier results."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{existing} exists and is not a folder", "--output")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise InputError(f"folder {existing} is not writable", "--output") from None
    clashes = [n for n in names if (folder / n).exists()]
    if clashes and not overwrite:
        raise InputError(f"{folder} already holds {', '.join(clashes[:3])}{'...' if len(clashes) > 3 else ''}; "
                         "pass --overwrite to replace them", "--output")
