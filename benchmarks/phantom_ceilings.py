"""Oracle ceilings of the myelin-PSR task on held-out phantoms: how well could a perfect method score?

Held-out subjects ``--first-seed .. --first-seed + n - 1`` (default 10000.., the evaluation's held-out range),
pathology alternating ``ms, none`` as in ``evaluation.harness.held_out_phantoms``, at ``--spacing`` mm, with
clean and/or randomised acquisition. Every oracle predicts the PSR map on the subject's grid; it is scored the
way issue 8 states: inside the brain mask, both volumes scaled by the truth's 0.5-99.5 brain percentiles
(``(x - p0.5) / (p99.5 - p0.5)``), then ``metrics.psnr`` / ``metrics.ssim`` with ``data_range=1``. The
project's default PSNR (peak = the truth's brain range, ``metrics.evaluate_map``) is recorded too, with the
brain MAE and lesion MAE in physical PSR units. Per-case PSNR is capped at 100 dB (as the harness does).

Oracles:

- ``truth via model grid``: the true PSR sent through ``preprocess.prepare`` with the T1w (MPRAGE) as
  reference and back (``Prepared.inverse``), exactly ``evaluation.harness.truth_round_trip``; model spacing and
  multiple from the bundled ``myelin-psr`` card.
- ``constant``: the brain-mean true PSR in every brain voxel.
- ``fractions + population levels``: ``sum_t f_t L_t`` over the true soft fractions (``subject.fractions``)
  with population-mean levels: WM 0.155, GM 0.065 (midpoints of ``tissue.PSR_RANGE``), deep GM 0.0808 (the
  mean of its draw ``U(max(0.07, gm), 0.09)``), CSF 0; MS subjects' WM x 0.925 (mean NAWM factor, drop
  ``U(0.05, 0.10)``) and lesion = NAWM level x 0.477 (per-lesion mean ratio of ``pathology.py``: black hole
  with probability 0.25 x P(diameter >= 5 mm) = 0.151, ratio ``U(0.25, 0.45)``, else ``U(0.4, 0.6)``).
- ``fractions + true levels``: the subject's own tissue PSRs (``parameters["tissue"]["tissues"][t]["psr"]``),
  WM x (1 - NAWM drop), and each lesion's own PSR (lesion identity per voxel rebuilt exactly by recording the
  ellipsoids ``pathology.rasterise_ellipsoid`` draws). What remains is the voxel texture.
- ``fractions + estimated levels (physics)``: levels estimated from the weighted inputs only (MPRAGE + FLAIR) plus the
  sequence header (field strength, TR/TE/TI/flip/echo spacing, as in DICOM) through the population relation
  ``tissue.RELAXATION_LINES`` (no subject residuals, no calibration): per subject, least squares of the 5
  measured log-ratios (MPRAGE WM/GM, deep GM/GM, CSF/GM; FLAIR WM/GM, deep GM/GM; medians over voxels >= 90 %
  of one tissue, away from lesions) against the signal equations, unknowns PSR of WM, GM, deep GM. CSF
  takes population T1/T2, the FLAIR pulse the population inversion efficiency 0.94. Ratios need no absolute
  scale; gamma, bias and misregistration of the randomised images are *not* modelled (an honest simple
  estimator). Lesions: estimated NAWM level x the population lesion ratio (lesion PSR is drawn independently
  of lesion T1/T2, so no input carries it).
- ``fractions + estimated levels (calibrated + prior)``: the same fit with the systematic misfit of the
  simple model (partial volume in the medians, population CSF, ...) removed: per ratio, the mean and SD of
  (observed - modelled at the true levels) on ``--calibration-subjects`` *training* phantoms (seeds 0..,
  same acquisition mode) give an offset and a weight, and the population prior (mean, SD of the draws) is
  added (maximum a posteriori). Shows how much subject-specific level information the inputs carry.
- ``fractions + levels regressed from image contrasts (no header)``: what a network that is given only the
  images can learn about the levels: ridge regression of the true WM, GM, deep GM PSR on the same 5 observed
  log-ratios, fitted on ``--regression-subjects`` training phantoms (seeds 0.., same acquisition mode). The
  sequence header is not used (a NIfTI file has none), so the protocol's effect on contrast is noise here.

Usage: OMP_NUM_THREADS=1 python benchmarks/phantom_ceilings.py [--n 4] [--spacing 2] [--acquisition both]
Writes benchmarks/results/phantom_ceilings.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402

from MRISynthesisLib import metrics  # noqa: E402
from MRISynthesisLib.phantom import generate_subject  # noqa: E402
from MRISynthesisLib.phantom import mr_signal, pathology as pathology_module, tissue as tissue_module  # noqa: E402
from MRISynthesisLib.preprocess import prepare  # noqa: E402
from MRISynthesisLib.resample import resample_to  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "MRISynthesisLib" / "model_store" / "bundled" / "myelin-psr" / "card.json"
PATHOLOGIES = ("ms", "none")  # the myelin-psr recipe's held-out cycle
PSNR_CAP_DB = 100.0
ESTIMATED = "fractions + estimated levels (physics)"
CALIBRATED = "fractions + estimated levels (calibrated + prior)"
NO_HEADER = "fractions + levels regressed from image contrasts (no header)"
ORACLES = ("truth via model grid", "constant", "fractions + population levels", "fractions + true levels",
           ESTIMATED, CALIBRATED, NO_HEADER)
LEVELS = ("wm", "gm", "deep_gm")
RIDGE = 0.01  # penalty per subject on standardised features
COMPARTMENTS = ("wm", "gm", "deep_gm", "csf", "lesion")

# Population means of the draws (see the module docstring for the derivations).
_P_BLACK_HOLE = 0.25 * math.log(20.0 / 5.0) / math.log(20.0 / 2.0)
POPULATION = {
    "wm": float(np.mean(tissue_module.PSR_RANGE["wm"])),
    "gm": float(np.mean(tissue_module.PSR_RANGE["gm"])),
    # deep GM ~ U(max(0.07, gm), 0.09), gm ~ U(0.05, 0.08): 2/3 x 0.08 + 1/3 x 0.0825
    "deep_gm": 2.0 / 3.0 * 0.08 + 1.0 / 3.0 * (0.075 + 0.09) / 2.0,
    "csf": 0.0,
    "nawm_factor": 1.0 - 0.075,
    "lesion_ratio": _P_BLACK_HOLE * 0.35 + (1.0 - _P_BLACK_HOLE) * 0.5,
}
# Population standard deviations (uniform draws; deep GM by Monte Carlo of its draw): the prior of the
# calibrated estimator.
POPULATION_SD = {"wm": 0.05 / math.sqrt(12.0), "gm": 0.03 / math.sqrt(12.0), "deep_gm": 0.00555}
FLAIR_EFFICIENCY_MEAN = 0.94  # population mean of protocol.py's U(0.90, 0.98); B1 is not in a header
PURE_FRACTION = 0.9


# ---------------------------------------------------------------------------------------------- subjects
@contextlib.contextmanager
def recorded_ellipsoids():
    """Record every ellipsoid ``pathology.rasterise_ellipsoid`` draws (in call order = lesion id order)."""
    original = pathology_module.rasterise_ellipsoid
    calls = []

    def recorder(centre, semi_axes_mm, rotation, spacing, shape):
        box, radius = original(centre, semi_axes_mm, rotation, spacing, shape)
        calls.append((np.asarray(centre).copy(), box, radius))
        return box, radius

    pathology_module.rasterise_ellipsoid = recorder
    try:
        yield calls
    finally:
        pathology_module.rasterise_ellipsoid = original


def lesion_ids(calls: list, wm: np.ndarray) -> np.ndarray:
    """Per-voxel lesion id (0 = none), rebuilt the way ``pathology.multiple_sclerosis`` writes it."""
    ids = np.zeros(wm.shape, np.uint16)
    for index, (centre, box, radius) in enumerate(calls, start=1):
        inside = (radius < 1.0) & wm[box]
        inside[tuple(centre - [s.start for s in box])] = True
        ids[box][inside] = index
    return ids


def load_subject(seed: int, pathology: str, spacing: float, randomised: bool) -> dict:
    with recorded_ellipsoids() as calls:
        subject = generate_subject(seed, pathology, spacing=spacing, randomize_acquisition=randomised,
                                   maps=("mprage", "flair"))
    masks = {name: volume.array > 0 for name, volume in subject.masks.items()}
    ids = lesion_ids(calls, masks["wm"]) if pathology == "ms" else np.zeros(masks["brain"].shape, np.uint16)
    if not np.array_equal(ids > 0, masks["lesion"]):
        raise RuntimeError(f"seed {seed}: rebuilt lesion ids do not match the lesion mask")
    return {"subject": subject, "masks": masks, "lesion_ids": ids,
            "fractions": {name: subject.fractions[name].array for name in COMPARTMENTS}}


# ---------------------------------------------------------------------------------------------- levels
def true_levels(subject) -> dict:
    tissues = subject.parameters["tissue"]["tissues"]
    drop = float(subject.parameters["pathology_parameters"].get("nawm_psr_reduction", 0.0))
    return {"wm": tissues["wm"]["psr"] * (1.0 - drop), "gm": tissues["gm"]["psr"],
            "deep_gm": tissues["deep_gm"]["psr"], "csf": 0.0}


def population_levels(has_lesions: bool) -> dict:
    factor = POPULATION["nawm_factor"] if has_lesions else 1.0
    return {"wm": POPULATION["wm"] * factor, "gm": POPULATION["gm"], "deep_gm": POPULATION["deep_gm"], "csf": 0.0}


def tissue_signals(levels: np.ndarray, field: float, protocol: dict) -> dict[str, np.ndarray]:
    """MPRAGE and FLAIR signals of pure WM, GM, deep GM, CSF on the population lines (calibration 1)."""
    a, b = tissue_module.RELAXATION_LINES["r1"][field]
    c, d = tissue_module.RELAXATION_LINES["r2"]
    p0, e = tissue_module.RELAXATION_LINES["pd"]
    psr = np.asarray(levels, np.float64)
    t1 = 1000.0 / (a + b * psr)
    t2 = 1000.0 / (c + d * psr)
    pd = p0 - e * psr
    t1 = np.append(t1, np.mean(tissue_module.T1_CSF_RANGE[field]))
    t2 = np.append(t2, np.mean(tissue_module.CSF_T2_RANGE))
    pd = np.append(pd, 1.0)
    m, f = protocol["mprage"], protocol["flair"]
    t1, t2, pd = (x.astype(np.float32) for x in (t1, t2, pd))
    return {"mprage": mr_signal.mprage(pd, t1, t2, m["tr"], m["ti"], m["flip_deg"], m["echo_spacing"],
                                       m["n_pulses"], m["te"], m["inversion_efficiency"]).astype(np.float64),
            "flair": mr_signal.flair(pd, t1, t2, f["tr"], f["te"], f["ti"], FLAIR_EFFICIENCY_MEAN).astype(np.float64)}


# (image, numerator, denominator) of the log-ratios the estimator fits; tissue order wm, gm, deep_gm, csf
RATIOS = (("mprage", "wm", "gm"), ("mprage", "deep_gm", "gm"), ("mprage", "csf", "gm"),
          ("flair", "wm", "gm"), ("flair", "deep_gm", "gm"))
ORDER = ("wm", "gm", "deep_gm", "csf")


def observed_ratios(data: dict) -> tuple[np.ndarray, dict]:
    """The ``RATIOS`` log-ratios of tissue medians in the weighted images (pure voxels away from lesions)."""
    subject, masks, fractions = data["subject"], data["masks"], data["fractions"]
    away = masks["brain"] & ~ndi.binary_dilation(masks["lesion"], iterations=1) & (fractions["lesion"] == 0)
    measured = {}
    for image in ("mprage", "flair"):
        array = subject.maps[image].array
        measured[image] = {}
        for name in ORDER:
            pure = away & (fractions[name] >= PURE_FRACTION) & (array > 0)
            measured[image][name] = float(np.median(array[pure])) if pure.sum() >= 10 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = np.array([math.log(measured[i][n] / measured[i][d]) for i, n, d in RATIOS])
    return observed, measured


def model_ratios(levels, subject) -> np.ndarray:
    """``RATIOS`` predicted by the population relation for PSR ``levels`` (wm, gm, deep_gm) and the header."""
    signals = tissue_signals(levels, float(subject.parameters["tissue"]["field_strength_t"]),
                             subject.parameters["protocol"])
    return np.array([math.log(signals[i][ORDER.index(n)] / signals[i][ORDER.index(d)]) for i, n, d in RATIOS])


def estimate_levels(data: dict, calibration: dict | None = None) -> tuple[dict, dict]:
    """PSR of WM, GM, deep GM from the weighted images' tissue log-ratios (see the module docstring).

    ``calibration`` None: plain least squares on the physics model. Otherwise ``{"offset", "sigma"}`` per ratio
    (mean and SD of observed minus modelled log-ratio on training phantoms): the offset is removed, residuals
    are weighted by 1/sigma and the population prior (``POPULATION``/``POPULATION_SD``) is added (MAP).
    """
    subject = data["subject"]
    observed, measured = observed_ratios(data)
    usable = np.isfinite(observed)
    offset = np.zeros(len(RATIOS)) if calibration is None else np.asarray(calibration["offset"])
    sigma = np.ones(len(RATIOS)) if calibration is None else np.asarray(calibration["sigma"])
    prior = population_levels(bool(data["masks"]["lesion"].any()))
    prior_mean = np.array([prior[n] for n in ("wm", "gm", "deep_gm")])
    prior_sd = np.array([POPULATION_SD[n] for n in ("wm", "gm", "deep_gm")])

    def residual(levels):
        misfit = ((model_ratios(levels, subject) + offset - observed) / sigma)[usable]
        if calibration is None:
            return misfit
        return np.concatenate([misfit, (levels - prior_mean) / prior_sd])

    fit = least_squares(residual, prior_mean, bounds=([0.0] * 3, [0.35] * 3), x_scale=0.05, diff_step=1e-3)
    levels = {"wm": float(fit.x[0]), "gm": float(fit.x[1]), "deep_gm": float(fit.x[2]), "csf": 0.0}
    misfit = (model_ratios(fit.x, subject) + offset - observed)[usable]
    info = {"measured_medians": measured, "observed_log_ratios": observed.tolist(),
            "fit_residual_rms": float(np.sqrt(np.mean(misfit ** 2))) if misfit.size else None,
            "ratios_used": int(usable.sum())}
    return levels, info


def calibrate(seeds: list[int], spacing: float, randomised: bool) -> dict:
    """Mean and SD of (observed - modelled at the true levels) log-ratios over training phantoms ``seeds``."""
    differences = []
    for index, seed in enumerate(seeds):
        data = load_subject(seed, PATHOLOGIES[index % len(PATHOLOGIES)], spacing, randomised)
        true = true_levels(data["subject"])
        observed, _ = observed_ratios(data)
        differences.append(observed - model_ratios([true["wm"], true["gm"], true["deep_gm"]], data["subject"]))
    differences = np.array(differences)
    return {"seeds": list(seeds), "offset": np.nanmean(differences, 0).tolist(),
            "sigma": np.maximum(np.nanstd(differences, 0), 0.01).tolist(), "ratios": [list(r) for r in RATIOS]}


def fit_level_regression(seeds: list[int], spacing: float, randomised: bool) -> dict:
    """Ridge regression of the true levels (wm, gm, deep_gm) on the observed log-ratios of training phantoms."""
    features, targets = [], []
    for index, seed in enumerate(seeds):
        data = load_subject(seed, PATHOLOGIES[index % len(PATHOLOGIES)], spacing, randomised)
        features.append(observed_ratios(data)[0])
        true = true_levels(data["subject"])
        targets.append([true[name] for name in LEVELS])
    features, targets = np.array(features), np.array(targets)
    mean = np.nanmean(features, 0)
    features = np.where(np.isfinite(features), features, mean)
    sd = features.std(0) + 1e-9
    standardised = (features - mean) / sd
    design = np.column_stack([np.ones(len(seeds)), standardised])
    penalty = RIDGE * len(seeds) * np.diag([0.0] + [1.0] * standardised.shape[1])  # the intercept is free
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ targets)
    fitted = design @ weights
    r2 = 1.0 - ((fitted - targets) ** 2).mean(0) / targets.var(0)
    return {"seeds": list(seeds), "mean": mean.tolist(), "sd": sd.tolist(), "weights": weights.tolist(),
            "training_r2": dict(zip(LEVELS, r2.tolist()))}


def regressed_levels(data: dict, regression: dict) -> dict:
    observed = observed_ratios(data)[0]
    mean = np.asarray(regression["mean"])
    standardised = (np.where(np.isfinite(observed), observed, mean) - mean) / np.asarray(regression["sd"])
    levels = np.concatenate([[1.0], standardised]) @ np.asarray(regression["weights"])
    return {**dict(zip(LEVELS, (float(v) for v in levels))), "csf": 0.0}


def from_fractions(fractions: dict, levels: dict, lesion: np.ndarray | float, brain: np.ndarray) -> np.ndarray:
    """``sum_t f_t L_t``; ``lesion`` is a level or a per-voxel array."""
    out = sum(fractions[name].astype(np.float64) * levels[name] for name in ("wm", "gm", "deep_gm", "csf"))
    out = out + fractions["lesion"] * lesion
    return np.where(brain, out, 0.0)


# ---------------------------------------------------------------------------------------------- oracles
def truth_round_trip(data: dict, spacing: tuple, multiple: int) -> np.ndarray:
    """``evaluation.harness.truth_round_trip`` with the T1w (MPRAGE) as reference and FLAIR as second input."""
    subject = data["subject"]
    reference = subject.maps["mprage"]
    flair = subject.maps["flair"]
    flair = flair if flair.same_grid(reference) else resample_to(flair, reference)
    prepared = prepare({"t1w": reference, "flair": flair}, subject.masks["brain"], spacing, multiple)
    return prepared.inverse(resample_to(subject.maps["psr"], prepared.grid, "linear").array).array


def predictions(data: dict, spacing: tuple, multiple: int, calibration: dict, regression: dict) -> tuple[dict, dict]:
    subject, masks, fractions = data["subject"], data["masks"], data["fractions"]
    brain = masks["brain"]
    truth = subject.maps["psr"].array.astype(np.float64)
    has_lesions = bool(masks["lesion"].any())
    out = {"truth via model grid": truth_round_trip(data, spacing, multiple),
           "constant": np.where(brain, truth[brain].mean(), 0.0)}
    population = population_levels(has_lesions)
    out["fractions + population levels"] = from_fractions(
        fractions, population, population["wm"] * POPULATION["lesion_ratio"], brain)
    true = true_levels(subject)
    lesion_psr = np.zeros(int(data["lesion_ids"].max()) + 1)
    for item in subject.parameters["pathology_parameters"].get("lesions", []):
        lesion_psr[item["id"]] = item["psr"]
    out["fractions + true levels"] = from_fractions(fractions, true, lesion_psr[data["lesion_ids"]], brain)
    estimated, info = estimate_levels(data)
    out[ESTIMATED] = from_fractions(fractions, estimated, estimated["wm"] * POPULATION["lesion_ratio"], brain)
    calibrated, calibrated_info = estimate_levels(data, calibration)
    out[CALIBRATED] = from_fractions(fractions, calibrated, calibrated["wm"] * POPULATION["lesion_ratio"], brain)
    regressed = regressed_levels(data, regression)
    out[NO_HEADER] = from_fractions(fractions, regressed, regressed["wm"] * POPULATION["lesion_ratio"], brain)
    levels = {"true": true, "population": population, "estimated": estimated, "estimator": info,
              "calibrated": calibrated, "calibrated_estimator": calibrated_info, "regressed": regressed}
    return out, levels


def score(prediction: np.ndarray, truth: np.ndarray, masks: dict) -> dict:
    brain, lesion = masks["brain"], masks["lesion"]
    scaled_prediction, scaled_truth = metrics.percentile_scaled(prediction, truth, brain)
    low, high = (float(v) for v in np.percentile(truth[brain], [0.5, 99.5]))
    return {
        "psnr": min(metrics.psnr(scaled_prediction, scaled_truth, brain, data_range=1.0), PSNR_CAP_DB),
        "ssim": metrics.ssim(scaled_prediction, scaled_truth, brain, data_range=1.0),
        "psnr_truth_range": min(metrics.psnr(prediction, truth, brain), PSNR_CAP_DB),
        "mae": metrics.mae(prediction, truth, brain),
        "lesion_mae": metrics.mae(prediction, truth, lesion),
        "p0.5": low, "p99.5": high,
    }


# ---------------------------------------------------------------------------------------------- main
def summarise(cases: list[dict]) -> dict:
    summary = {}
    for oracle in ORACLES:
        entry = {}
        for key in ("psnr", "ssim", "psnr_truth_range", "mae", "lesion_mae"):
            values = [c["scores"][oracle][key] for c in cases]
            values = [v for v in values if v is not None and not math.isnan(v)]
            entry[key] = {"mean": float(np.mean(values)) if values else None,
                          "std": float(np.std(values)) if values else None, "cases": len(values)}
        summary[oracle] = entry
    errors = {}
    for name in ("wm", "gm", "deep_gm"):
        for kind in ("estimated", "calibrated", "regressed", "population"):
            values = [abs(c["levels"][kind][name] - c["levels"]["true"][name]) for c in cases]
            errors[f"{name}_{kind}_abs_error"] = float(np.mean(values))
    summary["level_errors"] = errors
    return summary


def fmt(entry: dict, digits: int) -> str:
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def markdown(results: dict) -> str:
    modes = list(results["summary"])
    lines = ["| oracle | " + " | ".join(f"{m}: PSNR dB | {m}: SSIM | {m}: PSNR (truth range) | {m}: lesion MAE"
                                         for m in modes) + " |",
             "|---|" + "---|" * (4 * len(modes))]
    for oracle in ORACLES:
        cells = []
        for mode in modes:
            entry = results["summary"][mode][oracle]
            cells += [fmt(entry["psnr"], 2), fmt(entry["ssim"], 4), fmt(entry["psnr_truth_range"], 2),
                      fmt(entry["lesion_mae"], 4)]
        lines.append(f"| {oracle} | " + " | ".join(cells) + " |")
    lines += ["", "Mean |level - true level| (PSR) per subject:", "",
              "| acquisition | levels | WM | GM | deep GM |", "|---|---|---|---|---|"]
    for mode in modes:
        e = results["summary"][mode]["level_errors"]
        for kind, label in (("population", "population mean"), ("estimated", "estimated (physics)"),
                            ("calibrated", "estimated (calibrated + prior)"),
                            ("regressed", "regressed from image contrasts (no header)")):
            lines.append(f"| {mode} | {label} | " + " | ".join(f"{e[f'{n}_{kind}_abs_error']:.4f}"
                                                            for n in ("wm", "gm", "deep_gm")) + " |")
    lines += ["", "Per subject (true -> physics estimate / calibrated estimate, PSR):", ""]
    for mode in modes:
        for case in results["cases"][mode]:
            t, e, c = (case["levels"][k] for k in ("true", "estimated", "calibrated"))
            lines.append(f"- {mode} {case['case']}: " + ", ".join(f"{n} {t[n]:.4f} -> {e[n]:.4f} / {c[n]:.4f}"
                                                                  for n in ("wm", "gm", "deep_gm"))
                         + f" (log-ratio misfit rms {case['levels']['estimator']['fit_residual_rms']:.3f})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="held-out subjects (pathology alternates ms, none)")
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--spacing", type=float, default=2.0, help="phantom spacing (mm)")
    parser.add_argument("--acquisition", choices=("clean", "randomised", "both"), default="both")
    parser.add_argument("--calibration-subjects", type=int, default=8,
                        help="training phantoms (seeds 0..) that calibrate the second estimator's offsets")
    parser.add_argument("--regression-subjects", type=int, default=48,
                        help="training phantoms (seeds 0..) of the no-header level regression")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phantom_ceilings.json")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be >= 1")
    card = json.loads(CARD.read_text())
    model_spacing, multiple = tuple(float(s) for s in card["spacing"]), int(card["multiple"])
    modes = ("clean", "randomised") if args.acquisition == "both" else (args.acquisition,)
    started = time.time()
    results = {"cases": {}, "summary": {}}
    for mode in modes:
        calibration = calibrate(list(range(args.calibration_subjects)), args.spacing, mode == "randomised")
        results.setdefault("calibration", {})[mode] = calibration
        regression = fit_level_regression(list(range(args.regression_subjects)), args.spacing, mode == "randomised")
        results.setdefault("level_regression", {})[mode] = regression
        print(f"[{time.time() - started:6.1f} s] {mode}: level regression on {args.regression_subjects} training "
              f"phantoms, training R2 {regression['training_r2']}", file=sys.stderr)
        print(f"[{time.time() - started:6.1f} s] {mode}: calibrated on {args.calibration_subjects} training "
              f"phantoms, offsets {np.round(calibration['offset'], 3).tolist()}, "
              f"sd {np.round(calibration['sigma'], 3).tolist()}", file=sys.stderr)
        cases = []
        for index in range(args.n):
            seed, pathology = args.first_seed + index, PATHOLOGIES[index % len(PATHOLOGIES)]
            data = load_subject(seed, pathology, args.spacing, mode == "randomised")
            truth = data["subject"].maps["psr"].array.astype(np.float64)
            outputs, levels = predictions(data, model_spacing, multiple, calibration, regression)
            scores = {oracle: score(outputs[oracle], truth, data["masks"]) for oracle in ORACLES}
            cases.append({"case": f"phantom-{seed}-{pathology}", "seed": seed, "pathology": pathology,
                          "field_strength_t": data["subject"].parameters["tissue"]["field_strength_t"],
                          "lesion_voxels": int(data["masks"]["lesion"].sum()), "scores": scores, "levels": levels})
            print(f"[{time.time() - started:6.1f} s] {mode} {cases[-1]['case']}: "
                  + ", ".join(f"{o} {s['psnr']:.2f}" for o, s in scores.items()), file=sys.stderr)
        results["cases"][mode] = cases
        results["summary"][mode] = summarise(cases)
    results["settings"] = {
        "n": args.n, "first_seed": args.first_seed, "spacing_mm": args.spacing, "pathologies": list(PATHOLOGIES),
        "model_spacing": list(model_spacing), "multiple": multiple, "population_levels": POPULATION,
        "population_sd": POPULATION_SD, "calibration_subjects": args.calibration_subjects,
        "regression_subjects": args.regression_subjects, "ridge_penalty": RIDGE,
        "flair_efficiency_assumed": FLAIR_EFFICIENCY_MEAN, "pure_fraction": PURE_FRACTION,
        "scoring": "brain mask; prediction and truth scaled by the truth's 0.5-99.5 brain percentiles; "
                   "metrics.psnr/ssim with data_range 1 (psnr_truth_range: metrics.psnr default peak = truth "
                   "brain range, unscaled); PSNR capped at 100 dB per case; MAE in PSR units",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    results["seconds"] = time.time() - started
    table = markdown(results)
    results["markdown"] = table
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
