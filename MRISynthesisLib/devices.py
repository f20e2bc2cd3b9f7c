"""Which devices a synthesis can run on, asked in a child process so a GUI never imports torch.

Child side: ``python -m MRISynthesisLib.worker --devices`` prints ``list_devices()`` as one protocol line
``{"stage": "devices", "devices": [{"id": "cpu", "label": "CPU"}, {"id": "cuda:0", ...}]}``.
Parent side: ``query_devices`` runs that command through a worker launcher and returns the list, so the
Slicer module lists GPUs without holding a CUDA context in its own process.
"""

from __future__ import annotations

import json
import sys

from .worker import launch_subprocess, worker_pythonpath


def list_devices() -> list[dict]:
    """Devices a synthesis can run on: CPU, each CUDA GPU (name, free/total memory), Apple MPS when usable."""
    devices = [{"id": "cpu", "label": "CPU"}]
    try:
        import torch
    except ImportError:
        return devices
    try:
        for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            free, total = torch.cuda.mem_get_info(index)
            devices.append({"id": f"cuda:{index}", "label": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                            "free_gb": round(free / 2**30, 1), "total_gb": round(total / 2**30, 1)})
    except Exception as error:  # a broken driver still leaves the CPU usable; say why GPUs are missing
        print(f"CUDA query failed: {error}", file=sys.stderr)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append({"id": "mps", "label": "Apple GPU (MPS)"})
    return devices


def query_devices(python: str | list[str] | None = None, launcher=None, timeout: float = 120.0) -> list[dict]:
    """Run ``worker --devices`` in a child process and return its device list (blocking; call off the GUI
    thread or from a timer). Raises ``RuntimeError`` with the child's output when it fails."""
    command = [python or sys.executable] if isinstance(python, (str, type(None))) else list(python)
    process = (launcher or launch_subprocess)([*command, "-m", "MRISynthesisLib.worker", "--devices"],
                                              {"PYTHONPATH": worker_pythonpath()})
    output, errors = process.communicate(timeout=timeout)
    for line in (output or "").splitlines():
        if line.startswith("{"):
            message = json.loads(line)
            if message.get("stage") == "devices":
                return message["devices"]
    said = (errors or output or "").strip()[-300:]
    raise RuntimeError(f"device query failed (exit code {process.returncode}): {said}")
