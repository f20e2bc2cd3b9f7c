"""Invertible preprocessing between the reference grid and the network's grid.

Forward, for inputs already on the reference grid (see ``resample.resample_to``):

1. brain mask: given, or computed from the inputs (``compute_brain_mask``);
2. model grid: canonical orientation (RAS+ array axes, like MNI/nibabel), the model spacing, cropped to
   the brain box plus a margin and padded to the network's multiple. Reorientation, resampling, crop
   and pad are one geometric mapping, so they are applied with a single interpolation;
3. per-contrast intensity normalisation in the mask: percentiles ``low``/``high`` -> 0/1, 0 outside
   (``"percentile"``, MR); a CT perfusion series becomes ``perfusion.ctp_channels`` in fixed HU units
   (``"ctp-channels"``: CT is calibrated, so no per-scan rescaling).

``Prepared.inverse`` undoes each step: outputs are de-normalised to physical units with the model
card's scale/offset and resampled back onto the reference grid (exact geometry), zero outside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from .resample import grid_corners, resample_to
from .volume import Volume

# Array axes pointing Right, Anterior, Superior (nibabel's RAS+, MNI's layout), written as LPS directions.
CANONICAL_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
INPUT_METHODS = ("percentile", "ctp-channels")  # the model card's normalisation.inputs.method


def input_channel_count(method: str) -> int:
    """Network channels one input becomes under ``method`` (one per MR contrast, 15 per perfusion series)."""
    if method not in INPUT_METHODS:
        raise ValueError(f"input normalisation must be one of {INPUT_METHODS}, got {method!r}")
    from .perfusion import MODEL_FRAMES

    return MODEL_FRAMES if method == "ctp-channels" else 1


CT_BRAIN_HU = (-15.0, 100.0)  # parenchyma 20-45 HU, CSF 0-15; excludes air, fat and bone (the skull that
# separates brain from scalp, which has the same HU as brain)


def compute_brain_mask(volumes: list[Volume], modality: str = "MR") -> Volume:
    """A quick brain mask from co-registered inputs (all on one grid; a series counts by its mean frame).

    Skull-stripped inputs (mostly exact zeros outside the brain) give their non-zero support. Otherwise a
    head mask is eroded, reduced to its largest component and dilated back (a rough skull strip: pass a
    proper mask for unstripped data): for MR the Otsu foreground, for CT (``modality="CT"``, first input
    in HU) the voxels in the soft-tissue window ``CT_BRAIN_HU``, which the skull cuts off from the scalp.
    """
    reference = volumes[0]
    means = [(v.array if v.array.ndim == 3 else v.array.mean(0)).astype(np.float32) for v in volumes]
    stack = np.abs(np.stack(means))
    support = np.all(stack > 0, axis=0)
    if support.mean() < 0.6:  # >= 40 % exact zeros around the head: already skull-stripped
        mask = support
    else:
        if modality == "CT":
            mask = (means[0] > CT_BRAIN_HU[0]) & (means[0] < CT_BRAIN_HU[1])
        else:
            image = stack.mean(0)
            mask = image > threshold_otsu(image[:: 2, :: 2, :: 2])
        radius = max(1, int(round(3.0 / min(reference.spacing))))
        ball = ndimage.generate_binary_structure(3, 1)
        mask = ndimage.binary_erosion(mask, ball, iterations=radius)
        mask = _largest_component(mask)
        mask = ndimage.binary_dilation(mask, ball, iterations=radius)
    mask = _largest_component(mask)
    mask = ndimage.binary_fill_holes(mask)
    return Volume(mask.astype(np.uint8), reference.origin, reference.spacing, reference.direction)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def canonical_grid(mask: Volume, spacing: tuple[float, float, float], multiple: int,
                   margin_mm: float = 4.0) -> Volume:
    """An empty canonical-orientation grid at ``spacing`` covering the mask's box, sized to ``multiple``.

    Returns a ``Volume`` of zeros whose geometry is the model grid.
    """
    foreground = np.argwhere(mask.array > 0)
    low, high = foreground.min(0), foreground.max(0)  # (z, y, x)
    box = Volume(np.zeros(tuple(high - low + 1), np.uint8), mask.origin, mask.spacing, mask.direction)
    matrix = mask.index_to_physical()
    box.origin = tuple((matrix @ np.array([*low[::-1], 1.0]))[:3])
    corners = grid_corners(box)  # physical corners of the brain box
    direction = np.asarray(CANONICAL_DIRECTION).reshape(3, 3)
    along_axes = corners @ direction  # coordinates along the canonical axes
    start = along_axes.min(0) - margin_mm
    extent = along_axes.max(0) + margin_mm - start
    size = np.ceil(extent / np.asarray(spacing)).astype(int) + 1
    size = (np.ceil(size / multiple) * multiple).astype(int)
    # Centre the padded grid on the box so the margin is shared evenly on both sides.
    start = start - (size * np.asarray(spacing) - extent) / 2 + np.asarray(spacing) / 2
    origin = direction @ _snap_to_voxel_centres(start, mask, direction)
    return Volume(np.zeros(tuple(size[::-1]), np.uint8), tuple(origin), tuple(spacing), CANONICAL_DIRECTION)


def _snap_to_voxel_centres(start: np.ndarray, mask: Volume, direction: np.ndarray) -> np.ndarray:
    """Shift the grid start (canonical-axis coordinates) onto the reference's voxel centres.

    When the reference axes are parallel to the canonical ones (any order or sign), model-grid points then
    coincide with reference voxels: with a model spacing that is a multiple of the reference spacing the
    resampling in and out interpolates nothing, instead of blurring twice by half a voxel. Oblique
    references are left as they are (no lattice to snap to).
    """
    relation = direction.T @ np.asarray(mask.direction).reshape(3, 3)  # cosines: canonical axis x reference axis
    if not np.allclose(np.abs(relation), np.round(np.abs(relation)), atol=1e-6):
        return start
    origin_along = direction.T @ np.asarray(mask.origin)
    snapped = start.copy()
    for axis in range(3):
        step = mask.spacing[int(np.argmax(np.abs(relation[axis])))]
        snapped[axis] = origin_along[axis] + np.round((start[axis] - origin_along[axis]) / step) * step
    return snapped


@dataclass
class Prepared:
    """Network-ready inputs and everything needed to undo the preprocessing.

    Attributes:
        inputs: float32 ``(C, D, H, W)`` normalised inputs on the model grid, 0 outside the mask.
        mask: uint8 ``(D, H, W)`` brain mask on the model grid.
        grid: a zero ``Volume`` carrying the model grid geometry.
        reference_mask: the brain mask on the reference grid; its geometry is where outputs go back to.
        percentiles: per percentile-normalised input name, the (low, high) intensity mapped to (0, 1).
        channel_inputs: the input name of every channel of ``inputs`` (a perfusion series gives several).
    """

    inputs: np.ndarray
    mask: np.ndarray
    grid: Volume
    reference_mask: Volume
    percentiles: dict[str, tuple[float, float]]
    channel_inputs: list[str]

    def inverse(self, normalised: np.ndarray, scale: float = 1.0, offset: float = 0.0,
                mask_outside: bool = True) -> Volume:
        """Put one network output ``(D, H, W)`` back on the reference grid in physical units."""
        physical = normalised.astype(np.float32) * scale + offset
        on_grid = self.grid.with_array(np.where(self.mask > 0, physical, 0).astype(np.float32))
        array = resample_to(on_grid, self.reference_mask, "linear").array.astype(np.float32)
        if mask_outside:
            array = np.where(self.reference_mask.array > 0, array, 0).astype(np.float32)
        return self.reference_mask.with_array(array)

    def denormalise_input(self, name: str, normalised: np.ndarray) -> np.ndarray:
        """Inverse of the intensity normalisation of input ``name`` (exact inside the mask)."""
        low, high = self.percentiles[name]
        return normalised * (high - low) + low


def normalise(array: np.ndarray, mask: np.ndarray, low: float, high: float,
              reference: np.ndarray | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Map the ``low``/``high`` percentiles inside ``reference`` (default: ``mask``) to 0/1; 0 outside ``mask``."""
    values = array[(mask if reference is None else reference) > 0]
    p_low, p_high = (float(v) for v in np.percentile(values, [low, high]))
    if p_high <= p_low:
        p_high = p_low + 1.0
    scaled = (array.astype(np.float32) - p_low) / (p_high - p_low)
    return np.where(mask > 0, scaled, 0).astype(np.float32), (p_low, p_high)


