"""Per-subject sequence parameters within clinical ranges (``docs/mr-physics.md``); times in ms.

FLAIR's inversion time aims at the subject's CSF null (as a tuned clinical protocol does) with up to
5 % error and an imperfect inversion pulse. TE (2D, and the equivalent mono-exponential TE of 3D variable-flip-angle FLAIR) is
80-120 ms. When the subject's
GM/WM FLAIR contrast would fall under 1.05, TE is lengthened (<= 200 ms) as a radiographer would.
MPRAGE timing follows the vendor defaults for the drawn field strength.
"""

from __future__ import annotations

import numpy as np

from .mr_signal import flair, flair_null_ti

# Lowest GM/WM FLAIR contrast of pure tissue a clinical protocol is accepted with (partial volume with CSF
# lowers the cortex's measured mean below this).
MIN_FLAIR_GM_WM = 1.10


def _u(rng: np.random.Generator, low: float, high: float, digits: int = 2) -> float:
    return round(float(rng.uniform(low, high)), digits)


def _flair_te_for_contrast(tissue: dict, tr: float, te: float, ti: float, efficiency: float,
                           longest: float = 200.0) -> float:
    """Lengthen TE (at most to ``longest``) until FLAIR GM/WM >= MIN_FLAIR_GM_WM, as a tuned protocol would."""
    values = {n: tissue["tissues"][n] for n in ("gm", "wm")}
    signal = {n: float(flair(np.float32([v["pd"]]), np.float32([v["t1"]]), np.float32([v["t2"]]), tr, 0.0, ti,
                                efficiency)[0])
              for n, v in values.items()}
    decay = 1.0 / values["wm"]["t2"] - 1.0 / values["gm"]["t2"]  # > 0: GM T2 is longer
    ratio_at_zero = signal["gm"] / signal["wm"]
    if decay <= 0 or ratio_at_zero * np.exp(te * decay) >= MIN_FLAIR_GM_WM:
        return te
    return float(min(longest, np.log(MIN_FLAIR_GM_WM / ratio_at_zero) / decay))


def draw_protocol(rng: np.random.Generator, tissue: dict) -> dict:
    """Sequence parameters of every weighted image for one subject (JSON-serialisable)."""
    field = tissue["field_strength_t"]
    t1_csf = tissue["tissues"]["csf"]["t1"]
    three_d_flair = bool(rng.random() < 0.5)
    flair_tr = _u(rng, 4800, 6000) if three_d_flair else _u(rng, 9000, 11000)
    # Real FLAIR CSF is 0.3-0.5 of WM (B1 inhomogeneity, inflow, TI not at the null): efficiency 0.82-0.94 and
    # a TI up to 5 % off give 0.2-0.35.
    flair_ti = round(flair_null_ti(t1_csf, flair_tr) * float(rng.uniform(0.95, 1.05)), 2)
    flair_efficiency = _u(rng, 0.82, 0.94, 3)
    if field >= 3.0:
        mprage = {"tr": _u(rng, 2200, 2400), "ti": _u(rng, 850, 950), "flip_deg": _u(rng, 8, 10)}
    else:
        mprage = {"tr": _u(rng, 2300, 2500), "ti": _u(rng, 950, 1050), "flip_deg": _u(rng, 7, 9)}
    mprage.update({"echo_spacing": _u(rng, 6.0, 8.0), "n_pulses": int(rng.integers(160, 193)),
                   "te": _u(rng, 2.5, 3.5), "inversion_efficiency": 0.96})
    # TE 80-120 (inside the note's 80-140; the earlier 90-150 gave FLAIR GM/WM 1.40 vs 0.92-1.20 real).
    flair_te = _u(rng, 80, 120)
    flair_te = round(_flair_te_for_contrast(tissue, flair_tr, flair_te, flair_ti, flair_efficiency), 2)
    return {
        "mprage": mprage,
        "t1w_se": {"tr": _u(rng, 450, 650), "te": _u(rng, 10, 15)},
        "pdw": {"tr": _u(rng, 2500, 4000), "te": _u(rng, 10, 30)},
        "t2w": {"tr": _u(rng, 3500, 5500), "te": _u(rng, 80, 110)},
        "flair": {"tr": flair_tr, "te": flair_te, "ti": flair_ti, "inversion_efficiency": flair_efficiency,
                  "kind": "3d" if three_d_flair else "2d"},
        "dwi": {"tr": _u(rng, 4000, 8000), "te": _u(rng, 60, 100), "b": 1000.0},
    }
