"""What the web page does, without the page: load volumes into the scene, run a task, cancel, offer downloads.

``WebSession`` holds one MRML scene (trame-slicer's) and at most one running synthesis. It has no trame
import, so tests drive it directly; ``web.app`` only binds it to widgets. Loading and running reuse the
backend: ``pipeline.load_input`` (the bad-input checks of the command line), ``mrml.volume_to_node``,
``mrml_run.start_run`` / ``import_run`` (the Slicer module's request and nodes).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import checks, mrml
from ..errors import InputError
from ..mrml_run import RunContext, import_run, start_run
from ..mrml_transaction import SceneTransaction
from ..pipeline import load_input
from ..tasks import QUALITY_SAMPLES, QUALITY_STEPS, Task, get_task
from ..volume import READ_SUFFIXES

DEFAULT_MAX_UPLOAD_MB = 1024


def volume_name(filename: str) -> str:
    """Node name of a loaded file: the file name without its image suffix (``flair.nii.gz`` -> ``flair``)."""
    lower = filename.lower()
    for suffix in sorted(READ_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def safe_filename(filename: str) -> str:
    """The last path component of a browser-given name, with nothing that could leave a folder."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(str(filename).replace("\\", "/")).name)
    if name.strip(".") == "":
        raise InputError("has no usable file name", repr(filename))
    return name


@dataclass
class FinishedRun:
    """A completed (or failed/cancelled) run as the page shows it."""

    status: str                                          # "done", "cancelled" or "error"
    message: str
    node_ids: list[str] = field(default_factory=list)    # nodes created in the scene
    lesion_rows: list[dict] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)   # file names under ``downloads_dir/<run id>/``
    run_id: str = ""


