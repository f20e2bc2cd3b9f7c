"""Evaluation harness: a task's installed model and two baselines on held-out subjects with ground truth.

Held-out phantoms: seeds ``first_seed .. first_seed + n - 1`` (default 10000..), pathology cycling through the
task recipe's list (``ms, none`` for myelin-psr), acquisition randomised, at the model's spacing; input ``i``
of a subject is drawn from the recipe's phantom maps in turn (subject k uses source ``k % len(sources)``, e.g.
T1w = MPRAGE for even, spin-echo T1w for odd subjects). Training phantoms use seeds 0..N (see
``training.data`` and the model cards), so the sets are disjoint; ``evaluate`` refuses overlapping seeds.

Methods, all given the very same input volumes and brain mask:

- ``diffusion``: the task's installed model through ``pipeline.synthesize`` exactly as users run it;
- ``linear``: ``LinearBaseline`` (quadratic per-voxel regression) fitted on training phantoms;
- ``unet``: the ``<task>-unet-baseline`` model (deterministic UNet regressor), when installed; it is not
  bundled: ``python -m MRISynthesisLib.training.train_baseline --task <task>`` trains it into the user model cache.

Metrics (``MRISynthesisLib.metrics``) are computed on the subject's own grid in physical units inside its
brain mask. Outputs: ``evaluation.json`` (per case, per method, aggregates), ``evaluation.md`` (table),
``montage.png`` (inputs, truth, every method and its absolute error through the largest lesion).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics, report
from ..errors import InputError
from ..preprocess import prepare
from ..resample import resample_to
from ..volume import Volume, read_volume

HELD_OUT_FIRST_SEED = 10_000
FIT_FIRST_SEED = 0  # training phantoms of the linear baseline: seeds 0..fit_subjects-1 (the training stream)
METRIC_KEYS = ("psnr", "ssim", "psnr_truth_range", "mae", "lesion_mae", "nawm_mae", "edge_sharpness", "psnr_2d",
               "ssim_2d", "sd_error_correlation", "coverage_2sd")
PSNR_CAP_DB = 100.0  # per-case PSNR is capped here before averaging (a perfect case would be +inf)
MASK_NAMES = ("brain", "wm", "gm", "deep_gm", "csf", "lesion", "nawm")


@dataclass
class Case:
    """One subject with ground truth; every volume on one grid.

    Attributes:
        name: label in reports (``phantom-10000-ms``, or a folder name).
        inputs: task input name -> Volume (physical scanner-like intensities).
        targets: task output name -> ground-truth Volume (physical units).
        masks: ``brain`` and, when known, ``wm, gm, deep_gm, csf, lesion, nawm`` (uint8 Volumes).
        info: seed, pathology, which phantom map each input came from.
    """

    name: str
    inputs: dict[str, Volume]
    targets: dict[str, Volume]
    masks: dict[str, Volume]
    info: dict = field(default_factory=dict)


def held_out_phantoms(task_id: str, n: int, first_seed: int = HELD_OUT_FIRST_SEED, spacing: float = 2.0,
                      randomize_acquisition: bool = True) -> list[Case]:
    """Generate the ``n`` held-out phantom subjects of ``task_id`` (see the module docstring for the seeds).

    ``randomize_acquisition`` True (the training distribution) applies the phantom's per-image misregistration
    (+-2 mm / +-2 deg against the exact target), thick slices, bias, noise and gamma; False gives clean images
    exactly aligned with the ground truth.
    """
    from ..phantom import generate_subject
    from ..training.data import task_data

    recipe = task_data(task_id)
    cases = []
    for index in range(n):
        seed, pathology = first_seed + index, recipe.pathologies[index % len(recipe.pathologies)]
        subject = generate_subject(seed, pathology=pathology, spacing=spacing,
                                   randomize_acquisition=randomize_acquisition)
        sources = {name: options[index % len(options)] for name, options in recipe.inputs.items()}
        masks = {name: subject.masks[name] for name in MASK_NAMES if name in subject.masks}
        if "nawm" not in masks:  # healthy subject: all white matter is normal-appearing
            masks["nawm"] = subject.masks["wm"]
        suffix = "" if randomize_acquisition else "-clean"
        cases.append(Case(f"phantom-{seed}-{pathology}{suffix}", {n: subject.maps[s] for n, s in sources.items()},
                          {name: subject.maps[source] for name, (source, _) in recipe.targets.items()}, masks,
                          {"seed": seed, "pathology": pathology, "inputs": sources,
                           "randomize_acquisition": randomize_acquisition}))
    return cases


VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def find_volume(folder: Path, stem: str) -> Path | None:
    """``folder/<stem><suffix>`` for the first volume suffix that exists, else None."""
    for suffix in VOLUME_SUFFIXES:
        if (Path(folder) / f"{stem}{suffix}").is_file():
            return Path(folder) / f"{stem}{suffix}"
    return None


def folder_cases(root: str | Path, task_id: str) -> list[Case]:
    """Subject folders under ``root`` as written by ``mrisynthesis phantom`` (``<map>.nii.gz``,
    ``mask_<name>.nii.gz``): inputs are read by task input name, else by the recipe's phantom map names."""
    from ..training.data import task_data

    recipe = task_data(task_id)
    root = Path(root)
    if not root.is_dir():
        raise InputError("is not a folder of subject folders", name=str(root))
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        def find(names):
            for name in names:
                for stem in (name, f"mask_{name}"):
                    if (path := find_volume(folder, stem)) is not None:
                        return read_volume(path, name)
            return None
        inputs = {n: find((n, *sources)) for n, sources in recipe.inputs.items()}
        targets = {n: find((n, source)) for n, (source, _) in recipe.targets.items()}
        masks = {n: (m.with_array((m.array > 0).astype(np.uint8))) for n in MASK_NAMES if (m := find((n,))) is not None}
        missing = [n for n, v in {**inputs, **targets}.items() if v is None] + ([] if "brain" in masks else ["brain"])
        if missing:
            raise InputError(f"lacks {', '.join(missing)}", name=str(folder))
        cases.append(Case(folder.name, inputs, targets, masks, {"folder": str(folder)}))
    if not cases:
        raise InputError("contains no subject folders", name=str(root))
    return cases


