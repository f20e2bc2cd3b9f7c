"""MR signal equations (``docs/mr-physics.md``), vectorised over voxels. Times in ms, ADC in 1e-3 mm^2/s.

All functions return float32 arrays of the input shape; signals are in units of M0 (PD, CSF = 1).
"""

from __future__ import annotations

import functools

import numpy as np

GADOLINIUM_R1 = 4.0  # relaxivity, 1/(s mM)


def spin_echo(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, te: float) -> np.ndarray:
    """``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``; 0 where T1 or T2 is 0 (background)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        signal = pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return np.where((t1 > 0) & (t2 > 0), signal, 0.0).astype(np.float32)


def flair_null_ti(t1_csf: float, tr: float) -> float:
    """Inversion time nulling a T1 of ``t1_csf``: ``T1 ln(2 / (1 + exp(-TR/T1)))``."""
    return float(t1_csf * np.log(2.0 / (1.0 + np.exp(-tr / t1_csf))))


def flair(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, te: float, ti: float,
          inversion_efficiency: float = 1.0) -> np.ndarray:
    """Magnitude inversion recovery with inversion efficiency ``k`` (1 = perfect 180 degree pulse):
    ``S = PD |1 - (1 + k) exp(-TI/T1) + k exp(-TR/T1)| exp(-TE/T2)``. A real pulse (k 0.90-0.98, B1
    inhomogeneity) leaves CSF a few per cent of signal at the nominal null."""
    k = float(inversion_efficiency)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        signal = pd * np.abs(1.0 - (1.0 + k) * np.exp(-ti / t1) + k * np.exp(-tr / t1)) * np.exp(-te / t2)
    return np.where((t1 > 0) & (t2 > 0), signal, 0.0).astype(np.float32)


def mprage_steady_state(t1: np.ndarray, tr: float, ti: float, flip_deg: float, echo_spacing: float,
                        n_pulses: int, inversion_efficiency: float = 0.96, tolerance: float = 1e-7,
                        max_cycles: int = 200) -> np.ndarray:
    """Numerically simulated MPRAGE signal per unit M0 at the k-space centre (linear ordering).

    Each TR: inversion ``Mz <- -eff Mz``; free relaxation until the first readout pulse; ``n_pulses``
    pulses ``Mz <- Mz cos a`` each followed by ``echo_spacing`` of relaxation; recovery to TR. Cycles are
    repeated until Mz at the inversion changes by less than ``tolerance`` (periodic steady state). The
    centre pulse (index ``n_pulses // 2``) sits at TI after the inversion.

    Args:
        t1: T1 values (ms), any shape.
    Returns:
        ``Mz(centre) * sin a`` per unit M0, same shape as ``t1``.
    """
    t1 = np.asarray(t1, np.float64)
    centre = n_pulses // 2
    first = ti - centre * echo_spacing
    recovery = tr - first - n_pulses * echo_spacing
    if first < 0 or recovery < 0:
        raise ValueError(f"MPRAGE timing impossible: TI {ti}, TR {tr}, {n_pulses} pulses x {echo_spacing} ms")
    alpha = np.deg2rad(flip_deg)
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    e_first, e_tau, e_rec = (np.exp(-t / t1) for t in (first, echo_spacing, recovery))
    mz = np.ones_like(t1)
    signal = np.zeros_like(t1)
    for _ in range(max_cycles):
        start = mz
        mz = -inversion_efficiency * mz
        mz = 1.0 + (mz - 1.0) * e_first
        for pulse in range(n_pulses):
            if pulse == centre:
                signal = mz * sin_a
            mz = 1.0 + (mz * cos_a - 1.0) * e_tau
        mz = 1.0 + (mz - 1.0) * e_rec
        if np.max(np.abs(mz - start)) < tolerance:
            break
    return signal


@functools.lru_cache(maxsize=64)
def _mprage_table(tr: float, ti: float, flip_deg: float, echo_spacing: float, n_pulses: int,
                  inversion_efficiency: float) -> tuple[np.ndarray, np.ndarray]:
    log_t1 = np.linspace(np.log(50.0), np.log(12000.0), 4096)
    values = mprage_steady_state(np.exp(log_t1), tr, ti, flip_deg, echo_spacing, n_pulses, inversion_efficiency)
    return log_t1, values


def mprage(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, ti: float, flip_deg: float,
           echo_spacing: float, n_pulses: int, te: float = 3.0, inversion_efficiency: float = 0.96) -> np.ndarray:
    """MPRAGE image: ``PD * steady_state(T1) * exp(-TE/T2)``.

    The steady state is simulated once per protocol on a fine log-T1 grid (4096 values, 50-12000 ms)
    and interpolated per voxel (relative error < 1e-5), which keeps 1 mm volumes fast.
    """
    log_t1, values = _mprage_table(float(tr), float(ti), float(flip_deg), float(echo_spacing), int(n_pulses),
                                   float(inversion_efficiency))
    inside = (t1 > 0) & (t2 > 0)
    signal = np.zeros(t1.shape, np.float32)
    signal[inside] = pd[inside] * np.interp(np.log(t1[inside]), log_t1, values) * np.exp(-te / t2[inside])
    return signal


def dwi(b0: np.ndarray, adc: np.ndarray, b: float) -> np.ndarray:
    """Diffusion weighting ``S_b = S0 exp(-b ADC)`` with b in s/mm^2 and ADC in 1e-3 mm^2/s."""
    return (b0 * np.exp(-b * 1e-3 * adc)).astype(np.float32)


def t1_with_gadolinium(t1: np.ndarray, gd: np.ndarray, relaxivity: float = GADOLINIUM_R1) -> np.ndarray:
    """Post-contrast T1 (ms): ``1/T1' = 1/T1 + r1 [Gd]`` with r1 in 1/(s mM) and [Gd] in mM."""
    result = t1.astype(np.float32, copy=True)
    enhancing = (gd > 0) & (t1 > 0)
    result[enhancing] = 1.0 / (1.0 / t1[enhancing] + relaxivity * gd[enhancing] / 1000.0)
    return result
