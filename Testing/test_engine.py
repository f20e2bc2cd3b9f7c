"""Engine tests on real MONAI networks at tiny sizes: conditioning streams, LoRA, samplers, tiling, export."""

from __future__ import annotations

import json

import pytest
import torch

from MRISynthesisLib.engine.conditioning import ConditionalDenoiser, build_unet
from MRISynthesisLib.engine.lora import LoRAAdapter, freeze, trainable_share
from MRISynthesisLib.engine.demist import build_networks
from MRISynthesisLib.engine.model import SynthesisModel
from MRISynthesisLib.engine.sampling import (DDIMSampler, DPMSolverPP2M, RunningMoments, denoise, make_sampler,
                                             inference_timesteps)
from MRISynthesisLib.engine.tiling import plan_tile
from MRISynthesisLib.errors import CancelledError, InputError

TINY = {
    "autoencoder_inputs": {"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8, "norm": "none"},
    "autoencoder_target": {"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8, "norm": "group"},
    "unet": {"channels": [16, 32], "attention_levels": [False, True], "num_head_channels": 16,
             "norm_num_groups": 8, "cross_attention_dim": 16},
    "controlnet": {"embedding_channels": 16},
    "tokens": {"grid": [2, 2, 2], "hidden": 16},
    "lora": {"rank": 2, "alpha": 2.0},
    "latent_scale": {"inputs": 1.0, "target": 1.0},
}
SHAPE = (16, 20, 16)  # image grid; latent grid (8, 10, 8)


def tiny_card(**changes) -> dict:
    card = {"id": "tiny-test", "version": "0.0.1", "task": "myelin-psr", "title": "tiny", "inputs": ["t1w", "flair"],
            "outputs": ["psr"], "spacing": [6.0, 6.0, 6.0], "multiple": 4,
            "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 99.0},
                              "outputs": {"psr": {"scale": 0.25, "offset": 0.0}}},
            "architecture": json.loads(json.dumps(TINY)), "licence": "Apache-2.0"}
    card.update(changes)
    return card


def trained_networks(seed: int = 0):
    """Tiny networks after a few optimizer steps of every stream (ControlNet outputs and LoRA B start at zero,
    so untrained streams would not change anything yet)."""
    torch.manual_seed(seed)
    networks = build_networks(TINY, 2, 1)
    denoiser = networks.denoiser
    trainable = list(denoiser.parameters())  # the backbone too: MONAI zero-initialises its output layer
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    latent, condition = torch.randn(2, 4, 8, 10, 8), torch.randn(2, 4, 8, 10, 8)
    for _ in range(3):
        loss = (denoiser(latent, torch.tensor([10, 500]), condition) - condition).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return networks


@pytest.fixture(scope="module")
def model():
    networks = trained_networks()
    return SynthesisModel(tiny_card(), networks.state_dicts(), device="cpu")


def test_predict_shapes_and_single_sample_std(model):
    inputs = torch.rand(1, 2, *SHAPE)
    mean, std = model.predict(inputs, steps=3, samples=1, seed=1)
    assert mean.shape == (1, 1, *SHAPE) and mean.dtype == torch.float32
    assert torch.isfinite(mean).all()
    assert torch.count_nonzero(std) == 0


def test_predict_rejects_bad_inputs(model):
    with pytest.raises(InputError, match="divisible by 4"):
        model.predict(torch.rand(1, 2, 15, 20, 16))
    with pytest.raises(InputError, match=r"\(1, 2, D, H, W\)"):
        model.predict(torch.rand(1, 3, *SHAPE))
    with pytest.raises(InputError, match="sampler"):
        model.predict(torch.rand(1, 2, *SHAPE), sampler="euler")


def test_each_conditioning_stream_switches_off_and_matters():
    networks = trained_networks()
    denoiser = networks.denoiser.eval()
    latent, condition, t = torch.randn(1, 4, 8, 10, 8), torch.randn(1, 4, 8, 10, 8), torch.tensor([300])
    with torch.no_grad():
        full = denoiser(latent, t, condition)
        for stream in ("use_semantic", "use_spatial", "use_lora"):
            setattr(denoiser, stream, False)
            without = denoiser(latent, t, condition)
            setattr(denoiser, stream, True)
            assert (full - without).abs().max() > 1e-4, f"{stream} has no effect"
            assert torch.equal(denoiser(latent, t, condition), full), f"{stream} does not switch back on"
        denoiser.use_semantic = denoiser.use_spatial = denoiser.use_lora = False
        all_off = denoiser(latent, t, condition)
        backbone_alone = denoiser.backbone(latent, t, context=torch.zeros(1, 1, 16))
    assert torch.equal(all_off, backbone_alone)


def test_lora_trainable_share_is_small_and_counted_exactly():
    backbone = freeze(build_unet(4, TINY["unet"]))
    lora = LoRAAdapter(backbone, rank=2)
    trainable, total, share = trainable_share(backbone, lora)
    expected = 0
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "out_proj"):
            expected += 2 * (module.in_features + module.out_features)
    assert trainable == expected > 0
    assert total == trainable + sum(p.numel() for p in backbone.parameters())
    assert share < 0.05
    assert all(".attn" in name for name in lora.adapted_layers)


