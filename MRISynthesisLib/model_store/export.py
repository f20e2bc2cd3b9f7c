"""Write a model folder (``card.json`` + ``<stem>.safetensors``) from trained state dicts."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from ..atomic import atomic_write, atomic_write_text
from ..errors import InputError
from .card import CARD_NAME, WEIGHT_SUFFIX, ModelCard, validate_card
from .download import sha256_of_file

MAX_FILE_MB = 25.0  # repository rule: every weight file <= 25 MB
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_model(folder: str | Path, card_fields: Mapping, state_dicts: Mapping[str, Mapping],
                max_file_mb: float = MAX_FILE_MB) -> ModelCard:
    """Save ``state_dicts`` as ``<stem>.safetensors`` in ``folder`` and write a validated ``card.json``.

    Args:
        folder: model folder (created if needed); its name should be the model id to install it as-is.
        card_fields: every card field except ``files`` (computed here); ``created`` defaults to now (UTC).
        state_dicts: ``{stem: {parameter name: torch.Tensor}}``, e.g. ``{"autoencoder_psr": ae.state_dict()}``.
        max_file_mb: refuse (before writing) any file whose tensors exceed this many MB.

    Returns the card with ``folder`` set. The card is validated before any file is written.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    if "files" in card_fields:
        raise InputError("must not contain 'files'; they are computed from state_dicts", name="card_fields")
    if not state_dicts:
        raise InputError("is empty; a model needs at least one network", name="state_dicts")
    tensors_by_stem = {}
    for stem, state in state_dicts.items():
        if not isinstance(stem, str) or not _STEM.match(stem):
            raise InputError("is not a valid file stem (letters, digits, '_', '.', '-')", name=repr(stem))
        tensors = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise InputError(f"{key} is a {type(value).__name__}, not a torch.Tensor", name=f"state_dicts[{stem}]")
            # clone: safetensors refuses tensors sharing storage and non-contiguous ones
            tensors[key] = value.detach().to("cpu").contiguous().clone()
        megabytes = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
        if megabytes > max_file_mb:
            raise InputError(f"is {megabytes:.1f} MB, over the {max_file_mb:g} MB limit per weight file; use fewer "
                             "channels, half precision, or split the network", name=f"state_dicts[{stem}]")
        tensors_by_stem[stem] = tensors

    fields = dict(card_fields)
    fields.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Validate with placeholder hashes first, so a bad card writes nothing.
    placeholder = [{"name": f"{stem}{WEIGHT_SUFFIX}", "sha256": "0" * 64, "size": 8} for stem in tensors_by_stem]
    try:
        plain = json.loads(json.dumps({**fields, "files": placeholder}))
    except (TypeError, ValueError) as error:
        raise InputError(f"is not JSON-serialisable ({error})", name="card_fields") from None
    validate_card(plain, name="card_fields")

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for stem, tensors in tensors_by_stem.items():
        path = folder / f"{stem}{WEIGHT_SUFFIX}"
        atomic_write(path, lambda temp, tensors=tensors: save_file(tensors, temp, metadata={"model": fields["id"]}))
        files.append({"name": path.name, "sha256": sha256_of_file(path), "size": path.stat().st_size})
    data = json.loads(json.dumps({**fields, "files": files}))  # plain JSON types (tuples -> lists)
    card = ModelCard.from_dict(data, name=str(folder / CARD_NAME))
    text = json.dumps(data, indent=2) + "\n"
    atomic_write_text(folder / CARD_NAME, text)
    return dataclasses.replace(card, folder=folder)
