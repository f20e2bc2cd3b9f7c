"""Samplers for latent diffusion: DDIM (any step count), DPM-Solver++(2M), and DDPM as the slow reference.

All share MONAI's noise schedules (``monai.networks.schedulers``) and the MONAI scheduler interface:
``set_timesteps(n)`` then ``prev, x0 = step(model_output, t, sample)``. ``denoise`` runs a sampler with
progress reporting and cancellation between steps; the initial noise and any stochastic step noise come
from a seeded CPU ``torch.Generator``, so results on CPU are bitwise repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler

from ..errors import CancelledError

DEFAULT_SCHEDULE = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
                    "beta_end": 0.0195, "prediction_type": "v_prediction"}
SAMPLERS = ("dpm++", "ddim", "ddpm")


def _schedule(config: dict | None) -> dict:
    config = {**DEFAULT_SCHEDULE, **(config or {})}
    if config["prediction_type"] not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {config['prediction_type']!r}")
    return config


def inference_timesteps(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` strictly decreasing timesteps from ``T - 1`` to 0, evenly spaced in log-SNR.

    Uniform log-SNR steps (Lu et al., DPM-Solver) put more steps where the signal emerges and end at t = 0, so the
    final jump to the clean sample is tiny; this is what lets the second-order solver converge at second order
    (linearly spaced timesteps leave one huge log-SNR step at the end).
    """
    count = len(alphas_cumprod)
    if not 1 <= steps <= count:
        raise ValueError(f"steps must be in [1, {count}], got {steps}")
    if steps == 1:
        return torch.tensor([count - 1], dtype=torch.long)
    alphas = alphas_cumprod.double()
    log_snr = torch.log(alphas / (1 - alphas))  # decreasing in t
    targets = torch.linspace(float(log_snr[-1]), float(log_snr[0]), steps, dtype=torch.float64)
    timesteps = torch.searchsorted(-log_snr, -targets).clamp(0, count - 1)
    timesteps[0], timesteps[-1] = count - 1, 0
    for k in range(1, steps):  # near t = 0 several targets can round to one timestep: keep them distinct
        timesteps[k] = min(int(timesteps[k]), int(timesteps[k - 1]) - 1)
        timesteps[k] = max(int(timesteps[k]), steps - 1 - k)
    return timesteps.long()


def training_scheduler(config: dict | None = None) -> DDPMScheduler:
    """The MONAI DDPM scheduler used for training (``add_noise``, ``get_velocity``)."""
    config = _schedule(config)
    return DDPMScheduler(num_train_timesteps=config["num_train_timesteps"], schedule=config["schedule"],
                         beta_start=config["beta_start"], beta_end=config["beta_end"],
                         prediction_type=config["prediction_type"], clip_sample=False)


def _to_x0_eps(model_output, sample, alpha_prod, prediction_type):
    """(predicted clean sample, predicted noise) from a network output."""
    alpha, sigma = alpha_prod**0.5, (1 - alpha_prod) ** 0.5
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output, alpha * model_output + sigma * sample
    return (sample - sigma * model_output) / alpha, model_output