# ---------------------------------------------------------------------------------------------- methods
Method = Callable[[dict, Volume], dict]  # (inputs on one grid, brain mask) -> {output: Volume in physical units}


def diffusion_method(task_id: str, steps: int, samples: int, seed: int, sampler: str = "dpm++",
                     device: str = "auto", model_home: Path | None = None, residual: bool = True) -> Method:
    """The task's installed model, run through ``pipeline.synthesize`` with in-memory volumes (no files).

    The result also holds each output's sample standard deviation as ``"<output>:sd"`` when ``samples > 1``.
    ``residual=False`` runs a latent-residual model's mean predictor alone (deterministic ablation)."""
    from ..pipeline import SynthesisRequest, synthesize

    def run(inputs: dict, mask: Volume) -> dict:
        request = SynthesisRequest(task_id, dict(inputs), output_dir=None, mask=mask, device=device, steps=steps,
                                   samples=samples, seed=seed, sampler=sampler, model_home=model_home,
                                   residual=residual)
        result = synthesize(request)
        return {**result.outputs, **{f"{name}:sd": volume for name, volume in result.uncertainty.items()}}
    return run


def baseline_method(baseline, spacing, multiple: int, percentiles: tuple[float, float], input_names: list[str],
                    affines: dict[str, tuple[float, float]]) -> Method:
    """A baseline on the inputs prepared exactly as the pipeline prepares them (``preprocess.prepare``)."""
    from .baselines import predict_on_reference

    def run(inputs: dict, mask: Volume) -> dict:
        reference = inputs[input_names[0]]
        on_reference = {n: inputs[n] if inputs[n].same_grid(reference) else resample_to(inputs[n], reference)
                        for n in input_names}
        prepared = prepare(on_reference, mask, tuple(float(s) for s in spacing), multiple, percentiles)
        return predict_on_reference(baseline, prepared, affines)
    return run


def fit_linear_baseline(task_id: str, spacing: float, multiple: int, subjects: int = 4,
                        first_seed: int = FIT_FIRST_SEED, degree: int = 2):
    """Fit ``LinearBaseline`` on training phantoms (``training.data.phantom_subjects``, seeds from ``first_seed``)."""
    from ..training.data import output_scale, phantom_subjects, task_data
    from .baselines import LinearBaseline

    recipe = task_data(task_id)
    seeds = list(range(first_seed, first_seed + subjects))
    samples = phantom_subjects(recipe, seeds, spacing, multiple)
    model = LinearBaseline(recipe.input_channels, len(recipe.targets), degree)
    model.fit((s.inputs, s.target, s.brain[0]) for s in samples)
    affines = {name: (output_scale(scale), 0.0) for name, (_, scale) in recipe.targets.items()}
    return model, affines, seeds


