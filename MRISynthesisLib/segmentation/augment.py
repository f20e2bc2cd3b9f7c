"""Domain randomisation of a clean phantom, in the spirit of SynthSeg (Billot et al., MedIA 2023).

A segmenter trained on one simulated scanner fails on real ones; trained on images whose contrast,
resolution and artefacts vary far more than between real scanners, it learns what does not vary: shape and
relative brightness. Per training volume (``randomise``), in acquisition order:

1. tissue contrast: each compartment's signal scaled by its own factor (``CONTRAST_RANGE``; lesions their own,
   ``LESION_CONTRAST_RANGE``), applied through the partial-volume fractions, so mixed voxels mix the scaled
   signals;
2. resolution: Gaussian blur along one axis (slice thickness 1.5-5 mm, a third of the images) and a little
   in-plane;
3. bias field: smooth multiplicative, log std up to 0.3;
4. Rician noise: up to 5 % of the brain's 90th percentile;
5. gamma: ``exp(N(0, 0.15))``; then an arbitrary global scale (normalisation must remove it).

The phantom's physics keeps the contrasts within physical bounds; these factors widen them around that. A first
run with wider ranges (lesions down to 0.85x their physical contrast, gamma log std 0.25, slices up to 6 mm in
half the images) left many training lesions invisible and reached a held-out crop Dice of only 0.13 after 1000
steps (a run of the first session of this segmenter, not kept), so by default lesions are never made less
conspicuous than the physics makes them (``--lesion-contrast`` of the training script can).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..phantom.fields import smooth_field

COMPARTMENTS = ("wm", "gm", "deep_gm", "csf", "lesion")
CONTRAST_RANGE = (0.85, 1.2)  # per healthy compartment, relative to the physics signal
LESION_CONTRAST_RANGE = (1.0, 1.3)  # lesions, relative to white matter's factor: as conspicuous or more


def tissue_contrast(image: np.ndarray, fractions: dict[str, np.ndarray], factors: dict[str, float]) -> np.ndarray:
    """``image * sum_t f_t k_t / sum_t f_t``: each compartment's signal scaled by ``factors[t]``."""
    weighted = np.zeros(image.shape, np.float32)
    total = np.zeros(image.shape, np.float32)
    for name, fraction in fractions.items():
        weighted += fraction * np.float32(factors[name])
        total += fraction
    return np.where(total > 0, image * weighted / np.maximum(total, 1e-6), image).astype(np.float32)


def resolution(image: np.ndarray, rng: np.random.Generator, spacing: float = 1.0) -> np.ndarray:
    """Blur as a thick-slice (FWHM 1.5-5 mm along one axis) or slightly soft acquisition would."""
    sigma = rng.uniform(0.0, 0.5, 3)
    if rng.random() < 1 / 3:
        sigma[int(rng.integers(3))] = rng.uniform(1.5, 5.0) / 2.355
    sigma = sigma / spacing
    return ndi.gaussian_filter(image, sigma, mode="nearest") if sigma.max() > 0.2 else image


def randomise(images: dict[str, np.ndarray], fractions: dict[str, np.ndarray], brain: np.ndarray,
              rng: np.random.Generator, spacing: float = 1.0,
              lesion_contrast: tuple[float, float] = LESION_CONTRAST_RANGE,
              contrast_range: tuple[float, float] = CONTRAST_RANGE) -> dict[str, np.ndarray]:
    """A randomised acquisition of each clean image (float32, same shape); outside ``brain`` 0.

    Each image gets its own contrast factors, blur, bias field, noise and gamma (they come from different
    sequences), while lesions and anatomy stay where they are. ``lesion_contrast``: range of the lesions'
    factor relative to white matter's (below 1: less conspicuous than the physics makes them); ``contrast_range``:
    range of each healthy compartment's factor.
    """
    out = {}
    for name, image in images.items():
        factors = {t: float(rng.uniform(*contrast_range)) for t in COMPARTMENTS}
        factors["lesion"] = float(rng.uniform(*lesion_contrast)) * factors["wm"]
        image = tissue_contrast(image.astype(np.float32), fractions, factors)
        image = resolution(image, rng, spacing)
        bias = smooth_field(rng, image.shape, (4, 4, 4), float(rng.uniform(0.0, 0.3)))
        image = image * np.exp(bias).astype(np.float32)
        level = float(np.percentile(image[brain], 90)) or 1.0
        sigma = np.float32(rng.uniform(0.0, 0.05) * level)
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.sqrt(real * real + imaginary * imaginary) / np.float32(level)
        image = image ** np.float32(np.exp(rng.normal(0.0, 0.15)))
        out[name] = np.where(brain, image * np.float32(np.exp(rng.uniform(np.log(10), np.log(1000)))), 0).astype(
            np.float32)
    return out
