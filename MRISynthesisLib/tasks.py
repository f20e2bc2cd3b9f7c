"""The task registry: what each synthesis task takes, produces and which model it needs.

Tasks are data. Adding a task means registering a ``Task`` here and providing its model (a model card
with weights, bundled in ``model_store/bundled/<id>/`` or installed in the user cache) -- the pipeline, CLI and
Slicer module read everything else from these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


# Quality presets shared by the CLI and the Slicer module: name -> sampling steps, and the number K of samples
# whose mean is the output map (their SD is the uncertainty).
QUALITY_STEPS = {"fast": 4, "balanced": 10, "best": 25}
QUALITY_SAMPLES = {"fast": 2, "balanced": 4, "best": 8}


@dataclass(frozen=True)
class InputSpec:
    """One input image of a task.

    Args:
        name: the key used on the command line (``--input NAME=PATH``) and in the GUI.
        modality: what the image is (``"MR"`` or ``"CT"``), used for sanity checks.
        required: whether the task refuses to run without it.
        pattern: case-insensitive regular expression on a file or node name for auto-assignment.
        channels: ``1`` for a 3D image, ``"series"`` for a 4D time series (CT perfusion, fMRI).
        description: a one-line tooltip.
    """

    name: str
    modality: str
    required: bool = True
    pattern: str = ""
    channels: int | str = 1
    description: str = ""

    def matches(self, filename: str) -> bool:
        """True when ``filename`` looks like this input (by ``pattern``)."""
        return bool(self.pattern) and re.search(self.pattern, filename, re.IGNORECASE) is not None


@dataclass(frozen=True)
class OutputSpec:
    """One synthesized map.

    Args:
        name: file/node stem (``"psr"``).
        units: physical units, ``""`` for arbitrary (normalised) intensity.
        display_range: default window ``(low, high)`` in those units.
        colormap: Slicer colour node name used for display.
        description: a one-line explanation.
    """

    name: str
    units: str
    display_range: tuple[float, float]
    colormap: str = "Grey"
    description: str = ""


@dataclass(frozen=True)
class LesionRule:
    """How a lesion mask is derived when the user gives none (all criteria given must hold).

    Args:
        bright_input: an input whose hyperintensity marks lesions (FLAIR): robust z-score > ``bright_z``.
        low_output: an output whose drop marks lesions (PSR, ADC).
        low_fraction: "low" = below this fraction of the output's normal-tissue level (its 90th percentile
            in the brain), used when ``low_absolute`` is None.
        low_absolute: "low" = below this value in the output's units (e.g. ADC < 0.62e-3 mm^2/s).
        min_volume_ml: smaller connected components are dropped (noise).
        erosion_voxels: the brain mask is eroded by this many voxels first (partial volume at its border
            mimics hyperintensities).
        opening: a binary opening removes one-voxel specks and thin rims before components are counted.
        segment_name: name of the lesion segment in Slicer and reports; its Slicer terminology entry is
            derived from this name by ``terminology.lesion_terminology`` (the one source of those codes).
        segmenter: id of a trained lesion segmenter that replaces the rule when it is installed (``""``: none).
    """

    bright_input: str = ""
    bright_z: float = 3.0
    low_output: str = ""
    low_fraction: float = 0.75
    low_absolute: float | None = None
    min_volume_ml: float = 0.01
    erosion_voxels: int = 2
    opening: bool = False
    segment_name: str = "Lesion"
    segmenter: str = ""


@dataclass(frozen=True)
class Task:
    """A synthesis task: inputs -> outputs with one model (a task without outputs only makes the lesion overlay,
    with ``model_id`` its segmenter)."""

    id: str
    title: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    model_id: str
    lesion_rule: LesionRule | None = None
    any_subset: bool = False  # missing-contrast: any non-empty subset of inputs, synthesize the rest
    tags: tuple[str, ...] = field(default_factory=tuple)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs if spec.required)


# Native T1-weighted file/node names, MPRAGE-style sequence names included (the demo case writes mprage.nii.gz).
T1W_PATTERN = r"(t1(w|n)?|mprage|mp2rage|spgr|bravo)(?!.*(ce|post|gd))"

_MR_CONTRASTS = (
    InputSpec("t1w", "MR", False, r"t1(w|n|_?native|_?pre)?(?!.*(ce|post|gd|c\b))", description="native T1-weighted"),
    InputSpec("t1ce", "MR", False, r"t1.?(ce|c\b|post|gd)", description="post-gadolinium T1-weighted"),
    InputSpec("t2w", "MR", False, r"t2(w|_?weighted)?(?!.*flair)\b|t2\.nii", description="T2-weighted"),
    InputSpec("flair", "MR", False, r"flair|t2f", description="T2-FLAIR"),
)

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (ids are unique)."""
    if task.id in TASKS:
        raise ValueError(f"task {task.id!r} is already registered")
    TASKS[task.id] = task
    return task