def _gaussian_problem(data_std: float = 0.5):
    """Data ~ N(0, data_std^2): the ideal v-prediction denoiser and the exact probability-flow ODE solution."""
    sampler = make_sampler("ddim")
    alphas = sampler.alphas_cumprod

    def ideal_v(x, t):
        alpha_prod = alphas[t].view(-1, 1, 1, 1, 1)
        alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
        x0 = alpha * data_std**2 / (alpha_prod * data_std**2 + sigma**2) * x
        eps = (x - alpha * x0) / sigma
        return alpha * eps - sigma * x0

    def exact(x_start, t_start):
        alpha_prod = alphas[t_start]
        return x_start * data_std / (alpha_prod * data_std**2 + 1 - alpha_prod).sqrt()

    return ideal_v, exact


@pytest.mark.parametrize("steps", [1, 3, 7, 10, 50])
def test_samplers_run_any_step_count_and_solve_the_ode(steps):
    ideal_v, exact = _gaussian_problem()
    noise = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    truth = exact(noise, 999)
    errors = {}
    for name in ("ddim", "dpm++"):
        sampler = make_sampler(name)
        result = denoise(ideal_v, noise, sampler, steps)
        assert len(sampler.timesteps) == steps and int(sampler.timesteps[0]) == 999
        errors[name] = float((result - truth).abs().max())
    if steps >= 7:  # second order beats first order clearly at equal cost
        assert errors["dpm++"] < 0.2 * errors["ddim"]
    if steps >= 50:  # both converge to the exact solution
        assert errors["dpm++"] < 5e-3 and errors["ddim"] < 0.1


def test_inference_timesteps_are_distinct_and_span_the_schedule():
    alphas = make_sampler("ddim").alphas_cumprod
    for steps in (1, 2, 7, 13, 200, 1000):
        timesteps = inference_timesteps(alphas, steps)
        assert timesteps[0] == 999 and len(set(timesteps.tolist())) == steps
        assert bool((timesteps[:-1] > timesteps[1:]).all())
        assert steps == 1 or timesteps[-1] == 0
    with pytest.raises(ValueError):
        inference_timesteps(alphas, 0)


def test_dpm_and_ddim_are_distinct_samplers():
    assert isinstance(make_sampler("dpm++"), DPMSolverPP2M) and isinstance(make_sampler("ddim"), DDIMSampler)


def test_same_seed_is_bitwise_repeatable_on_cpu(model):
    inputs = torch.rand(1, 2, *SHAPE, generator=torch.Generator().manual_seed(3))
    for sampler, eta in (("dpm++", 0.0), ("ddim", 0.0), ("ddim", 1.0)):
        first, _ = model.predict(inputs, steps=4, seed=7, sampler=sampler, eta=eta)
        second, _ = model.predict(inputs, steps=4, seed=7, sampler=sampler, eta=eta)
        other, _ = model.predict(inputs, steps=4, seed=8, sampler=sampler, eta=eta)
        assert torch.equal(first, second), sampler
        assert not torch.equal(first, other), sampler


def test_cancel_raises_between_steps_and_progress_counts(model):
    seen = []
    with pytest.raises(CancelledError):
        model.predict(torch.rand(1, 2, *SHAPE), steps=5, samples=2,
                      progress=lambda step, total: seen.append((step, total)), cancel=lambda: len(seen) >= 2)
    assert seen == [(1, 10), (2, 10)]


