"""The default recipe (latent mean predictor + residual diffusion) on real MONAI networks at tiny sizes:
latent round trip, architecture checks, sampling contract, the two training stages, export and continuation."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_RESIDUAL_ARCHITECTURE
from MRISynthesisLib.engine.latent_residual import (LatentResidualArchitecture, LatentResidualNetworks,
                                                    depth_to_space, space_to_depth)
from MRISynthesisLib.engine.model import SynthesisModel
from MRISynthesisLib.errors import CancelledError, InputError

SHAPE = (16, 20, 16)


def tiny_card(architecture: dict | None = None) -> dict:
    return {"id": "tiny-residual", "version": "0.0.1", "task": "myelin-psr", "title": "tiny",
            "inputs": ["t1w", "flair"], "outputs": ["psr"], "spacing": [6.0] * 3, "multiple": 4,
            "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 99.0},
                              "outputs": {"psr": {"scale": 0.25, "offset": 0.0}}},
            "architecture": json.loads(json.dumps(architecture or TINY_RESIDUAL_ARCHITECTURE)),
            "licence": "Apache-2.0"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    networks = LatentResidualNetworks(LatentResidualArchitecture.from_dict(TINY_RESIDUAL_ARCHITECTURE), 2, 1)
    with torch.no_grad():  # MONAI zero-initialises the diffusion UNet's output layer: give it a voice
        for parameter in networks.denoiser.out.parameters():
            parameter.normal_(0, 0.1)
    return SynthesisModel(tiny_card(), networks.state_dicts(), device="cpu")


def test_space_to_depth_is_an_exact_invertible_rearrangement():
    images = torch.rand(3, 1, 8, 6, 4, generator=torch.Generator().manual_seed(1))
    latent = space_to_depth(images, 2)
    assert latent.shape == (3, 8, 4, 3, 2)
    assert torch.equal(depth_to_space(latent, 2), images)
    # channel k of the latent is one fixed voxel of every 2x2x2 block
    assert torch.equal(latent[:, 0], images[:, 0, 0::2, 0::2, 0::2])
    assert torch.equal(latent[:, 7], images[:, 0, 1::2, 1::2, 1::2])


def test_latent_mirror_is_the_latent_of_the_mirrored_image(model):
    from MRISynthesisLib.engine.latent_residual import mirror_latent

    networks = model.residual_networks
    images = torch.rand(2, 3, *SHAPE, generator=torch.Generator().manual_seed(2))
    mirrored = mirror_latent(networks.encode(images), networks.architecture)
    torch.testing.assert_close(mirrored, networks.encode(images.flip(-1)), rtol=0, atol=0)
    assert not torch.equal(networks.encode(images).flip(-1), mirrored)  # a grid flip alone scrambles the image


def test_encode_decode_round_trip_per_channel(model):
    networks = model.residual_networks
    images = torch.rand(1, 3, *SHAPE)
    latent = networks.encode(images)
    assert latent.shape == (1, 3 * 8, 8, 10, 8)
    torch.testing.assert_close(networks.decode(latent), images, rtol=0, atol=1e-6)
    # channel-major: the first 8 latent channels are the first image channel alone
    torch.testing.assert_close(networks.encode(images[:, :1]), latent[:, :8])


@pytest.mark.parametrize("change,message", [
    ({"autoencoder": {"kind": "wavelet"}}, "kind"),
    ({"predictor": {"channels": [8, 8], "strides": [2, 2]}}, "strides"),
    ({"denoiser": {"channels": [6, 8], "norm_num_groups": 4}}, "divisible"),
    ({"residual_scale": 0}, "positive"),
    ({"map_estimate": "median"}, "map_estimate"),
    ({"predictor": {"channels": [8, 8], "strides": [2], "norm": "layer"}}, "norm"),
    ({"family": "demist-ldm"}, "family"),
    ({"predictor": {"channels": [8, 8], "strides": [2], "head": "bilateral"}}, "head"),
    ({"autoencoder": {"kind": "kl", "channels": [8], "latent_channels": 2, "num_res_blocks": 1,
                      "norm_num_groups": 4}, "predictor": {"channels": [8, 8], "strides": [2], "head": "local-affine"}},
     "space-to-depth"),
])
def test_architecture_is_validated_once_with_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        LatentResidualArchitecture.from_dict({**TINY_RESIDUAL_ARCHITECTURE, **change})
    with pytest.raises(InputError, match="architecture|weights"):
        SynthesisModel(tiny_card({**TINY_RESIDUAL_ARCHITECTURE, **change}), {}, device="cpu")


def _local_affine_networks() -> LatentResidualNetworks:
    architecture = json.loads(json.dumps(TINY_RESIDUAL_ARCHITECTURE))
    architecture["predictor"]["head"] = "local-affine"
    return LatentResidualNetworks(LatentResidualArchitecture.from_dict(architecture), 2, 1)


def test_local_affine_head_applies_smooth_coefficients_at_full_resolution():
    networks = _local_affine_networks()
    assert networks.affine_channels == 3  # a, b_t1w, b_flair for the one output
    images = torch.rand(1, 2, *SHAPE, generator=torch.Generator().manual_seed(1))
    latent_shape = (1, 3, *(s // 2 for s in SHAPE))
    # constant coefficients reproduce a global affine map of the inputs voxel by voxel (sharp, not blurred)
    coefficients = torch.tensor([0.1, 2.0, -0.5]).reshape(1, 3, 1, 1, 1).expand(latent_shape)
    torch.testing.assert_close(networks.local_affine(coefficients, images),
                               0.1 + 2.0 * images[:, :1] - 0.5 * images[:, 1:])
    # a coefficient that varies along x is interpolated between latent voxels
    ramp = torch.zeros(latent_shape)
    ramp[:, 0] = torch.arange(SHAPE[2] // 2, dtype=torch.float32)
    offsets = networks.local_affine(ramp, images)[0, 0, 0, 0]
    assert torch.all(offsets[2:-2].diff() > 0) and offsets[2:-2].diff().max() <= 0.5 + 1e-6
    # predict_mean = direct latent + the latent of the affine map of the decoded inputs
    condition = networks.encode(images)
    output = networks.predictor(condition)
    expected = output[:, :8] + networks.encode(networks.local_affine(output[:, 8:], images))
    torch.testing.assert_close(networks.predict_mean(condition), expected)


def test_a_direct_predictor_grows_a_local_affine_head_without_changing_its_output():
    from MRISynthesisLib.training.latent_residual import grow_output_channels

    torch.manual_seed(2)
    direct = LatentResidualNetworks(LatentResidualArchitecture.from_dict(TINY_RESIDUAL_ARCHITECTURE), 2, 1)
    grown = _local_affine_networks()
    grown.predictor.load_state_dict(grow_output_channels(direct.predictor.state_dict(), grown.predictor.state_dict()))
    condition = direct.encode(torch.rand(1, 2, *SHAPE))
    torch.testing.assert_close(grown.predict_mean(condition), direct.predict_mean(condition), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="grow"):
        grow_output_channels(grown.predictor.state_dict(), direct.predictor.state_dict())


def test_weights_that_do_not_fit_are_refused(model):
    state_dicts = model.residual_networks.state_dicts()
    del state_dicts["denoiser"]
    with pytest.raises(InputError, match="denoiser"):
        SynthesisModel(tiny_card(), state_dicts, device="cpu")


def test_mean_of_k_samples_its_sd_and_the_deterministic_predictor(model):
    inputs = torch.rand(1, 2, *SHAPE, generator=torch.Generator().manual_seed(3))
    mean, std = model.predict(inputs, steps=3, samples=4, seed=5)
    assert mean.shape == std.shape == (1, 1, *SHAPE) and float(std.min()) >= 0 and float(std.mean()) > 0
    singles = [model.predict(inputs, steps=3, samples=1, seed=5 + k)[0] for k in range(2)]
    assert not torch.equal(singles[0], singles[1])  # the residual diffusion really samples
    predictor, predictor_std = model.predict(inputs, steps=3, samples=4, seed=5, residual=False)
    assert torch.equal(predictor_std, torch.zeros_like(predictor_std))
    assert torch.equal(predictor, model.predict(inputs, steps=7, samples=1, seed=9, residual=False)[0])
    assert not torch.allclose(predictor, mean)
    # the "predictor" estimate: the map the samples' mean converges to, with the same samples' SD
    limit, limit_std = model.predict(inputs, steps=3, samples=4, seed=5, estimate="predictor")
    assert torch.equal(limit, predictor) and torch.equal(limit_std, std)
    with pytest.raises(InputError, match="estimate"):
        model.predict(inputs, steps=3, samples=2, estimate="median")


def test_same_seed_is_bitwise_repeatable_and_cancel_stops(model):
    inputs = torch.rand(1, 2, *SHAPE, generator=torch.Generator().manual_seed(4))
    for sampler, eta in (("dpm++", 0.0), ("ddim", 1.0), ("ddpm", 0.0)):
        first = model.predict(inputs, steps=3, samples=2, seed=1, sampler=sampler, eta=eta)[0]
        assert torch.equal(first, model.predict(inputs, steps=3, samples=2, seed=1, sampler=sampler, eta=eta)[0])
    calls = []
    with pytest.raises(CancelledError):
        model.predict(inputs, steps=3, samples=2, progress=lambda s, t: calls.append((s, t)),
                      cancel=lambda: len(calls) >= 4)
    assert calls == [(1, 6), (2, 6), (3, 6), (4, 6)]


# ---------------------------------------------------------------------------------------------- training
TRAIN_ARCHITECTURE = {k: v for k, v in TINY_RESIDUAL_ARCHITECTURE.items() if not k.endswith("_scale")}


def _config(out, stage, **changes):
    from MRISynthesisLib.training.latent_residual import ResidualTrainConfig

    settings = dict(task="myelin-psr", stage=stage, out=str(out), subjects=2, steps=12, batch=2, crop=[32, 32, 32],
                    heldout=1, log_every=4, save_every=4, lr=3e-3, denoiser_crop=8,
                    architecture=json.loads(json.dumps(TRAIN_ARCHITECTURE)))
    settings.update(changes)
    return ResidualTrainConfig(**settings)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from MRISynthesisLib.training.latent_residual import train

    out = tmp_path_factory.mktemp("residual-run")
    autoencoder = train(_config(out, "autoencoder"))
    assert autoencoder["steps"] == 0 and autoencoder["heldout_reconstruction_psnr_db"]["target"] > 100
    assert 0.5 < autoencoder["architecture_update"]["latent_scale"] < 50
    train(_config(out, "latent", steps=40))
    return out


def test_latent_stage_learns_the_mean_and_records_the_residual_scale(run_dir):
    state = json.loads((run_dir / "latent" / "final" / "state.json").read_text())
    history = state["history"]
    assert history[-1]["predictor"] < 0.7 * history[0]["predictor"]
    assert state["architecture_update"]["residual_scale"] > 0
    assert state["architecture_update"]["latent_scale"] == json.loads(
        (run_dir / "autoencoder" / "final" / "state.json").read_text())["architecture_update"]["latent_scale"]


def test_resume_continues_the_step_count_with_the_new_learning_rate(run_dir, tmp_path):
    import shutil

    from MRISynthesisLib.training.latent_residual import train

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    final = train(_config(copy, "latent", steps=44, resume=True, lr=1e-4))
    assert final["steps"] == 44 and final["steps_this_run"] == 4


def test_export_writes_a_half_precision_model_that_loads_and_continues(run_dir, tmp_path, monkeypatch):
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.training.export import export_latent_residual_run
    from MRISynthesisLib.training.latent_residual import train

    home = tmp_path / "home"
    card = export_latent_residual_run(run_dir, "myelin-psr", home / "models" / "myelin-psr", heldout=1, samples=2,
                                      steps=2, map_estimate="predictor")  # as the shipped card
    assert {f.name for f in card.files} == {"predictor.safetensors", "denoiser.safetensors"}
    metrics = card.metrics
    assert metrics["precision"] == "float16" and metrics["samples"] == 2 and metrics["clean"]["acquisition"] == "clean"
    assert abs(metrics["float16_cost_db"]["clean"]) < 0.1
    registry = ModelRegistry(home)
    weights = registry.load_state_dicts("myelin-psr")
    assert all(t.dtype == torch.float16 for t in weights["predictor"].values())
    SynthesisModel.from_registry(registry, "myelin-psr", device="cpu")
    # a later session continues the shipped model: same scales, the run's weights as the start
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    continued = tmp_path / "continued"
    train(_config(continued, "autoencoder", heldout=0))
    final = train(_config(continued, "latent", steps=4, init_from="myelin-psr"))  # the map estimate may differ
    assert final["architecture_update"]["latent_scale"] == card.architecture["latent_scale"]
    again = export_latent_residual_run(continued, "myelin-psr", tmp_path / "again" / "myelin-psr", heldout=0)
    assert again.training["continued_from"]["training"] == card.training
    assert again.training["total_duration_s"] == pytest.approx(again.training["duration_s"] +
                                                               card.training["duration_s"])
    # ... or continues it with a grown local-affine head (starts from the shipped predictor's exact output)
    affine = {**TRAIN_ARCHITECTURE, "predictor": {**TRAIN_ARCHITECTURE["predictor"], "head": "local-affine"}}
    grown = tmp_path / "grown"
    train(_config(grown, "autoencoder", heldout=0))
    assert train(_config(grown, "latent", steps=4, init_from="myelin-psr", architecture=affine))["steps"] == 4
    with pytest.raises(InputError, match="architecture"):
        other = {**TRAIN_ARCHITECTURE, "predictor": {"channels": [8, 16], "strides": [2], "num_res_units": 1}}
        train(_config(continued, "latent", steps=2, init_from="myelin-psr", architecture=other))


def test_learned_autoencoder_option_trains(tmp_path):
    from MRISynthesisLib.training.latent_residual import train

    architecture = {**TRAIN_ARCHITECTURE, "autoencoder": {"kind": "kl", "channels": [8, 8], "latent_channels": 8,
                                                          "norm_num_groups": 4, "norm": "none",
                                                          "use_convtranspose": True}}
    final = train(_config(tmp_path, "autoencoder", steps=16, architecture=architecture, heldout=1))
    assert final["history"][-1]["l1"] < final["history"][0]["l1"]
    assert (tmp_path / "autoencoder" / "final" / "autoencoder.safetensors").is_file()
    assert 0 < final["heldout_reconstruction_psnr_db"]["target"] < 60
