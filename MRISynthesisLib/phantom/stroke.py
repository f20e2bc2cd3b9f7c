"""Acute ischaemic stroke: infarct core and penumbra inside a middle-cerebral-artery branch territory.

The territory is a cone of parenchyma fanning out laterally (and up or down, forward or back: one MCA
division) from a point near the M1 segment, with a wobbly edge from a smooth random field; the core is the
central part of the cone. Core: CBF < 30 % of normal, low CBV, long MTT, Tmax > 6 s, ADC 0.35-0.55 (restricted
diffusion), slight T2 rise and HU drop. Penumbra: CBF 35-70 %, CBV normal or high, Tmax > 6 s, ADC normal.
"""

from __future__ import annotations

import numpy as np

from .anatomy import DEEP_GM, GM, WM
from .fields import smooth_field
from .pathology import mark_lesion, set_compartment
from .tissue import TissueMaps


def stroke(classes: np.ndarray, maps: TissueMaps, tissue: dict, rng: np.random.Generator,
           spacing: float) -> tuple[dict, dict]:
    """Insert an acute infarct; returns masks ``lesion`` (= core), ``core``, ``penumbra`` and parameters."""
    parenchyma = (classes == WM) | (classes == GM) | (classes == DEEP_GM)
    index = np.argwhere(parenchyma)
    centre = index.mean(axis=0)                           # voxel (z, y, x)
    side = 1.0 if rng.random() < 0.5 else -1.0            # +x = patient left (LPS)
    # M1 origin: ~18 mm lateral, 10 mm anterior and 12 mm below the brain centre.
    origin = centre + np.array([-12.0, -10.0, side * 18.0]) / spacing
    up = float(rng.uniform(-0.3, 0.9))                    # inferior/superior division
    forward = float(rng.uniform(-0.6, 0.6))               # anterior/posterior branches
    axis = np.array([up, -forward, side * 1.0])
    axis /= np.linalg.norm(axis)
    half_angle = float(rng.uniform(18.0, 35.0))
    core_fraction = float(rng.uniform(0.35, 0.7))
    shape = classes.shape
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    offset = [(zz - origin[0]) * spacing, (yy - origin[1]) * spacing, (xx - origin[2]) * spacing]
    distance = np.sqrt(offset[0] ** 2 + offset[1] ** 2 + offset[2] ** 2) + 1e-6
    cosine = (offset[0] * axis[0] + offset[1] * axis[1] + offset[2] * axis[2]) / distance
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    wobble = smooth_field(rng, shape, (5, 5, 5), 1.0)
    hemisphere = (offset[2] * side) > 0
    territory = parenchyma & hemisphere & (angle < half_angle * (1.0 + 0.2 * wobble))
    core = territory & (angle < half_angle * core_fraction * (1.0 + 0.3 * wobble)) & (distance > 15.0)
    if not core.any():  # tiny or cropped brains: the territory voxels nearest the axis
        candidates = np.flatnonzero(territory) if territory.any() else np.flatnonzero(parenchyma & hemisphere)
        nearest = candidates[np.argsort(angle.ravel()[candidates])[: max(1, candidates.size // 3)]]
        core = np.zeros(shape, bool)
        core.ravel()[nearest] = True
        territory = territory | core
    penumbra = territory & ~core
    core_cbf = float(rng.uniform(0.08, 0.25))
    core_cbv = float(rng.uniform(0.3, 0.7))
    penumbra_cbf = float(rng.uniform(0.35, 0.7))
    penumbra_cbv = float(rng.uniform(1.0, 1.5))
    penumbra_delay = float(rng.uniform(6.5, 10.0))
    values = {
        "core": {"cbf_factor": core_cbf, "mtt_factor": min(core_cbv / core_cbf, 3.0),
                 "delay": penumbra_delay + float(rng.uniform(0.5, 3.0)), "adc": float(rng.uniform(0.35, 0.55)),
                 "t2_factor": float(rng.uniform(1.0, 1.15)), "hu_shift": -float(rng.uniform(1.0, 4.0))},
        "penumbra": {"cbf_factor": penumbra_cbf, "mtt_factor": penumbra_cbv / penumbra_cbf,
                     "delay": penumbra_delay},
    }
    set_compartment(maps, tissue, core, values["core"])
    # Restricted diffusion is the definition of the core: keep ADC under the 0.62 threshold despite texture.
    np.minimum(maps.maps["adc"], np.float32(0.6), out=maps.maps["adc"], where=core)
    set_compartment(maps, tissue, penumbra, values["penumbra"])
    # Hard edges (a perfusion territory has no sharp tissue border to blur); the swollen core effaces the
    # sulci (its CSF), the penumbra keeps its CSF (unperfused, so Tmax stays the penumbra's).
    mark_lesion(maps, core, soft=False, effaces_csf=True)
    mark_lesion(maps, penumbra, soft=False)
    parameters = {"side": "left" if side > 0 else "right", "origin_voxel_zyx": origin.round(2).tolist(),
                  "axis_zyx": axis.round(4).tolist(), "half_angle_deg": half_angle, "core_fraction": core_fraction,
                  "core": values["core"], "penumbra": values["penumbra"],
                  "core_ml": float(core.sum() * spacing ** 3 / 1000.0),
                  "penumbra_ml": float(penumbra.sum() * spacing ** 3 / 1000.0)}
    return {"lesion": core, "core": core, "penumbra": penumbra}, parameters
