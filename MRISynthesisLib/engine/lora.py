"""Low-rank adapters (LoRA) on the attention projections of a frozen MONAI ``DiffusionModelUNet``.

The adapters live in their own module and act through forward hooks, so the backbone's state dict keeps
its original keys (the frozen backbone and the adapters are saved to separate weight files).
"""

from __future__ import annotations

import math

from torch import nn

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "out_proj")


class LoRAAdapter(nn.Module):
    """Adds ``scale * B(A(x))`` to every targeted ``nn.Linear`` of ``backbone`` (B starts at zero).

    Args:
        backbone: the network to adapt (not owned: it is not a child module, its weights are not ours).
        rank: inner dimension of each adapter.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        targets: attribute names of the linear layers to adapt (MONAI attention: to_q, to_k, to_v, out_proj).
    """

    def __init__(self, backbone: nn.Module, rank: int = 4, alpha: float = 4.0, targets=DEFAULT_TARGETS):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.scale, self.enabled = int(rank), float(alpha) / rank, True
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        self._handles = []
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
                key = name.replace(".", "__")
                self.down[key] = nn.Linear(module.in_features, self.rank, bias=False)
                self.up[key] = nn.Linear(self.rank, module.out_features, bias=False)
                nn.init.kaiming_uniform_(self.down[key].weight, a=math.sqrt(5))
                nn.init.zeros_(self.up[key].weight)
                self._handles.append(module.register_forward_hook(self._hook(key)))
        if not self.down:
            raise ValueError(f"no linear layer named {targets} found to adapt")

    def _hook(self, key: str):
        def add_update(module, args, output):
            if not self.enabled:
                return output
            return output + self.scale * self.up[key](self.down[key](args[0]))
        return add_update

    def remove(self) -> None:
        """Detach the hooks from the backbone (the adapter then has no effect)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def adapted_layers(self) -> list[str]:
        return [key.replace("__", ".") for key in self.down]


def trainable_share(*modules: nn.Module) -> tuple[int, int, float]:
    """``(trainable, total, trainable / total)`` parameter counts over ``modules`` (shared tensors counted once)."""
    seen, trainable, total = set(), 0, 0
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            total += parameter.numel()
            trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total, trainable / max(total, 1)


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``module`` (returns it)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
