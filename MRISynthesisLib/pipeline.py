"""One synthesis run, from files (or in-memory volumes) to maps on the reference grid.

The CLI, the Slicer worker and the evaluation harness all call ``synthesize``. Order matters:
everything that can be checked cheaply (task, inputs, model, output folder, memory) is checked before
any voxel is processed, and nothing is written until every result exists (written to a staging folder,
then moved into place), so bad input or a cancel leaves no partial output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import checks, lesions as lesion_tools, report
from .errors import CancelledError, InputError
from .model_store.registry import ModelRegistry
from .preprocess import arrange_channels, compute_brain_mask, input_channel_count, prepare
from .resample import overlap_fraction, register_rigid, resample_to
from .tasks import Task, get_task
from .volume import Volume, read_volume, write_volume

Progress = Callable[[str, int, int], None]
MIN_OVERLAP = 0.5  # below this fraction of shared foreground, inputs are registered (or refused)
LESION_METHODS = ("auto", "segmenter", "rule")


@dataclass
class SynthesisRequest:
    """What to synthesize. ``inputs`` maps task input names to file paths or ``Volume``s."""

    task_id: str
    inputs: dict[str, str | Path | Volume]
    output_dir: Path | None = None
    reference: str | None = None
    mask: str | Path | Volume | None = None
    lesions: str | Path | Volume | None = None
    device: str = "auto"
    steps: int = 10
    samples: int = 1
    seed: int = 0
    sampler: str = "dpm++"
    overwrite: bool = False
    register: str = "auto"  # auto: only when inputs do not overlap; always; never
    output_format: str = "nii.gz"
    model_home: Path | None = None
    memory_limit_bytes: int | None = None
    residual: bool = True  # False: latent-residual models decode their mean prediction only (ablation)
    lesion_method: str = "auto"  # auto: the task's segmenter when installed, else its rule; segmenter; rule


@dataclass
class SynthesisResult:
    task: Task
    outputs: dict[str, Volume]
    uncertainty: dict[str, Volume] = field(default_factory=dict)
    lesions: Volume | None = None
    lesion_table: list[dict] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def _validate_request(request: SynthesisRequest, task: Task) -> list[str]:
    """Names of the inputs to use, in task order; raises on unknown or missing names."""
    unknown = [name for name in request.inputs if name not in task.input_names]
    if unknown:
        raise InputError(f"task {task.id} has no input {unknown[0]!r}; its inputs are {', '.join(task.input_names)}",
                         unknown[0])
    missing = [name for name in task.required_inputs if name not in request.inputs]
    if missing:
        raise InputError(f"required input missing for task {task.id} (give it with --input {missing[0]}=PATH)", missing[0])
    if not request.inputs:
        raise InputError(f"task {task.id} needs at least one of {', '.join(task.input_names)}", "--input")
    if request.reference and request.reference not in request.inputs:
        raise InputError(f"reference {request.reference!r} is not one of the given inputs", "--reference")
    if request.steps < 1 or request.samples < 1:
        raise InputError("--steps and --samples must be at least 1", "--steps")
    if request.register not in ("auto", "always", "never"):
        raise InputError("must be auto, always or never", "--register")
    if request.lesion_method not in LESION_METHODS:
        raise InputError(f"must be one of {', '.join(LESION_METHODS)}", "--lesion-method")
    return [name for name in task.input_names if name in request.inputs]


def load_input(source: str | Path | Volume, name: str, memory_limit: int | None = None) -> Volume:
    """Read one input file with the bad-input checks (header, memory, NaN); a ``Volume`` passes through."""
    if isinstance(source, Volume):
        return source
    info = checks.probe_file(source, name)
    checks.check_memory(info.voxels, checks.BYTES_PER_INPUT_VOXEL, f"reading {Path(source).name}", name, memory_limit)
    volume = read_volume(source, name)
    checks.check_nifti_finite(source, name)
    return volume


def _output_names(task: Task, given: list[str], request: SynthesisRequest, has_lesions: bool) -> list[str]:
    suffix = "." + request.output_format
    names = []
    for output in task.outputs:
        if task.any_subset and output.name in given:
            continue  # a contrast that was given is not synthesized, so its file is never written
        names.append(output.name + suffix)
        if request.samples > 1:
            names.append(f"{output.name}_uncertainty{suffix}")
    if has_lesions:
        names += ["lesions" + suffix, "lesions.csv", "lesions.json"]
    return names + ["montage.png", "summary.json"]


def synthesize(request: SynthesisRequest, progress: Progress | None = None,
               cancel: Callable[[], bool] | None = None) -> SynthesisResult:
    """Run one synthesis; see ``SynthesisRequest``. Raises ``InputError`` for bad input, ``CancelledError``."""
    progress = progress or (lambda stage, step, total: None)
    cancel = cancel or (lambda: False)

    def checkpoint(stage: str, step: int, total: int) -> None:
        if cancel():
            raise CancelledError(stage)
        progress(stage, step, total)

    task = get_task(request.task_id)
    names = _validate_request(request, task)
    outputs_to_make = [o for o in task.outputs if not (task.any_subset and o.name in names)]
    task_outputs = [o.name for o in outputs_to_make]
    has_lesions = request.lesions is not None or task.lesion_rule is not None
    if request.output_dir is not None:
        checks.check_output_dir(Path(request.output_dir), _output_names(task, names, request, has_lesions),
                                request.overwrite)

    checkpoint("read", 0, len(names))
    volumes: dict[str, Volume] = {}
    for step, name in enumerate(names):
        volume = load_input(request.inputs[name], name, request.memory_limit_bytes)
        checks.check_geometry(volume, task.input(name), name)
        checks.check_intensities(volume, name)
        volumes[name] = volume
        checkpoint("read", step + 1, len(names))

    reference_name = request.reference or names[0]
    reference = volumes[reference_name]
    if reference.array.ndim == 4:  # a series' first frame carries the grid
        reference = Volume(reference.array[0], reference.origin, reference.spacing, reference.direction)

    checkpoint("align", 0, len(names))
    on_reference: dict[str, Volume] = {}
    registered = []
    for name, volume in volumes.items():
        if volume.same_grid(reference):
            on_reference[name] = volume
            continue
        transform = None
        overlap = overlap_fraction(volume, reference)
        if request.register == "always" or (request.register == "auto" and overlap < MIN_OVERLAP):
            transform = register_rigid(volume, reference, name)
            registered.append(name)
        elif overlap < MIN_OVERLAP:
            raise InputError(f"does not overlap the reference {reference_name!r} in space ({overlap:.0%} shared); "
                             "check the files or use --register auto", name)
        on_reference[name] = resample_to(volume, reference, "linear", transform)
        if not np.any(on_reference[name].array):
            raise InputError(f"does not overlap the reference {reference_name!r} in space even after registration", name)
    checkpoint("align", len(names), len(names))

    registry = ModelRegistry(request.model_home)
    segmenter_id = _segmenter_to_use(task, request, registry)
    card = registry.card(task.model_id) if task.outputs else None  # ModelNotInstalledError names the install command
    from .engine.model import resolve_device  # torch is imported only once the inputs are known to be good

    device = resolve_device(request.device)  # an unusable --device is refused before any heavy work
    extent_mm = np.asarray(reference.shape[::-1]) * np.asarray(reference.spacing)
    if card is not None:
        channels = len(card.inputs) * input_channel_count(card.input_method) + len(card.outputs)
        model_voxels = int(np.prod(np.ceil(extent_mm / np.asarray(card.spacing)))) * channels
        checks.check_memory(model_voxels, checks.BYTES_PER_MODEL_VOXEL * request.samples,
                            "synthesis at the model spacing", reference_name, request.memory_limit_bytes)
    if segmenter_id:
        segmenter_voxels = int(np.prod(np.ceil(extent_mm))) * 3  # two inputs and the probability at 1 mm
        checks.check_memory(segmenter_voxels, checks.BYTES_PER_MODEL_VOXEL, "lesion segmentation at 1 mm",
                            reference_name, request.memory_limit_bytes)

    if request.mask is not None:
        mask = load_input(request.mask, "--mask", request.memory_limit_bytes)
        checks.check_mask(mask, "--mask")
        mask = resample_to(mask.with_array((mask.array > 0).astype(np.uint8)), reference, "nearest")
        checks.check_mask(mask, "--mask")
    else:
        modality = task.input(reference_name).modality
        mask = compute_brain_mask([on_reference[reference_name]] + [v for n, v in on_reference.items()
                                                                     if n != reference_name], modality)
    outputs, uncertainty, model_summary, model_grid = {}, {}, None, None
    if card is not None:
        outputs, uncertainty, model_grid = _synthesize_maps(card, task_outputs, names, on_reference, mask, request,
                                                            registry, device, checkpoint, cancel)
        model_summary = {"id": card.id, "version": card.version}
    checkpoint("postprocess", 0, 1)

    lesion_labels, lesion_method = None, None
    if request.lesions is not None:
        given = load_input(request.lesions, "--lesions", request.memory_limit_bytes)
        lesion_labels = lesion_tools.label_lesions(resample_to(given.with_array((given.array > 0).astype(np.uint8)),
                                                               reference, "nearest"))
        lesion_method = "the user's mask"
    elif task.lesion_rule is not None:
        lesion_labels, lesion_method = _lesion_overlay(task, segmenter_id, on_reference, outputs, mask, registry,
                                                       device, checkpoint, cancel)
    table = lesion_tools.lesion_table(lesion_labels, outputs or _lesion_table_inputs(task, on_reference), mask) \
        if lesion_labels is not None else []
    checkpoint("postprocess", 1, 1)

    summary = {
        "task": task.id, "model": model_summary, "reference": reference_name,
        "inputs": {n: str(request.inputs[n]) if not isinstance(request.inputs[n], Volume) else "<volume>" for n in names},
        "registered": registered, "device": str(device),
        "units": {o.name: o.units or "normalised intensity" for o in outputs_to_make},
        **({"steps": request.steps, "samples": request.samples, "seed": request.seed, "sampler": request.sampler,
            "model_grid": model_grid} if card is not None else {}),
        "lesions": {"count": len(table), "total_ml": round(sum(r["volume_ml"] for r in table), 3),
                    "source": "given" if request.lesions is not None else ("segmenter" if segmenter_id else "rule"),
                    "method": lesion_method} if lesion_labels is not None else None,
    }
    result = SynthesisResult(task, outputs, uncertainty, lesion_labels, table, {}, summary)
    if request.output_dir is not None:
        result.files = _write_outputs(result, on_reference, Path(request.output_dir), request, checkpoint)
        result.summary["files"] = result.files
        progress("write", 2, 2)
    return result


def _synthesize_maps(card, task_outputs: list[str], names: list[str], on_reference: dict[str, Volume], mask: Volume,
                     request: SynthesisRequest, registry: ModelRegistry, device, checkpoint, cancel):
    """The task's maps (mean of the samples) and their SD on the reference grid, and the model grid shape."""
    spacing = tuple(float(s) for s in card.spacing)
    method = card.input_method
    prepared = prepare({n: on_reference[n] for n in names if n in card.inputs}, mask, spacing, card.multiple,
                       card.input_percentiles, method=method)
    network_inputs = arrange_channels(prepared.inputs, prepared.channel_inputs, card.inputs,
                                      input_channel_count(method))
    checkpoint("preprocess", 1, 1)

    import torch

    from .engine.model import SynthesisModel

    model = SynthesisModel.from_registry(registry, card.id, device=device)
    mean, std = model.predict(torch.from_numpy(network_inputs)[None], steps=request.steps, samples=request.samples,
                              seed=request.seed, sampler=request.sampler, residual=request.residual,
                              progress=lambda step, total: checkpoint("sample", step, total), cancel=cancel)
    outputs, uncertainty = {}, {}
    for channel, output_name in enumerate(card.outputs):
        if output_name not in task_outputs:
            continue
        scale = card.normalisation["outputs"][output_name]["scale"]
        offset = card.normalisation["outputs"][output_name]["offset"]
        outputs[output_name] = prepared.inverse(mean[0, channel].numpy(), scale, offset)
        if request.samples > 1:
            uncertainty[output_name] = prepared.inverse(std[0, channel].numpy(), abs(scale), 0.0)
    return outputs, uncertainty, list(prepared.inputs.shape[1:])


