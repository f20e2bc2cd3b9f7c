"""Training tests at tiny sizes (6 mm phantoms, 16^3 crops): every stage learns, resume, DDP on gloo, export."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from MRISynthesisLib.training import distributed
from MRISynthesisLib.training.data import CropStream, load_subjects, task_data
from MRISynthesisLib.training.loops import STAGE_STEMS, TrainConfig, build_stage, train

TINY = {
    "autoencoder_inputs": {"channels": [8, 16], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8},
    "autoencoder_target": {"channels": [8, 16], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8},
    "unet": {"channels": [16, 32], "attention_levels": [False, True], "num_res_blocks": 1, "num_head_channels": 16,
             "norm_num_groups": 8, "cross_attention_dim": 16},
    "controlnet": {"embedding_channels": 16},
    "tokens": {"grid": [2, 2, 2], "hidden": 16},
    "lora": {"rank": 2, "alpha": 2.0},
    "schedule": {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
                 "beta_end": 0.0195, "prediction_type": "v_prediction"},
}


def tiny_config(out, stage: str, **changes) -> TrainConfig:
    config = TrainConfig(task="myelin-psr", stage=stage, out=str(out), steps=12, batch=2, spacing=6.0,
                         crop=[16, 16, 16], multiple=4, subjects=2, seed=0, lr=3e-3, ema_decay=0.0,
                         save_every=4, log_every=4, architecture=json.loads(json.dumps(TINY)))
    return replace(config, **changes)


def fixed_batch_loss(config: TrainConfig, weights_folder=None) -> float:
    """The stage loss on one fixed batch with fixed noise, at initialisation or with the stage's final weights."""
    torch.manual_seed(config.seed * 1000)  # the same initialisation as train()
    networks, trained, losses, _ = build_stage(config, distributed.DistributedContext())
    if weights_folder is not None:
        for stem, module in trained.items():
            module.load_state_dict(load_file(str(weights_folder / f"{stem}.safetensors")))
    batch = next(CropStream(load_subjects(config, task_data(config.task)), tuple(config.crop), 4, seed=123))
    torch.manual_seed(5)
    with torch.no_grad():
        return float(losses(batch, 0)["total"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run through all three stages (shared by the tests below)."""
    out = tmp_path_factory.mktemp("run")
    finals = {stage: train(tiny_config(out, stage)) for stage in ("autoencoder", "diffusion", "control")}
    return out, finals


@pytest.mark.parametrize("stage", ["autoencoder", "diffusion", "control"])
def test_each_stage_reduces_its_loss(run_dir, stage):
    out, finals = run_dir
    config = tiny_config(out, stage)
    before = fixed_batch_loss(config)
    after = fixed_batch_loss(config, out / stage / "final")
    assert after < before, f"{stage}: {before:.4f} -> {after:.4f}"
    assert finals[stage]["steps"] == 12 and len(finals[stage]["history"]) == 3
    for stem in STAGE_STEMS[stage]:
        assert (out / stage / "final" / f"{stem}.safetensors").stat().st_size > 0


def test_control_stage_trains_a_small_share_on_a_frozen_backbone(run_dir):
    out, finals = run_dir
    trainable = finals["control"]["trainable"]
    assert 0 < trainable["share"] < 1 and trainable["parameters"] < trainable["total_parameters"]
    unet_after_diffusion = load_file(str(out / "diffusion" / "final" / "unet.safetensors"))
    config = tiny_config(out, "control")
    torch.manual_seed(0)
    networks, trained, _, _ = build_stage(config, distributed.DistributedContext())
    assert set(trained) == {"controlnet", "tokens", "lora"}
    assert not any(p.requires_grad for p in networks.denoiser.backbone.parameters())
    for key, value in networks.denoiser.backbone.state_dict().items():
        assert torch.equal(value, unet_after_diffusion[key])
    controlnet = networks.denoiser.controlnet.state_dict()  # starts as a copy of the trained encoder
    encoder_keys = [k for k in controlnet if k.startswith(("down_blocks.", "middle_block."))]
    assert encoder_keys and all(torch.equal(controlnet[k], unet_after_diffusion[k]) for k in encoder_keys)
    assert latent_scale_is_measured(finals)


def latent_scale_is_measured(finals) -> bool:
    scales = finals["autoencoder"]["latent_scale"]
    return all(0 < scales[k] < 1e3 for k in ("inputs", "target"))


def test_resume_continues_the_step_count(tmp_path):
    config = tiny_config(tmp_path, "autoencoder", steps=4, save_every=2, log_every=2)
    train(config)
    state = json.loads((tmp_path / "autoencoder" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    resumed = train(replace(config, steps=6, resume=True))
    assert resumed["steps"] == 6 and resumed["steps_this_run"] == 2
    assert [record["step"] for record in resumed["history"]] == [2, 4, 6]
    state = json.loads((tmp_path / "autoencoder" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    optimizer = load_file(str(tmp_path / "autoencoder" / "checkpoint" / "optimizer.safetensors"))
    assert any(key.endswith("exp_avg") for key in optimizer)
    assert int(optimizer["state.0.step"]) == 6  # Adam's own step counter continued too


def test_folder_dataset_from_phantom_command(tmp_path):
    from MRISynthesisLib.cli import main

    assert main(["phantom", "--n", "2", "--spacing", "6", "--randomize-acquisition", "--maps", "mprage", "t1w_se",
                 "flair", "--out", str(tmp_path / "subjects")]) == 0
    config = tiny_config(tmp_path / "run", "autoencoder", data=str(tmp_path / "subjects"), steps=2)
    subjects = load_subjects(config, task_data("myelin-psr"))
    assert len(subjects) == 2
    assert subjects[0].inputs.shape[0] == 2 and subjects[0].target.shape[0] == 1
    assert all(s % 4 == 0 for s in subjects[0].inputs.shape[1:])
    assert float(subjects[0].target.max()) > 0.2  # PSR / 0.25 in WM
    assert train(config)["steps"] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_cpu_processes_on_gloo_stay_in_sync(tmp_path):
    config = tiny_config(tmp_path, "autoencoder")
    load_subjects(config, task_data("myelin-psr"))  # generate the shared subject cache once
    mp.spawn(_ddp_worker_saving, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    initial = load_file(str(tmp_path / "initial0.safetensors"))
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)  # they did train
    log = (tmp_path / "autoencoder" / "train.log").read_text().splitlines()
    assert json.loads(log[-1])["step"] == 2


def _ddp_worker_saving(rank: int, world_size: int, port: int, out: str) -> None:
    """Train 2 DDP steps; each rank saves its own replica's weights (and rank 0 the initial ones)."""
    import os

    import MRISynthesisLib.training.loops as loops

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    context = distributed.init_distributed("cpu")
    config = tiny_config(out, "autoencoder", steps=2, save_every=100)
    original = loops.build_stage

    def build_and_keep(config, context):
        result = original(config, context)
        trained = result[1]
        if context.rank == 0:
            save_file({f"{s}.{k}": v.clone() for s, m in trained.items() for k, v in m.state_dict().items()},
                      f"{out}/initial0.safetensors")
        build_and_keep.trained = trained
        return result

    loops.build_stage = build_and_keep
    try:
        train(config, context)
    finally:
        loops.build_stage = original
    trained = build_and_keep.trained
    save_file({f"{s}.{k}": v.clone() for s, m in trained.items() for k, v in m.state_dict().items()},
              f"{out}/rank{rank}.safetensors")
    distributed.shutdown(context)


def test_export_writes_a_loadable_model_with_heldout_metrics(run_dir, tmp_path):
    from MRISynthesisLib.engine.model import SynthesisModel
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.training.export import export_run

    out, _ = run_dir
    card = export_run(out, "myelin-psr", tmp_path / "myelin-psr-tiny", model_id="myelin-psr-tiny", heldout=1)
    assert card.inputs == ("t1w", "flair") and card.outputs == ("psr",)
    assert card.metrics["heldout_seeds"] == [10000] and card.metrics["psnr_db"] is not None
    assert card.training["stages"]["control"]["steps"] == 12
    assert card.architecture["latent_scale"]["target"] > 0
    registry = ModelRegistry(home=tmp_path / "home", bundled_dir=tmp_path / "none")
    registry.install(tmp_path / "myelin-psr-tiny")
    model = SynthesisModel.from_registry(registry, "myelin-psr-tiny", device="cpu")
    mean, std = model.predict(torch.rand(1, 2, 16, 16, 16), steps=2)
    assert mean.shape == (1, 1, 16, 16, 16)


def test_time_budget_stops_early_and_records_the_steps_done(tmp_path):
    final = train(tiny_config(tmp_path, "autoencoder", steps=50, max_minutes=1e-6))
    assert final["steps"] == 1 and final["steps_this_run"] == 1
    state = json.loads((tmp_path / "autoencoder" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1


def test_export_refuses_an_autoencoder_retrained_after_later_stages(run_dir, tmp_path):
    import shutil

    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.training.export import export_run

    out, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("subjects"))
    state_path = copy / "autoencoder" / "final" / "state.json"
    state = json.loads(state_path.read_text())
    state["latent_scale"]["target"] *= 1.01
    state_path.write_text(json.dumps(state))
    with pytest.raises(InputError, match="re-run"):
        export_run(copy, "myelin-psr", tmp_path / "model", heldout=0)
    assert not (tmp_path / "model").exists()
