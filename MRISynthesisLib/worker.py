"""The JSON-lines subprocess protocol between a GUI (the Slicer module) and one synthesis run.

Worker side: ``python -m MRISynthesisLib.worker REQUEST.json`` (or ``mrisynthesis worker REQUEST.json``)
reads a request, runs ``pipeline.synthesize`` and prints one JSON object per line on stdout::

    {"stage": "sample", "step": 3, "total": 10, "percent": 30.0, "overall": 41.0, "eta_s": 12.4}
    {"stage": "done", "summary": {...}, "outputs": {"psr": "/out/psr.nrrd"}, "uncertainty": {}, "lesions": ...,
     "lesion_table": [...], "files": {...}}
    {"stage": "error", "message": "flair: file not found: ...", "exit_code": 2}
    {"stage": "cancelled"}

Exit codes: 0 done, 1 internal error, 2 bad input, 3 model not installed, 130 cancelled (SIGTERM/SIGINT).
Anything else the run prints goes to stderr, so stdout stays parseable.

Request JSON: ``{"task": id, "inputs": {name: path}, "output_dir": path, "reference": name|null,
"mask": path|null, "lesions": path|null, "options": {"device", "steps", "samples", "seed", "sampler",
"output_format"}}``.

Device query: ``python -m MRISynthesisLib.worker --devices`` prints one ``{"stage": "devices", ...}`` line
(``devices.list_devices``; ``devices.query_devices`` is the parent side), so a GUI lists GPUs without
importing torch (or holding a CUDA context) in its own process.

Parent side: ``WorkerProcess`` starts the worker through a *launcher* (``launch(args, env_updates)`` returning
a ``Popen``-like object; the default is ``subprocess`` without a console window on Windows, the Slicer module
passes ``slicer.util.launchConsoleProcess``), reads its lines on threads (no Qt), hands out parsed messages
with ``poll()``, and ``cancel()`` kills the whole process tree (``psutil``) and removes the run's work folder.
The Slicer module polls it from a ``qt.QTimer``; tests drive it directly.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CancelledError, InputError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_MODEL_MISSING, EXIT_CANCELLED = 0, 1, 2, 3, 130
# Rough share of the run time per pipeline stage, for one overall percentage (sampling dominates).
STAGE_WEIGHTS = {"read": 5.0, "align": 5.0, "preprocess": 5.0, "sample": 75.0, "postprocess": 5.0, "write": 5.0}
OPTION_TYPES = {"device": str, "steps": int, "samples": int, "seed": int, "sampler": str, "output_format": str}


# ================================================================================== worker (child) side
def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _Emitter:
    """Writes protocol lines to the real stdout and turns (stage, step, total) into percent and ETA."""

    def __init__(self, stream):
        self.stream = stream
        self.stage, self.stage_start, self.done_weight = None, 0.0, 0.0

    def emit(self, message: dict) -> None:
        self.stream.write(json.dumps(message, default=_json_default) + "\n")
        self.stream.flush()

    def progress(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            if self.stage is not None:
                self.done_weight += STAGE_WEIGHTS.get(self.stage, 0.0)
            self.stage, self.stage_start = stage, now
        fraction = min(1.0, step / total) if total > 0 else 1.0
        elapsed = now - self.stage_start
        eta = elapsed / step * (total - step) if step > 0 and total > 0 else None
        overall = min(100.0, self.done_weight + STAGE_WEIGHTS.get(stage, 0.0) * fraction)
        self.emit({"stage": stage, "step": int(step), "total": int(total), "percent": round(100.0 * fraction, 1),
                   "overall": round(overall, 1), "eta_s": None if eta is None else round(eta, 1)})


def read_request(path: str | os.PathLike) -> dict:
    """Load and check a request file; ``InputError`` for anything malformed."""
    path = Path(path)
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"file not found: {path}", "request") from None
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as JSON ({error})", "request") from None
    if not isinstance(request, dict):
        raise InputError("must be a JSON object", "request")
    for key in ("task", "inputs", "output_dir"):
        if key not in request:
            raise InputError(f"missing key {key!r}", "request")
    if not isinstance(request["inputs"], dict) or not all(isinstance(v, str) for v in request["inputs"].values()):
        raise InputError("'inputs' must map input names to file paths", "request")
    options = request.get("options") or {}
    for key, value in options.items():
        expected = OPTION_TYPES.get(key)
        if expected is None:
            raise InputError(f"unknown option {key!r}; known: {', '.join(OPTION_TYPES)}", "request")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise InputError(f"option {key!r} must be {expected.__name__}, got {value!r}", "request")
    request["options"] = options
    return request


def _remove_files(paths) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def run(request_path: str | os.PathLike, stdout=None) -> int:
    """Run one request, speaking the protocol on ``stdout``; returns the exit code."""
    emitter = _Emitter(stdout or sys.stdout)
    cancelled = threading.Event()

    def on_signal(signum, frame):
        cancelled.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # stray prints must not corrupt the protocol
    try:
        request = read_request(request_path)
        from .pipeline import SynthesisRequest, synthesize  # heavy (torch) only after the request is valid

        options = request["options"]
        synthesis = SynthesisRequest(
            task_id=request["task"], inputs=dict(request["inputs"]), output_dir=Path(request["output_dir"]),
            reference=request.get("reference"), mask=request.get("mask"), lesions=request.get("lesions"),
            overwrite=True, **options)
        result = synthesize(synthesis, progress=emitter.progress, cancel=cancelled.is_set)
        if cancelled.is_set():  # cancel arrived while files were being moved into place: undo
            _remove_files(result.files.values())
            raise CancelledError("write")
        files = {key: str(value) for key, value in result.files.items()}
        emitter.emit({
            "stage": "done", "summary": result.summary, "files": files,
            "outputs": {name: files[name] for name in result.outputs},
            "uncertainty": {name: files[f"{name}_uncertainty"] for name in result.uncertainty},
            "lesions": files.get("lesions"), "lesion_table": result.lesion_table,
        })
        return EXIT_OK
    except CancelledError:
        emitter.emit({"stage": "cancelled"})
        return EXIT_CANCELLED
    except InputError as error:
        emitter.emit({"stage": "error", "message": str(error), "exit_code": error.exit_code})
        return error.exit_code
    except Exception as error:  # a bug: keep the traceback for the log
        traceback.print_exc(file=sys.stderr)
        emitter.emit({"stage": "error", "message": f"{type(error).__name__}: {error}", "exit_code": EXIT_INTERNAL})
        return EXIT_INTERNAL
    finally:
        sys.stdout = real_stdout
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--devices"]:
        from .devices import list_devices

        print(json.dumps({"stage": "devices", "devices": list_devices()}), flush=True)
        return EXIT_OK
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m MRISynthesisLib.worker REQUEST.json | --devices", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(argv[0])


# ================================================================================= parent (GUI) side
@dataclass
class WorkerResult:
    """A finished run loaded back from its files (what ``mrml.import_result`` takes)."""

    outputs: dict = field(default_factory=dict)       # name -> Volume
    uncertainty: dict = field(default_factory=dict)   # name -> Volume
    lesions: object = None                            # Volume | None
    lesion_table: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def progress_text(message: dict, tr=str) -> str:
    """Status line of a progress message: ``"sample 3/10 (30%) ETA 12 s"``; ``tr`` translates the templates
    (the Slicer module passes ``slicer.i18n.tr``)."""
    seconds = message.get("eta_s")
    eta = ""
    if seconds is not None:
        seconds = int(round(seconds))
        eta = tr("ETA {0} min {1:02d} s").format(seconds // 60, seconds % 60) if seconds >= 60 else \
            tr("ETA {0} s").format(seconds)
    return f"{message['stage']} {message['step']}/{message['total']} ({message['percent']:.0f}%) {eta}".rstrip()


def package_root() -> str:
    """Folder that contains ``MRISynthesisLib`` (put on the worker's PYTHONPATH)."""
    return str(Path(__file__).resolve().parent.parent)


def worker_pythonpath(extra: str | None = None) -> str:
    """PYTHONPATH for a worker: this package's folder first, then what the parent already had."""
    return os.pathsep.join(filter(None, [package_root(), extra, os.environ.get("PYTHONPATH")]))


def _wait_gone(processes, timeout: float) -> list:
    """Wait until every process has exited (a zombie counts as exited: orphans may wait long for a reaper)."""
    import psutil

    def alive(proc) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    remaining = [proc for proc in processes if alive(proc)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = [proc for proc in remaining if alive(proc)]
    return remaining


def launch_subprocess(args: list[str], env_updates: dict):
    """Default launcher: stdout and stderr piped, and no console window on Windows (a GUI starts this)."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # 0 on other systems
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env_updates}, text=True, bufsize=1, encoding="utf-8",
                            errors="replace", creationflags=flags)


class WorkerProcess:
    """One worker run driven from a GUI or a test.

    Args:
        request: the request dict without ``output_dir`` (the run's own work folder provides it).
        python: the interpreter command, a path (``PythonSlicer``) or a list (a launcher prefix).
        launcher: ``launch(args, env_updates) -> Popen``; stdout must be text lines, stderr may be merged
            into it (``stderr`` None), as ``slicer.util.launchConsoleProcess`` does.
        temp_root: where the work folder (request, outputs, the worker's TMPDIR) is created.
        env: extra environment variables for the worker.
        log_lines: how many non-protocol lines (stderr, stray stdout) to keep.
        cleanup_paths: more folders owned by this run (e.g. exported input files), removed by ``cleanup()``.
    """

    def __init__(self, request: dict, python: str | list[str] | None = None, temp_root: str | None = None,
                 env: dict | None = None, log_lines: int = 2000, cleanup_paths: list | None = None,
                 launcher=None):
        self.request = dict(request)
        self.launcher = launcher or launch_subprocess
        self.python = [python or sys.executable] if isinstance(python, (str, type(None))) else list(python)
        self.temp_root = temp_root
        self.extra_env = dict(env or {})
        self.log = collections.deque(maxlen=log_lines)
        self.messages: queue.Queue = queue.Queue()
        self.final: dict | None = None
        self.process: subprocess.Popen | None = None
        self.work_dir: Path | None = None
        self._threads: list[threading.Thread] = []
        self.cleanup_paths = [Path(path) for path in cleanup_paths or []]

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> "WorkerProcess":
        self.work_dir = Path(tempfile.mkdtemp(prefix="mrisynthesis-run-", dir=self.temp_root))
        (self.work_dir / "tmp").mkdir()
        self.request["output_dir"] = str(self.work_dir / "outputs")
        request_path = self.work_dir / "request.json"
        request_path.write_text(json.dumps(self.request, indent=2), encoding="utf-8")
        env = {**self.extra_env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.work_dir / "tmp"),
               "TEMP": str(self.work_dir / "tmp"), "TMP": str(self.work_dir / "tmp")}
        env["PYTHONPATH"] = worker_pythonpath(self.extra_env.get("PYTHONPATH"))
        self.process = self.launcher([*self.python, "-m", "MRISynthesisLib.worker", str(request_path)], env)
        for stream, parse in ((self.process.stdout, True), (self.process.stderr, False)):
            if stream is None:  # stderr merged into stdout by the launcher
                continue
            thread = threading.Thread(target=self._read, args=(stream, parse), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream, parse: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            message = None
            if parse and line.startswith("{"):
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
            if isinstance(message, dict) and "stage" in message:
                if message["stage"] in ("done", "error", "cancelled"):
                    self.final = message
                self.messages.put(message)
            elif line:
                self.log.append(line)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def poll(self) -> list[dict]:
        """Protocol messages received since the last call (never blocks)."""
        messages = []
        while True:
            try:
                messages.append(self.messages.get_nowait())
            except queue.Empty:
                return messages

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the worker to exit and its output to be read; returns the exit code."""
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5.0)
        return code

    def cancel(self, grace_s: float = 0.5) -> None:
        """Stop the run: SIGTERM to the whole process tree, SIGKILL whatever is left after ``grace_s``,
        then remove the work folder (request, partial outputs, temp files)."""
        if self.process is not None and self.process.poll() is None:
            import psutil

            try:
                root = psutil.Process(self.process.pid)
                tree = [*root.children(recursive=True), root]
            except psutil.NoSuchProcess:
                tree = []
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.terminate()
            for proc in _wait_gone(tree, grace_s):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            _wait_gone(tree, grace_s)
        if self.process is not None:
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the work folder and ``cleanup_paths`` (call after the results were imported)."""
        for path in [self.work_dir, *self.cleanup_paths]:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------------ results
    def load_result(self) -> WorkerResult:
        """Read the files of a finished run back as volumes; ``InputError`` when the run did not succeed."""
        from .volume import read_volume

        final = self.final or {}
        if final.get("stage") != "done":
            raise InputError(final.get("message") or f"run ended without a result (exit code {self.returncode})",
                             "synthesis")
        return WorkerResult(
            outputs={name: read_volume(path, name) for name, path in final["outputs"].items()},
            uncertainty={name: read_volume(path, name) for name, path in final.get("uncertainty", {}).items()},
            lesions=read_volume(final["lesions"], "lesions") if final.get("lesions") else None,
            lesion_table=list(final.get("lesion_table") or []), summary=dict(final.get("summary") or {}))


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and cleaned; skip interpreter teardown (torch/MONAI take > 1 s to unload), so a
    # cancelled run ends within the GUI's grace period instead of being killed.
    os._exit(exit_code)