def _lesion_table_inputs(task: Task, inputs: dict[str, Volume]) -> dict[str, Volume]:
    """Without synthesized maps, the per-lesion table reports the rule's bright input (FLAIR)."""
    name = task.lesion_rule.bright_input if task.lesion_rule else ""
    return {name: inputs[name]} if name in inputs else {}


def _segmenter_to_use(task: Task, request: SynthesisRequest, registry: ModelRegistry) -> str:
    """Id of the lesion segmenter this run uses, or ``""`` for the rule (or a given mask)."""
    segmenter = task.lesion_rule.segmenter if task.lesion_rule is not None else ""
    if request.lesion_method == "segmenter" and not segmenter:
        raise InputError(f"task {task.id} has no lesion segmenter; use --lesion-method rule", "--lesion-method")
    if request.lesions is not None or not segmenter or request.lesion_method == "rule":
        return ""
    if request.lesion_method == "segmenter":
        registry.card(segmenter)  # ModelNotInstalledError names the install command
        return segmenter
    return segmenter if registry.is_installed(segmenter) else ""


def _lesion_overlay(task: Task, segmenter_id: str, inputs: dict[str, Volume], outputs: dict[str, Volume], brain: Volume,
                    registry: ModelRegistry, device, checkpoint, cancel) -> tuple[Volume, str]:
    """Lesion labels from the segmenter ``segmenter_id`` (when given) or the task's rule, and how they were made."""
    segmenter = None
    if segmenter_id:
        from .segmentation.segmenter import LesionSegmenter

        segmenter = LesionSegmenter.from_registry(registry, segmenter_id, device=str(device))
    return lesion_tools.make_overlay(task.lesion_rule, inputs, outputs, brain, segmenter,
                                     lambda step, total: checkpoint("segment", step, total), cancel)


