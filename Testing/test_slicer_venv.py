"""A Python with only what Slicer bundles (numpy, scipy, SimpleITK, pillow, packaging, requests) + torch +
``MRISynthesis/Resources/requirements.txt`` runs a synthesis through the worker, the backend imported from the
source folder as the installed extension does (not pip-installed). Catches a runtime import missing from
requirements.txt (e.g. einops, which MONAI's attention blocks need). The venv is cached per requirements."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from MRISynthesisLib import worker

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "MRISynthesis" / "Resources" / "requirements.txt"
SLICER_BUNDLED = ["numpy", "scipy", "SimpleITK", "pillow", "packaging", "requests"]
TORCH = "torch==2.13.0"


def slicer_like_python() -> Path:
    key = hashlib.sha256((REQUIREMENTS.read_text() + TORCH + " ".join(SLICER_BUNDLED)).encode()).hexdigest()[:12]
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / f"mrisynthesis-slicer-venv-{key}"
    python = folder / "bin" / "python"
    if not (folder / ".complete").is_file():
        venv.create(folder, with_pip=True, clear=True)
        for args in (SLICER_BUNDLED, [TORCH], ["-r", str(REQUIREMENTS)]):
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], check=True, timeout=1200)
        (folder / ".complete").touch()
    return python


def test_requirements_suffice_for_a_synthesis_in_a_slicer_like_python(tiny_model_home, tmp_path):
    from test_worker import request

    import numpy as np

    from MRISynthesisLib.volume import Volume, write_volume

    python = slicer_like_python()
    probe = subprocess.run([str(python), "-c", "import MRISynthesisLib"], capture_output=True, cwd=tmp_path)
    assert probe.returncode != 0  # the backend itself is not installed there: it comes from PYTHONPATH
    shape = (20, 24, 24)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (z / 0.8) ** 2 + (y / 0.85) ** 2 + (x / 0.75) ** 2 < 1
    inputs = {name: str(write_volume(Volume(np.where(brain, base + 150 * x + 40 * y, 0).astype(np.float32),
                                            origin=(-24.0, -24.0, -20.0), spacing=(2.0, 2.0, 2.0)),
                                     tmp_path / f"{name}.nrrd"))
              for name, base in (("t1w", 600.3), ("flair", 400.7))}
    process = worker.WorkerProcess(request(inputs), python=str(python), temp_root=str(tmp_path),
                                   env={"MRISYNTHESIS_HOME": str(tiny_model_home)}).start()
    code = process.wait(600)
    assert code == worker.EXIT_OK, (process.poll(), list(process.log)[-30:])
    assert process.load_result().outputs["psr"].shape == shape
    process.cleanup()
