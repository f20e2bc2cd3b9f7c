"""The worker's JSON-lines protocol end to end: real subprocesses, real files, a real (tiny, untrained) model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from MRISynthesisLib import worker
from MRISynthesisLib.volume import Volume, write_volume

SHAPE = (20, 24, 24)  # (z, y, x) at 2 mm: small enough for 2 CPU cores


@pytest.fixture(scope="module")
def model_home(tiny_model_home) -> Path:
    """An MRISYNTHESIS_HOME holding a tiny randomly initialised myelin-psr model (see conftest.py)."""
    return tiny_model_home


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """T1w and FLAIR-like volumes: a bright ellipsoid 'brain' with a few hyperintense FLAIR spots."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = (z / 0.8) ** 2 + (y / 0.85) ** 2 + (x / 0.75) ** 2 < 1
    t1w = np.where(brain, 600 + 200 * (x > 0), 0) + rng.normal(0, 10, SHAPE)
    flair = np.where(brain, 400 + 80 * (y > 0), 0) + rng.normal(0, 10, SHAPE)
    flair[9:11, 10:12, 8:10] += 600
    geometry = dict(origin=(-24.0, -24.0, -20.0), spacing=(2.0, 2.0, 2.0))
    paths = {}
    for name, array in (("t1w", t1w), ("flair", flair)):
        paths[name] = str(write_volume(Volume(array.astype(np.float32), **geometry), folder / f"{name}.nii.gz"))
    return paths


def request(inputs, steps=2, **extra) -> dict:
    return {"task": "myelin-psr", "inputs": dict(inputs), "reference": "flair",
            "options": {"device": "cpu", "steps": steps, "samples": 1, "seed": 0, "output_format": "nrrd"}, **extra}


def run_to_end(process: worker.WorkerProcess, timeout=240) -> tuple[int, list[dict]]:
    process.start()
    code = process.wait(timeout)
    return code, process.poll()