def _write_outputs(result: SynthesisResult, inputs: dict[str, Volume], folder: Path, request: SynthesisRequest,
                   checkpoint: Callable[[str, int, int], None]) -> dict[str, str]:
    """Write every result into a staging folder, then move the files into ``folder`` together."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mrisynthesis-partial-", dir=folder))
    suffix = "." + request.output_format
    try:
        written = {}
        for name, volume in result.outputs.items():
            written[name] = write_volume(volume, staging / f"{name}{suffix}")
        for name, volume in result.uncertainty.items():
            written[f"{name}_uncertainty"] = write_volume(volume, staging / f"{name}_uncertainty{suffix}")
        if result.lesions is not None:
            written["lesions"] = write_volume(result.lesions, staging / f"lesions{suffix}", np.uint16)
            report.write_lesion_table(result.lesion_table, staging / "lesions.csv", staging / "lesions.json")
            written["lesions_csv"], written["lesions_json"] = staging / "lesions.csv", staging / "lesions.json"
        rows = [(name, volume, None, "Grey") for name, volume in inputs.items() if volume.array.ndim == 3]
        for spec in result.task.outputs:
            if spec.name in result.outputs:
                rows.append((spec.name, result.outputs[spec.name], spec.display_range, spec.colormap))
            if spec.name in result.uncertainty:
                rows.append((f"{spec.name} sd", result.uncertainty[spec.name], None, "Viridis"))
        written["montage"] = report.write_montage(rows, staging / "montage.png", result.lesions,
                                                  result.task.title + (f" (steps {request.steps}, samples {request.samples})"
                                                                       if result.task.outputs else ""))
        final = {key: str(folder / Path(path).name) for key, path in written.items()}
        final["summary"] = str(folder / "summary.json")
        (staging / "summary.json").write_text(json.dumps({**result.summary, "files": final}, indent=2), encoding="utf-8")
        checkpoint("write", 1, 2)  # the last moment a cancel can stop the run: after it, files appear together
        for path in staging.iterdir():
            os.replace(path, folder / path.name)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
