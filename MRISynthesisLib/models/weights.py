"""Structural check of a ``.safetensors`` file without loading it (and without torch).

Format: 8-byte little-endian header length N, N bytes of JSON ``{tensor: {dtype, shape, data_offsets}}``,
then the raw tensor bytes. Checking this at install time means a file that merely has the right name is
not accepted as weights; sha256 already guarantees it is the file the card describes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

HEADER_MAX_BYTES = 100 << 20  # safetensors itself refuses larger headers


def check_safetensors_file(path: str | Path) -> list[str]:
    """Raise ``InputError`` unless ``path`` is a well-formed safetensors file; return its tensor names."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InputError("is not a safetensors file (too short)", name=path.name)
        header_bytes = int.from_bytes(prefix, "little")
        if header_bytes > min(size - 8, HEADER_MAX_BYTES):
            raise InputError("is not a safetensors file (bad header length)", name=path.name)
        try:
            header = json.loads(handle.read(header_bytes).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError("is not a safetensors file (header is not JSON)", name=path.name) from None
    if not isinstance(header, dict):
        raise InputError("is not a safetensors file (header is not a JSON object)", name=path.name)
    data_bytes = size - 8 - header_bytes
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_bytes or "dtype" not in info or "shape" not in info):
            raise InputError(f"is not a valid safetensors file (tensor {name!r} has a bad entry)", name=path.name)
        names.append(name)
    return names