def test_successful_run_streams_progress_and_loads_result(model_home, inputs, tmp_path):
    process = worker.WorkerProcess(request(inputs, steps=3), temp_root=str(tmp_path),
                                   env={"MRISYNTHESIS_HOME": str(model_home)})
    code, messages = run_to_end(process)
    assert code == worker.EXIT_OK, (messages, list(process.log)[-20:])
    stages = [m["stage"] for m in messages]
    assert stages[-1] == "done" and "sample" in stages
    sampling = [m for m in messages if m["stage"] == "sample"]
    assert [m["step"] for m in sampling][-1] == 3 and all(m["total"] == 3 for m in sampling)
    assert sampling[-1]["percent"] == 100.0
    overall = [m["overall"] for m in messages if "overall" in m]
    assert overall == sorted(overall) and 0 <= overall[0] and overall[-1] <= 100
    assert any(m["eta_s"] is not None for m in sampling[1:])

    result = process.load_result()
    assert set(result.outputs) == {"psr"}
    assert result.outputs["psr"].shape == SHAPE
    assert np.isfinite(result.outputs["psr"].array).all()
    assert result.summary["task"] == "myelin-psr"
    process.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_worker_prints_only_json_lines_via_cli(model_home, inputs, tmp_path):
    outputs = tmp_path / "out"
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps({**request(inputs), "output_dir": str(outputs)}))
    completed = subprocess.run([sys.executable, "-m", "MRISynthesisLib", "worker", str(request_path)],
                               capture_output=True, text=True, timeout=240,
                               env={**__import__("os").environ, "MRISYNTHESIS_HOME": str(model_home)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    messages = [json.loads(line) for line in lines]  # every stdout line is JSON
    assert messages[-1]["stage"] == "done"
    assert Path(messages[-1]["outputs"]["psr"]).is_file()


@pytest.mark.parametrize("change, code, fragment", [
    (lambda r: r.update(task="no-such-task"), worker.EXIT_BAD_INPUT, "unknown task"),
    (lambda r: r["inputs"].update(flair="/nonexistent/flair.nii.gz"), worker.EXIT_BAD_INPUT, "file not found"),
    (lambda r: r["options"].update(steps="ten"), worker.EXIT_BAD_INPUT, "must be int"),
])
def test_bad_input_exit_code_2(inputs, tmp_path, change, code, fragment):
    bad = request(inputs)
    change(bad)
    process = worker.WorkerProcess(bad, temp_root=str(tmp_path))
    returned, messages = run_to_end(process)
    assert returned == code
    assert messages[-1]["stage"] == "error" and fragment in messages[-1]["message"]
    assert messages[-1]["exit_code"] == code
    assert not any(Path(process.work_dir, "outputs").glob("*"))
    process.cleanup()


def test_model_not_installed_exit_code_3(inputs, tmp_path):
    # missing-contrast has no bundled model: with an empty cache it must be reported, with the install command.
    process = worker.WorkerProcess({**request(inputs), "task": "missing-contrast", "reference": None},
                                   temp_root=str(tmp_path / "runs"), env={"MRISYNTHESIS_HOME": str(tmp_path / "empty")})
    (tmp_path / "runs").mkdir()
    returned, messages = run_to_end(process)
    assert returned == worker.EXIT_MODEL_MISSING, messages
    assert messages[-1]["stage"] == "error" and "mrisynthesis models install" in messages[-1]["message"]
    process.cleanup()


def test_cancel_kills_process_tree_within_2s_and_leaves_nothing(model_home, inputs, tmp_path):
    # A shell launcher in front of Python (like Slicer's PythonSlicer launcher) makes a real process tree.
    launcher = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable]
    runs = tmp_path / "runs"
    runs.mkdir()
    process = worker.WorkerProcess(request(inputs, steps=400), python=launcher, temp_root=str(runs),
                                   env={"MRISYNTHESIS_HOME": str(model_home)}).start()
    deadline = time.monotonic() + 240
    seen = []
    while not any(m["stage"] == "sample" and m["step"] >= 1 for m in seen):
        assert process.running and time.monotonic() < deadline, (seen, list(process.log)[-20:])
        seen += process.poll()
        time.sleep(0.05)
    tree = [process.process.pid] + [child.pid for child in psutil.Process(process.process.pid).children(recursive=True)]
    assert len(tree) >= 2  # launcher + Python worker
    started = time.monotonic()
    process.cancel()
    assert time.monotonic() - started < 2.0
    for pid in tree:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert process.returncode is not None
    assert list(runs.iterdir()) == []  # no request, output, partial or temp file left


def test_sigterm_gives_exit_code_130_and_no_outputs(model_home, inputs, tmp_path):
    process = worker.WorkerProcess(request(inputs, steps=400), temp_root=str(tmp_path),
                                   env={"MRISYNTHESIS_HOME": str(model_home)}).start()
    deadline = time.monotonic() + 240
    seen = []
    while not any(m["stage"] == "sample" for m in seen):
        assert process.running and time.monotonic() < deadline, (seen, list(process.log)[-20:])
        seen += process.poll()
        time.sleep(0.05)
    process.process.terminate()  # what a graceful cancel sends
    assert process.wait(10) == worker.EXIT_CANCELLED
    assert process.poll()[-1]["stage"] == "cancelled"
    assert not any(Path(process.work_dir, "outputs").rglob("*"))
    assert not any(Path(process.work_dir, "tmp").rglob("*"))
    process.cleanup()


# ----------------------------------------------------------------------------------------- device query
class FakeDeviceChild:
    """What a launcher returns (``communicate``/``returncode``), for a child that printed ``output``."""

    def __init__(self, output: str, returncode: int = 0):
        self.output, self.returncode = output, returncode

    def communicate(self, timeout=None):
        return self.output, None  # stderr merged into stdout, as slicer.util.launchConsoleProcess does


def test_devices_are_asked_from_the_worker_and_parsed_amid_log_lines():
    from MRISynthesisLib import devices

    launched = []
    line = json.dumps({"stage": "devices", "devices": [{"id": "cpu", "label": "CPU"}]})
    found = devices.query_devices("python-x", lambda args, env: launched.append((args, env))
                                  or FakeDeviceChild(f"CUDA query failed: no driver\n{line}\n"))
    assert found == [{"id": "cpu", "label": "CPU"}]
    (args, env), = launched
    assert args == ["python-x", "-m", "MRISynthesisLib.worker", "--devices"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == worker.package_root()


def test_failed_device_query_raises_with_the_childs_output():
    from MRISynthesisLib import devices

    with pytest.raises(RuntimeError, match=r"exit code 1\).*No module named 'torch'"):
        devices.query_devices(["py"], lambda args, env: FakeDeviceChild("No module named 'torch'\n", 1))


def test_worker_devices_flag_prints_one_protocol_line(capsys):
    assert worker.main(["--devices"]) == worker.EXIT_OK
    message = json.loads(capsys.readouterr().out)
    assert message["stage"] == "devices" and message["devices"][0] == {"id": "cpu", "label": "CPU"}