def test_mean_and_std_of_samples(model):
    seen = []
    mean, std = model.predict(torch.rand(1, 2, *SHAPE), steps=2, samples=3, seed=0,
                              progress=lambda step, total: seen.append((step, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6
    assert std.shape == mean.shape and float(std.max()) > 0 and bool((std >= 0).all())
    values = torch.randn(5, 3, 4)
    moments = RunningMoments()
    for value in values:
        moments.add(value)
    assert torch.allclose(moments.mean, values.mean(0), atol=1e-6)
    assert torch.allclose(moments.std(), values.std(0), atol=1e-5)


def test_tiled_autoencoders_match_whole_volume(model):
    inputs = torch.rand(1, 2, 32, 32, 48, generator=torch.Generator().manual_seed(0))
    tile = (32, 32, 32)  # two overlapping tiles along the last axis
    whole = model.encode_inputs(inputs, tile=False)
    tiled = model.encode_inputs(inputs, tile=tile)
    assert whole.shape == tiled.shape == (1, 4, 16, 16, 24)
    # Without normalisation layers (the inputs autoencoder here) only tile borders differ: < 1% of the spread.
    assert float((whole - tiled).abs().mean()) < 0.01 * float(whole.std())
    decoded_whole = model.decode_target(whole, tile=False)
    decoded_tiled = model.decode_target(whole, tile=tile)
    assert decoded_whole.shape == decoded_tiled.shape == (1, 1, 32, 32, 48)
    # GroupNorm statistics (the target autoencoder here) are per tile: a few % of the spread.
    assert float((decoded_whole - decoded_tiled).abs().mean()) < 0.1 * float(decoded_whole.std())
    # A broken tiler (misplaced tiles) would be far off: shifting the volume by a quarter tile is.
    assert float((decoded_whole - decoded_whole.roll(8, 4)).abs().mean()) > 0.2 * float(decoded_whole.std())


def test_memory_plan_tiles_only_when_needed():
    assert plan_tile((96, 112, 96), bytes_per_voxel=100, budget=2 * 10**9, multiple=16) is None
    tile = plan_tile((96, 112, 96), bytes_per_voxel=100, budget=50 * 10**6, multiple=16)
    assert tile is not None and all(t % 16 == 0 and t <= s for t, s in zip(tile, (96, 112, 96)))
    assert 100 * tile[0] * tile[1] * tile[2] <= 50 * 10**6


def test_export_and_load_roundtrip_verifies_sha256(tmp_path, model):
    from MRISynthesisLib.model_store.export import write_model
    from MRISynthesisLib.model_store.registry import ModelRegistry

    folder = tmp_path / "tiny-test"
    card = write_model(folder, tiny_card(), model.networks.state_dicts())
    assert {f.stem for f in card.files} == {"autoencoder_inputs", "autoencoder_target", "unet", "controlnet",
                                            "tokens", "lora"}
    registry = ModelRegistry(home=tmp_path / "home", bundled_dir=tmp_path / "none")
    registry.install(folder)
    loaded = SynthesisModel.from_registry(registry, "tiny-test", device="cpu")
    inputs = torch.rand(1, 2, *SHAPE, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loaded.predict(inputs, steps=3, seed=2)[0], model.predict(inputs, steps=3, seed=2)[0])
    installed = registry.card("tiny-test").folder / "lora.safetensors"
    data = bytearray(installed.read_bytes())
    data[-1] ^= 0xFF
    installed.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256|checksum|corrupt|modified"):
        SynthesisModel.from_registry(registry, "tiny-test", device="cpu")


def test_denoiser_requires_condition_when_a_stream_is_on():
    denoiser = build_networks(TINY, 2, 1).denoiser
    with pytest.raises(ValueError, match="condition"):
        denoiser(torch.randn(1, 4, 8, 10, 8), torch.tensor([3]))
    assert isinstance(denoiser, ConditionalDenoiser)


def test_autoencoder_without_normalisation_layers():
    from MRISynthesisLib.engine.autoencoder import build_autoencoder

    plain = build_autoencoder(2, {"channels": [8, 16], "norm": "none"})
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in build_autoencoder(2, {"channels": [8, 16]}).modules())
    reconstruction, z_mu, _ = plain(torch.rand(1, 2, 8, 8, 8))
    assert reconstruction.shape == (1, 2, 8, 8, 8) and z_mu.shape == (1, 4, 4, 4, 4)
    with pytest.raises(ValueError, match="norm"):
        build_autoencoder(2, {"channels": [8, 16], "norm": "batch"})
