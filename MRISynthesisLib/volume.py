"""The ``Volume`` type: a voxel array with its physical geometry, read and written with SimpleITK.

Conventions (one for the whole package):

* ``array`` is in NumPy/SimpleITK order ``(z, y, x)`` for 3D images and ``(c, z, y, x)`` for
  4D series (CT perfusion time points, fMRI frames, DWI directions), channel first.
* ``origin``, ``spacing`` and ``direction`` follow ITK/SimpleITK: physical LPS millimetres, axes
  ordered ``(x, y, z)``, ``direction`` a row-major 3x3 tuple (9 floats). Only the 3 spatial axes
  carry geometry; a 4th axis is a channel axis.
* A series' timing lives in ``metadata``: ``frame_interval_s`` (uniform frames; a 4D file's 4th spacing, which
  ITK converts to seconds) or ``frame_times_s`` (one per frame, from DICOM acquisition times).
  ``perfusion.frame_times`` reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .errors import InputError

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
FRAME_TIMES_KEY = "MRISynthesis_frame_times_s"


@dataclass
class Volume:
    """A 3D (or 3D + channel) image on a physical grid.

    Args:
        array: voxels, shape ``(z, y, x)`` or ``(c, z, y, x)``.
        origin: physical position of voxel ``(0, 0, 0)`` in mm, ``(x, y, z)``.
        spacing: voxel size in mm, ``(x, y, z)``.
        direction: row-major 3x3 direction cosines.
        metadata: free-form strings kept with the image (not written).
    """

    array: np.ndarray
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.array = np.asarray(self.array)
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be 3D (z,y,x) or 4D (c,z,y,x), got shape {self.array.shape}")
        self.origin = tuple(float(v) for v in self.origin)
        self.spacing = tuple(float(v) for v in self.spacing)
        self.direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())
        if len(self.origin) != 3 or len(self.spacing) != 3 or len(self.direction) != 9:
            raise ValueError("origin and spacing need 3 values and direction 9")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(z, y, x)``."""
        return tuple(self.array.shape[-3:])

    @property
    def channels(self) -> int:
        """Number of channels (1 for a 3D image)."""
        return 1 if self.array.ndim == 3 else self.array.shape[0]

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new volume on the same grid holding ``array`` (spatial shape must match)."""
        array = np.asarray(array)
        if array.shape[-3:] != self.shape:
            raise ValueError(f"array shape {array.shape} does not fit grid {self.shape}")
        return Volume(array, self.origin, self.spacing, self.direction, dict(self.metadata))

    def same_grid(self, other: "Volume", tolerance: float = 1e-4) -> bool:
        """True when both volumes sample space at exactly the same points."""
        return (
            self.shape == other.shape
            and np.allclose(self.origin, other.origin, atol=tolerance)
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix mapping ``(i, j, k, 1)`` (x, y, z index order) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def to_sitk(self, channel: int | None = None) -> sitk.Image:
        """A SimpleITK image of the whole volume or of one channel; a whole series is a 4D image whose 4th
        spacing is the frame interval (``metadata["frame_interval_s"]``, else 1)."""
        if self.array.ndim == 4 and channel is None:
            frames = [self.to_sitk(index) for index in range(self.channels)]
            times = self.metadata.get("frame_times_s")
            interval = float(np.mean(np.diff(times))) if times is not None and len(times) > 1 else None
            image = sitk.JoinSeries(frames, 0.0, interval or float(self.metadata.get("frame_interval_s", 1.0)))
            if times is not None:  # irregular frames: NRRD and MHA keep the key, NIfTI keeps the mean interval
                image.SetMetaData(FRAME_TIMES_KEY, " ".join(f"{t:.4f}" for t in times))
            return image
        data = self.array if self.array.ndim == 3 else self.array[channel]
        image = sitk.GetImageFromArray(data)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Volume":
        """Volume from a 3D scalar/vector or 4D SimpleITK image (4D: the 4th axis becomes channels and its
        spacing ``metadata["frame_interval_s"]``)."""
        metadata = {}
        if image.GetDimension() == 4:
            array = sitk.GetArrayFromImage(image)  # (t, z, y, x)
            size = image.GetSize()
            geometry = sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
            metadata["frame_interval_s"] = float(image.GetSpacing()[3])
            if image.HasMetaDataKey(FRAME_TIMES_KEY):
                metadata["frame_times_s"] = [float(t) for t in image.GetMetaData(FRAME_TIMES_KEY).split()]
        elif image.GetDimension() == 3:
            array = sitk.GetArrayFromImage(image)
            if image.GetNumberOfComponentsPerPixel() > 1:
                array = np.moveaxis(array, -1, 0)
            geometry = image
        else:
            raise ValueError(f"expected a 3D or 4D image, got {image.GetDimension()}D")
        return cls(array, geometry.GetOrigin(), geometry.GetSpacing(), geometry.GetDirection(), metadata)


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def read_volume(path: str | os.PathLike, name: str | None = None) -> Volume:
    """Read NIfTI, NRRD, MHA or a DICOM series folder (the largest series in it).

    Raises:
        InputError: naming ``name`` (or the path) when the file is missing, unreadable or not 3D/4D.
    """
    path = Path(path)
    label = name or str(path)
    if not path.exists():
        raise InputError(f"file not found: {path}", label)
    try:
        if path.is_dir():
            if not _is_dicom_folder(path):
                raise InputError(f"folder {path} holds no DICOM series", label)
            from .dicom_series import read_dicom_folder

            volume = read_dicom_folder(path, label)
            volume.metadata["path"] = str(path)
            return volume
        else:
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"cannot read {path} as an image ({first_line[:160]})", label) from None
    dimension = image.GetDimension()
    size = image.GetSize()
    spatial = [s for s in size[:3] if s > 1]
    if dimension == 2 or len(spatial) < 3:
        raise InputError(f"{path.name} is a 2D image (size {size}); a 3D volume is needed", label)
    if dimension > 4:
        raise InputError(f"{path.name} has {dimension} dimensions; 3D or 4D is supported", label)
    volume = Volume.from_sitk(image)
    volume.metadata["path"] = str(path)
    return volume


def write_volume(volume: Volume, path: str | os.PathLike, dtype: np.dtype | str | None = np.float32) -> Path:
    """Write a volume atomically (temporary file, then rename) as NIfTI, NRRD or MHA."""
    path = Path(path)
    if not path.name.endswith(WRITE_SUFFIXES):
        raise InputError(f"unsupported output format {path.name}; use one of {', '.join(WRITE_SUFFIXES)}", "output")
    array = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    image = volume.with_array(array).to_sitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, temporary, useCompression=True))
