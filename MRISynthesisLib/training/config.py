"""``StageConfig``: the settings every training stage of every recipe shares (JSON-serialisable; each stage
saves them in its ``state.json``). Recipes subclass it with their own fields and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import InputError


@dataclass
class StageConfig:
    """One training stage: ``task``, ``stage`` (one of the recipe's ``STAGES``) and run folder ``out``; data
    (``"phantom"`` or a folder), optimisation and checkpoint settings. ``max_minutes > 0`` stops the stage
    (finishing normally) once that much wall time has passed."""

    STAGES: ClassVar[tuple[str, ...]] = ()

    task: str
    stage: str
    out: str
    data: str = "phantom"
    steps: int = 500
    batch: int = 2
    spacing: float = 2.0
    crop: list = field(default_factory=lambda: [64, 64, 64])
    multiple: int = 16
    subjects: int = 24
    seed: int = 0
    lr: float = 1e-3
    ema_decay: float = 0.995
    resume: bool = False
    save_every: int = 100
    log_every: int = 10
    max_minutes: float = 0.0
    command: str = ""

    def __post_init__(self):
        if self.stage not in self.STAGES:
            raise InputError(f"must be one of {', '.join(self.STAGES)}, got {self.stage!r}", name="--stage")
        if self.steps < 1 or self.batch < 1:
            raise InputError("steps and batch must be >= 1", name="--steps")
        if any(int(c) % self.multiple for c in self.crop):
            raise InputError(f"crop {self.crop} must be divisible by the model multiple {self.multiple}", name="--crop")
