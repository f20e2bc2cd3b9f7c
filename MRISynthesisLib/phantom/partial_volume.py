"""Partial volume: each brain voxel is a mixture of compartments, rendered as ``sum_t f_t S(params_t)``.

Compartments: the healthy tissues ``wm, gm, deep_gm, csf`` (fractions from the deformed soft anatomy) and
one pathological compartment ``lesion`` whose parameters are the pathology-edited per-voxel maps of
:class:`~.tissue.TissueMaps`. A lesion of fraction ``g`` (``TissueMaps.lesion_fraction``) replaces the share
``g`` of the voxel's parenchyma (WM, GM, deep GM), and of its CSF too where it ``effaces_csf`` (swelling or
mass effect); a lesion voxel is at least a quarter lesion (else it also takes the CSF).

Outside the brain mask every map is 0 (skull-stripped); inside, fractions sum to 1 (the part of an edge
voxel outside the brain counts as CSF, which lines the brain surface).

Quantitative ground-truth maps are the fraction-weighted mean over compartments (what a voxel-wise
quantitative method would report in the fast-exchange limit), except where physics fixes the voxel value:

* ``mtt = 60 cbv / cbf`` of the voxel (central volume principle for the whole voxel; cbv, cbf are means),
  ``tmax`` the flow-weighted mean bolus delay (0 where nothing is perfused);
* ``adc`` is the voxel's apparent ADC ``-ln(S_b / S_0) / b`` of the summed compartment signals, i.e. what a
  scanner's ADC map measures, so ``S_b = S_0 exp(-b ADC)`` holds exactly for the DWI images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from .anatomy import DEEP_GM
from .tissue import TissueMaps

TISSUE_COMPARTMENTS = ("wm", "gm", "deep_gm", "csf")
PARENCHYMA = ("wm", "gm", "deep_gm")
MIN_FRACTION = 0.02       # smaller shares are dropped (interpolation crumbs), the rest renormalised
MIN_LESION_SHARE = 0.25   # a lesion voxel holding less replaceable tissue than this also takes the CSF


@dataclass
class Compartment:
    """One compartment on the voxels where it is present.

    Attributes:
        name: ``wm, gm, deep_gm, csf`` or ``lesion``.
        local: indices into the brain-voxel list ``(n,)`` (int64).
        weight: volume fraction of the compartment in those voxels, float32 ``(n,)``.
        params: ``{psr, t1, t2, pd, adc, cbf, mtt, delay, hu, gd}`` float32 ``(n,)``.
    """

    name: str
    local: np.ndarray
    weight: np.ndarray
    params: dict


def tissue_fractions(classes: np.ndarray, wm: np.ndarray, gm: np.ndarray) -> dict[str, np.ndarray]:
    """Healthy fractions of the brain voxels (``classes > 0``, C order) from the sampled WM and GM fractions.

    GM within a voxel of the deep-GM class or next to one is deep GM. Returns float32 ``(n,)`` per
    ``TISSUE_COMPARTMENTS``, each 0 or >= ``MIN_FRACTION``, summing to 1 in every voxel.
    """
    brain = classes > 0
    wm = np.clip(wm, 0.0, 1.0)
    gm = np.clip(gm, 0.0, 1.0)
    total = wm + gm
    over = np.maximum(total, 1.0)
    wm, gm = wm / over, gm / over
    deep_region = ndi.binary_dilation(classes == DEEP_GM, iterations=1)[brain]
    fractions = {"wm": wm, "gm": np.where(deep_region, 0.0, gm), "deep_gm": np.where(deep_region, gm, 0.0),
                 "csf": np.clip(1.0 - wm - gm, 0.0, 1.0)}
    for name in TISSUE_COMPARTMENTS:
        fractions[name] = np.where(fractions[name] < MIN_FRACTION, 0.0, fractions[name]).astype(np.float32)
    total = sum(fractions.values())
    # Voxels whose crumbs were all dropped (never in practice): pure CSF.
    fractions["csf"][total == 0] = 1.0
    total[total == 0] = 1.0
    return {name: (f / total).astype(np.float32) for name, f in fractions.items()}


def compartments(fractions: dict[str, np.ndarray], maps: TissueMaps, brain_index: np.ndarray) -> list[Compartment]:
    """Healthy and lesion compartments of the brain voxels ``brain_index`` (flat indices of the grid)."""
    lesion = maps.lesion_fraction.ravel()[brain_index]
    effaces = maps.effaces_csf.ravel()[brain_index]
    parenchyma = fractions["wm"] + fractions["gm"] + fractions["deep_gm"]
    effaces = effaces | ((lesion > 0) & (lesion * parenchyma < MIN_LESION_SHARE))
    replaced = np.where(effaces, 1.0, parenchyma)
    result = []
    for name in TISSUE_COMPARTMENTS:
        share = lesion if name != "csf" else np.where(effaces, lesion, 0.0)
        weight = fractions[name] * (1.0 - share)
        local = np.flatnonzero(weight > 0)
        result.append(Compartment(name, local, weight[local].astype(np.float32),
                                  maps.compartment_values(name, brain_index[local])))
    local = np.flatnonzero(lesion > 0)
    if local.size:
        weight = (lesion * replaced)[local].astype(np.float32)
        result.append(Compartment("lesion", local, weight, maps.lesion_values(brain_index[local])))
    return result


def mix(parts: list[Compartment], n: int, signal: Callable[[dict], np.ndarray]) -> np.ndarray:
    """``sum_t f_t signal(params_t)`` over compartments, float32 ``(n,)`` (brain voxels)."""
    out = np.zeros(n, np.float64)
    for part in parts:
        out[part.local] += part.weight * signal(part.params)
    return out.astype(np.float32)


def quantitative_maps(parts: list[Compartment], n: int, dwi: dict, se: Callable) -> dict[str, np.ndarray]:
    """Ground-truth maps of the brain voxels (float32 ``(n,)``); see the module docstring for the means.

    Args:
        dwi: the DWI protocol ``{tr, te, b}`` (the apparent ADC depends on each compartment's b=0 signal).
        se: the spin-echo signal function ``se(pd, t1, t2, tr, te)``.
    Returns:
        ``t1, t2, pd, psr, adc, cbf, cbv, mtt, tmax, gd, hu`` plus ``dwi_b0``.
    """
    out = {q: mix(parts, n, lambda p, q=q: p[q]) for q in ("t1", "t2", "pd", "psr", "cbf", "gd", "hu")}
    out["cbv"] = mix(parts, n, lambda p: p["cbf"] * p["mtt"] / 60.0)
    flow_delay = mix(parts, n, lambda p: p["cbf"] * p["delay"])
    perfused = out["cbf"] > 0
    out["mtt"] = np.divide(60.0 * out["cbv"], out["cbf"], out=np.zeros(n, np.float32), where=perfused)
    out["tmax"] = np.divide(flow_delay, out["cbf"], out=np.zeros(n, np.float32), where=perfused)
    b0 = mix(parts, n, lambda p: se(p["pd"], p["t1"], p["t2"], dwi["tr"], dwi["te"]))
    b = mix(parts, n, lambda p: se(p["pd"], p["t1"], p["t2"], dwi["tr"], dwi["te"])
            * np.exp(-dwi["b"] * 1e-3 * p["adc"]))
    out["adc"] = (np.log(b0.astype(np.float64) / b) / (dwi["b"] * 1e-3)).astype(np.float32)
    out["dwi_b0"] = b0
    return out
