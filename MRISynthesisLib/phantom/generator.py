"""``generate_subject`` and ``PhantomStream``: one digital brain with exact ground truth per seed.

Pipeline for one subject (each step with its own random stream, so the healthy part of a subject is the
same for every pathology and a pathology changes the maps only inside its masks):

anatomy (deformed label map + soft tissue fractions) -> tissue parameters (PSR first, R1 from PSR) ->
pathology (lesion compartment) -> partial-volume mixture of compartments -> MR signal equations and CT
perfusion per compartment, summed with the fractions -> optional acquisition randomisation.

Weighted images are ``sum_t f_t S(params_t)``; quantitative maps are fraction-weighted means (see
``partial_volume.py`` for the exceptions MTT, Tmax and the apparent ADC); masks are binary hard labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError
from ..volume import Volume, write_volume
from . import anatomy as anatomy_module
from . import ct_perfusion, mr_signal, partial_volume
from .acquisition import apply_acquisition, draw_acquisition
from .pathology import LESION_LOADS, PATHOLOGIES, apply_pathology
from .protocol import draw_protocol
from .tissue import TissueMaps, draw_tissue

QUANTITATIVE_MAPS = ("t1", "t2", "pd", "psr", "adc", "cbf", "cbv", "mtt", "tmax", "gd")
WEIGHTED_MAPS = ("mprage", "t1w_se", "t1ce", "t2w", "pdw", "flair", "dwi_b0", "dwi_b1000", "ct", "ctp")
MAP_NAMES = QUANTITATIVE_MAPS + WEIGHTED_MAPS
TISSUE_MASKS = ("brain", "wm", "gm", "deep_gm", "csf", "lesion")
STREAMS = ("anatomy", "tissue", "texture", "pathology", "acquisition")


@dataclass
class PhantomSubject:
    """One simulated subject.

    Attributes:
        maps: ``{name: Volume}`` float32, all on one grid; 3D ``(z, y, x)`` except ``ctp`` ``(frames, z, y, x)``.
        masks: ``{name: Volume}`` uint8 0/1 on the same grid.
        parameters: every drawn value (JSON-serialisable).
        fractions: ``{wm, gm, deep_gm, csf, lesion}`` float32 volume fraction of each compartment per voxel
            (sum 1 in the brain, 0 outside); the ground truth of the partial volume (not written to disk).
    """

    maps: dict[str, Volume]
    masks: dict[str, Volume]
    parameters: dict = field(default_factory=dict)
    fractions: dict[str, Volume] = field(default_factory=dict)

    def write(self, folder: str | os.PathLike, overwrite: bool = False) -> dict[str, str]:
        """Write ``<map>.nii.gz``, ``mask_<name>.nii.gz`` and ``parameters.json`` into ``folder``.

        Raises:
            InputError: when ``folder`` already holds files and ``overwrite`` is False.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} exists and is not a folder", "--out")
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise InputError(f"{folder} is not empty; pass --overwrite to replace it", "--out")
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, volume in self.maps.items():
            files[name] = str(write_volume(volume, folder / f"{name}.nii.gz", dtype=np.float32))
        for name, volume in self.masks.items():
            files[f"mask_{name}"] = str(write_volume(volume, folder / f"mask_{name}.nii.gz", dtype=np.uint8))
        atomic_write_text(folder / "parameters.json", json.dumps(self.parameters, indent=1, sort_keys=True))
        files["parameters"] = str(folder / "parameters.json")
        return files


