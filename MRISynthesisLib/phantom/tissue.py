"""Per-subject tissue parameters (``docs/mr-physics.md``) and their voxel-wise maps.

Macromolecular content drives relaxation, which is why myelin (PSR) maps are predictable from routine
contrasts at all. One population relation per field strength ties every tissue to its PSR:

- ``R1 = a(B0) + b(B0) PSR`` (1/s): R1 rises linearly with macromolecular content (Callaghan et al. MRM
  2014; Gochberg & Gore MRM 2007; Mezer et al. Nat Med 2013, R1 linear in macromolecular tissue volume);
- ``R2 = c + d PSR`` (1/s, near field-independent between 1.5 and 3 T; Stanisz et al. MRM 2005);
- ``PD = p0 - e PSR``: myelinated tissue holds less water (Mezer 2013: MTV = 1 - water fraction).

The coefficients put each tissue's literature PSR on its literature T1/T2/PD midpoints (table in
``RELAXATION_LINES``). Each subject then draws its tissue PSRs and a small residual off the relation (one
scanner-wide R1 calibration factor and a per-tissue R1/R2/PD residual), so the inputs carry the subject's
PSR levels up to that residual -- as real tissue does -- without a one-to-one map. Free water (CSF, oedema,
lesions) sits off the line through a negative-or-positive ``r1_offset``. Every voxel also gets a small
independent texture on PSR, R1, T2, PD and ADC.

Units: T1/T2 ms, PSR fraction, PD relative to CSF, ADC 1e-3 mm^2/s, CBF ml/100 g/min, MTT s,
bolus delay s, HU.
"""

from __future__ import annotations

import numpy as np

from .anatomy import CSF, DEEP_GM, GM, VENTRICLE, WM

FIELD_STRENGTHS = (1.5, 3.0)

# Population relaxation lines: R1 = a + b PSR (per field), R2 = c + d PSR, PD = p0 - e PSR, through the
# docs/mr-physics.md values of WM (PSR 0.155) and GM (0.065): T1 3 T 850 / 1300 ms and 1.5 T 600 / 930 ms
# (the lower, MT-free part of the WM span: MPRAGE WM/GM then near the 1.3-1.5 of real scans); T2 72 / 95 ms;
# PD 0.73 / 0.83.
RELAXATION_LINES = {
    "r1": {3.0: (0.4752, 4.5256), 1.5: (0.6470, 6.5770)},
    "r2": (8.04, 37.8),
    "pd": (0.902, 1.111),
}
# Residual off the population relation (relative standard deviations): a per-subject R1 calibration (B1/
# scanner) and independent per-tissue residuals. Small: PSR stays predictable to ~2-3 % from R1.
RESIDUAL_STD = {"r1_subject": 0.02, "r1_tissue": 0.01, "r2_tissue": 0.03, "pd_tissue": 0.015}

T1_CSF_RANGE = {1.5: (3500.0, 4200.0), 3.0: (4200.0, 4500.0)}
PSR_RANGE = {"wm": (0.13, 0.18), "gm": (0.05, 0.08), "deep_gm": (0.07, 0.09)}
# CSF: apparent T2 in a turbo spin echo. Literature CSF T2 (1500-2000 ms) gave T2w CSF/WM 3.5 against 2.7 on
# a real 3 T scan; flow, diffusion during the echo train and partial volume shorten it (BrainWeb uses 329 ms).
CSF_T2_RANGE = (250.0, 700.0)
# ADC: WM and GM from the upper part of the literature span; the real ISLES normal-tissue median (0.85-0.90)
# sat above the simulated 0.82.
ADC_RANGE = {"wm": (0.74, 0.84), "gm": (0.83, 0.95), "deep_gm": (0.75, 0.85), "csf": (3.0, 3.2)}
CBF_RANGE = {"wm": (20.0, 30.0), "gm": (50.0, 70.0), "deep_gm": (45.0, 60.0), "csf": (0.0, 0.0)}
MTT_RANGE = {"wm": (5.0, 6.0), "gm": (4.0, 5.0), "deep_gm": (4.0, 5.0), "csf": (0.0, 0.0)}
HU_RANGE = {"wm": (25.0, 30.0), "gm": (35.0, 40.0), "deep_gm": (33.0, 38.0), "csf": (0.0, 10.0)}

TISSUES = ("wm", "gm", "deep_gm", "csf")
# Tissue name of each anatomy class (ventricles are CSF).
CLASS_TISSUE = {WM: "wm", GM: "gm", DEEP_GM: "deep_gm", CSF: "csf", VENTRICLE: "csf"}
QUANTITIES = ("psr", "r1_offset", "t2", "pd", "adc", "cbf", "mtt", "delay", "hu")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds)) if bounds[1] > bounds[0] else float(bounds[0])


