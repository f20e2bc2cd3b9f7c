"""Pathology: lesions drawn on the deformed anatomy, each with its own ground-truth mask.

Every function changes the per-voxel maps of a :class:`~.tissue.TissueMaps` *only* inside the masks it
returns and marks them (:func:`mark_lesion`) as the voxels holding a lesion compartment (partial volume,
``partial_volume.py``); a subject drawn with the same seed and pathology ``"none"`` therefore differs from it
exactly where the lesion fraction is > 0 (= the lesion masks) plus, for MS, wherever there is WM (the
whole normal-appearing WM compartment loses some PSR).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .anatomy import GM, VENTRICLE, WM
from .tissue import TissueMaps

PATHOLOGIES = ("ms", "stroke", "glioma", "none")

# MS lesion T1 (ms) by field strength: T2 lesions and chronic black holes (physics note, (~) values).
# Chosen so lesion T1 is ~1.3-1.7x NAWM T1 (quantitative MS studies, e.g. MP2RAGE at 3 T) and MPRAGE
# lesion/NAWM lands near the 0.8 of a real case (ms-patient07); the earlier 1000-1400 / 1300-1800 gave 0.60.
MS_T1 = {1.5: {"lesion": (850.0, 1150.0), "black_hole": (1150.0, 1500.0)},
         3.0: {"lesion": (1100.0, 1500.0), "black_hole": (1500.0, 2000.0)}}
# Lesion T2 (ms), (~): chronic T2 lesions 100-160 ms (black holes, more free water, 130-200); the earlier
# 110-200 made FLAIR lesion/NAWM 1.9 against 1.4 on the real case.
MS_T2 = {"lesion": (100.0, 160.0), "black_hole": (130.0, 200.0)}


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _aligned_rotation(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation whose first column is ``axis`` (unit), the other two random and orthogonal."""
    axis = axis / (np.linalg.norm(axis) + 1e-12)
    other = rng.normal(size=3)
    other -= other.dot(axis) * axis
    other /= np.linalg.norm(other) + 1e-12
    return np.stack([axis, other, np.cross(axis, other)], axis=1)


