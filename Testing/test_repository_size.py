"""The extension repository stays under 100 MB including history (a Slicer extension is cloned by every
build machine): model weights are committed rarely, never re-committed on every training run.

The Slicer Extensions Index requires the *checked-out* repository, the ``.git`` folder plus the working tree,
to be <= 100 MB. History cannot be rewritten (a rewrite was refused), so every byte ever committed stays: only
new commits can help, by taking files out of the working tree. The myelin-psr UNet baseline (10.8 MB, a reference
for ``mrisynthesis evaluate``, not a product model) left the bundle for that reason; it is trained into the user
model cache by ``python -m MRISynthesisLib.training.train_baseline`` (README, Measured results).

Three measures: every blob reachable from any ref (``git rev-list --objects --all``) at its uncompressed size,
an upper bound of what history holds; the weight files among them; and what a fresh clone checks out, the
compressed size of every object as stored on disk plus the files of HEAD. Skipped outside a full git checkout
(a source archive or a shallow CI clone has no history to measure).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
HISTORY_BUDGET = 93 * MB   # everything ever committed, uncompressed; the hard limit is 100 MB (raised from 90 for
# stroke-dwi-adc 0.3.0's predictor, 2.9 MB: all history then ~92 MB)
# *.safetensors across history: the models bundled when it was set (~18 MB: myelin-psr, its UNet baseline, the lesion
# segmenter) plus the earlier versions history keeps (~48 MB, with myelin-psr 0.2.0 since 0.3.0 replaced it: 66.3 MB
# in all). Raised from 66 to 70 MB for that export (+1.2 dB on validation), then to 75 MB for the first stroke model
# (stroke-dwi-adc 0.2.0, 6.4 MB: a new task, not a re-export; history stays under 90 MB), then to 81 MB for
# myelin-psr 0.4.0 (5.9 MB; local-affine head: +0.75 / +0.34 dB clean / randomised and lesion MAE -29 % / -15 %
# on the held-out phantoms; all history then 88.2 MB of HISTORY_BUDGET). Removing the UNet baseline from the bundle
# frees nothing here: its blobs stay in history, which cannot be rewritten (the DEMIST-era myelin-psr 0.1.0 weights
# keep their 22.6 MB too). What is left fits a lesion-segmenter re-export (1.2 MB) but no other model; and the
# checkout budget below is tighter still: any new weights need smaller models or other files out of the tree.
# Raised to 84 MB for stroke-dwi-adc 0.3.0 (a new 2.9 MB predictor; its denoiser file is 0.2.0's, byte for byte, so
# git stores it once): ADC PSNR 18.9 -> 21.7 dB and normal-tissue ADC bias +0.15 -> +0.02 on held-out phantoms.
WEIGHTS_BUDGET = 84 * MB
# A fresh clone: the packed history (every object's compressed size on disk) plus the files HEAD checks out. The
# Extensions Index's hard limit is 100 MB for .git + working tree; 95 MB leaves 5 MB for a server packing history
# differently from this clone, the pack index and the rest of .git (~0.3 MB, not counted here). With the baseline
# bundled: 77.4 MB packed + 27.1 MB of files = 104.5 MB (a `git clone --no-local` measured 104.8 MB with du: over).
# Without it: 77.4 + 16.2 = 93.7 MB (94.0 MB with du). stroke-dwi-adc 0.3.0 adds ~3 MB (its new predictor in the
# pack and in the tree, less 0.2.0's predictor leaving the tree): the budget went from 95 to 97.5 MB, leaving 2.5 MB
# of margin to the hard limit and **no room for any further weights**: the next model needs weights that are not
# committed here (a download, which model_store.download supports) or other files out of the tree.
CHECKOUT_BUDGET = 97_500_000
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx")


def _git(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def require_full_checkout() -> None:
    """Skip unless ROOT is the top of a full (not shallow) git checkout of this repository."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        if Path(_git("rev-parse", "--show-toplevel").strip()).resolve() != ROOT.resolve():
            pytest.skip("not a git checkout of this repository")
        if _git("rev-parse", "--is-shallow-repository").strip() == "true":
            pytest.skip("shallow clone: the history is not here to measure")
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout")


def history_blobs() -> list[tuple[str, int, str]]:
    """(object id, size in bytes, path) of every blob reachable from any ref."""
    require_full_checkout()
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


def packed_history_bytes() -> int:
    """Compressed size on disk of every object reachable from any ref: in a pack, the (delta-)compressed entry,
    which is what ``git count-objects -v`` sums as ``size-pack`` after a clone; a loose object counts its zlib file,
    larger than its packed form, so local loose objects only make this an overestimate."""
    objects = _git("rev-list", "--objects", "--all")
    # %(rest) is needed: without it cat-file reads the whole "<id> <path>" line as the object name (missing)
    lines = _git("cat-file", "--batch-check=%(objectname) %(objectsize:disk) %(rest)", stdin=objects).splitlines()
    missing = [line for line in lines if line.split(" ")[1:2] == ["missing"]]
    assert not missing, f"objects git could not read: {missing[:3]}"
    return sum(int(line.split(" ")[1]) for line in lines)


def head_files() -> list[tuple[int, str]]:
    """(size in bytes, path) of every file a checkout of HEAD writes (the blobs of ``git ls-tree -r -l HEAD``)."""
    files = []
    for line in _git("ls-tree", "-r", "-l", "HEAD").splitlines():
        mode_type_id_size, path = line.split("\t", 1)
        _mode, kind, _object_id, size = mode_type_id_size.split()
        if kind == "blob":
            files.append((int(size), path))
    return files


def test_a_fresh_clone_checks_out_under_the_extensions_index_limit():
    """What a clone of HEAD occupies: packed history + checked-out files, under the 100 MB the Slicer Extensions
    Index allows (CHECKOUT_BUDGET keeps a margin). Measures the committed HEAD, not uncommitted changes."""
    require_full_checkout()
    files = head_files()
    packed, tree = packed_history_bytes(), sum(size for size, _path in files)
    largest = "\n".join(f"  {size / MB:7.1f} MB: {path}" for size, path in sorted(files, reverse=True)[:8])
    assert packed + tree < CHECKOUT_BUDGET, (
        f"a clone checks out {(packed + tree) / MB:.1f} MB ({packed / MB:.1f} MB packed history + {tree / MB:.1f} MB "
        f"of files at HEAD; budget {CHECKOUT_BUDGET / MB:.0f} MB, hard limit 100 MB). History cannot be rewritten: "
        f"take large files out of the tree (e.g. models into the user cache or a download) or shrink them. Largest "
        f"files at HEAD:\n{largest}")