def prepare(inputs: dict[str, Volume], mask: Volume, spacing: tuple[float, float, float],
            multiple: int, percentiles: tuple[float, float] = (1.0, 99.0), margin_mm: float = 4.0,
            method: str = "percentile") -> Prepared:
    """Forward preprocessing of inputs already on the reference grid of ``mask`` (channel order = dict order).

    ``method`` (``INPUT_METHODS``): ``"percentile"`` for 3D contrasts; ``"ctp-channels"`` for 4D CT perfusion
    series, which are resampled onto the model grid frame by frame first (a 1 mm series would not fit in
    memory as 15 float channels) and then turned into ``perfusion.ctp_channels``."""
    channel_count = input_channel_count(method)
    grid = canonical_grid(mask, spacing, multiple, margin_mm)
    mask_on_grid = resample_to(mask, grid, "nearest").array.astype(np.uint8)
    channels, stats, channel_inputs = [], {}, []
    for name, volume in inputs.items():
        on_grid = resample_to(volume, grid, "linear")
        if method == "ctp-channels":
            from .perfusion import ctp_channels

            channels.extend(np.where(mask_on_grid > 0, ctp_channels(on_grid, name), 0).astype(np.float32))
        else:
            normalised, stats[name] = normalise(on_grid.array, mask_on_grid, *percentiles)
            channels.append(normalised)
        channel_inputs += [name] * channel_count
    return Prepared(np.stack(channels), mask_on_grid, grid, mask, stats, channel_inputs)


def arrange_channels(prepared: np.ndarray, channel_inputs: list[str], model_inputs: list[str] | tuple[str, ...],
                     channels_per_input: int = 1) -> np.ndarray:
    """Put prepared channels (``channel_inputs``: the input name of each) in the model's input order; inputs the
    model knows but were not given are ``channels_per_input`` channels of zeros."""
    if len(channel_inputs) != len(prepared):
        raise ValueError(f"{len(prepared)} prepared channels but {len(channel_inputs)} channel names")
    by_name: dict[str, list[np.ndarray]] = {}
    for name, channel in zip(channel_inputs, prepared):
        by_name.setdefault(name, []).append(channel)
    zeros = [np.zeros_like(prepared[0])] * channels_per_input
    return np.stack([c for name in model_inputs for c in by_name.get(name, zeros)]).astype(np.float32)
