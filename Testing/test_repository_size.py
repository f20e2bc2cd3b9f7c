"""The extension repository stays under 100 MB including history (a Slicer extension is cloned by every
build machine): model weights are committed rarely, never re-committed on every training run.

Measured on every blob reachable from any ref (``git rev-list --objects --all``), at its uncompressed size,
an upper bound of what a clone transfers. Skipped outside a full git checkout (a source archive or a shallow
CI clone has no history to measure).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
HISTORY_BUDGET = 90 * MB   # everything ever committed; the hard limit is 100 MB
# *.safetensors across history: today's bundled models (~18 MB: myelin-psr, its UNet baseline, the lesion segmenter)
# plus the earlier versions history keeps (~48 MB, with myelin-psr 0.2.0 since 0.3.0 replaced it: 66.3 MB in all).
# Raised from 66 to 70 MB for that export (+1.2 dB on validation), then to 75 MB for the first stroke model
# (stroke-dwi-adc 0.2.0, 6.4 MB: a new task, not a re-export; history stays under 90 MB), then to 81 MB for
# myelin-psr 0.4.0 (5.9 MB; local-affine head: +0.75 / +0.34 dB clean / randomised and lesion MAE -29 % / -15 %
# on the held-out phantoms; all history then 88.2 MB of HISTORY_BUDGET). What is left fits a lesion-segmenter re-export (1.2 MB) but no
# other model: the next re-export needs history rewritten (the DEMIST-era myelin-psr 0.1.0 weights hold 22.6 MB)
# or smaller models.
WEIGHTS_BUDGET = 81 * MB
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx")


def _git(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def history_blobs() -> list[tuple[str, int, str]]:
    """(object id, size in bytes, path) of every blob reachable from any ref."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        if Path(_git("rev-parse", "--show-toplevel").strip()).resolve() != ROOT.resolve():
            pytest.skip("not a git checkout of this repository")
        if _git("rev-parse", "--is-shallow-repository").strip() == "true":
            pytest.skip("shallow clone: the history is not here to measure")
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout")
    objects = _git("rev-list", "--objects", "--all")
    blobs = []
    for line in _git("cat-file", "--batch-check=%(objecttype) %(objectname) %(objectsize) %(rest)",
                     stdin=objects).splitlines():
        kind, name, size, *path = line.split(" ", 3)
        if kind == "blob":
            blobs.append((name, int(size), path[0] if path else ""))
    return blobs


def describe(blobs) -> str:
    versions = collections.defaultdict(list)
    for _name, size, path in blobs:
        versions[path].append(size)
    rows = sorted(versions.items(), key=lambda item: -sum(item[1]))[:10]
    return "\n".join(f"  {sum(sizes) / MB:7.1f} MB in {len(sizes)} version(s): {path}" for path, sizes in rows)


def test_history_stays_under_the_repository_budget():
    blobs = history_blobs()
    total = sum(size for _name, size, _path in blobs)
    assert total < HISTORY_BUDGET, (f"history holds {total / MB:.1f} MB (budget {HISTORY_BUDGET / MB:.0f} MB); "
                                    f"largest:\n{describe(blobs)}")


def test_model_weights_are_not_recommitted():
    weights = [blob for blob in history_blobs() if blob[2].lower().endswith(WEIGHT_SUFFIXES)]
    total = sum(size for _name, size, _path in weights)
    assert total < WEIGHTS_BUDGET, (f"weights in history: {total / MB:.1f} MB (budget {WEIGHTS_BUDGET / MB:.0f} MB);"
                                    f" every re-committed weight file stays in history forever:\n{describe(weights)}")