def draw_tissue(rng: np.random.Generator, field_strength: float | None = None) -> dict:
    """Draw every tissue parameter of one subject (JSON-serialisable).

    PSR per tissue first; T1, T2 and PD follow from the population lines (``RELAXATION_LINES``) with the
    subject's small residuals (``RESIDUAL_STD``).

    Returns:
        ``{"field_strength_t", "r1_line": {"a_per_s", "b_per_s"}, "residuals", "texture_std",
        "tissues": {name: {...}}}``; ``r1_line`` already includes the subject's R1 calibration factor.
    """
    field = float(rng.choice(FIELD_STRENGTHS)) if field_strength is None else float(field_strength)
    if field not in T1_CSF_RANGE:
        raise ValueError(f"field strength must be one of {FIELD_STRENGTHS}, got {field}")
    tissues = {name: {} for name in TISSUES}
    tissues["wm"]["psr"] = _uniform(rng, PSR_RANGE["wm"])
    tissues["gm"]["psr"] = _uniform(rng, PSR_RANGE["gm"])
    # Deep GM myelin lies between cortex and WM.
    tissues["deep_gm"]["psr"] = _uniform(rng, (max(PSR_RANGE["deep_gm"][0], tissues["gm"]["psr"]),
                                               PSR_RANGE["deep_gm"][1]))
    tissues["csf"]["psr"] = 0.0
    calibration = 1.0 + RESIDUAL_STD["r1_subject"] * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    a, b = (calibration * value for value in RELAXATION_LINES["r1"][field])
    c, d = RELAXATION_LINES["r2"]
    p0, e = RELAXATION_LINES["pd"]
    for name in ("wm", "gm", "deep_gm"):
        values = tissues[name]
        residual = {key: float(np.clip(rng.standard_normal(), -2.5, 2.5)) * RESIDUAL_STD[f"{key}_tissue"]
                    for key in ("r1", "r2", "pd")}
        # Per-tissue R1 residual enters as an offset from the line (the pathology code keeps using the line).
        values["r1_offset"] = residual["r1"] * (a + b * values["psr"])
        values["t2"] = 1000.0 / ((c + d * values["psr"]) * (1.0 + residual["r2"]))
        values["pd"] = (p0 - e * values["psr"]) * (1.0 + residual["pd"])
    t1_csf = _uniform(rng, T1_CSF_RANGE[field])
    tissues["csf"].update(r1_offset=1000.0 / t1_csf - a, t2=_uniform(rng, CSF_T2_RANGE), pd=1.0)
    for name in TISSUES:
        values = tissues[name]
        for quantity, table in (("adc", ADC_RANGE), ("cbf", CBF_RANGE), ("mtt", MTT_RANGE), ("hu", HU_RANGE)):
            values[quantity] = _uniform(rng, table[name])
        values["delay"] = 0.0 if name == "csf" else _uniform(rng, (0.0, 1.5))
        values["t1"] = 1000.0 / (a + b * values["psr"] + values["r1_offset"])
        values["cbv"] = values["cbf"] * values["mtt"] / 60.0
    return {
        "field_strength_t": field,
        "r1_line": {"a_per_s": a, "b_per_s": b},
        "r1_calibration": calibration,
        "texture_std": _uniform(rng, (0.01, 0.03)),
        "tissues": tissues,
    }


def t1_from_r1_model(tissue: dict, psr: np.ndarray, r1_offset: np.ndarray, r1_noise: np.ndarray,
                     brain: np.ndarray) -> np.ndarray:
    """T1 (ms) from ``R1 = (a + b PSR + offset)(1 + noise)``; 0 outside ``brain``."""
    line = tissue["r1_line"]
    r1 = (line["a_per_s"] + line["b_per_s"] * psr + r1_offset) * (1.0 + r1_noise)
    t1 = np.zeros(psr.shape, np.float32)
    np.divide(1000.0, r1, out=t1, where=brain)
    return t1


