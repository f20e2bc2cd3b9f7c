"""Smooth random fields: a coarse random grid upsampled with cubic splines, computed separably.

Used for elastic displacements, bias fields, pathology outlines and tissue texture. A 3D cubic-spline
zoom is a tensor product of 1D zooms, so it is applied as three small matrix products (milliseconds)
instead of ``scipy.ndimage.zoom`` on the full grid (about a second at 2 mm).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi


@functools.lru_cache(maxsize=64)
def _upsample_matrix(coarse: int, fine: int) -> np.ndarray:
    """``(fine, coarse)`` matrix equal to ``ndi.zoom(..., order=3)`` of a 1D signal of length ``coarse``."""
    identity = np.eye(coarse, dtype=np.float64)
    if coarse == 1:
        return np.ones((fine, 1), np.float32)
    columns = [ndi.zoom(identity[c], fine / coarse, order=3, mode="nearest", grid_mode=False) for c in range(coarse)]
    matrix = np.stack(columns, axis=1).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def upsample(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Cubic-spline upsampling of a small ``(a, b, c)`` grid to ``shape`` ``(z, y, x)``, float32."""
    mz, my, mx = (_upsample_matrix(c, f) for c, f in zip(coarse.shape, shape))
    field = np.tensordot(mz, coarse.astype(np.float32), axes=(1, 0))          # (z, b, c)
    field = np.tensordot(field, my, axes=(1, 1))                               # (z, c, y)
    field = np.tensordot(field, mx, axes=(1, 1))                               # (z, y, x)
    return np.ascontiguousarray(field, dtype=np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: tuple[int, int, int],
                 std: float = 1.0) -> np.ndarray:
    """Zero-mean smooth random field of ``shape`` from a ``coarse`` grid of N(0, std) values."""
    return upsample(rng.normal(0.0, std, coarse), shape)
