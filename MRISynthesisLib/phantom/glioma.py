"""Glioma (glioblastoma-like): necrotic core, gadolinium-enhancing rim and surrounding vasogenic oedema.

The tumour is a lumpy sphere (radius modulated by a smooth random field) centred in cerebral WM away from
the cortex and ventricles; the necrosis is its inner part, the enhancing rim the rest; oedema spreads
5-25 mm further through WM (vasogenic oedema follows the fibre tracts and spares the cortex).
Values (T1 by field strength; (~) typical figures): necrosis free-water-like, no enhancement; rim
hypercellular (lower ADC), hyperperfused, [Gd] 0.1-0.5 mM; oedema low PSR, long T1/T2, high ADC.
"""

from __future__ import annotations

import numpy as np

from .anatomy import CSF, DEEP_GM, GM, VENTRICLE, WM
from .fields import smooth_field
from .pathology import distance_mm, mark_lesion, set_compartment
from .tissue import TissueMaps

GLIOMA_T1 = {1.5: {"necrosis": (1600.0, 2400.0), "enhancing": (1100.0, 1500.0), "oedema": (1000.0, 1300.0)},
             3.0: {"necrosis": (2000.0, 3000.0), "enhancing": (1400.0, 1900.0), "oedema": (1300.0, 1700.0)}}


def glioma(classes: np.ndarray, maps: TissueMaps, tissue: dict, rng: np.random.Generator,
           spacing: float) -> tuple[dict, dict]:
    """Insert a glioma; returns masks ``lesion`` (whole tumour), ``necrosis``, ``enhancing``, ``oedema``."""
    field = tissue["field_strength_t"]
    wm = classes == WM
    parenchyma = wm | (classes == GM) | (classes == DEEP_GM)
    radius = float(rng.uniform(8.0, 25.0))
    oedema_extent = float(rng.uniform(5.0, 25.0))
    # Centre: WM far enough from cortex and ventricles (relaxed when the brain is small or coarse).
    depth_cortex = distance_mm(classes != GM, spacing, classes > 0)
    depth_csf = distance_mm((classes != VENTRICLE) & (classes != CSF), spacing, classes > 0)
    for margin in (min(radius, 15.0), 8.0, 4.0, 0.0):
        pool = np.argwhere(wm & (depth_cortex > margin) & (depth_csf > margin))
        if len(pool):
            break
    centre = pool[rng.integers(len(pool))]
    shape = classes.shape
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    distance = np.sqrt(((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)) * spacing
    lumpy = distance / (1.0 + 0.2 * smooth_field(rng, shape, (6, 6, 6), 1.0))
    necrosis_fraction = float(rng.uniform(0.3, 0.7))
    tumour = parenchyma & (lumpy < radius)
    tumour.flat[np.ravel_multi_index(tuple(centre), shape)] = True
    necrosis = tumour & (lumpy < radius * necrosis_fraction)
    enhancing = tumour & ~necrosis
    oedema = (wm | (classes == DEEP_GM)) & ~tumour & (lumpy < radius + oedema_extent)
    t1 = GLIOMA_T1[field]
    values = {
        "necrosis": {"psr": float(rng.uniform(0.01, 0.03)), "t1": float(rng.uniform(*t1["necrosis"])),
                     "t2": float(rng.uniform(250.0, 500.0)), "pd": float(rng.uniform(0.90, 0.97)),
                     "adc": float(rng.uniform(1.8, 2.6)), "cbf": float(rng.uniform(2.0, 8.0)),
                     "mtt": float(rng.uniform(5.0, 7.0)), "hu": float(rng.uniform(15.0, 25.0))},
        "enhancing": {"psr": float(rng.uniform(0.03, 0.06)), "t1": float(rng.uniform(*t1["enhancing"])),
                      "t2": float(rng.uniform(90.0, 140.0)), "pd": float(rng.uniform(0.82, 0.90)),
                      "adc": float(rng.uniform(0.8, 1.2)), "cbf": float(rng.uniform(70.0, 130.0)),
                      "mtt": float(rng.uniform(4.0, 6.0)), "hu": float(rng.uniform(35.0, 45.0)),
                      "gd": float(rng.uniform(0.1, 0.5))},
        "oedema": {"psr_factor": float(rng.uniform(0.5, 0.75)), "t1": float(rng.uniform(*t1["oedema"])),
                   "t2": float(rng.uniform(120.0, 200.0)), "pd": float(rng.uniform(0.84, 0.92)),
                   "adc": float(rng.uniform(1.1, 1.6)), "cbf_factor": float(rng.uniform(0.7, 0.95)),
                   "hu_shift": -float(rng.uniform(3.0, 8.0))},
    }
    for name, where in (("necrosis", necrosis), ("enhancing", enhancing), ("oedema", oedema)):
        set_compartment(maps, tissue, where, values[name])
    # Soft outer edge; the tumour's mass effect effaces the CSF it grows over, oedema keeps it.
    mark_lesion(maps, tumour | oedema, soft=True)
    maps.effaces_csf |= tumour
    parameters = {"centre_voxel_zyx": centre.tolist(), "radius_mm": radius, "necrosis_fraction": necrosis_fraction,
                  "oedema_extent_mm": oedema_extent, **values,
                  "volumes_ml": {n: float(m.sum() * spacing ** 3 / 1000.0)
                                 for n, m in (("necrosis", necrosis), ("enhancing", enhancing), ("oedema", oedema))}}
    masks = {"lesion": tumour | oedema, "necrosis": necrosis, "enhancing": enhancing, "oedema": oedema}
    return masks, parameters