class TissueMaps:
    """Voxel-wise healthy parameter maps of one subject, plus the texture fields pathology reuses.

    Args:
        classes: uint8 anatomy classes ``(z, y, x)``.
        tissue: the dict from :func:`draw_tissue`.
        rng: generator for the texture (independent of pathology so healthy voxels never change).

    The maps hold one value per voxel for its hard class: pathology edits them inside its masks, and they
    become the parameters of the voxel's lesion compartment (``partial_volume.py``). Healthy compartments
    are recomputed per tissue with :meth:`compartment_values` (same texture fields).

    Attributes:
        maps: ``{quantity: float32 (z, y, x)}`` for ``QUANTITIES``; 0 outside the brain.
        noise: ``{quantity: float32 (z, y, x)}`` standard-normal texture per quantity (plus ``"r1"``).
        lesion_fraction: float32 ``(z, y, x)``, the share of the replaceable tissue a lesion takes (set by
            pathology, 0 = healthy voxel).
        effaces_csf: bool ``(z, y, x)``, lesions that also displace the voxel's CSF (swelling, mass effect).
        compartment_factor: ``{tissue: {quantity: factor}}`` applied to a whole healthy compartment (e.g. the
            reduced PSR of MS normal-appearing WM).
    """

    def __init__(self, classes: np.ndarray, tissue: dict, rng: np.random.Generator):
        self.tissue = tissue
        self.brain = classes > 0
        texture = float(tissue["texture_std"])
        lookup = {q: np.zeros(256, np.float32) for q in QUANTITIES}
        # Texture scale per class: CSF is nearly uniform water (keeps FLAIR nulling).
        scale = np.zeros(256, np.float32)
        for label, name in CLASS_TISSUE.items():
            for quantity in QUANTITIES:
                lookup[quantity][label] = tissue["tissues"][name][quantity]
            scale[label] = texture * (0.25 if name == "csf" else 1.0)
        voxel_scale = scale[classes]
        self.noise = {}
        self.maps = {}
        for quantity in ("psr", "t2", "pd", "adc", "cbf", "r1"):
            self.noise[quantity] = rng.standard_normal(classes.shape, dtype=np.float32)
        for quantity in QUANTITIES:
            values = lookup[quantity][classes]
            if quantity in self.noise:
                factor = 0.5 if quantity == "pd" else 1.0
                values = values * (1.0 + factor * voxel_scale * self.noise[quantity])
            self.maps[quantity] = values.astype(np.float32)
        self.r1_noise = (voxel_scale * self.noise["r1"]).astype(np.float32)
        self.voxel_scale = voxel_scale
        self.lesion_fraction = np.zeros(classes.shape, np.float32)
        self.effaces_csf = np.zeros(classes.shape, bool)
        self.compartment_factor: dict[str, dict[str, float]] = {}

    def compartment_values(self, name: str, index: np.ndarray) -> dict[str, np.ndarray]:
        """Healthy parameters of tissue ``name`` at the flat voxel indices ``index`` (with this subject's texture).

        Returns:
            ``{psr, t1, t2, pd, adc, cbf, mtt, delay, hu, gd}``, float32 ``(n,)``.
        """
        values = self.tissue["tissues"][name]
        factors = self.compartment_factor.get(name, {})
        scale = np.float32(float(self.tissue["texture_std"]) * (0.25 if name == "csf" else 1.0))
        out = {}
        for quantity in ("psr", "t2", "pd", "adc", "cbf"):
            factor = np.float32(0.5 if quantity == "pd" else 1.0)
            out[quantity] = (np.float32(values[quantity] * factors.get(quantity, 1.0))
                             * (1.0 + factor * scale * self.noise[quantity].ravel()[index])).astype(np.float32)
        for quantity in ("mtt", "delay", "hu"):
            out[quantity] = np.full(index.shape, values[quantity], np.float32)
        out["gd"] = np.zeros(index.shape, np.float32)
        line = self.tissue["r1_line"]
        r1 = ((line["a_per_s"] + line["b_per_s"] * out["psr"] + values["r1_offset"])
              * (1.0 + scale * self.noise["r1"].ravel()[index]))
        out["t1"] = (1000.0 / r1).astype(np.float32)
        return out

    def lesion_values(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters of the lesion compartment (the pathology-edited maps) at the flat indices ``index``."""
        out = {q: self.maps[q].ravel()[index] for q in ("psr", "t2", "pd", "adc", "cbf", "mtt", "delay", "hu", "gd")}
        line = self.tissue["r1_line"]
        r1 = ((line["a_per_s"] + line["b_per_s"] * out["psr"] + self.maps["r1_offset"].ravel()[index])
              * (1.0 + self.r1_noise.ravel()[index]))
        out["t1"] = (1000.0 / r1).astype(np.float32)
        return out

    def textured(self, quantity: str, value: float | np.ndarray, where: np.ndarray) -> np.ndarray:
        """``value`` with this subject's texture for ``quantity`` at the voxels ``where``."""
        factor = 0.5 if quantity == "pd" else 1.0
        noise = self.noise.get(quantity)
        if noise is None:
            return np.broadcast_to(np.float32(value), (int(where.sum()),)).astype(np.float32) if np.ndim(value) == 0 \
                else np.asarray(value, np.float32)
        texture = float(self.tissue["texture_std"])
        return (value * (1.0 + factor * texture * noise[where])).astype(np.float32)
