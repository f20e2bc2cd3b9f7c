"""Two baselines for a synthesis task, run on exactly the network inputs the diffusion model sees.

- ``LinearBaseline``: per-voxel polynomial regression (all monomials of the normalised input intensities up
  to ``degree``; degree 2 for T1w + FLAIR = 1, t1, fl, t1^2, t1*fl, fl^2), fitted by least squares on the
  brain voxels of training phantoms. It is the "intensity lookup" floor: no spatial context at all.
- ``UNetRegressor``: a deterministic MONAI ``UNet`` (residual units) mapping the normalised inputs to the normalised
  target directly (no latent space, no noise), trained on the same phantom stream as the diffusion model
  (``training/train_baseline.py``), stored like every model: ``card.json`` + ``unet.safetensors``. It is not
  bundled; the training command writes it into the user model cache (``<task>-unet-baseline``).

Both work on the model grid produced by ``preprocess.prepare`` (shapes ``(C, D, H, W)``) and return
normalised targets; ``predict_on_reference`` puts them back on the reference grid in physical units with
``Prepared.inverse``, the same step the pipeline uses for the diffusion model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np

from ..errors import InputError

UNET_ARCHITECTURE_KIND = "unet-regressor"
UNET_STEM = "unet"


class LinearBaseline:
    """Per-voxel polynomial least-squares regression from normalised inputs to normalised targets.

    Args:
        input_channels: number of input contrasts ``C_in``.
        output_channels: number of target maps ``C_out``.
        degree: highest total degree of the input monomials (1 = affine, 2 = quadratic).
        ridge: optional Tikhonov term added to the normal equations (relative to their mean diagonal).
    """

    def __init__(self, input_channels: int, output_channels: int = 1, degree: int = 2, ridge: float = 0.0):
        if input_channels < 1 or output_channels < 1:
            raise ValueError("input_channels and output_channels must be >= 1")
        if degree not in (1, 2, 3):
            raise ValueError(f"degree must be 1, 2 or 3, got {degree}")
        self.input_channels, self.output_channels, self.degree, self.ridge = input_channels, output_channels, degree, ridge
        self.terms = [combo for d in range(degree + 1)
                      for combo in itertools.combinations_with_replacement(range(input_channels), d)]
        self.coefficients: np.ndarray | None = None  # (F, C_out)
        self._gram = np.zeros((len(self.terms), len(self.terms)))
        self._moment = np.zeros((len(self.terms), output_channels))
        self.voxels = 0

    def features(self, values: np.ndarray) -> np.ndarray:
        """Input intensities ``(C_in, N)`` -> monomial features ``(N, F)`` (first column = 1)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != self.input_channels:
            raise ValueError(f"expected ({self.input_channels}, N) intensities, got {values.shape}")
        columns = [np.prod(values[list(combo)], axis=0) if combo else np.ones(values.shape[1]) for combo in self.terms]
        return np.stack(columns, axis=1)

    def add(self, inputs: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        """Accumulate one subject: ``inputs (C_in, D, H, W)``, ``target (C_out, D, H, W)``, ``mask (D, H, W)``."""
        inside = np.asarray(mask) > 0
        if inputs.shape[0] != self.input_channels or target.shape[0] != self.output_channels:
            raise ValueError(f"expected {self.input_channels} input and {self.output_channels} target channels, "
                             f"got {inputs.shape[0]} and {target.shape[0]}")
        x = self.features(inputs[:, inside])
        y = np.asarray(target, dtype=np.float64)[:, inside].T
        self._gram += x.T @ x
        self._moment += x.T @ y
        self.voxels += int(inside.sum())

    def solve(self) -> "LinearBaseline":
        """Solve the accumulated normal equations for the coefficients."""
        if self.voxels == 0:
            raise ValueError("no training voxels were added")
        gram = self._gram + self.ridge * np.trace(self._gram) / len(self.terms) * np.eye(len(self.terms))
        # lstsq rather than solve: a constant input channel makes the Gram matrix singular.
        self.coefficients = np.linalg.lstsq(gram, self._moment, rcond=None)[0]
        return self

    def fit(self, cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> "LinearBaseline":
        """Fit on ``(inputs, target, mask)`` triples (see ``add``)."""
        for inputs, target, mask in cases:
            self.add(inputs, target, mask)
        return self.solve()

    def predict(self, inputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``inputs (C_in, D, H, W)`` -> ``(C_out, D, H, W)`` normalised prediction, 0 outside ``mask``."""
        if self.coefficients is None:
            raise ValueError("the baseline is not fitted yet (call fit or solve)")
        inside = np.asarray(mask) > 0
        output = np.zeros((self.output_channels, *inside.shape), np.float32)
        output[:, inside] = (self.features(inputs[:, inside]) @ self.coefficients).T
        return output

    def describe(self) -> dict:
        """JSON-serialisable terms and coefficients (for the evaluation report)."""
        names = ["1" if not combo else "*".join(f"x{i}" for i in combo) for combo in self.terms]
        coefficients = None if self.coefficients is None else self.coefficients.tolist()
        return {"degree": self.degree, "terms": names, "coefficients": coefficients, "voxels": self.voxels}


def unet_parameters(channels: tuple[int, ...], input_channels: int, output_channels: int) -> int:
    """Parameter count of ``build_unet_regressor`` with these channels."""
    network = build_unet_regressor(input_channels, output_channels, channels)
    return sum(p.numel() for p in network.parameters())


def channels_for_size(parameters: int, input_channels: int, output_channels: int) -> tuple[int, ...]:
    """UNet channels ``(w, 2w, 4w, 8w, 16w)`` whose parameter count is closest to ``parameters``."""
    candidates = [tuple(w * 2**level for level in range(5)) for w in (4, 8, 12, 16, 20, 24, 32)]
    return min(candidates, key=lambda c: abs(unet_parameters(c, input_channels, output_channels) - parameters))


def build_unet_regressor(input_channels: int, output_channels: int, channels: tuple[int, ...],
                         num_res_units: int = 2, norm: str = "none"):
    """A MONAI ``UNet`` (3D, strided convolutions x2 per level, residual units)
    ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``; D, H, W divisible by ``2 ** (len(channels) - 1)``.

    ``norm`` "none" (default) or "instance". Instance norm's per-window statistics erase the absolute level
    that a quantitative map is all about and make windows disagree with each other; measured on held-out
    phantoms it kept a latent PSR predictor near the constant-map score.

    (MONAI's ``UNet`` rather than ``BasicUNet``: at equal parameter count it costs ~25x less compute at full
    resolution, which is what makes a pixel-space baseline trainable on a CPU in minutes.)
    """
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    if len(channels) < 2 or min(channels) < 1:
        raise ValueError(f"UNet needs >= 2 positive channel counts, got {channels}")
    return UNet(spatial_dims=3, in_channels=input_channels, out_channels=output_channels, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=int(num_res_units), norm=_norm(norm))


def train_for_minutes(network, next_batch, minutes: float, peak_lr: float = 1e-3, log_every: int = 500) -> dict:
    """Train a regressor ``network`` for a wall-time budget (the benchmarks' "equal training budget").

    ``next_batch()`` returns float32 tensors ``(inputs, targets, weights)``; the loss is the weighted L1
    ``sum(|network(inputs) - targets| * weights) / sum(weights)``. AdamW (weight decay 1e-4), learning rate
    cosine-decayed from ``peak_lr`` to 5 % over the budget, gradients clipped to norm 1 (a UNet at 2e-3 without
    clipping diverged on the stroke benchmark). Returns the training record; the network ends in eval mode.
    """
    import time

    import torch

    optimiser = torch.optim.AdamW(network.parameters(), lr=peak_lr, weight_decay=1e-4)
    started, step, losses, curve = time.monotonic(), 0, [], []
    while (elapsed := time.monotonic() - started) < minutes * 60:
        progress = min(elapsed / (minutes * 60), 1.0)
        for group in optimiser.param_groups:
            group["lr"] = peak_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        inputs, targets, weights = next_batch()
        loss = ((network(inputs) - targets).abs() * weights).sum() / weights.sum().clamp(min=1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        losses.append(loss.item())
        step += 1
        if step % log_every == 0:
            curve.append([step, round(float(np.mean(losses[-log_every:])), 4)])
    network.eval()
    return {"steps": step, "minutes": round((time.monotonic() - started) / 60, 1),
            "parameters": sum(p.numel() for p in network.parameters()),
            "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
            f"loss_every_{log_every}_steps": curve}


def _norm(name: str):
    """MONAI's norm argument for a config name (``None`` = no normalisation layers)."""
    if name not in ("none", "instance", "batch"):
        raise ValueError(f"norm must be 'none', 'instance' or 'batch', got {name!r}")
    return None if name == "none" else name


class UNetRegressor:
    """A trained ``UNet`` baseline loaded from a model card and its ``unet.safetensors``.

    Args:
        card: ``ModelCard`` whose ``architecture`` is ``{"kind": "unet-regressor", "channels": [...],
            "num_res_units": 2, "roi": [D, H, W]}``.
        state_dicts: ``{"unet": state_dict}`` (``ModelRegistry.load_state_dicts``, sha256-checked).
        device: torch device string.
    """

    def __init__(self, card, state_dicts: dict, device: str = "cpu"):
        import torch

        architecture = card.architecture
        if architecture.get("kind") != UNET_ARCHITECTURE_KIND:
            raise InputError(f"is not a UNet regressor (architecture kind {architecture.get('kind')!r})",
                             name=f"model {card.id}")
        self.card = card
        self.device = torch.device(device)
        self.roi = tuple(int(r) for r in architecture.get("roi", (64, 64, 64)))
        self.network = build_unet_regressor(len(card.inputs), len(card.outputs), tuple(architecture["channels"]),
                                            int(architecture.get("num_res_units", 2)),
                                            str(architecture.get("norm", "instance")))
        self.network.load_state_dict(state_dicts[UNET_STEM], strict=True)
        self.network.to(self.device).eval()

    @classmethod
    def from_registry(cls, registry, model_id: str, device: str = "cpu") -> "UNetRegressor":
        return cls(registry.card(model_id), registry.load_state_dicts(model_id), device)

    def predict(self, inputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``inputs (C_in, D, H, W)`` -> ``(C_out, D, H, W)`` normalised prediction, 0 outside ``mask``.

        Whole volumes go through MONAI's sliding-window inference (``roi`` windows, 25 % overlap, Gaussian
        blending) so memory stays bounded.
        """
        import torch
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))[None].to(self.device)
            output = sliding_window_inference(image, self.roi, 1, self.network, overlap=0.25, mode="gaussian")
        output = output[0].float().cpu().numpy()
        return np.where(np.asarray(mask)[None] > 0, output, 0).astype(np.float32)


def predict_on_reference(baseline, prepared, affines: dict[str, tuple[float, float]]) -> dict:
    """Run ``baseline.predict`` on ``prepared`` (``preprocess.Prepared``) and return ``{output: Volume}`` on the
    reference grid in physical units; ``affines`` maps each output (in channel order) to ``(scale, offset)``."""
    normalised = baseline.predict(prepared.inputs, prepared.mask)
    return {name: prepared.inverse(normalised[channel], scale, offset)
            for channel, (name, (scale, offset)) in enumerate(affines.items())}