def validate_arguments(seed, pathology, spacing, shape, maps) -> tuple[tuple[int, int, int] | None, tuple[str, ...]]:
    """Check ``generate_subject`` arguments; returns the normalised ``shape`` and selected map names."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", "seed")
    if pathology not in PATHOLOGIES:
        raise InputError(f"unknown pathology {pathology!r}; choose one of {', '.join(PATHOLOGIES)}", "pathology")
    if not isinstance(spacing, (int, float, np.floating)) or not 0.5 <= float(spacing) <= 8.0:
        raise InputError(f"spacing must be a number of mm between 0.5 and 8, got {spacing!r}", "spacing")
    if shape is not None:
        if len(shape) != 3 or any(int(s) != s or s < 8 or s > 512 for s in shape):
            raise InputError(f"shape must be 3 integers (z, y, x) between 8 and 512, got {shape!r}", "shape")
        shape = tuple(int(s) for s in shape)
    selected = MAP_NAMES if maps is None else tuple(maps)
    unknown = sorted(set(selected) - set(MAP_NAMES))
    if unknown:
        raise InputError(f"unknown map(s) {', '.join(unknown)}; available: {', '.join(MAP_NAMES)}", "maps")
    return shape, selected


def generate_subject(seed: int, pathology: str = "ms", spacing: float = 2.0, labels: str | os.PathLike | None = None,
                     randomize_acquisition: bool = False, shape: Sequence[int] | None = None,
                     maps: Sequence[str] | None = None, field_strength: float | None = None,
                     deform: bool = True, lesion_load: str = "typical") -> PhantomSubject:
    """Simulate one subject.

    Args:
        seed: non-negative integer; the same arguments give identical output.
        pathology: ``"ms"``, ``"stroke"``, ``"glioma"`` or ``"none"``.
        spacing: isotropic voxel size (mm) of the output grid.
        labels: a FreeSurfer aseg label map, or a folder of them (one is drawn per subject); ``None`` uses the
            built-in MNI152 anatomy.
        randomize_acquisition: bias field, noise, gamma, slice thickness, misregistration and intensity scale
            on the weighted images (quantitative maps stay exact).
        shape: output grid ``(z, y, x)`` voxels centred on the brain; default a 176x208x176 mm box.
        maps: names to keep (default all of ``MAP_NAMES``); skipping ``ctp`` saves most of the time at 1 mm.
        field_strength: 1.5 or 3.0 T (default drawn per subject).
        deform: False keeps the source anatomy undeformed (no affine, elastic or flip).
        lesion_load: MS lesion distribution, ``"typical"`` (4-30 ovoids, ~1-5 mL) or ``"wide"`` (0.1-60 mL with
            confluent and infratentorial lesions; the lesion segmenter's training data).

    Returns:
        :class:`PhantomSubject` with maps (float32), masks (uint8) and parameters.
    """
    shape, selected = validate_arguments(seed, pathology, spacing, shape, maps)
    spacing = float(spacing)
    if field_strength is not None and field_strength not in (1.5, 3.0):
        raise InputError(f"field strength must be 1.5 or 3.0 T, got {field_strength!r}", "field_strength")
    if lesion_load not in LESION_LOADS:
        raise InputError(f"lesion load must be one of {', '.join(LESION_LOADS)}, got {lesion_load!r}", "lesion_load")
    rngs = dict(zip(STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(len(STREAMS)))))

    # Anatomy.
    if labels is None:
        source = anatomy_module.mni_anatomy()
    else:
        files = anatomy_module.label_files(labels)
        source = anatomy_module.aseg_anatomy(files[int(rngs["anatomy"].integers(len(files)))])
    grid_shape, origin = anatomy_module.output_grid(spacing, shape)
    transform = anatomy_module.random_transform(rngs["anatomy"], deform)
    classes, wm_fraction, gm_fraction = anatomy_module.deform_labels(source, transform, spacing, grid_shape, origin,
                                                                     rngs["anatomy"])
    brain = classes > 0
    if not brain.any():
        raise InputError("the output grid holds no brain; enlarge shape or spacing", "shape")

    # Tissue parameters and per-voxel maps, then pathology (the lesion compartment).
    tissue = draw_tissue(rngs["tissue"], field_strength)
    protocol = draw_protocol(rngs["tissue"], tissue)
    protocol["ctp"] = ct_perfusion.draw_ctp_protocol(rngs["tissue"])
    tissue_maps = TissueMaps(classes, tissue, rngs["texture"])
    tissue_maps.maps["gd"] = np.zeros(classes.shape, np.float32)
    pathology_masks, pathology_parameters = apply_pathology(pathology, classes, tissue_maps, tissue,
                                                            rngs["pathology"], spacing, lesion_load)

    # Partial volume: compartments of the brain voxels, every map rendered as their mixture.
    brain_index = np.flatnonzero(brain)
    n = brain_index.size
    fractions = partial_volume.tissue_fractions(classes, wm_fraction, gm_fraction)
    parts = partial_volume.compartments(fractions, tissue_maps, brain_index)

    def full(values: np.ndarray) -> np.ndarray:
        array = np.zeros(classes.size, np.float32)
        array[brain_index] = values
        return array.reshape(classes.shape)

    values = partial_volume.quantitative_maps(parts, n, protocol["dwi"], mr_signal.spin_echo)
    arrays = {name: full(values[name]) for name in QUANTITATIVE_MAPS}
    arrays.update(_weighted(parts, n, full, values, arrays, brain_index, protocol, selected))
    fraction_arrays = {}
    for part in parts:
        weight = np.zeros(n, np.float32)
        weight[part.local] = part.weight
        fraction_arrays[part.name] = full(weight)
    fraction_arrays.setdefault("lesion", np.zeros(classes.shape, np.float32))

    acquisition = {}
    if randomize_acquisition:
        names = [n for n in WEIGHTED_MAPS if n in arrays]
        acquisition = draw_acquisition(rngs["acquisition"], names, spacing, protocol["ctp"]["noise_hu"])
        dwi_reference = float(arrays["dwi_b0"][brain].max()) if "dwi_b0" in arrays else None
        for name in names:
            reference = dwi_reference if name.startswith("dwi_") else None
            arrays[name] = apply_acquisition(arrays[name], brain, acquisition[name], spacing, rngs["acquisition"],
                                             reference)

    geometry = {"origin": origin, "spacing": (spacing,) * 3}
    mask_arrays = {"brain": brain, "wm": classes == anatomy_module.WM, "gm": classes == anatomy_module.GM,
                   "deep_gm": classes == anatomy_module.DEEP_GM,
                   "csf": (classes == anatomy_module.CSF) | (classes == anatomy_module.VENTRICLE)}
    mask_arrays.update(pathology_masks)
    parameters = {
        "seed": int(seed), "pathology": pathology, "spacing_mm": spacing, "shape_zyx": list(grid_shape),
        "origin_xyz_mm": list(origin), "anatomy": {"source": source.name, **transform},
        "randomize_acquisition": bool(randomize_acquisition), "tissue": tissue, "protocol": protocol,
        "pathology_parameters": pathology_parameters, "acquisition": acquisition,
        "units": {"t1": "ms", "t2": "ms", "pd": "fraction of CSF", "psr": "fraction", "adc": "1e-3 mm2/s",
                  "cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s", "gd": "mM", "ct": "HU",
                  "ctp": "HU"},
    }
    maps = {n: Volume(np.ascontiguousarray(arrays[n], np.float32), **geometry) for n in MAP_NAMES
            if n in selected or n in QUANTITATIVE_MAPS}
    if "ctp" in maps:
        maps["ctp"].metadata["frame_times_s"] = ct_perfusion.frame_times(protocol["ctp"]).tolist()
    return PhantomSubject(
        maps=maps,
        masks={n: Volume(a.astype(np.uint8), **geometry) for n, a in mask_arrays.items()},
        parameters=_jsonable(parameters),
        fractions={n: Volume(a, **geometry) for n, a in fraction_arrays.items()},
    )


def _weighted(parts: list, n: int, full, values: dict, arrays: dict, brain_index: np.ndarray, protocol: dict,
              selected: Sequence[str]) -> dict:
    """Weighted images (clean), each the fraction-weighted sum of its compartments' signals; only ``selected``."""
    mix = partial_volume.mix
    out = {}
    if "mprage" in selected:
        p = protocol["mprage"]
        out["mprage"] = full(mix(parts, n, lambda c: mr_signal.mprage(
            c["pd"], c["t1"], c["t2"], p["tr"], p["ti"], p["flip_deg"], p["echo_spacing"], p["n_pulses"], p["te"],
            p["inversion_efficiency"])))
    for name in ("t1w_se", "t2w", "pdw"):
        if name in selected:
            p = protocol[name]
            out[name] = full(mix(parts, n, lambda c: mr_signal.spin_echo(c["pd"], c["t1"], c["t2"], p["tr"], p["te"])))
    if "t1ce" in selected:
        p = protocol["t1w_se"]
        out["t1ce"] = full(mix(parts, n, lambda c: mr_signal.spin_echo(
            c["pd"], mr_signal.t1_with_gadolinium(c["t1"], c["gd"]), c["t2"], p["tr"], p["te"])))
    if "flair" in selected:
        p = protocol["flair"]
        out["flair"] = full(mix(parts, n, lambda c: mr_signal.flair(c["pd"], c["t1"], c["t2"], p["tr"], p["te"],
                                                                   p["ti"], p["inversion_efficiency"])))
    if "dwi_b0" in selected or "dwi_b1000" in selected:
        b0 = full(values["dwi_b0"])
        if "dwi_b0" in selected:
            out["dwi_b0"] = b0
        if "dwi_b1000" in selected:
            out["dwi_b1000"] = mr_signal.dwi(b0, arrays["adc"], protocol["dwi"]["b"])
    if "ct" in selected or "ctp" in selected:
        ct = full(values["hu"])
        if "ct" in selected:
            out["ct"] = ct
        if "ctp" in selected:
            series = np.repeat(ct[None], protocol["ctp"]["frames"], axis=0)
            flat = series.reshape(protocol["ctp"]["frames"], -1)
            for part in parts:
                c = part.params
                enhancement = ct_perfusion.tissue_enhancement(c["cbf"], c["mtt"], c["delay"], protocol["ctp"])
                flat[:, brain_index[part.local]] += part.weight[None, :] * enhancement
            out["ctp"] = series
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class PhantomStream:
    """Endless (or ``count``-long) iterator of subjects for training.

    Subject ``i`` uses seed ``SeedSequence([seed, i])`` and pathology ``pathologies[i % len(pathologies)]``,
    so a stream is reproducible and balanced. Extra keyword arguments go to :func:`generate_subject`.
    """

    def __init__(self, seed: int = 0, pathologies: Sequence[str] = ("ms", "none"), spacing: float = 2.0,
                 labels: str | os.PathLike | None = None, randomize_acquisition: bool = True,
                 count: int | None = None, start: int = 0, **kwargs):
        if not pathologies or any(p not in PATHOLOGIES for p in pathologies):
            raise InputError(f"pathologies must be a non-empty list from {', '.join(PATHOLOGIES)}", "pathologies")
        if count is not None and count < 0:
            raise InputError("count must be >= 0", "count")
        self.seed, self.pathologies, self.spacing = int(seed), tuple(pathologies), float(spacing)
        self.labels, self.randomize_acquisition, self.count, self.start = labels, randomize_acquisition, count, start
        self.kwargs = kwargs

    def subject_seed(self, index: int) -> int:
        """The ``generate_subject`` seed of subject ``index``."""
        return int(np.random.SeedSequence([self.seed, int(index)]).generate_state(1, np.uint32)[0])

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("endless PhantomStream has no length")
        return self.count

    def __iter__(self) -> Iterator[PhantomSubject]:
        index = self.start
        while self.count is None or index < self.start + self.count:
            yield generate_subject(self.subject_seed(index), self.pathologies[index % len(self.pathologies)],
                                   self.spacing, self.labels, self.randomize_acquisition, **self.kwargs)
            index += 1