def _gradient_at(field: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Central-difference gradient of ``field`` at voxel ``centre`` (zero where a neighbour is outside)."""
    gradient = np.zeros(3)
    for axis in range(3):
        ahead, behind = centre.copy(), centre.copy()
        ahead[axis] = min(ahead[axis] + 1, field.shape[axis] - 1)
        behind[axis] = max(behind[axis] - 1, 0)
        difference = float(field[tuple(ahead)] - field[tuple(behind)])
        gradient[axis] = difference if np.isfinite(difference) else 0.0
    return gradient if gradient.any() else np.array([1.0, 0.0, 0.0])


def rasterise_ellipsoid(centre: np.ndarray, semi_axes_mm: np.ndarray, rotation: np.ndarray, spacing: float,
                        shape: tuple[int, int, int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Normalised radius ``sqrt(q)`` of an ellipsoid in the smallest box around it.

    Args:
        centre: voxel index ``(z, y, x)``; semi_axes_mm: 3 semi-axes; rotation: columns are the axes in
        ``(z, y, x)`` order.
    Returns:
        the box as slices of the full grid and ``radius`` (float32, < 1 inside the ellipsoid).
    """
    reach = int(np.ceil(semi_axes_mm.max() / spacing)) + 1
    low = np.maximum(centre - reach, 0)
    high = np.minimum(centre + reach + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    zz, yy, xx = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    offsets = (np.stack([zz, yy, xx], axis=-1) - centre) * spacing
    local = offsets @ rotation / semi_axes_mm
    return box, np.sqrt((local ** 2).sum(axis=-1)).astype(np.float32)


def distance_mm(outside: np.ndarray, spacing: float, region: np.ndarray) -> np.ndarray:
    """Distance (mm) to the nearest voxel where ``outside`` is False, computed in the bounding box of ``region``.

    Voxels outside the box get +inf; cropping keeps the transform cheap at 1 mm.
    """
    index = np.argwhere(region)
    low = np.maximum(index.min(axis=0) - 2, 0)
    high = np.minimum(index.max(axis=0) + 3, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    distance = np.full(region.shape, np.inf, np.float32)
    distance[box] = ndi.distance_transform_edt(outside[box], sampling=spacing)
    return distance


def soft_fraction(region: np.ndarray, sigma_voxels: float = 0.6) -> np.ndarray:
    """Lesion fraction with a soft edge: the region blurred by about a voxel, clipped to [0.5, 1] inside it.

    Inside-only (0 outside ``region``), so the binary mask is exactly "lesion fraction >= 0.5" and the maps
    change exactly inside it; edge voxels hold 0.5-0.9 lesion, interior voxels 1. Computed in the region's
    bounding box (cheap at 1 mm).
    """
    fraction = np.zeros(region.shape, np.float32)
    if not region.any():
        return fraction
    index = np.argwhere(region)
    low = np.maximum(index.min(axis=0) - 3, 0)
    high = np.minimum(index.max(axis=0) + 4, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    blurred = ndi.gaussian_filter(region[box].astype(np.float32), sigma_voxels, mode="constant")
    fraction[box] = np.where(region[box], np.clip(blurred, 0.5, 1.0), 0.0)
    return fraction


def mark_lesion(maps: TissueMaps, region: np.ndarray, soft: bool = True, effaces_csf: bool = False) -> None:
    """Record ``region`` as lesion compartment: fraction 1 (``soft=False``) or :func:`soft_fraction` there.

    ``effaces_csf``: the lesion also replaces the voxels' CSF (cytotoxic swelling, tumour mass effect),
    otherwise only their parenchyma.
    """
    fraction = soft_fraction(region) if soft else region.astype(np.float32)
    np.maximum(maps.lesion_fraction, fraction, out=maps.lesion_fraction)
    if effaces_csf:
        maps.effaces_csf |= region


def r1_offset_for(tissue: dict, psr: float, t1_ms: float) -> float:
    """Free-water R1 offset that puts a tissue of mean ``psr`` at ``t1_ms`` on the subject's R1 line."""
    line = tissue["r1_line"]
    return 1000.0 / t1_ms - (line["a_per_s"] + line["b_per_s"] * psr)


def set_compartment(maps: TissueMaps, tissue: dict, where: np.ndarray, values: dict) -> None:
    """Give the voxels ``where`` a lesion compartment's values (with the subject's texture).

    ``values`` may hold absolute ``psr, t1 (ms), t2, pd, adc, cbf, mtt, delay, hu, gd`` or relative factors
    ``psr_factor, cbf_factor, mtt_factor, t2_factor, hu_shift``; T1 enters through the R1 offset so that
    ``R1 = a + b PSR + offset`` still holds.
    """
    m = maps.maps
    if "psr_factor" in values:
        m["psr"][where] *= np.float32(values["psr_factor"])
    if "psr" in values:
        m["psr"][where] = maps.textured("psr", values["psr"], where)
    if "t1" in values:
        mean_psr = float(m["psr"][where].mean()) if where.any() else 0.0
        m["r1_offset"][where] = r1_offset_for(tissue, mean_psr, values["t1"])
    for quantity in ("t2", "pd", "adc", "cbf", "mtt"):
        if quantity in values:
            m[quantity][where] = maps.textured(quantity, values[quantity], where)
        if f"{quantity}_factor" in values:
            m[quantity][where] *= np.float32(values[f"{quantity}_factor"])
    for quantity in ("delay", "hu", "gd"):
        if quantity in values:
            m[quantity][where] = np.float32(values[quantity])
    if "hu_shift" in values:
        m["hu"][where] += np.float32(values["hu_shift"])


def _paint_ovoid(index: int, centre: np.ndarray, semi: np.ndarray, rotation: np.ndarray, wm: np.ndarray,
                 spacing: float, lesion_id: np.ndarray, radius: np.ndarray) -> None:
    """Give the WM voxels of one ellipsoid lesion id ``index`` (and their normalised radius, for rings)."""
    box, local_radius = rasterise_ellipsoid(centre, semi, rotation, spacing, wm.shape)
    inside = (local_radius < 1.0) & wm[box]
    inside[tuple(centre - [s.start for s in box])] = True  # lesions smaller than a voxel keep one voxel
    same = lesion_id[box][inside] == index  # ovoids of one confluent lesion: the ring follows their union
    radius[box][inside] = np.where(same, np.minimum(radius[box][inside], local_radius[inside]), local_radius[inside])
    lesion_id[box][inside] = index


def _confluent_lesion(index: int, pool: np.ndarray, distance_ventricle: np.ndarray, wm: np.ndarray, spacing: float,
                      rng: np.random.Generator, lesion_id: np.ndarray, radius: np.ndarray) -> float:
    """A confluent periventricular lesion: 4-15 overlapping ovoids (8-24 mm) strung along the ventricle wall.

    Returns its extent (mm) from the first ovoid's centre to the farthest one plus that ovoid's size.
    """
    if not len(pool):
        pool = np.argwhere(wm)
    centre = pool[rng.integers(len(pool))]
    first = centre.copy()
    extent = 0.0
    for _ in range(int(rng.integers(4, 16))):
        diameter = float(rng.uniform(8.0, 24.0))
        semi = 0.5 * diameter * np.array([1.0, rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)])
        rotation = _aligned_rotation(_gradient_at(distance_ventricle, centre), rng)
        _paint_ovoid(index, centre, semi, rotation, wm, spacing, lesion_id, radius)
        extent = max(extent, float(np.linalg.norm((centre - first) * spacing)) + diameter)
        # Next ovoid: the nearest periventricular voxel to a point about one radius away.
        target = centre + rng.normal(size=3) * (0.5 * diameter / spacing)
        centre = pool[np.argmin(((pool - target) ** 2).sum(axis=1))]
    return extent


LESION_LOADS = ("typical", "wide")


def multiple_sclerosis(classes: np.ndarray, maps: TissueMaps, tissue: dict, rng: np.random.Generator,
                       spacing: float, load: str = "typical") -> tuple[dict, dict]:
    """Ovoid periventricular, juxtacortical and deep WM lesions; NAWM PSR reduced by 5-10 %.

    ``load="typical"`` draws 4-30 ovoid lesions of 2-20 mm (about 1-5 mL). ``"wide"`` covers the range of
    lesion loads seen in clinics, for training the lesion segmenter: 2-80 lesions (small ones most frequent),
    infratentorial lesions as well, and in half of the subjects 1-4 confluent periventricular lesions made of
    several overlapping ovoids along the ventricle wall (loads from ~0.1 to ~60 mL).

    Returns:
        masks ``lesion, nawm, black_hole, enhancing`` (bool) and the drawn parameters.
    """
    if load not in LESION_LOADS:
        raise ValueError(f"unknown lesion load {load!r}; choose one of {LESION_LOADS}")
    field = tissue["field_strength_t"]
    wm = classes == WM
    brain = classes > 0
    distance_ventricle = distance_mm(classes != VENTRICLE, spacing, brain)
    distance_cortex = distance_mm(classes != GM, spacing, brain)
    candidates = {
        "periventricular": np.argwhere(wm & (distance_ventricle <= max(6.0, 1.5 * spacing))),
        "juxtacortical": np.argwhere(wm & (distance_cortex <= max(3.0, 1.01 * spacing))),
        "deep": np.argwhere(wm & (distance_ventricle > 8.0) & (distance_cortex > max(5.0, 2.0 * spacing))),
    }
    if load == "typical":
        count = int(rng.integers(4, 31))
        kinds = list(rng.choice(list(candidates), size=count, p=[0.5, 0.2, 0.3]))
    else:
        # Infratentorial: white matter of the inferior 30 % of the brain (brainstem, cerebellar peduncles).
        z_index = np.nonzero(brain.any(axis=(1, 2)))[0]
        low = z_index[0] + 0.3 * (z_index[-1] - z_index[0])
        candidates["infratentorial"] = np.argwhere(wm & (np.arange(classes.shape[0]) < low)[:, None, None])
        count = int(np.exp(rng.uniform(np.log(2.0), np.log(80.0))))
        kinds = list(rng.choice(list(candidates), size=count, p=[0.4, 0.2, 0.28, 0.12]))
        if rng.random() < 0.5:
            kinds += ["confluent"] * int(rng.integers(1, 5))
        count = len(kinds)
    lesion_id = np.zeros(classes.shape, np.uint16)
    radius = np.ones(classes.shape, np.float32)
    wm_psr = tissue["tissues"]["wm"]["psr"]
    nawm_drop = float(rng.uniform(0.05, 0.10))
    lesions = []
    for index, kind in enumerate(kinds, start=1):
        shape = {"kind": str(kind)}
        if kind == "confluent":
            diameter = _confluent_lesion(index, candidates["periventricular"], distance_ventricle, wm, spacing, rng,
                                         lesion_id, radius)
        else:
            pool = candidates[kind] if len(candidates[kind]) else np.argwhere(wm)
            centre = pool[rng.integers(len(pool))]
            diameter = float(np.exp(rng.uniform(np.log(2.0), np.log(20.0))))
            semi = 0.5 * diameter * np.array([1.0, rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.9)])
            if kind == "periventricular":  # Dawson's fingers: long axis perpendicular to the ventricle wall
                rotation = _aligned_rotation(_gradient_at(distance_ventricle, centre), rng)
            else:
                rotation = _rotation(rng)
            _paint_ovoid(index, centre, semi, rotation, wm, spacing, lesion_id, radius)
            shape.update(centre_voxel_zyx=centre.tolist(), semi_axes_mm=semi.round(3).tolist())
        black_hole = bool(diameter >= 5.0 and rng.random() < 0.25)
        kind = "black_hole" if black_hole else "lesion"
        # One tissue-damage level drives myelin loss, T1 and T2 together (demyelination and the free water that
        # replaces it go hand in hand: Schmierer et al. Ann Neurol 2004), so a lesion's relaxation carries its
        # PSR, with a little independent spread.
        damage = float(rng.uniform())
        ratio = float(np.interp(damage, [0, 1], [0.45, 0.25] if black_hole else [0.6, 0.4]))
        psr = wm_psr * (1.0 - nawm_drop) * ratio
        t1 = float(np.interp(np.clip(damage + 0.1 * rng.standard_normal(), 0, 1), [0, 1], MS_T1[field][kind]))
        t2 = float(np.interp(np.clip(damage + 0.15 * rng.standard_normal(), 0, 1), [0, 1], MS_T2[kind]))
        lesions.append({
            "id": index, "kind": str(kind), "location": shape, "diameter_mm": round(diameter, 3),
            "black_hole": black_hole, "psr_ratio_to_nawm": ratio,
            "psr": psr, "t1_ms": t1, "r1_offset": r1_offset_for(tissue, psr, t1), "t2_ms": t2,
            "pd": float(rng.uniform(0.88, 0.95) if black_hole else rng.uniform(0.80, 0.90)),
            "adc": float(rng.uniform(1.1, 1.5) if black_hole else rng.uniform(0.85, 1.2)),
            "enhancing": None,
            "gd_mm": 0.0,
        })
    # Active lesions: a few non-black-hole lesions take up gadolinium, as a ring or a nodule.
    for lesion in lesions:
        if not lesion["black_hole"] and rng.random() < 0.15:
            lesion["enhancing"] = "ring" if lesion["diameter_mm"] >= 8.0 and rng.random() < 0.5 else "nodular"
            lesion["gd_mm"] = float(rng.uniform(0.1, 0.3))
    lesion = lesion_id > 0
    present = set(np.unique(lesion_id[lesion]).tolist())
    lesions = [item for item in lesions if item["id"] in present]  # fully overwritten lesions are dropped
    table = {key: np.zeros(count + 1, np.float32) for key in ("psr_ratio", "r1_offset", "t2", "pd", "adc", "gd")}
    ring = np.zeros(count + 1, bool)
    black = np.zeros(count + 1, bool)
    for item in lesions:
        i = item["id"]
        table["psr_ratio"][i], table["r1_offset"][i] = item["psr_ratio_to_nawm"], item["r1_offset"]
        table["t2"][i], table["pd"][i], table["adc"][i], table["gd"][i] = (
            item["t2_ms"], item["pd"], item["adc"], item["gd_mm"])
        ring[i], black[i] = item["enhancing"] == "ring", item["black_hole"]
    ids = lesion_id[lesion]
    m = maps.maps
    m["psr"][wm] *= np.float32(1.0 - nawm_drop)
    m["psr"][lesion] *= table["psr_ratio"][ids]
    m["r1_offset"][lesion] = table["r1_offset"][ids]
    for quantity in ("t2", "pd", "adc"):
        m[quantity][lesion] = maps.textured(quantity, table[quantity][ids], lesion)
    gd = table["gd"][ids] * np.where(ring[ids], radius[lesion] >= 0.6, True)
    m["gd"][lesion] = gd
    maps.compartment_factor.setdefault("wm", {})["psr"] = 1.0 - nawm_drop
    mark_lesion(maps, lesion, soft=True)
    masks = {"lesion": lesion, "nawm": wm & ~lesion, "black_hole": lesion & black[lesion_id],
             "enhancing": m["gd"] > 0}
    parameters = {"nawm_psr_reduction": nawm_drop, "lesion_count": len(lesions), "lesions": lesions}
    return masks, parameters


def apply_pathology(name: str, classes: np.ndarray, maps: TissueMaps, tissue: dict, rng: np.random.Generator,
                    spacing: float, lesion_load: str = "typical") -> tuple[dict, dict]:
    """Insert pathology ``name`` (one of ``PATHOLOGIES``) and return its masks (bool) and parameters.

    ``lesion_load`` (``LESION_LOADS``) selects the MS lesion distribution; other pathologies ignore it.
    """
    if name == "none":
        return {"lesion": np.zeros(classes.shape, bool)}, {}
    if name == "ms":
        return multiple_sclerosis(classes, maps, tissue, rng, spacing, lesion_load)
    if name == "stroke":
        from .stroke import stroke

        return stroke(classes, maps, tissue, rng, spacing)
    if name == "glioma":
        from .glioma import glioma

        return glioma(classes, maps, tissue, rng, spacing)
    raise ValueError(f"unknown pathology {name!r}; choose one of {PATHOLOGIES}")