class WebSession:
    """One scene, its loaded volumes, and the synthesis run of a page.

    Args:
        scene: the MRML scene (``trame_slicer.core.SlicerApp().scene`` in the app, ``vtkMRMLScene()`` in tests).
        downloads_dir: folder whose sub-folders (one per finished run) the server offers for download.
        data_dir: optional folder whose image files can be loaded by name (``mrisynthesis serve --data``).
        max_upload_mb: larger uploads are refused before they are read.
        python, launcher, env: how the worker process is started (``worker.WorkerProcess``).
    """

    def __init__(self, scene, downloads_dir: str | Path, data_dir: str | Path | None = None,
                 max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, python=None, launcher=None, env: dict | None = None):
        self.scene = scene
        self.downloads_dir = Path(downloads_dir)
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir).resolve() if data_dir else None
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.python, self.launcher, self.env = python, launcher, env
        self.process = None
        self.context: RunContext | None = None
        self.started = 0.0

    # ------------------------------------------------------------------------------------------ volumes
    def volumes(self) -> list[dict]:
        """Scalar volume nodes of the scene as ``{"id", "name"}``, in scene order."""
        nodes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        return [{"id": node.GetID(), "name": node.GetName()}
                for node in (nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems()))
                if not node.GetHideFromEditors()]

    def data_files(self) -> list[str]:
        """Image files under ``data_dir`` (relative paths), for ``load_data``."""
        if self.data_dir is None:
            return []
        return sorted(str(path.relative_to(self.data_dir)) for path in self.data_dir.rglob("*")
                      if path.is_file() and path.name.lower().endswith(READ_SUFFIXES))

    def check_upload(self, filename: str, size: int | None) -> None:
        """Refuse an upload by its announced name and size, before any byte is kept."""
        name = safe_filename(filename)
        if not name.lower().endswith(READ_SUFFIXES):
            raise InputError("is not a supported image file (NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, MHA)", name)
        if size is not None and size > self.max_upload_bytes:
            raise InputError(f"is {size / 1024**2:.0f} MB, more than the server's upload limit of "
                             f"{self.max_upload_bytes / 1024**2:.0f} MB", name)

    def load_uploads(self, files: list[tuple[str, bytes]]) -> list:
        """Load uploaded ``(filename, content)`` pairs; all or none (a bad file adds nothing)."""
        for filename, content in files:
            self.check_upload(filename, len(content))
        with tempfile.TemporaryDirectory(prefix="mrisynthesis-upload-") as folder:
            paths = []
            for filename, content in files:
                path = Path(folder, safe_filename(filename))
                path.write_bytes(content)
                paths.append(path)
            return self.load_paths(paths)

    def load_data(self, relative_paths: list[str]) -> list:
        """Load files from ``data_dir`` by their relative path (nothing outside it)."""
        if self.data_dir is None:
            raise InputError("this server was started without --data", "data")
        paths = []
        for relative in relative_paths:
            path = (self.data_dir / relative).resolve()
            if not path.is_relative_to(self.data_dir):
                raise InputError("is outside the server's data folder", relative)
            paths.append(path)
        return self.load_paths(paths)

    def load_paths(self, paths: list[Path]) -> list:
        """Read each file with the pipeline's checks, then add all nodes in one transaction."""
        volumes = []
        for path in paths:
            name = volume_name(Path(path).name)
            volume = load_input(path, name)
            checks.check_geometry(volume, None, name)
            checks.check_intensities(volume, name, allow_labels=True)  # a brain mask is a valid upload too
            volumes.append((name, volume))
        with SceneTransaction(self.scene):
            return [mrml.volume_to_node(self.scene, volume, name) for name, volume in volumes]

    @staticmethod
    def auto_assign(task: Task, volumes: list[dict], current: dict | None = None) -> dict:
        """Input name -> node id: keep valid current choices, fill the rest by the inputs' name patterns."""
        ids = {volume["id"] for volume in volumes}
        chosen = {name: node_id for name, node_id in (current or {}).items() if node_id in ids}
        used = set(chosen.values())
        for spec in task.inputs:
            if chosen.get(spec.name):
                continue
            match = next((volume["id"] for volume in volumes
                          if volume["id"] not in used and spec.matches(volume["name"])), None)
            chosen[spec.name] = match
            used.add(match)
        return {spec.name: chosen.get(spec.name) for spec in task.inputs}

    # ----------------------------------------------------------------------------------------------- run
    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self, task_id: str, inputs: dict, quality: str = "balanced", samples: int = 0,
              device: str = "auto", seed: int = 0, output_format: str = "nii.gz") -> None:
        """Start the worker on the chosen nodes; ``InputError`` for a missing required input or bad option."""
        if self.running:
            raise InputError("a synthesis is already running; cancel it first", "run")
        task = get_task(task_id)
        if quality not in QUALITY_STEPS:
            raise InputError(f"must be one of {', '.join(QUALITY_STEPS)}", "quality")
        nodes = {name: self.scene.GetNodeByID(node_id) if node_id else None for name, node_id in inputs.items()}
        missing = [spec.name for spec in task.inputs if spec.required and nodes.get(spec.name) is None]
        if missing:
            raise InputError(f"choose a volume for {', '.join(missing)}", task.id)
        options = {"device": device, "steps": QUALITY_STEPS[quality],
                   "samples": int(samples) or QUALITY_SAMPLES[quality], "seed": int(seed),
                   "output_format": output_format}
        self.process, self.context = start_run(self.scene, task.id, nodes, options=options, python=self.python,
                                               launcher=self.launcher, env=self.env)
        self.started = time.monotonic()

    def poll(self) -> list[dict]:
        """Progress messages since the last poll (``worker`` protocol lines)."""
        return self.process.poll() if self.process is not None else []

    @property
    def finished(self) -> bool:
        return self.process is not None and not self.process.running

    def finish(self) -> FinishedRun:
        """Import a finished run's nodes (all or nothing) and keep its files for download."""
        process, context = self.process, self.context
        self.process = self.context = None
        try:
            process.wait(10)
            process.poll()
            final = process.final or {}
            if final.get("stage") == "cancelled":
                return FinishedRun("cancelled", "Cancelled.")
            if final.get("stage") != "done":
                message = final.get("message") or f"The synthesis stopped (exit code {process.returncode})."
                return FinishedRun("error", message)
            nodes = import_run(self.scene, process, context)
            run_id = f"{context.task}-{time.strftime('%Y%m%d-%H%M%S')}"
            downloads = self._keep_downloads(process, run_id)
            lesions = (final.get("summary") or {}).get("lesions")
            message = f"Done in {time.monotonic() - self.started:.0f} s: {len(nodes.all())} nodes created."
            if lesions:
                message += (f" Lesions: {lesions['count']}, {lesions['total_ml']} mL in total, made by "
                            f"{lesions.get('method') or lesions['source']}.")
            return FinishedRun("done", message, [node.GetID() for node in nodes.all()],
                               list(final.get("lesion_table") or []), downloads, run_id)
        finally:
            process.cleanup()

    def cancel(self) -> FinishedRun:
        """Stop the worker (process tree killed, its folders removed); the scene is not touched."""
        process, self.process, self.context = self.process, None, None
        if process is not None:
            process.cancel()
            process.cleanup()
        return FinishedRun("cancelled", "Cancelled by the user; nothing was added.")

    def _keep_downloads(self, process, run_id: str) -> list[str]:
        source = Path(process.work_dir or "", "outputs")
        if not source.is_dir():
            return []
        target = self.downloads_dir / run_id
        partial = self.downloads_dir / (run_id + ".partial")
        shutil.copytree(source, partial, dirs_exist_ok=True)
        partial.rename(target)  # a listed folder is always complete
        return sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
