"""``run_evaluation``: held-out cases -> model and baselines -> metrics -> JSON, Markdown and montage files.

Files written into ``out`` (each atomically, all only after every computation succeeded):
``evaluation.json``, ``evaluation.md``, ``montage.png`` (first case with lesions, else the first case) and,
with a real case, ``real_case_montage.png``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import report
from ..atomic import atomic_write_bytes
from ..errors import InputError
from ..model_store.registry import ModelRegistry
from ..tasks import get_task
from . import harness

OUTPUT_FILES = ("evaluation.json", "evaluation.md", "montage.png", "real_case_montage.png")


def _seed_list(training: dict) -> list[int]:
    """Training phantom seeds recorded in a card's ``training``: a list, ``{"training": [...]}``, or
    ``{"training_seed": s}`` with the subject count (``training.subjects`` or "(N subjects" in ``training.data``),
    expanded with ``training.data.training_seeds`` (the engine's rule)."""
    seeds = training.get("seeds") if isinstance(training, dict) else None
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        return seeds
    if isinstance(seeds, dict):
        if isinstance(seeds.get("training"), list):
            return [int(s) for s in seeds["training"]]
        count = training.get("subjects")
        if count is None and (match := re.search(r"\((\d+) subjects", str(training.get("data", "")))):
            count = int(match.group(1))
        if isinstance(seeds.get("training_seed"), int) and count:
            from ..training.data import training_seeds

            return training_seeds(seeds["training_seed"], int(count))
    return []


def _montage_bytes(write: Callable[[Path], Path], folder: Path, name: str) -> bytes:
    """Render a montage into a temporary file in ``folder`` and return its bytes (written later, atomically)."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".montage-") as temp:
        return write(Path(temp) / name).read_bytes()


def run_evaluation(task_id: str, out: str | Path, data: str = "phantom", n: int = 4,
                   first_seed: int = harness.HELD_OUT_FIRST_SEED, steps: int = 10, samples: int = 1,
                   sample_seed: int = 0, sampler: str = "dpm++", device: str = "auto",
                   model_home: str | Path | None = None, fit_subjects: int = 4, baseline_model: str | None = None,
                   real: str | Path | None = None, overwrite: bool = False, acquisition: str = "randomized",
                   progress: Callable[[str], None] | None = None) -> dict:
    """Evaluate the installed model of ``task_id`` and both baselines; returns the report dict (also written).

    Args:
        data: ``"phantom"`` (``n`` held-out phantoms from seed ``first_seed``) or a folder of subject folders.
        steps, samples, sample_seed, sampler, device: passed to ``pipeline.synthesize``.
        fit_subjects: training phantoms (seeds 0..fit_subjects-1) for the linear baseline.
        baseline_model: id of the UNet baseline model (default ``<task>-unet-baseline``, looked up in the
            registry: the user model cache, where ``training.train_baseline`` writes it, then the bundled
            models, which do not include it); skipped with a progress message and a note in the report if absent.
        real: a real case folder (``t1w``, ``flair``, ``lesions``) for the plausibility checks.
        acquisition: ``"randomized"`` (held-out phantoms drawn like the training data: misregistration, thick
            slices, bias, noise) or ``"clean"`` (ideal images aligned with the ground truth).
    """
    progress = progress or (lambda message: None)
    task = get_task(task_id)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", name="--out")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise InputError(f"already holds {existing[0]}; pass --overwrite to replace the results", name="--out")
    if acquisition not in ("randomized", "clean"):
        raise InputError("must be 'randomized' or 'clean'", name="--acquisition")
    if n < 1 or fit_subjects < 1 or steps < 1 or samples < 1:
        raise InputError("--n, --fit-subjects, --steps and --samples must be at least 1", name="--n")
    registry = ModelRegistry(model_home)
    card = registry.card(task.model_id)  # ModelNotInstalledError names the install command
    if card.input_method != "percentile":  # the harness's baselines and ceilings prepare MR contrasts only
        raise InputError(f"evaluate compares MR models with their baselines; score {task_id} with "
                         "benchmarks/stroke_evaluation.py (the pipeline on held-out phantoms)", name="--task")
    spacing = tuple(float(s) for s in card.spacing)
    percentiles = card.input_percentiles
    unet_id = baseline_model or f"{task_id}-unet-baseline"
    unet_card = registry.card(unet_id) if registry.is_installed(unet_id) else None
    if unet_card is None:  # not bundled: trained into the user model cache by training.train_baseline
        progress(f"UNet baseline {unet_id!r} is not installed in {registry.models_dir}: skipped; "
                 + _unet_train_command(task_id, registry.models_dir / unet_id))
    held_out = list(range(first_seed, first_seed + n)) if data == "phantom" else []
    for label, used in (("model", _seed_list(card.training)),
                        ("UNet baseline", _seed_list(unet_card.training) if unet_card else []),
                        ("linear baseline", list(range(harness.FIT_FIRST_SEED, harness.FIT_FIRST_SEED + fit_subjects)))):
        overlap = sorted(set(used) & set(held_out))
        if overlap:
            raise InputError(f"held-out seeds overlap the {label}'s training seeds (e.g. {overlap[0]}); "
                             "choose another --seed", name="--seed")
    started = time.perf_counter()

    progress("preparing held-out cases")
    if data == "phantom":
        cases = harness.held_out_phantoms(task_id, n, first_seed, spacing[0], acquisition == "randomized")
    else:
        cases = harness.folder_cases(data, task_id)[:n]
    progress(f"fitting the linear baseline on {fit_subjects} training phantoms")
    linear, linear_affines, fit_seeds = harness.fit_linear_baseline(task_id, spacing[0], card.multiple, fit_subjects)
    home = Path(model_home) if model_home else None
    methods = {"diffusion": harness.diffusion_method(task_id, steps, samples, sample_seed, sampler, device, home)}
    if card.architecture.get("family") == "latent-residual":  # ablation: the deterministic mean predictor alone
        methods["mean predictor"] = harness.diffusion_method(task_id, steps, 1, sample_seed, sampler, device, home,
                                                             residual=False)
    methods.update({
        "linear": harness.baseline_method(linear, spacing, card.multiple, percentiles, list(card.inputs), linear_affines),
    })
    if unet_card is not None:
        from .baselines import UNetRegressor

        unet = UNetRegressor.from_registry(registry, unet_id)
        unet_percentiles = unet_card.input_percentiles
        methods["unet"] = harness.baseline_method(unet, unet_card.spacing, unet_card.multiple, unet_percentiles,
                                                  list(unet_card.inputs),
                                                  {o: unet_card.output_affine(o) for o in unet_card.outputs})
    records = harness.evaluate_cases(cases, methods, progress, (list(card.inputs), spacing, card.multiple))
    outputs = list(cases[0].targets)
    summary = harness.aggregate(records, [*methods, harness.CEILING], outputs)

    real_result = None
    if real is not None:
        from .real_case import evaluate_real_case

        progress(f"real case {real}")
        real_result = evaluate_real_case(real, list(card.inputs), outputs[0], methods)

    result = {
        "task": task_id,
        "model": {"id": card.id, "version": card.version, "source": card.source,
                  "training_seeds": _seed_list(card.training),
                  "steps": steps, "samples": samples, "sampler": sampler, "seed": sample_seed},
        "baselines": {"linear": {**linear.describe(), "fit_seeds": fit_seeds, "units": "normalised target"},
                      "unet": {"id": unet_card.id, "version": unet_card.version,
                               "parameters": unet_card.architecture.get("parameters"),
                               "training_seeds": _seed_list(unet_card.training)} if unet_card else None},
        "held_out": {"data": data, "seeds": held_out, "cases": [c.name for c in cases],
                     "acquisition": acquisition if data == "phantom" else None,
                     "spacing_mm": list(spacing)},
        "metric_definitions": {
            "psnr": "dB over the brain mask after scaling prediction and truth by the truth's 0.5-99.5 brain "
                    "percentiles (peak 1; skimage)",
            "psnr_truth_range": "dB over the brain mask, peak = ground-truth max-min in the brain",
            "sd_error_correlation": "Pearson correlation of |error| with the sample SD in the brain (samples > 1)",
            "coverage_2sd": "share of brain voxels with |error| <= 2 sample SD (0.95 if calibrated and Gaussian)",
            "ssim": "3D SSIM of the percentile-scaled maps (data range 1), Gaussian window sigma 1.5, images "
                    "zeroed outside the brain, SSIM map averaged over brain voxels (skimage, full=True)",
            "mae": "mean |prediction - truth| in the brain (physical units)",
            "lesion_mae": "MAE in the phantom lesion mask (cases with lesions only)",
            "nawm_mae": "MAE in normal-appearing white matter (WM minus lesions; all WM for healthy cases)",
            "edge_sharpness": "mean gradient magnitude of prediction / truth on tissue and lesion boundaries",
            "psnr_2d/ssim_2d": "the same per axial slice (slices with >= 10% of the largest brain area), averaged"},
        "summary": summary, "goals": {o: harness.goals(summary, o, acquisition) for o in outputs},
        "cases": [harness.json_safe(r) for r in records],
        "real_case": harness.json_safe({k: v for k, v in real_result.items() if k not in ("inputs", "lesions")})
        if real_result else None,
        "duration_s": None, "hardware": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
    }
    montage_case = next((i for i, c in enumerate(cases) if "lesion" in c.masks and c.masks["lesion"].array.any()), 0)
    out.mkdir(parents=True, exist_ok=True)
    files = {"montage.png": _montage_bytes(
        lambda p: harness.write_montage(records[montage_case], cases[montage_case], task, p), out, "montage.png")}
    if real_result is not None:
        files["real_case_montage.png"] = _montage_bytes(lambda p: _real_montage(real_result, task, p), out, "real.png")
    result["duration_s"] = round(time.perf_counter() - started, 1)
    markdown = _markdown(result, summary, outputs)
    files["evaluation.md"] = markdown.encode()
    files["evaluation.json"] = (json.dumps(harness.json_safe(result), indent=2) + "\n").encode()
    for name, content in files.items():
        atomic_write_bytes(out / name, content)
    result["files"] = {name: str(out / name) for name in files}
    return result


def _real_montage(real_result: dict, task, path: Path) -> Path:
    rows = [(name, volume, None, "Grey") for name, volume in real_result["inputs"].items()]
    spec = task.outputs[0]
    for method, outputs in real_result["predictions"].items():
        rows.append((method, outputs[spec.name], spec.display_range, spec.colormap))
    return report.write_montage(rows, path, real_result["lesions"], f"{task.id}: real case")


def _markdown(result: dict, summary: dict, outputs: list[str]) -> str:
    model = result["model"]
    lines = [f"# Evaluation: {result['task']}", "",
             f"Model `{model['id']}` {model['version']} ({model['source']}), sampler {model['sampler']}, "
             f"{model['steps']} steps, {model['samples']} sample(s), seed {model['seed']}.",
             f"Held-out data: {result['held_out']['data']} ({result['held_out']['acquisition']} acquisition), "
             f"seeds {result['held_out']['seeds']} "
             f"({', '.join(result['held_out']['cases'])}), at {result['held_out']['spacing_mm']} mm.",
             f"Linear baseline fitted on phantom seeds {result['baselines']['linear']['fit_seeds']}; "
             + _unet_sentence(result["baselines"]["unet"]), "",
             harness.markdown_table(summary, outputs, "Held-out metrics (mean ± sd over cases)")]
    for output, goals in result["goals"].items():
        if goals:
            lines.append(f"Goals for {output}: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    if result["real_case"]:
        real = result["real_case"]
        lines += ["", f"### Real case `{real['folder']}` ({real['lesion_voxels']} expert lesion voxels)", "",
                  f"Tissue classes: {real['tissue_classes']}. Medians of {outputs[0]}.", "",
                  "| method | lesion | NAWM (WM class) | lesion/NAWM (means) | GM | CSF | lesion < NAWM | WM > GM > CSF |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, r in real["methods"].items():
            lesion = r.get("lesion", {}).get("median")
            ratio = r.get("lesion_to_nawm_ratio")
            lines.append(f"| {method} | {_fmt(lesion)} | {_fmt(r['wm']['median'])} | {_fmt(ratio, 3)} | "
                         f"{_fmt(r['gm']['median'])} | {_fmt(r['csf']['median'])} | "
                         f"{r.get('lesion_below_nawm', 'n/a')} | {r['wm_gt_gm_gt_csf']} |")
    lines += ["", f"Total time {result['duration_s']} s on {result['hardware']}.", ""]
    return "\n".join(lines)


def _unet_train_command(task_id: str, folder: Path) -> str:
    """How to get the baseline (it is not bundled): the command that trains it into ``folder`` of the cache."""
    from ..training.train_baseline import default_out

    out = "" if folder == default_out(task_id) else f" --out {shlex.quote(str(folder))}"
    return f"train it with: python -m MRISynthesisLib.training.train_baseline --task {task_id}{out}"


def _unet_sentence(unet: dict | None) -> str:
    if unet is None:
        return ("UNet baseline not installed (skipped; it is not bundled: python -m "
                "MRISynthesisLib.training.train_baseline trains it into the user model cache).")
    return f"UNet baseline `{unet['id']}` ({(unet['parameters'] or 0) / 1e6:.2f} M parameters)."


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"