class DDIMSampler(DDIMScheduler):
    """MONAI's DDIM whose every step goes to the *next scheduled* timestep.

    (MONAI's ``DDIMScheduler.step`` assumes the steps are ``T // n`` apart, which its own ``linspace``
    timesteps are not for most ``n``; here any ``n`` lands exactly on the clean sample after the last step.)
    ``eta`` (0 = deterministic) and the step-noise ``generator`` are fixed at construction, so ``step`` has the
    common contract ``step(model_output, timestep, sample)``.
    """

    def __init__(self, *args, eta: float = 0.0, generator: torch.Generator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta, self.generator = float(eta), generator

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        self.num_inference_steps = num_inference_steps
        self.timesteps = inference_timesteps(self.alphas_cumprod, num_inference_steps).to(device)

    def _previous(self, timestep: int) -> int:
        later = self.timesteps[self.timesteps < timestep]
        return int(later.max()) if len(later) else -1

    def step(self, model_output, timestep, sample):
        eta, generator = self.eta, self.generator
        timestep = int(timestep)
        previous = self._previous(timestep)
        alpha_prod = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[previous] if previous >= 0 else self.final_alpha_cumprod
        x0, eps = _to_x0_eps(model_output, sample, alpha_prod, self.prediction_type)
        variance = (1 - alpha_prev) / (1 - alpha_prod) * (1 - alpha_prod / alpha_prev)
        std = eta * variance**0.5
        prev_sample = alpha_prev**0.5 * x0 + (1 - alpha_prev - std**2).clamp(min=0) ** 0.5 * eps
        if eta > 0 and previous >= 0:
            noise = torch.randn(sample.shape, dtype=sample.dtype, generator=generator).to(sample.device)
            prev_sample = prev_sample + std * noise
        return prev_sample, x0


class DPMSolverPP2M(Scheduler):
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in data prediction, first order on the
    first and last step; deterministic. MONAI-scheduler-like: ``set_timesteps`` then ``step``."""

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "scaled_linear_beta",
                 prediction_type: str = "v_prediction", **schedule_args) -> None:
        super().__init__(num_train_timesteps, schedule, **schedule_args)
        self.prediction_type = prediction_type
        self.set_timesteps(10)

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        self.num_inference_steps = num_inference_steps
        self.timesteps = inference_timesteps(self.alphas_cumprod, num_inference_steps).to(device)
        self._previous_x0, self._previous_lambda, self._index = None, None, 0

    def _alpha_sigma_lambda(self, timestep: int):
        if timestep < 0:  # the clean end point: alpha 1, sigma 0, lambda +inf
            return torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), None
        alpha_prod = self.alphas_cumprod[timestep].double()
        alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
        return alpha, sigma, torch.log(alpha) - torch.log(sigma)

    def step(self, model_output, timestep, sample):
        timestep = int(timestep)
        index = self._index
        previous = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1
        alpha, sigma, lam = self._alpha_sigma_lambda(timestep)
        alpha_next, sigma_next, lam_next = self._alpha_sigma_lambda(previous)
        x0, _ = _to_x0_eps(model_output, sample, self.alphas_cumprod[timestep], self.prediction_type)
        if lam_next is None:  # last step: the data prediction is the answer
            prev_sample = x0
        else:
            h = lam_next - lam
            phi = torch.expm1(-h)  # exp(-h) - 1
            data = x0
            if self._previous_x0 is not None:
                ratio = (lam - self._previous_lambda) / h
                data = x0 + (x0 - self._previous_x0) / (2 * ratio)
            prev_sample = float(sigma_next / sigma) * sample - float(alpha_next * phi) * data
        self._previous_x0, self._previous_lambda, self._index = x0, lam, index + 1
        return prev_sample, x0


class DDPMSampler(DDPMScheduler):
    """MONAI's DDPM (the slow reference) with the common ``step(model_output, timestep, sample)`` contract: the
    step noise comes from a seeded CPU ``generator`` fixed at construction (bitwise repeatable on any device)."""

    def __init__(self, *args, generator: torch.Generator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = generator

    def step(self, model_output, timestep, sample):
        previous, x0 = super().step(model_output.cpu(), timestep, sample.cpu(), generator=self.generator)
        return previous.to(sample.device), x0.to(sample.device)


def make_sampler(name: str, config: dict | None = None, eta: float = 0.0, generator: torch.Generator | None = None):
    """A sampler by name (``"dpm++"``, ``"ddim"``, ``"ddpm"``) on the model's noise schedule; every one has
    ``set_timesteps(n)`` and ``step(model_output, timestep, sample) -> (previous sample, predicted x0)``.

    Args:
        eta: DDIM stochasticity (0 = deterministic); DDPM is always stochastic, DPM-Solver++ never.
        generator: seeded CPU generator for the step noise of DDIM (eta > 0) and DDPM.
    """
    config = _schedule(config)
    common = dict(num_train_timesteps=config["num_train_timesteps"], schedule=config["schedule"],
                  beta_start=config["beta_start"], beta_end=config["beta_end"],
                  prediction_type=config["prediction_type"])
    if name == "dpm++":
        return DPMSolverPP2M(**common)
    if name == "ddim":
        return DDIMSampler(clip_sample=False, eta=eta, generator=generator, **common)
    if name == "ddpm":
        return DDPMSampler(clip_sample=False, generator=generator, **common)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def denoise(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, sampler,
            steps: int, progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None, step_offset: int = 0,
            total_steps: int | None = None) -> torch.Tensor:
    """Run ``sampler`` (from ``make_sampler``) for ``steps`` from ``noise`` ``(B, L, d, h, w)``; returns the clean
    latent.

    Args:
        predict: network ``(latent, timesteps (B,)) -> output`` in the sampler's prediction type.
        progress: called as ``progress(step_offset + i, total_steps)`` after each step ``i`` (1-based).
        cancel: polled before each step; when it returns True, ``CancelledError`` is raised.
    """
    sampler.set_timesteps(steps)
    total = total_steps if total_steps is not None else steps
    latent = noise
    for index, timestep in enumerate(sampler.timesteps):
        if cancel is not None and cancel():
            raise CancelledError("sampling cancelled")
        batch_t = torch.full((latent.shape[0],), int(timestep), dtype=torch.long, device=latent.device)
        latent, _ = sampler.step(predict(latent, batch_t).float(), timestep, latent)
        if progress is not None:
            progress(step_offset + index + 1, total)
    return latent


class RunningMoments:
    """Welford mean and standard deviation over samples added one at a time (constant memory)."""

    def __init__(self):
        self.count, self.mean, self._m2 = 0, None, None

    def add(self, value: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self._m2 = value.clone(), torch.zeros_like(value)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)

    def std(self) -> torch.Tensor:
        """Sample standard deviation (``N - 1``); zeros for a single sample."""
        if self.count < 2:
            return torch.zeros_like(self.mean)
        return (self._m2 / (self.count - 1)).sqrt()
