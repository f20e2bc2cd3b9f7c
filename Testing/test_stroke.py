"""The stroke task end to end on real MONAI networks at tiny sizes: phantom CT perfusion -> training with
LAPT's lesion-aware terms and core-centred crops -> export (core Dice in the card) -> ``synthesize`` from a 4D
file with irregular frame times -> DWI, ADC and the infarct-core overlay on the series' own grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_RESIDUAL_ARCHITECTURE

TRAIN_ARCHITECTURE = {k: v for k, v in TINY_RESIDUAL_ARCHITECTURE.items() if not k.endswith("_scale")}


def _config(out, stage, **changes):
    from MRISynthesisLib.training.latent_residual import ResidualTrainConfig

    settings = dict(task="stroke-dwi-adc", stage=stage, out=str(out), subjects=2, steps=12, batch=2,
                    crop=[24, 24, 24], spacing=4.0, multiple=8, heldout=0, log_every=4, save_every=4, lr=3e-3,
                    denoiser_crop=6, architecture=json.loads(json.dumps(TRAIN_ARCHITECTURE)))
    settings.update(changes)
    return ResidualTrainConfig(**settings)


@pytest.fixture(scope="module")
def stroke_model(tmp_path_factory):
    from MRISynthesisLib.training.export import export_latent_residual_run
    from MRISynthesisLib.training.latent_residual import train

    out = tmp_path_factory.mktemp("stroke-run")
    train(_config(out, "autoencoder"))
    latent = train(_config(out, "latent", steps=24, lesion_crops=1.0, image_weight=1.0, lesion_weight=1.0,
                           rule_weight=1.0))
    home = tmp_path_factory.mktemp("home")
    card = export_latent_residual_run(out, "stroke-dwi-adc", home / "models" / "stroke-dwi-adc", heldout=1,
                                      samples=1, steps=2, map_estimate="predictor")
    return latent, card, home


def test_latent_stage_records_the_lesion_aware_terms(stroke_model):
    latent, _, _ = stroke_model
    history = latent["history"]
    assert {"image", "lesion", "rule", "predictor", "diffusion"} <= set(history[-1])
    assert all(0.0 <= record["rule"] <= 1.0 for record in history)
    assert all(record["lesion"] > 0 for record in history)  # every crop holds core voxels (lesion_crops = 1)
    assert history[-1]["predictor"] < history[0]["predictor"]


def test_lesion_crops_are_centred_on_the_lesion():
    from MRISynthesisLib.training.latent_residual import LatentCrops

    lesion = torch.zeros(1, 32, 32, 32)
    lesion[0, 28:30, 2:4, 5:7] = 1  # a small lesion near a corner
    latent = {"condition": torch.zeros(8, 16, 16, 16), "target": torch.zeros(8, 16, 16, 16),
              "brain": torch.ones(1, 32, 32, 32), "lesion": lesion, "lesion_voxels": np.argwhere(lesion[0].numpy())}
    centred = LatentCrops([latent], (6, 6, 6), 4, 0, factor=2, lesion_crops=1.0)
    uniform = LatentCrops([latent], (6, 6, 6), 4, 0, factor=2, lesion_crops=0.0)
    assert all(next(centred)["lesion"].flatten(1).sum(1).gt(0).all() for _ in range(5))
    assert next(centred)["brain"].shape == (4, 1, 12, 12, 12)
    assert sum(int(next(uniform)["lesion"].flatten(1).sum(1).gt(0).sum()) for _ in range(5)) < 20


def test_exported_card_scores_the_core_and_names_the_input_method(stroke_model):
    _, card, _ = stroke_model
    assert card.input_method == "ctp-channels" and card.inputs == ("ctp",) and card.outputs == ("dwi", "adc")
    assert card.output_affine("dwi") == (1.0, 0.0)  # relative to normal brain
    assert 0.0 <= card.metrics["core_dice"] <= 1.0 and card.metrics["core_volume_error"] >= 0.0


def test_synthesize_from_a_4d_series_with_irregular_frame_times(stroke_model, tmp_path):
    from MRISynthesisLib.phantom.generator import generate_subject
    from MRISynthesisLib.pipeline import SynthesisRequest, synthesize
    from MRISynthesisLib.volume import read_volume, write_volume

    _, card, home = stroke_model
    subject = generate_subject(10_003, "stroke", 4.0, randomize_acquisition=True, maps=("ctp",))
    ctp = subject.maps["ctp"]
    times = np.asarray(ctp.metadata["frame_times_s"], float)
    keep = [i for i in range(len(times)) if i % 3 != 1]  # drop frames: irregular intervals
    ctp.array, ctp.metadata = ctp.array[keep], {"frame_times_s": [float(times[i]) for i in keep]}
    path = write_volume(ctp, tmp_path / "ctp.nrrd")
    result = synthesize(SynthesisRequest("stroke-dwi-adc", {"ctp": path}, output_dir=tmp_path / "out",
                                         model_home=home, steps=2))
    first_frame = read_volume(path, "ctp")
    for name in ("dwi", "adc"):
        written = read_volume(tmp_path / "out" / f"{name}.nii.gz", name)
        assert written.shape == first_frame.shape == first_frame.array.shape[1:]
        np.testing.assert_allclose(written.origin, first_frame.origin, atol=1e-4)
        np.testing.assert_allclose(written.spacing, first_frame.spacing[:3], atol=1e-6)
        assert np.isfinite(written.array).all()
    assert result.summary["lesions"]["method"].startswith("rule") and "adc" in result.summary["lesions"]["method"]
    assert (tmp_path / "out" / "lesions.csv").is_file() and (tmp_path / "out" / "montage.png").is_file()
    assert result.summary["units"] == {"dwi": "relative to the brain median", "adc": "1e-3 mm^2/s"}


def test_soft_threshold_dice_scores_the_rule_and_punishes_false_core():
    from MRISynthesisLib.training.latent_residual import rule_channel
    from MRISynthesisLib.training.losses import soft_threshold_dice_loss

    truth = torch.zeros(1, 1, 8, 8, 8)
    truth[..., 2:5, 2:5, 2:5] = 1
    brain = torch.ones_like(truth)
    exact = torch.where(truth > 0, 0.4, 0.9)  # ADC: core 0.4, elsewhere 0.9
    penumbra_as_core = exact.clone()
    penumbra_as_core[..., 5:8, 2:5, 2:5] = 0.55  # a shell predicted just under the threshold
    assert soft_threshold_dice_loss(exact, truth, brain, 0.62) < 0.05
    assert soft_threshold_dice_loss(penumbra_as_core, truth, brain, 0.62) > 0.3
    assert rule_channel("stroke-dwi-adc") == (1, 1.0, 0.62)  # ADC is the second output, in 1e-3 mm^2/s
    with pytest.raises(Exception, match="no threshold rule"):
        rule_channel("myelin-psr")


def test_threshold_margin_leaves_a_correct_map_alone_where_the_soft_dice_pushes_it():
    from MRISynthesisLib.training.losses import soft_threshold_dice_loss, threshold_margin_loss

    lesion = torch.zeros(1, 1, 8, 8, 8)
    lesion[..., 2:5, 2:5, 2:5] = 1
    brain = torch.ones_like(lesion)
    truth = torch.where(lesion > 0, 0.45, 0.75)  # normal white matter just above the 0.62 threshold
    exact = truth.clone().requires_grad_(True)
    assert float(threshold_margin_loss(exact.detach(), truth, lesion, brain, 0.62)) == 0.0
    soft_threshold_dice_loss(exact, lesion, brain, 0.62).backward()
    assert float(exact.grad[lesion == 0].min()) < 0  # the soft Dice raises correct normal tissue (0.2.0's bias)

    wrong = truth.clone()
    wrong[..., 5:8, 2:5, 2:5] = 0.55  # penumbra predicted as core
    wrong[..., 2, 2, 2] = 0.70  # a core voxel predicted as normal
    wrong.requires_grad_(True)
    loss = threshold_margin_loss(wrong, truth, lesion, brain, 0.62)
    loss.backward()
    # (missed 0.70 - 0.59 + 27 false voxels x (0.65 - 0.55)) / (27 lesion + 27 false voxels)
    assert float(loss.detach()) == pytest.approx((0.11 + 27 * 0.10) / 54, abs=1e-5)
    moved = wrong.grad != 0
    assert int(moved.sum()) == 27 + 1  # only the violating voxels
    assert float(wrong.grad[..., 5:8, 2:5, 2:5].max()) < 0 and float(wrong.grad[..., 2, 2, 2]) > 0


def test_freeze_denoiser_trains_the_predictor_of_an_installed_model_only(stroke_model, tmp_path, monkeypatch):
    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.training.latent_residual import train
    from MRISynthesisLib.training.checkpoint import load_weights

    _, _, home = stroke_model
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    with pytest.raises(InputError, match="--init-from"):
        _config(tmp_path, "latent", freeze_denoiser=True)
    train(_config(tmp_path, "autoencoder"))
    final = train(_config(tmp_path, "latent", steps=4, init_from="stroke-dwi-adc", freeze_denoiser=True,
                          rule_weight=1.0, rule_loss="margin", image_weight=1.0, lesion_crops=1.0))
    installed = {stem: {k: v.float() for k, v in state.items()}
                 for stem, state in ModelRegistry().load_state_dicts("stroke-dwi-adc").items()}
    denoiser = load_weights(tmp_path / "latent" / "final" / "denoiser.safetensors")
    predictor = load_weights(tmp_path / "latent" / "final" / "predictor.safetensors")
    assert all(torch.equal(denoiser[k], installed["denoiser"][k]) for k in installed["denoiser"])
    assert any(not torch.equal(predictor[k], installed["predictor"][k]) for k in installed["predictor"])
    assert "diffusion" not in final["history"][-1] and final["history"][-1]["rule"] >= 0.0
    assert final["architecture_update"]["residual_scale"] == pytest.approx(
        ModelRegistry().card("stroke-dwi-adc").architecture["residual_scale"], rel=1e-5)
    with pytest.raises(InputError, match="--rule-loss"):
        _config(tmp_path, "latent", rule_loss="hinge")
