"""Atomic file writes: the one way this package writes a file that others may read.

The content goes to a temporary file in the destination's folder, which is renamed over the destination
only when writing succeeded, so a reader never sees a half-written file and a failure leaves none behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)``, then move the temporary file over ``path``.

    The file gets the permissions of a normally created file (0666 minus the umask); ``mkstemp``
    alone would leave it readable by its owner only.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) or ".part"  # keep .nii.gz etc.: writers pick the format from it
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
