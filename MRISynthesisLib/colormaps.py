"""Colour maps shared by the PNG montage and the Slicer colour nodes (one definition for both)."""

from __future__ import annotations

import numpy as np

# Perceptual colour maps: matplotlib's inferno / viridis sampled at 9 points (RGB in 0..1).
ANCHORS = {
    "Inferno": [(0.001, 0.0, 0.014), (0.129, 0.047, 0.291), (0.342, 0.062, 0.429), (0.541, 0.135, 0.415),
                (0.736, 0.216, 0.33), (0.894, 0.353, 0.194), (0.978, 0.558, 0.035), (0.975, 0.798, 0.206),
                (0.988, 0.998, 0.645)],
    "Viridis": [(0.267, 0.005, 0.329), (0.279, 0.175, 0.483), (0.23, 0.322, 0.546), (0.173, 0.449, 0.558),
                (0.128, 0.567, 0.551), (0.158, 0.684, 0.502), (0.369, 0.789, 0.383), (0.678, 0.864, 0.19),
                (0.993, 0.906, 0.144)],
    "Grey": [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)],
}


def lookup_table(name: str, size: int = 256) -> np.ndarray:
    """``(size, 3)`` RGB values in 0..1 of colour map ``name`` (unknown names give grey)."""
    anchors = np.asarray(ANCHORS.get(name, ANCHORS["Grey"]), float)
    positions = np.linspace(0.0, 1.0, len(anchors))
    ramp = np.linspace(0.0, 1.0, size)
    return np.stack([np.interp(ramp, positions, anchors[:, channel]) for channel in range(3)], axis=1)
