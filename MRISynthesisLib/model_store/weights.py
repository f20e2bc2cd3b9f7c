"""Structural check of a ``.safetensors`` file without loading it into torch.

The file is opened with ``safetensors.safe_open`` (the library that later loads it), which checks the header
and that every tensor's byte range matches its dtype and shape and lies inside the file. A hand-written
header parser let through e.g. a header claiming 16 bytes of F32 over 8 bytes of data. sha256 already
guarantees it is the file the card describes; this check makes sure a file that merely has the right name and
hash in a hand-edited card is not accepted as weights.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def check_safetensors_file(path: str | Path) -> list[str]:
    """Raise ``InputError`` unless ``path`` is a well-formed safetensors file; return its tensor names."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        # framework="numpy": no torch needed; opening memory-maps the file and validates every header entry.
        with safe_open(str(path), framework="numpy") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"is not a safetensors file ({reason})", name=path.name) from None
