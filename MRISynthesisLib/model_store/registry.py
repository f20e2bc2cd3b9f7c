"""The model registry: a per-user cache of model folders plus the models bundled with the package.

Cache: ``$MRISYNTHESIS_HOME/models/<id>/`` (default ``~/.mrisynthesis/models/<id>/``); bundled models:
``MRISynthesisLib/model_store/bundled/<id>/``. The user cache wins when both hold an id. A bundled folder may
hold only a ``card.json`` whose files carry ``url`` entries: that model is *available* and
``mrisynthesis models install <id>`` downloads the weights, checked against the packaged card.

Installs are all-or-nothing: every file goes into a staging folder inside the cache, is checked against
the card's size and sha256 (and parsed as safetensors), then the folder is renamed into place. A failed
install leaves the cache as it was. Weights are safetensors only and are hashed again before every load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
import warnings
from pathlib import Path

from ..errors import InputError, ModelNotInstalledError
from .card import CARD_NAME, SHA256_PATTERN, WEIGHT_SUFFIX, ModelCard, is_valid_model_id
from .download import ProgressCallback, download, fetch_bytes, is_url, sha256_of_file
from .weights import check_safetensors_file

__all__ = ["ModelRegistry", "ModelCard", "default_home", "BUNDLED_DIR"]

HOME_ENV = "MRISYNTHESIS_HOME"
BUNDLED_DIR = Path(__file__).with_name("bundled")
_WORK_PREFIXES = (".install-", ".old-", ".removing-")  # hidden work folders inside the cache
_STALE_SECONDS = 3600.0
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".npy", ".npz")


def default_home() -> Path:
    """``$MRISYNTHESIS_HOME`` when set, else ``~/.mrisynthesis``."""
    env = os.environ.get(HOME_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".mrisynthesis"


def _path_of_file_url(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


class ModelRegistry:
    """Find, install, verify, load and remove models.

    Args:
        home: root folder; models go in ``home/models/<id>/``. Overrides ``$MRISYNTHESIS_HOME``.
        bundled_dir: folder of models shipped with the package (default ``MRISynthesisLib/model_store/bundled``).
    """

    def __init__(self, home: str | Path | None = None, bundled_dir: str | Path | None = None):
        if home is not None and not isinstance(home, (str, os.PathLike)):
            raise TypeError(f"home must be a path, got {type(home).__name__}")
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.bundled_dir = Path(bundled_dir) if bundled_dir is not None else BUNDLED_DIR

    @property
    def models_dir(self) -> Path:
        """The per-user cache folder (may not exist yet)."""
        return self.home / "models"

    def __repr__(self) -> str:
        return f"ModelRegistry(models_dir={str(self.models_dir)!r}, bundled_dir={str(self.bundled_dir)!r})"

    # --------------------------------------------------------------------------------------- lookup
    def _check_id(self, model_id: str) -> None:
        if not is_valid_model_id(model_id):
            raise InputError("is not a valid model id (lower-case letters, digits, '.', '_', '-')",
                             name=repr(model_id))

    def _user_card_path(self, model_id: str) -> Path:
        return self.models_dir / model_id / CARD_NAME

    def _bundled_card_path(self, model_id: str) -> Path:
        return self.bundled_dir / model_id / CARD_NAME

    def install_command(self, model_id: str) -> str:
        """The command a user runs to install ``model_id``."""
        if is_valid_model_id(model_id) and self._bundled_card_path(model_id).is_file():
            return f"mrisynthesis models install {model_id}"
        return "mrisynthesis models install <URL of its card.json, or a folder with card.json + .safetensors files>"

    def _not_installed(self, model_id: str) -> ModelNotInstalledError:
        return ModelNotInstalledError(f"model {model_id!r} is not installed; install it with: "
                                      f"{self.install_command(model_id)}")

    def is_installed(self, model_id: str) -> bool:
        """True when ``model_id`` is in the user cache or bundled with all its weight files."""
        if not is_valid_model_id(model_id):
            return False
        if self._user_card_path(model_id).is_file():
            return True
        if self._bundled_card_path(model_id).is_file():
            try:
                return not self._read_card(self._bundled_card_path(model_id), "bundled").missing_files()
            except InputError:
                return False
        return False

    def _read_card(self, path: Path, source: str) -> ModelCard:
        card = ModelCard.from_file(path)
        if card.id != path.parent.name:
            raise InputError(f"card id {card.id!r} does not match its folder {path.parent.name!r}", name=str(path))
        return dataclasses.replace(card, source=source)

    def card(self, model_id: str) -> ModelCard:
        """The card of an installed model, with ``folder`` and ``source`` set.

        Raises ``ModelNotInstalledError`` (naming the install command) when the model is not installed,
        ``InputError`` when its card is invalid.
        """
        self._check_id(model_id)
        if self._user_card_path(model_id).is_file():
            return self._read_card(self._user_card_path(model_id), "user")
        if self._bundled_card_path(model_id).is_file():
            card = self._read_card(self._bundled_card_path(model_id), "bundled")
            if not card.missing_files():
                return card
        raise self._not_installed(model_id)

    def list(self, include_available: bool = False) -> list[ModelCard]:
        """Installed models sorted by id (user cache over bundled); with ``include_available`` also the
        bundled cards whose weights still need ``mrisynthesis models install <id>``. Invalid folders are
        skipped with a warning (``verify`` reports them)."""
        cards: dict[str, ModelCard] = {}
        for root, source in ((self.bundled_dir, "bundled"), (self.models_dir, "user")):
            for folder in sorted(root.iterdir()) if root.is_dir() else []:
                if folder.name.startswith(".") or not (folder / CARD_NAME).is_file():
                    continue
                try:
                    card = self._read_card(folder / CARD_NAME, source)
                except InputError as error:
                    warnings.warn(f"skipping model folder {folder}: {error}", stacklevel=2)
                    continue
                if source == "user" or include_available or not card.missing_files():
                    cards[card.id] = card
        return [cards[key] for key in sorted(cards)]

    # --------------------------------------------------------------------------------------- verify / load
    def verify(self, model_id: str) -> ModelCard:
        """Check every weight file of an installed model against the card (presence, size, sha256).

        Returns the card; raises ``InputError`` listing every problem, ``ModelNotInstalledError`` when absent.
        """
        card = self.card(model_id)
        problems = []
        for entry in card.files:
            path = card.folder / entry.name
            if not path.is_file():
                problems.append(f"{entry.name} is missing")
            elif path.stat().st_size != entry.size:
                problems.append(f"{entry.name} has {path.stat().st_size} bytes, card says {entry.size}")
            elif sha256_of_file(path) != entry.sha256:
                problems.append(f"{entry.name} sha256 does not match the card (corrupt or modified)")
        declared = {entry.name for entry in card.files}
        for path in sorted(card.folder.iterdir()):
            if path.suffix.lower() in _PICKLE_SUFFIXES + (WEIGHT_SUFFIX,) and path.name not in declared:
                problems.append(f"unexpected weight-like file {path.name} (not in the card)")
        if problems:
            fix = ("remove it with 'mrisynthesis models remove " + model_id + "' and install it again"
                   if card.source == "user" else "reinstall MRISynthesis")
            raise InputError(f"failed verification: {'; '.join(problems)}; {fix}", name=f"model {model_id}")
        return card

    def load_state_dicts(self, model_id: str, device: str = "cpu") -> dict:
        """``{weight file stem: state dict of torch.Tensor}``, after ``verify`` passed for every file.

        Uses ``safetensors.torch.load_file`` only; nothing is unpickled.
        """
        card = self.verify(model_id)  # sha256 of every file before anything is loaded
        from safetensors.torch import load_file

        return {entry.stem: load_file(str(card.folder / entry.name), device=device) for entry in card.files}

    # --------------------------------------------------------------------------------------- remove
    def remove(self, model_id: str) -> Path:
        """Delete a model from the user cache; returns the removed folder. Bundled models cannot be removed."""
        self._check_id(model_id)
        target = self.models_dir / model_id
        if target.is_dir():
            # Rename first so no half-deleted folder is ever visible under the model id.
            trash = self.models_dir / f".removing-{model_id}-{uuid.uuid4().hex[:8]}"
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return target
        if self.is_installed(model_id):  # complete bundled model
            raise InputError("is bundled with MRISynthesis and cannot be removed", name=f"model {model_id}")
        raise ModelNotInstalledError(f"model {model_id!r} is not installed in {self.models_dir}; nothing to remove")

    def remove_all(self) -> list[str]:
        """Remove every model from the user cache (bundled models stay); returns the removed ids."""
        removed = [card.id for card in self.list() if card.source == "user"]
        for model_id in removed:
            self.remove(model_id)
        return removed

    # --------------------------------------------------------------------------------------- install
    def install(self, source: str | Path, sha256: str | None = None,
                progress: ProgressCallback | None = None) -> ModelCard:
        """Install a model into the user cache and return its card.

        Args:
            source: a bundled model id, a folder holding ``card.json`` + weights, a ``card.json`` path, or an
                ``http(s)://`` / ``file://`` URL of a ``card.json``. Weight files come from the card's ``url``
                entries or sit next to the card (relative URLs resolve against the card's location).
            sha256: optional pin: the sha256 of the ``card.json`` bytes must equal it.
            progress: ``progress(file_name, bytes_done, bytes_total)`` while copying/downloading.
        """
        raw, card_url, label, bundled = self._read_source(str(source))
        if sha256 is not None:
            pin = str(sha256).strip().lower()
            if not SHA256_PATTERN.match(pin):
                raise InputError("must be 64 hexadecimal characters", name="--sha256")
            actual = hashlib.sha256(raw).hexdigest()
            if actual != pin:
                raise InputError(f"card sha256 is {actual}, expected {pin}; refused", name=label)
        card = ModelCard.from_bytes(raw, label)
        if bundled and self.is_installed(card.id) and not self._user_card_path(card.id).is_file():
            return self.card(card.id)  # complete bundled model: nothing to do
        file_urls = {entry.name: self._file_url(entry, card_url) for entry in card.files}

        created = [p for p in (self.home, self.models_dir) if not p.exists()]
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._clean_work_folders()
        staging = Path(tempfile.mkdtemp(prefix=f".install-{card.id}-", dir=self.models_dir))
        try:
            for entry in card.files:
                download(file_urls[entry.name], staging / entry.name, expected_sha256=entry.sha256,
                         expected_size=entry.size, progress=progress)
                check_safetensors_file(staging / entry.name)
            (staging / CARD_NAME).write_bytes(raw)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700
            ModelCard.from_file(staging)  # re-validate what will be in the cache
            self._move_into_place(staging, card.id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in reversed(created):  # leave no trace of a failed first install
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        return self.card(card.id)

    def _read_source(self, source: str) -> tuple[bytes, str, str, bool]:
        """``(card bytes, card URL, label for messages, is a bundled id)`` of an install source."""
        if is_url(source):
            url = source + CARD_NAME if source.endswith("/") else source
            return fetch_bytes(url), url, url, False
        path = Path(source).expanduser()
        if path.exists():
            if path.is_dir():
                path = path / CARD_NAME
                if not path.is_file():
                    raise InputError(f"folder has no {CARD_NAME}", name=source)
            elif path.suffix.lower() != ".json":
                raise InputError(f"give the model folder or its {CARD_NAME}, not a {path.suffix or 'plain'} file",
                                 name=source)
            try:
                raw = path.read_bytes()
            except OSError as error:
                raise InputError(f"cannot be read ({error.strerror})", name=source) from None
            return raw, path.resolve().as_uri(), str(path), False
        if is_valid_model_id(source) and self._bundled_card_path(source).is_file():
            path = self._bundled_card_path(source)
            return path.read_bytes(), path.resolve().as_uri(), f"bundled model {source}", True
        raise InputError("is neither a bundled model id, an existing folder or card.json, nor an http(s):// URL",
                         name=source)

    @staticmethod
    def _file_url(entry, card_url: str) -> str:
        """Where to fetch ``entry``: a local sibling of a local card first, else its ``url``, else next to the card."""
        card_scheme = urllib.parse.urlsplit(card_url).scheme.lower()
        sibling = urllib.parse.urljoin(card_url, entry.name)
        if card_scheme == "file" and _path_of_file_url(sibling).is_file():
            return sibling
        if card_scheme == "file" and not entry.url:
            raise InputError(f"weight file {entry.name} is missing next to the card (and the card gives no url)",
                             name=str(_path_of_file_url(card_url)))
        url = urllib.parse.urljoin(card_url, entry.url) if entry.url else sibling
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if card_scheme != "file" and scheme not in ("http", "https"):
            # A downloaded card must not make us copy arbitrary local files into the cache.
            raise InputError(f"files: {entry.name} has URL {url!r}; a downloaded card may only point to http(s) URLs",
                             name=card_url)
        return url

    def _move_into_place(self, staging: Path, model_id: str) -> None:
        target = self.models_dir / model_id
        old = None
        if target.exists():
            old = self.models_dir / f".old-{model_id}-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            if old is not None:
                os.rename(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _clean_work_folders(self, max_age: float = _STALE_SECONDS) -> None:
        """Delete work folders left behind by interrupted installs/removals (older than ``max_age`` s)."""
        if not self.models_dir.is_dir():
            return
        now = time.time()
        for folder in self.models_dir.iterdir():
            if folder.name.startswith(_WORK_PREFIXES) and now - folder.stat().st_mtime >= max_age:
                shutil.rmtree(folder, ignore_errors=True)
