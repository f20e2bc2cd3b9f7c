"""Resumable checkpoints without pickle: weights, EMA, optimizer state and RNG as safetensors, the rest JSON.

Layout of ``<run>/<stage>/checkpoint/``: ``<stem>.safetensors`` per trained network, ``ema.safetensors``,
``optimizer.safetensors`` and ``state.json`` (step, optimizer hyper-parameters, anything JSON). ``state.json``
is written last, so a checkpoint without it (interrupted write) is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_write, atomic_write_text

STATE_NAME = "state.json"


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` as a safetensors file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda temporary: save_file(tensors, temporary))


def atomic_write_json(data: dict, path: Path) -> None:
    """Write ``data`` as JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2))


class EMA:
    """Exponential moving average of the trainable parameters of named modules (``stem.parameter`` keys).

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not stuck at init.
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float = 0.999):
        self.decay = float(decay)
        self.parameters = {f"{stem}.{name}": p for stem, m in modules.items()
                           for name, p in m.named_parameters() if p.requires_grad}
        self.shadow = {key: p.detach().clone() for key, p in self.parameters.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for key, parameter in self.parameters.items():
            self.shadow[key].lerp_(parameter.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        for key, parameter in self.parameters.items():
            parameter.copy_(self.shadow[key])


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state dict into tensors (``state.<index>.<name>``) and JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"state.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer, ema: EMA, state: dict) -> None:
    """Write a resumable checkpoint (``state`` must hold ``step``; JSON types only)."""
    folder = Path(folder)
    (folder / STATE_NAME).unlink(missing_ok=True)
    for stem, module in modules.items():
        atomic_save_tensors(module.state_dict(), folder / f"{stem}.safetensors")
    atomic_save_tensors(ema.shadow, folder / "ema.safetensors")
    tensors, groups = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_save_tensors(tensors, folder / "optimizer.safetensors")
    atomic_write_json({**state, "optimizer_param_groups": groups}, folder / STATE_NAME)


def load_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer, ema: EMA) -> dict | None:
    """Restore a checkpoint written by ``save_checkpoint``; returns its state, or None when there is none."""
    folder = Path(folder)
    if not (folder / STATE_NAME).is_file():
        return None
    state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    for stem, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{stem}.safetensors")), strict=True)
    shadow = load_file(str(folder / "ema.safetensors"))
    for key in ema.shadow:
        ema.shadow[key].copy_(shadow[key])
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    load_optimizer(optimizer, tensors, state.pop("optimizer_param_groups"))
    return state


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights of one network from a ``.safetensors`` file (never pickle)."""
    return load_file(str(path))