# ---------------------------------------------------------------------------------------------- evaluation
CEILING = "truth via model grid"


def truth_round_trip(case: Case, input_names: list[str], spacing, multiple: int) -> dict:
    """The ground truth sent to the model grid and back (``prepare`` then ``Prepared.inverse``): the best any
    method run through the pipeline can score, since its outputs take the same way back."""
    prepared = prepare({n: case.inputs[n] for n in input_names}, case.masks["brain"],
                       tuple(float(s) for s in spacing), multiple)
    return {name: prepared.inverse(resample_to(truth, prepared.grid, "linear").array)
            for name, truth in case.targets.items()}


def evaluate_cases(cases: list[Case], methods: dict[str, Method],
                   progress: Callable[[str], None] | None = None,
                   ceiling: tuple[list[str], tuple, int] | None = None) -> list[dict]:
    """Run every method on every case; returns per-case records with metrics and timings (JSON-safe later).

    ``ceiling = (input names, model spacing, multiple)`` adds the row ``CEILING`` (``truth_round_trip``).
    """
    progress = progress or (lambda message: None)
    records = []
    for case in cases:
        if ceiling is not None:
            methods = {**methods, CEILING: lambda inputs, mask, case=case: truth_round_trip(case, *ceiling)}
        masks = {name: volume.array > 0 for name, volume in case.masks.items()}
        spacing_zyx = tuple(float(s) for s in case.masks["brain"].spacing[::-1])
        record = {"case": case.name, **case.info, "lesion_ml": float(masks.get("lesion", np.zeros(1)).sum()
                                                                     * np.prod(spacing_zyx) / 1000.0),
                  "methods": {}, "predictions": {}}
        for method_name, method in methods.items():
            progress(f"{case.name}: {method_name}")
            started = time.perf_counter()
            outputs = method(case.inputs, case.masks["brain"])
            elapsed = time.perf_counter() - started
            per_output = {}
            for output, truth in case.targets.items():
                prediction = outputs[output]
                if not prediction.same_grid(truth):
                    raise RuntimeError(f"{method_name} returned {output} on another grid than the ground truth")
                values = metrics.evaluate_map(prediction.array, truth.array, masks, spacing_zyx)
                if f"{output}:sd" in outputs:
                    values.update(metrics.uncertainty_calibration(prediction.array, truth.array,
                                                                  outputs[f"{output}:sd"].array, masks["brain"]))
                scaled = metrics.percentile_scaled(prediction.array, truth.array, masks["brain"])
                values.update(metrics.per_slice(*scaled, masks["brain"], 1.0))
                per_output[output] = values
            record["methods"][method_name] = {"seconds": elapsed, "metrics": per_output}
            record["predictions"][method_name] = outputs
        records.append(record)
    return records


def aggregate(records: list[dict], method_names: list[str], outputs: list[str]) -> dict:
    """Mean and standard deviation of every metric over cases (lesion metrics over cases with lesions; PSNR
    capped at ``PSNR_CAP_DB`` per case)."""
    summary = {}
    for method in method_names:
        summary[method] = {}
        for output in outputs:
            entry = {}
            for key in METRIC_KEYS:
                values = [r["methods"][method]["metrics"][output].get(key) for r in records]
                values = [v for v in values if v is not None and not math.isnan(v)]
                if key.startswith("psnr"):  # a (near) perfect case must not dominate the mean
                    values = [min(v, PSNR_CAP_DB) for v in values]
                entry[key] = {"mean": float(np.mean(values)) if values else None,
                              "std": float(np.std(values)) if values else None, "cases": len(values)}
            entry["seconds"] = float(np.mean([r["methods"][method]["seconds"] for r in records]))
            summary[method][output] = entry
    return summary


GOALS_PSNR_DB = {"clean": 30.0, "randomized": 26.0}  # issue 8's targets for the mean of K samples
GOAL_SSIM, GOAL_LESION_MAE, GOAL_MARGIN_OVER_UNET_DB = 0.95, 0.015, 0.5


