"""Per-subject sequence parameters within clinical ranges (``docs/mr-physics.md``); times in ms.

FLAIR's inversion time is set to null the subject's CSF (as a tuned clinical protocol does) with a
small +-1 % error. TE (2D, and the equivalent mono-exponential TE of 3D variable-flip-angle FLAIR) is
80-120 ms. When the subject's
GM/WM FLAIR contrast would fall under 1.05, TE is lengthened (<= 200 ms) as a radiographer would.
MPRAGE timing follows the vendor defaults for the drawn field strength.
"""

from __future__ import annotations

import numpy as np

from .mr_signal import flair, flair_null_ti

MIN_FLAIR_GM_WM = 1.05  # lowest GM/WM FLAIR contrast a clinical protocol is accepted with


def _u(rng: np.random.Generator, low: float, high: float, digits: int = 2) -> float:
    return round(float(rng.uniform(low, high)), digits)


def _flair_te_for_contrast(tissue: dict, tr: float, te: float, ti: float, longest: float = 200.0) -> float:
    """Lengthen TE (at most to ``longest``) until FLAIR GM/WM >= MIN_FLAIR_GM_WM, as a tuned protocol would."""
    values = {n: tissue["tissues"][n] for n in ("gm", "wm")}
    signal = {n: float(flair(np.float32([v["pd"]]), np.float32([v["t1"]]), np.float32([v["t2"]]), tr, 0.0, ti)[0])
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
    flair_ti = round(flair_null_ti(t1_csf, flair_tr) * float(rng.uniform(0.99, 1.01)), 2)
    if field >= 3.0:
        mprage = {"tr": _u(rng, 2200, 2400), "ti": _u(rng, 850, 950), "flip_deg": _u(rng, 8, 10)}
    else:
        mprage = {"tr": _u(rng, 2300, 2500), "ti": _u(rng, 950, 1050), "flip_deg": _u(rng, 7, 9)}
    mprage.update({"echo_spacing": _u(rng, 6.0, 8.0), "n_pulses": int(rng.integers(160, 193)),
                   "te": _u(rng, 2.5, 3.5), "inversion_efficiency": 0.96})
    # TE 80-120 (inside the note's 80-140; the earlier 90-150 gave FLAIR GM/WM 1.40 vs 0.92-1.20 real).
    flair_te = _u(rng, 80, 120)
    flair_te = round(_flair_te_for_contrast(tissue, flair_tr, flair_te, flair_ti), 2)
    return {
        "mprage": mprage,
        "t1w_se": {"tr": _u(rng, 450, 650), "te": _u(rng, 10, 15)},
        "pdw": {"tr": _u(rng, 2500, 4000), "te": _u(rng, 10, 30)},
        "t2w": {"tr": _u(rng, 4000, 6000), "te": _u(rng, 80, 110)},
        "flair": {"tr": flair_tr, "te": flair_te, "ti": flair_ti, "kind": "3d" if three_d_flair else "2d"},
        "dwi": {"tr": _u(rng, 4000, 8000), "te": _u(rng, 60, 100), "b": 1000.0},
    }
