"""Streamed downloads (``http://``, ``https://``, ``file://``) with sha256 computed while streaming.

The file is written to a temporary name next to its destination and moved into place with
``os.replace`` only when size and sha256 match, so a destination never holds a partial or tampered file.
``urllib`` honours the usual ``HTTP(S)_PROXY`` / ``NO_PROXY`` environment variables.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import InputError

# progress(file_name, bytes_done, bytes_total_or_None)
ProgressCallback = Callable[[str, int, "int | None"], None]

SCHEMES = ("http", "https", "file")
CHUNK_BYTES = 1 << 20
CARD_MAX_BYTES = 1 << 20  # a card is a few kB; anything larger is not a card
USER_AGENT = f"mrisynthesis/{__version__}"


def is_url(text: str) -> bool:
    """True when ``text`` starts with a scheme we download from."""
    return urllib.parse.urlsplit(str(text)).scheme.lower() in SCHEMES and "://" in str(text)


def _open(url: str, timeout: float):
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(f"unsupported URL scheme {scheme!r} (use http, https or file)", name=url)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise InputError(f"download failed: HTTP {error.code} {error.reason}", name=url) from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or str(error.reason)
        raise InputError(f"cannot be reached ({reason}); check the address, the network or proxy (HTTPS_PROXY), "
                         "or download the model folder by other means and install it from disk", name=url) from None
    except (TimeoutError, OSError) as error:
        raise InputError(f"cannot be reached ({error})", name=url) from None


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if response.headers else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def fetch_bytes(url: str, max_bytes: int = CARD_MAX_BYTES, timeout: float = 60.0) -> bytes:
    """Read a small resource (a card) fully into memory, refusing anything over ``max_bytes``."""
    with _open(url, timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"is larger than {max_bytes} bytes; this is not a model card", name=url)
    return data


def download(url: str, destination: str | Path, *, expected_sha256: str | None = None,
             expected_size: int | None = None, progress: ProgressCallback | None = None,
             timeout: float = 60.0) -> tuple[str, int]:
    """Stream ``url`` into ``destination``; return ``(sha256, size)`` of what was written.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        destination: final file path; its folder must exist. Replaced atomically on success.
        expected_sha256: when given, a different digest raises ``InputError`` and nothing is written.
        expected_size: when given, a different size raises ``InputError`` (checked while streaming, so an
            oversized or endless response is cut off early).
        progress: called as ``progress(name, bytes_done, bytes_total)`` after every chunk.
        timeout: seconds without data before giving up.
    """
    destination = Path(destination)
    name = destination.name
    digest = hashlib.sha256()
    done = 0
    handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as out, _open(url, timeout) as response:
            total = expected_size if expected_size is not None else _content_length(response)
            if progress:
                progress(name, 0, total)
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (TimeoutError, OSError) as error:
                    raise InputError(f"download interrupted after {done} bytes ({error})", name=url) from None
                if not chunk:
                    break
                done += len(chunk)
                if expected_size is not None and done > expected_size:
                    raise InputError(f"is larger than the {expected_size} bytes stated in the model card; refused",
                                     name=url)
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(name, done, total)
            out.flush()
            os.fsync(out.fileno())
        if expected_size is not None and done != expected_size:
            raise InputError(f"has {done} bytes but the model card states {expected_size}; refused", name=url)
        sha256 = digest.hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256.lower():
            raise InputError(f"sha256 {sha256} does not match the model card ({expected_sha256}); the file is "
                             "corrupt or was tampered with, refused", name=url)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return sha256, done


def sha256_of_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TqdmProgress:
    """A ``ProgressCallback`` drawing one tqdm bar per file on stderr; use as a context manager."""

    def __init__(self, file=None):
        self._file = file or sys.stderr
        self._bars: dict = {}

    def __call__(self, name: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                                          file=self._file, leave=True)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