# MS lesions: the trained segmenter (issue 9) when installed, else FLAIR alone: a rule on the synthesized PSR
# would inherit every error of the map it is meant to check (FLAIR-bright + PSR-low found 0.5 of 49.8 ml on a real
# patient); z > 2 after a 3-voxel erosion and an opening is the floor (Dice 0.28 on ms-patient07).
MS_LESIONS = LesionRule(bright_input="flair", bright_z=2.0, erosion_voxels=3, opening=True, segment_name="MS lesion",
                        segmenter="ms-lesion-segmenter")

register(Task(
    id="myelin-psr",
    title="Myelin PSR from T1w + FLAIR",
    description="Quantitative magnetization-transfer pool-size ratio (myelin) map from routine T1w and FLAIR (DEMIST).",
    inputs=(
        InputSpec("t1w", "MR", True, T1W_PATTERN, description="T1-weighted (MPRAGE or spin echo)"),
        InputSpec("flair", "MR", True, r"flair|t2f", description="T2-FLAIR"),
    ),
    outputs=(OutputSpec("psr", "", (0.0, 0.2), "Inferno", "pool-size ratio M0_bound / M0_free"),),
    model_id="myelin-psr",
    lesion_rule=MS_LESIONS,
    tags=("MS", "myelin"),
))

register(Task(
    id="ms-lesions",
    title="MS lesions only (no synthesis)",
    description="MS lesion overlay and per-lesion table from FLAIR (+ T1w): the trained segmenter when installed, "
                "the FLAIR rule otherwise.",
    inputs=(
        InputSpec("t1w", "MR", False, T1W_PATTERN, description="T1-weighted (optional)"),
        InputSpec("flair", "MR", True, r"flair|t2f", description="T2-FLAIR"),
    ),
    outputs=(),
    model_id="ms-lesion-segmenter",
    lesion_rule=MS_LESIONS,
    tags=("MS",),
))

register(Task(
    id="missing-contrast",
    title="Missing MR contrast",
    description="Any subset of T1w / T1ce / T2w / FLAIR -> the contrasts that were not acquired (MSG-LDM).",
    inputs=_MR_CONTRASTS,
    outputs=tuple(OutputSpec(c.name, "", (0.0, 1.0), "Grey", f"synthetic {c.description}") for c in _MR_CONTRASTS),
    model_id="missing-contrast",
    lesion_rule=LesionRule(bright_input="flair", bright_z=3.5, min_volume_ml=0.05, segment_name="FLAIR hyperintensity"),
    any_subset=True,
    tags=("glioma", "MS"),
))

register(Task(
    id="stroke-dwi-adc",
    title="DWI + ADC from CT perfusion",
    description="Diffusion-weighted image (b=1000) and ADC map from a 4D CT perfusion series, lesion-aware (LAPT).",
    inputs=(
        InputSpec("ctp", "CT", True, r"ctp|perfusion|perf", "series", "4D CT perfusion series"),
        InputSpec("ct", "CT", False, r"\bct\b|ncct|unenhanced", description="unenhanced CT (optional)"),
    ),
    outputs=(
        OutputSpec("dwi", "relative to the brain median", (0.0, 2.5), "Grey", "synthetic DWI b=1000"),
        OutputSpec("adc", "1e-3 mm^2/s", (0.0, 2.0), "Grey", "apparent diffusion coefficient"),
    ),
    model_id="stroke-dwi-adc",
    # No brain erosion: middle-cerebral-artery cores reach the cortical surface, and partial volume with CSF
    # raises ADC there rather than mimicking a core (with 2 voxels of erosion the true ADC of 6 held-out 2 mm
    # phantoms scored Dice 0.88: benchmarks/stroke_baselines.py).
    lesion_rule=LesionRule(low_output="adc", low_absolute=0.62, min_volume_ml=0.1, erosion_voxels=0,
                           segment_name="Infarct core"),
    tags=("stroke",),
))

register(Task(
    id="fmri-dmri",
    title="fMRI <-> dMRI maps",
    description="Diffusion maps (FA, MD) from resting-state fMRI summary maps or the reverse (PDS).",
    inputs=(
        InputSpec("fmri", "MR", False, r"fmri|bold|rest", "series", "resting-state fMRI series"),
        InputSpec("dmri", "MR", False, r"dwi|dmri|dti", "series", "diffusion MRI series"),
    ),
    outputs=(
        OutputSpec("fa", "", (0.0, 1.0), "Grey", "fractional anisotropy"),
        OutputSpec("md", "1e-3 mm^2/s", (0.0, 3.0), "Grey", "mean diffusivity"),
        OutputSpec("alff", "", (0.0, 1.0), "Grey", "amplitude of low-frequency fluctuation"),
    ),
    model_id="fmri-dmri",
    any_subset=True,
    tags=("neurodegeneration",),
))


def get_task(task_id: str) -> Task:
    """The registered task ``task_id``; an ``InputError`` listing the known ids otherwise."""
    from .errors import InputError

    try:
        return TASKS[task_id]
    except KeyError:
        raise InputError(f"unknown task {task_id!r}; known tasks: {', '.join(TASKS)}", "--task") from None
