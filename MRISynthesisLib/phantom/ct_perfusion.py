"""CT perfusion: gamma-variate arterial input, indicator-dilution tissue curves, Hounsfield units.

Tissue enhancement (HU) at time t, for a voxel with flow ``CBF`` (ml/100 g/min), mean transit time ``MTT``
(s) and bolus delay ``d`` (s): ``C(t) = f * (AIF conv R)(t - d)`` with ``f = CBF * rho / 6000`` (1/s, brain
density rho = 1.04 g/ml) and residue ``R(t) = exp(-t / MTT)``, so ``integral C = CBV/100 * integral AIF``
(central volume principle, CBV = CBF * MTT / 60 ml/100 g). The time to the residue maximum (Tmax) equals ``d``.
"""

from __future__ import annotations

import numpy as np

BRAIN_DENSITY = 1.04  # g/ml
FINE_STEP = 0.25      # s, integration step of the convolution


def draw_ctp_protocol(rng: np.random.Generator) -> dict:
    """Frames, duration, arterial input (gamma variate) and noise of one CT perfusion scan."""
    return {
        "frames": int(rng.integers(15, 41)),
        "duration_s": round(float(rng.uniform(40.0, 60.0)), 2),
        "aif_arrival_s": round(float(rng.uniform(5.0, 10.0)), 3),
        "aif_peak_hu": round(float(rng.uniform(200.0, 400.0)), 2),
        "aif_alpha": round(float(rng.uniform(2.5, 4.0)), 3),
        "aif_beta_s": round(float(rng.uniform(1.2, 2.0)), 3),
        "noise_hu": round(float(rng.uniform(5.0, 15.0)), 2),
    }


def frame_times(protocol: dict) -> np.ndarray:
    """Acquisition times (s) of the frames, evenly spread from 0 to the scan duration."""
    return np.linspace(0.0, protocol["duration_s"], protocol["frames"]).astype(np.float32)


def gamma_variate(t: np.ndarray, arrival: float, peak: float, alpha: float, beta: float) -> np.ndarray:
    """``peak * (s / (alpha beta))^alpha * exp(alpha - s / beta)`` for ``s = t - arrival > 0`` (max = peak)."""
    s = np.clip(np.asarray(t, np.float64) - arrival, 0.0, None)
    return (peak * (s / (alpha * beta)) ** alpha * np.exp(alpha - s / beta)).astype(np.float32)


def arterial_input(protocol: dict, t: np.ndarray) -> np.ndarray:
    """AIF enhancement (HU above baseline) at times ``t``."""
    return gamma_variate(t, protocol["aif_arrival_s"], protocol["aif_peak_hu"], protocol["aif_alpha"],
                         protocol["aif_beta_s"])


def tissue_enhancement(cbf: np.ndarray, mtt: np.ndarray, delay: np.ndarray, protocol: dict,
                       chunk: int = 16384) -> np.ndarray:
    """Enhancement curves (HU) of ``n`` voxels at the frame times.

    Args:
        cbf, mtt, delay: shape ``(n,)``; voxels with ``cbf == 0`` or ``mtt == 0`` stay 0.
    Returns:
        float32 ``(frames, n)``.
    """
    times = frame_times(protocol)
    fine = np.arange(0.0, float(times[-1]) + FINE_STEP, FINE_STEP)
    aif = arterial_input(protocol, fine).astype(np.float64)
    result = np.zeros((len(times), cbf.size), np.float32)
    valid = np.flatnonzero((cbf > 0) & (mtt > 0))
    for begin in range(0, valid.size, chunk):
        index = valid[begin:begin + chunk]
        decay = np.exp(-FINE_STEP / mtt[index].astype(np.float64))
        flow = cbf[index].astype(np.float64) * BRAIN_DENSITY / 6000.0
        # Recursive convolution with exp(-t/MTT): y_k = y_{k-1} e^{-dt/MTT} + AIF_k dt (exact for the step).
        curve = np.empty((fine.size, index.size))
        state = np.zeros(index.size)
        for k in range(fine.size):
            state = state * decay + aif[k] * FINE_STEP
            curve[k] = state
        # Shift by the voxel's delay with linear interpolation on the fine grid.
        position = np.clip((times[:, None] - delay[index][None, :]) / FINE_STEP, 0.0, fine.size - 1.0)
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, fine.size - 1)
        weight = position - lower
        columns = np.arange(index.size)[None, :]
        shifted = curve[lower, columns] * (1 - weight) + curve[upper, columns] * weight
        shifted[(times[:, None] - delay[index][None, :]) < 0] = 0.0
        result[:, index] = (flow[None, :] * shifted).astype(np.float32)
    return result


def ct_perfusion_series(hu: np.ndarray, cbf: np.ndarray, mtt: np.ndarray, delay: np.ndarray, brain: np.ndarray,
                        protocol: dict) -> np.ndarray:
    """4D CT perfusion series (HU), shape ``(frames, z, y, x)``: unenhanced HU plus tissue enhancement."""
    series = np.repeat(hu[None].astype(np.float32), protocol["frames"], axis=0)
    inside = np.flatnonzero(brain)
    enhancement = tissue_enhancement(cbf.ravel()[inside], mtt.ravel()[inside], delay.ravel()[inside], protocol)
    flat = series.reshape(protocol["frames"], -1)
    flat[:, inside] += enhancement
    return series
