"""Human-readable outputs: the PNG montage and the per-lesion CSV/JSON tables.

The montage shows each row (input, synthesized map, uncertainty) in axial, coronal and sagittal slices
through the largest lesion (or the brain centre), with
physical aspect ratio and neurological convention (patient left on image left), lesion outlines in cyan.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw
from scipy import ndimage

from .atomic import atomic_write_bytes
from .colormaps import lookup_table
from .volume import Volume

TILE = 160  # pixels per view


def _to_ras(volume: Volume) -> np.ndarray:
    """Array with axes (S, A, R) pointing superior/anterior/right, resampled to isotropic voxels."""
    image = sitk.DICOMOrient(volume.to_sitk(), "RAS")  # direction diag(-1,-1,1): i -> right, j -> anterior, k -> superior
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = np.array(image.GetSpacing()[::-1])
    zoom = spacing / spacing.min()
    return ndimage.zoom(array, zoom, order=1) if np.any(zoom != 1) else array


def _views(array: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices; up = anterior (axial) or superior, neurological left-right."""
    s, a, r = centre
    return [array[s][::-1, :], array[:, a, :][::-1, :], array[:, :, r][::-1, :]]


def _tile(image: np.ndarray, window: tuple[float, float], colormap: str, outline: np.ndarray | None) -> Image.Image:
    low, high = window
    scaled = np.clip((image - low) / max(high - low, 1e-12), 0, 1)
    rgb = (lookup_table(colormap) * 255).round().astype(np.uint8)[(scaled * 255).astype(np.uint8)]
    rgb[image == 0] = 0  # background (outside the brain or the field of view) stays black in every colour map
    if outline is not None:
        edge = outline & ~ndimage.binary_erosion(outline)
        rgb[edge] = (0, 255, 255)
    tile = Image.fromarray(rgb)
    tile.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE))
    canvas.paste(tile, ((TILE - tile.width) // 2, (TILE - tile.height) // 2))
    return canvas


def write_montage(rows: list[tuple[str, Volume, tuple[float, float] | None, str]], path: Path,
                  lesions: Volume | None = None, title: str = "") -> Path:
    """Write a PNG montage: one row per ``(label, volume, window or None for auto, colormap)``."""
    arrays = [(label, _to_ras(volume), window, cmap) for label, volume, window, cmap in rows]
    lesion_ras = _to_ras(lesions.with_array((lesions.array > 0).astype(np.float32))) > 0.5 if lesions is not None else None
    reference = arrays[0][1]
    if lesion_ras is not None and lesion_ras.any():
        labels, _ = ndimage.label(lesion_ras)
        largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
        centre = tuple(int(c) for c in ndimage.center_of_mass(labels == largest))
    else:
        centre = tuple(int(c) for c in ndimage.center_of_mass(np.abs(reference) > 0)) if reference.any() \
            else tuple(s // 2 for s in reference.shape)
    header, label_width = 24 if title else 0, 110
    sheet = Image.new("RGB", (label_width + 3 * TILE, header + TILE * len(arrays)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 6), title, fill=(230, 230, 230))
    for row, (label, array, window, cmap) in enumerate(arrays):
        if window is None:
            inside = array[np.abs(array) > 0]
            window = tuple(np.percentile(inside, [1, 99])) if inside.size else (0.0, 1.0)
        centre_row = tuple(min(c, s - 1) for c, s in zip(centre, array.shape))
        lesion_views = _views(lesion_ras, centre_row) if lesion_ras is not None and lesion_ras.shape == array.shape \
            else [None] * 3
        for column, (view, outline) in enumerate(zip(_views(array, centre_row), lesion_views)):
            sheet.paste(_tile(view, window, cmap, outline), (label_width + column * TILE, header + row * TILE))
        draw.text((6, header + row * TILE + TILE // 2 - 12), label, fill=(230, 230, 230))
        draw.text((6, header + row * TILE + TILE // 2 + 2), f"[{window[0]:.3g}, {window[1]:.3g}]", fill=(150, 150, 150))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def write_lesion_table(rows: list[dict], csv_path: Path, json_path: Path) -> None:
    """Per-lesion statistics as CSV (one lesion per line) and JSON."""
    json_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    columns = list(rows[0]) if rows else ["id", "volume_ml", "centroid_lps"]
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})
