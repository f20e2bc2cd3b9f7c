"""Model cards: what a model is, what it expects, and the exact weight files it consists of.

A model folder holds ``card.json`` plus one ``<stem>.safetensors`` per network. The card is validated
against ``card.schema.json`` (see ``schema.py``) and a few cross-field rules the schema cannot state.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import InputError
from .schema import load_schema, schema_errors

SCHEMA_PATH = Path(__file__).with_name("card.schema.json")
CARD_NAME = "card.json"
WEIGHT_SUFFIX = ".safetensors"
MODEL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@lru_cache(maxsize=1)
def card_schema() -> dict:
    """The JSON schema of ``card.json`` (parsed once)."""
    return load_schema(SCHEMA_PATH)


def is_valid_model_id(model_id: str) -> bool:
    """True for ids that are safe folder names (no ``/``, no ``..``, lower case)."""
    return isinstance(model_id, str) and MODEL_ID_PATTERN.match(model_id) is not None and ".." not in model_id


@dataclass(frozen=True)
class ModelFile:
    """One weight file of a model.

    Args:
        name: file name, always ``<stem>.safetensors``; the stem is the state-dict key.
        sha256: lower-case hex digest of the whole file.
        size: size in bytes.
        url: optional download location; relative URLs resolve against the card's URL.
    """

    name: str
    sha256: str
    size: int
    url: str | None = None

    @property
    def stem(self) -> str:
        return self.name[: -len(WEIGHT_SUFFIX)]

    def to_dict(self) -> dict:
        data = {"name": self.name, "sha256": self.sha256, "size": self.size}
        if self.url:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class ModelCard:
    """A validated ``card.json``.

    ``folder`` and ``source`` are not part of the JSON: they say where the registry found the card
    (``source`` is ``"user"`` for the per-user cache, ``"bundled"`` for models shipped in the package,
    ``""`` for a card read from elsewhere).
    """

    id: str
    version: str
    task: str
    title: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    spacing: tuple[float, float, float]
    multiple: int
    normalisation: dict
    architecture: dict
    files: tuple[ModelFile, ...]
    licence: str
    description: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = ""
    folder: Path | None = field(default=None, compare=False)
    source: str = field(default="", compare=False)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, name: str = CARD_NAME) -> "ModelCard":
        """Validate ``data`` (parsed JSON) and build the card; ``name`` labels errors (a path or URL)."""
        validate_card(data, name)
        files = tuple(ModelFile(f["name"], f["sha256"], int(f["size"]), f.get("url")) for f in data["files"])
        return cls(
            id=data["id"], version=data["version"], task=data["task"], title=data["title"],
            inputs=tuple(data["inputs"]), outputs=tuple(data["outputs"]),
            spacing=tuple(float(s) for s in data["spacing"]), multiple=int(data["multiple"]),
            normalisation=data["normalisation"], architecture=data["architecture"], files=files,
            licence=data["licence"], description=data.get("description", ""),
            training=data.get("training", {}), metrics=data.get("metrics", {}), created=data.get("created", ""),
        )

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = CARD_NAME) -> "ModelCard":
        """Parse and validate the bytes of a ``card.json``."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError("is not a UTF-8 text file (expected a card.json)", name=name) from None
        except json.JSONDecodeError as error:
            raise InputError(f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})",
                             name=name) from None
        return cls.from_dict(data, name)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelCard":
        """Read a ``card.json`` (or a model folder containing one); ``folder`` is set to its folder."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise InputError("file not found", name=str(path)) from None
        except OSError as error:
            raise InputError(f"cannot be read ({error.strerror})", name=str(path)) from None
        return dataclasses.replace(cls.from_bytes(raw, str(path)), folder=path.parent)

    def to_dict(self) -> dict:
        """The JSON content of the card (without ``folder``/``source``)."""
        data = {
            "id": self.id, "version": self.version, "task": self.task, "title": self.title,
            "description": self.description, "inputs": list(self.inputs), "outputs": list(self.outputs),
            "spacing": list(self.spacing), "multiple": self.multiple, "normalisation": self.normalisation,
            "architecture": self.architecture, "files": [f.to_dict() for f in self.files],
            "licence": self.licence, "training": self.training, "metrics": self.metrics, "created": self.created,
        }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    # ----------------------------------------------------------------------------------------------
    @property
    def total_size(self) -> int:
        """Bytes of all weight files together."""
        return sum(f.size for f in self.files)

    def file(self, stem: str) -> ModelFile:
        """The weight file whose stem (state-dict key) is ``stem``."""
        for entry in self.files:
            if entry.stem == stem:
                return entry
        raise InputError(f"has no weight file {stem!r} (has {', '.join(f.stem for f in self.files)})",
                         name=f"model {self.id}")

    @property
    def input_method(self) -> str:
        """How inputs become network channels (``preprocess.INPUT_METHODS``)."""
        return str(self.normalisation["inputs"]["method"])

    @property
    def input_percentiles(self) -> tuple[float, float]:
        """``(low, high)`` percentiles of the ``"percentile"`` method (1-99 when the card has none)."""
        inputs = self.normalisation["inputs"]
        return float(inputs.get("low", 1.0)), float(inputs.get("high", 99.0))

    def output_affine(self, output: str) -> tuple[float, float]:
        """``(scale, offset)`` with physical = normalised * scale + offset for output ``output``."""
        entry = self.normalisation["outputs"][output]
        return float(entry["scale"]), float(entry["offset"])

    def missing_files(self) -> list[str]:
        """Names of weight files absent from ``folder`` (all of them when ``folder`` is None)."""
        if self.folder is None:
            return [f.name for f in self.files]
        return [f.name for f in self.files if not (self.folder / f.name).is_file()]


def validate_card(data: Any, name: str = CARD_NAME) -> None:
    """Raise ``InputError`` naming ``name`` and every problem when ``data`` is not a valid card."""
    if not isinstance(data, dict):
        raise InputError(f"must be a JSON object, got {type(data).__name__}", name=name)
    # Refuse pickle-based formats with a message that says why, before the generic pattern error.
    for index, entry in enumerate(data.get("files") or []):
        file_name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(file_name, str) and not file_name.endswith(WEIGHT_SUFFIX):
            raise InputError(f"files[{index}].name: {file_name!r} is not a {WEIGHT_SUFFIX} file; only safetensors "
                             "weights are accepted (pickle-based .pt/.pth/.ckpt/.bin files can run code when loaded)",
                             name=name)
    problems = schema_errors(data, card_schema())
    if not problems:
        problems = _cross_field_problems(data)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"invalid model card: {shown}", name=name)


def _cross_field_problems(data: dict) -> list[str]:
    problems = []
    if ".." in data["id"]:
        problems.append("id: must not contain '..'")
    stems = [f["name"][: -len(WEIGHT_SUFFIX)] for f in data["files"]]
    if len(set(stems)) != len(stems):
        problems.append("files: file names must be unique")
    missing = [o for o in data["outputs"] if o not in data["normalisation"]["outputs"]]
    if missing:
        problems.append(f"normalisation.outputs: no scale/offset for output(s) {', '.join(missing)}")
    extra = [o for o in data["normalisation"]["outputs"] if o not in data["outputs"]]
    if extra:
        problems.append(f"normalisation.outputs: {', '.join(extra)} not listed in outputs")
    inputs_norm = data["normalisation"]["inputs"]
    if inputs_norm["method"] == "percentile":
        low, high = inputs_norm.get("low"), inputs_norm.get("high")
        if low is None or high is None or not low < high:
            problems.append("normalisation.inputs: percentile needs 'low' < 'high'")
    return problems
