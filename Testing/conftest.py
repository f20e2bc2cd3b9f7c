"""Shared fixtures: a tiny but real (MONAI networks, safetensors, sha256-checked) myelin-psr model.

Its weights are random, so its maps mean nothing; tests that use it check plumbing (geometry, files,
progress, cancel), never quality. Quality is measured by ``mrisynthesis evaluate`` on the shipped model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The default recipe (latent mean predictor + residual diffusion), each network as small as MONAI allows.
TINY_RESIDUAL_ARCHITECTURE = {
    "family": "latent-residual", "autoencoder": {"kind": "space-to-depth", "factor": 2},
    "predictor": {"channels": [8, 8], "strides": [2], "num_res_units": 1},
    "denoiser": {"channels": [8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
    "latent_scale": 3.0, "residual_scale": 2.0,
}
# The DEMIST recipe: every conditioning stream present, each network as small as MONAI allows.
TINY_ARCHITECTURE = {
    "autoencoder_inputs": {"channels": [8, 8], "latent_channels": 2, "num_res_blocks": 1, "norm_num_groups": 4},
    "autoencoder_target": {"channels": [8, 8], "latent_channels": 2, "num_res_blocks": 1, "norm_num_groups": 4},
    "unet": {"channels": [8, 8], "attention_levels": [False, True], "num_res_blocks": 1, "num_head_channels": 8,
             "norm_num_groups": 4, "cross_attention_dim": 8},
    "controlnet": {"embedding_channels": 8},
    "tokens": {"grid": [2, 2, 2], "hidden": 8},
    "lora": {"rank": 2},
}


def write_tiny_model(home: Path, spacing: float = 2.0, multiple: int = 4, seed: int = 0,
                     training_seeds: tuple[int, ...] = (0,), architecture: dict | None = None) -> Path:
    """Write a randomly initialised myelin-psr model into ``home/models/myelin-psr``; returns ``home``.

    ``training_seeds`` go into the card, where the evaluation harness reads which phantoms it may not use.
    ``architecture`` defaults to the shipped recipe's family (``TINY_RESIDUAL_ARCHITECTURE``).
    """
    import torch

    from MRISynthesisLib.engine.latent_residual import LatentResidualArchitecture, LatentResidualNetworks
    from MRISynthesisLib.engine.demist import build_networks
    from MRISynthesisLib.model_store import write_model

    torch.manual_seed(seed)
    architecture = architecture or TINY_RESIDUAL_ARCHITECTURE
    if architecture.get("family") == "latent-residual":
        networks = LatentResidualNetworks(LatentResidualArchitecture.from_dict(architecture), 2, 1)
    else:
        networks = build_networks(architecture, 2, 1)
    write_model(home / "models" / "myelin-psr", {
        "id": "myelin-psr", "version": "0.0.1", "task": "myelin-psr", "title": "tiny untrained test model",
        "description": "random weights, for plumbing tests only", "inputs": ["t1w", "flair"], "outputs": ["psr"],
        "spacing": [spacing] * 3, "multiple": multiple,
        "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 99.0},
                          "outputs": {"psr": {"scale": 0.25, "offset": 0.0}}},
        "architecture": architecture, "licence": "Apache-2.0",
        "training": {"data": "none", "command": "Testing/conftest.py", "duration_s": 0.0, "hardware": "cpu",
                     "seeds": list(training_seeds)},
        "metrics": {},
    }, networks.state_dicts())
    return home


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """Tiny convolutions run much faster on one thread than two on a shared 2-core machine (no spin-waiting)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_home(tmp_path_factory) -> Path:
    """An ``MRISYNTHESIS_HOME`` whose cache holds the tiny myelin-psr model (it wins over the bundled one)."""
    return write_tiny_model(tmp_path_factory.mktemp("home"))


TINY_SEGMENTER_ARCHITECTURE = {"kind": "lesion-segmenter", "inputs": ["t1w", "flair"], "channels": [4, 8],
                               "strides": [2], "num_res_units": 1, "norm": "instance", "roi": 16,
                               "percentiles": [1.0, 90.0]}


def write_tiny_segmenter(home: Path, seed: int = 0) -> Path:
    """Write a randomly initialised ``ms-lesion-segmenter`` into ``home/models`` (plumbing tests only)."""
    import torch

    from MRISynthesisLib.model_store import write_model
    from MRISynthesisLib.segmentation.architecture import STEM, SegmenterArchitecture

    torch.manual_seed(seed)
    network = SegmenterArchitecture.from_dict(TINY_SEGMENTER_ARCHITECTURE).build()
    write_model(home / "models" / "ms-lesion-segmenter", {
        "id": "ms-lesion-segmenter", "version": "0.0.1", "task": "ms-lesions", "title": "tiny untrained segmenter",
        "inputs": ["t1w", "flair"], "outputs": ["lesion"], "spacing": [1.0, 1.0, 1.0], "multiple": 2,
        "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 90.0},
                          "outputs": {"lesion": {"scale": 1.0, "offset": 0.0}}},
        "architecture": TINY_SEGMENTER_ARCHITECTURE, "licence": "Apache-2.0",
        "training": {"data": "none", "command": "Testing/conftest.py"}, "metrics": {},
    }, {STEM: network.state_dict()})
    return home