def goals(summary: dict, output: str, acquisition: str = "randomized") -> dict:
    """The targets of the diffusion model (mean of K samples) on held-out phantoms: PSNR >= 30 dB clean / 26 dB
    randomised, SSIM >= 0.95 (clean), at least 0.5 dB above the UNet baseline of equal training budget, and lesion
    MAE <= 0.015 and below every baseline."""
    if "diffusion" not in summary:
        return {}
    model = summary["diffusion"][output]
    psnr, ssim, lesion = model["psnr"]["mean"], model["ssim"]["mean"], model["lesion_mae"]["mean"]
    target = GOALS_PSNR_DB.get(acquisition, GOALS_PSNR_DB["randomized"])
    result = {f"psnr_ge_{target:g}": psnr is not None and psnr >= target}
    if acquisition == "clean":
        result[f"ssim_ge_{GOAL_SSIM:g}"] = ssim is not None and ssim >= GOAL_SSIM
    if "unet" in summary and summary["unet"][output]["psnr"]["mean"] is not None and psnr is not None:
        result["psnr_ge_unet_plus_0.5"] = psnr >= summary["unet"][output]["psnr"]["mean"] + GOAL_MARGIN_OVER_UNET_DB
    if lesion is not None:
        result[f"lesion_mae_le_{GOAL_LESION_MAE:g}"] = lesion <= GOAL_LESION_MAE
    others = [summary[m][output]["lesion_mae"]["mean"] for m in summary if m not in ("diffusion", CEILING)]
    if lesion is not None and others and all(o is not None for o in others):
        result["lesion_mae_below_baselines"] = all(lesion < o for o in others)
    return result


def markdown_table(summary: dict, outputs: list[str], title: str = "") -> str:
    """The aggregate metrics as a Markdown table (mean ± sd over cases)."""
    def cell(entry, digits):
        if entry["mean"] is None:
            return "n/a"
        return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"

    lines = [f"### {title}" if title else ""]
    for output in outputs:
        lines += ["", f"**{output}** (3D, brain mask, both maps scaled by the truth's 0.5-99.5 percentiles; PSNR "
                  "capped at 100 dB per case; 2D = mean over axial slices; SD calibration: correlation of |error| "
                  "with the sample SD and share of voxels within 2 SD)", "",
                  "| method | PSNR dB | SSIM | MAE | lesion MAE | NAWM MAE | edge sharpness | PSNR 2D | SSIM 2D "
                  "| corr(|err|, SD) | within 2 SD | s/case |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, per_output in summary.items():
            e = per_output[output]
            lines.append(f"| {method} | {cell(e['psnr'], 2)} | {cell(e['ssim'], 4)} | {cell(e['mae'], 5)} | "
                         f"{cell(e['lesion_mae'], 5)} | {cell(e['nawm_mae'], 5)} | {cell(e['edge_sharpness'], 3)} | "
                         f"{cell(e['psnr_2d'], 2)} | {cell(e['ssim_2d'], 4)} | {cell(e['sd_error_correlation'], 3)} | "
                         f"{cell(e['coverage_2sd'], 3)} | {e['seconds']:.1f} |")
    if CEILING in summary:
        lines += ["", f"*{CEILING}*: the ground truth resampled onto the model grid and back with the pipeline's own "
                  "steps (preprocess.prepare / Prepared.inverse): the ceiling for any method run through the pipeline."]
    return "\n".join(lines) + "\n"


def write_montage(record: dict, case: Case, task, path: Path) -> Path:
    """Inputs, truth, each method's prediction and absolute error for one case (through the largest lesion)."""
    rows = [(name, volume, None, "Grey") for name, volume in case.inputs.items()]
    for spec in task.outputs:
        if spec.name not in case.targets:
            continue
        truth = case.targets[spec.name]
        brain = case.masks["brain"].array > 0
        rows.append((f"{spec.name} truth", truth.with_array(np.where(brain, truth.array, 0)), spec.display_range,
                     spec.colormap))
        error_window = (0.0, (spec.display_range[1] - spec.display_range[0]) / 4)
        for method, outputs in record["predictions"].items():
            if method == CEILING:
                continue
            rows.append((f"{method}", outputs[spec.name], spec.display_range, spec.colormap))
            error = np.where(brain, np.abs(outputs[spec.name].array - truth.array), 0).astype(np.float32)
            rows.append((f"|{method} err|", truth.with_array(error), error_window, "Viridis"))
    lesions = case.masks.get("lesion")
    return report.write_montage(rows, path, lesions if lesions is not None and lesions.array.any() else None,
                                f"{task.id}: {case.name}")


def json_safe(value):
    """Replace NaN/inf by None / strings so the report is strict JSON; drop numpy types."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items() if k != "predictions"}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else ("inf" if math.isinf(value) else value)
    if isinstance(value, np.integer):
        return int(value)
    return value

