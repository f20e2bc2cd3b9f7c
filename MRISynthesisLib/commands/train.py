"""``mrisynthesis train``: train one stage of a task's latent diffusion model, or export a finished run.

Two recipes, each a sequence of stages into one run folder, every stage resumable (``--resume``):

- ``latent-residual`` (default, ``training.latent_residual``): autoencoder -> latent -> export; one process.
- ``demist``: autoencoder -> diffusion -> control -> export (frozen backbone + ControlNet + tokens + LoRA);
  runs under ``torchrun --nproc_per_node N`` with DDP (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import shlex
import sys

RECIPE_STAGES = {"latent-residual": ("autoencoder", "latent", "export"),
                 "demist": ("autoencoder", "diffusion", "control", "export")}
STAGE_CHOICES = ("autoencoder", "latent", "diffusion", "control", "export")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model stage or export a trained model",
        description="Train the conditional latent diffusion model of a task, one stage at a time, into RUN_DIR; "
                    "'--stage export' writes the model folder (card.json + safetensors).")
    parser.add_argument("--task", required=True, help="task id, e.g. myelin-psr")
    parser.add_argument("--recipe", default="latent-residual", choices=list(RECIPE_STAGES),
                        help="latent-residual (default): shared MR autoencoder, then latent mean predictor + "
                        "residual diffusion; demist: aligned autoencoders, backbone, then ControlNet + tokens + LoRA")
    parser.add_argument("--stage", required=True, choices=STAGE_CHOICES,
                        help="autoencoder: the autoencoder(s); latent (latent-residual): mean predictor + residual "
                        "diffusion on precomputed latents; diffusion (demist): the unconditional latent denoiser; "
                        "control (demist): ControlNet + tokens + LoRA on the frozen backbone; export: write the "
                        "model folder (card.json + safetensors) with held-out metrics")
    parser.add_argument("--data", default="phantom", help="'phantom' (generated on the fly) or a folder of "
                        "subject folders written by 'mrisynthesis phantom'")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, logs, weights)")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps of this stage (total, when resuming)")
    parser.add_argument("--batch", type=int, default=2, help="crops per step and process")
    parser.add_argument("--spacing", type=float, default=2.0, help="model grid spacing in mm")
    parser.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64], metavar=("D", "H", "W"),
                        help="training crop size, each a multiple of --multiple")
    parser.add_argument("--multiple", type=int, default=16, help="grid sizes must be divisible by this")
    parser.add_argument("--subjects", type=int, default=24, help="phantom subjects (or max folders) to train on")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the exported weights "
                        "(0 = the last weights)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order, crops and initial weights")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/<stage>/checkpoint")
    parser.add_argument("--save-every", type=int, default=100, help="steps between resumable checkpoints")
    parser.add_argument("--log-every", type=int, default=10, help="steps between log lines (train.log, JSON)")
    parser.add_argument("--decode-every", type=int, default=1, help="control stage: decoded-image losses every N steps")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop this stage after this much wall time "
                        "(the card records the steps actually done); 0 = no limit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--architecture", default=None, help="JSON merged into the default network configuration")
    parser.add_argument("--model-dir", default=None, help="export: model folder to write (default RUN_DIR/model)")
    parser.add_argument("--model-version", default=None, help="export: version written in the card (default: the "
                        "installed or bundled model's version with its minor number raised, 0.1.0 without one)")
    parser.add_argument("--heldout", type=int, default=4, help="export: held-out phantom subjects for metrics "
                        "(latent-residual autoencoder stage: for its reconstruction PSNR)")
    parser.add_argument("--init-from", default="", metavar="MODEL_ID",
                        help="latent stage (latent-residual): start from the weights of this installed or bundled "
                        "model, e.g. myelin-psr, to continue training a shipped model in a later session")
    parser.add_argument("--lesion-crops", type=float, default=0.0, help="latent stage (latent-residual): share of "
                        "crops centred on a lesion voxel (e.g. 0.5 for a small infarct core)")
    parser.add_argument("--image-weight", type=float, default=0.0, help="latent stage (latent-residual): weight of "
                        "the L1 of the decoded mean prediction in the brain (LAPT's image-space loss)")
    parser.add_argument("--lesion-weight", type=float, default=0.0, help="latent stage (latent-residual): weight of "
                        "the L1 of the decoded mean prediction in the lesion (LAPT's lesion-masked loss)")
    parser.add_argument("--rule-weight", type=float, default=0.0, help="latent stage (latent-residual): weight of "
                        "the task's threshold-rule term (--rule-loss) on the decoded mean (stroke: the infarct core, "
                        "ADC < 0.62), which penalises a penumbra predicted as core")
    parser.add_argument("--rule-loss", choices=["dice", "margin"], default="dice", help="latent stage "
                        "(latent-residual): the rule term, soft Dice, or a hinge that only moves voxels on the wrong "
                        "side of the threshold (never past their true value), so normal tissue is not biased")
    parser.add_argument("--freeze-denoiser", action="store_true", help="latent stage (latent-residual): with "
                        "--init-from, train the mean predictor only; the denoiser's weights stay as loaded")
    parser.add_argument("--samples", type=int, default=4, help="export (latent-residual): samples averaged for the "
                        "held-out metrics")
    parser.add_argument("--map-estimate", choices=["samples", "predictor"], default="samples",
                        help="export (latent-residual): the output map is the mean of the K samples, or the decoded "
                        "mean prediction they converge to (no Monte Carlo noise); the SD of the samples is the "
                        "uncertainty either way")
    parser.add_argument("--float32", action="store_true", help="export (latent-residual): keep float32 weights "
                        "(default float16; the card records the difference)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..errors import InputError

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "mrisynthesis " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.stage not in RECIPE_STAGES[args.recipe]:
        raise InputError(f"recipe {args.recipe} has stages {', '.join(RECIPE_STAGES[args.recipe])}, not "
                         f"{args.stage!r}", name="--stage")
    architecture_overrides = {}
    if args.architecture:
        try:
            architecture_overrides = json.loads(args.architecture)
        except json.JSONDecodeError as error:
            raise InputError(f"is not valid JSON ({error.msg})", name="--architecture") from None
    if args.stage == "export" and args.model_version is None:
        args.model_version = next_version(args.task)
    if args.recipe == "latent-residual":
        return _run_latent_residual(args, command, architecture_overrides)
    if args.stage == "export":
        from ..training.export import export_run

        folder = args.model_dir or f"{args.out}/model"
        card = export_run(args.out, args.task, folder, version=args.model_version, heldout=args.heldout,
                          command=command)
        print(json.dumps({"model": str(card.folder), "metrics": {k: v for k, v in card.metrics.items()
                                                                 if k != "subjects"}}, indent=2))
        return 0

    from ..training import distributed
    from ..training.loops import DEFAULT_ARCHITECTURE, TrainConfig, train

    architecture = _merged(DEFAULT_ARCHITECTURE, architecture_overrides)
    config = TrainConfig(task=args.task, stage=args.stage, out=args.out, data=args.data, steps=args.steps,
                         batch=args.batch, spacing=args.spacing, crop=list(args.crop), multiple=args.multiple,
                         subjects=args.subjects, seed=args.seed, lr=args.lr, resume=args.resume,
                         save_every=args.save_every, log_every=args.log_every, decode_every=args.decode_every,
                         max_minutes=args.max_minutes, ema_decay=args.ema_decay,
                         architecture=architecture, command=command)
    context = distributed.init_distributed(args.device)
    try:
        final = train(config, context)
    finally:
        distributed.shutdown(context)
    if context.is_main:
        print(json.dumps({k: final[k] for k in ("stage", "steps", "duration_s", "sec_per_step")}, indent=2))
    return 0


def next_version(task_id: str) -> str:
    """The task model's installed or bundled version with the minor number raised (``0.3.0`` -> ``0.4.0``);
    ``0.1.0`` when none is installed."""
    from ..errors import ModelNotInstalledError
    from ..model_store.registry import ModelRegistry
    from ..tasks import get_task

    try:
        version = ModelRegistry().card(get_task(task_id).model_id).version
    except ModelNotInstalledError:
        return "0.1.0"
    major, minor = (int(part) for part in version.split(".")[:2])
    return f"{major}.{minor + 1}.0"


def _merged(defaults: dict, overrides: dict) -> dict:
    """``defaults`` with ``overrides`` merged one level deep (a dict value updates the default dict)."""
    architecture = json.loads(json.dumps(defaults))
    for key, value in overrides.items():
        architecture[key] = {**architecture[key], **value} if isinstance(value, dict) and \
            isinstance(architecture.get(key), dict) else value
    return architecture


def _run_latent_residual(args, command: str, overrides: dict) -> int:
    if args.stage == "export":
        from ..training.export import export_latent_residual_run

        card = export_latent_residual_run(args.out, args.task, args.model_dir or f"{args.out}/model",
                                          version=args.model_version, heldout=args.heldout, samples=args.samples,
                                          half=not args.float32, command=command, map_estimate=args.map_estimate)
        print(json.dumps({"model": str(card.folder), "metrics": {k: v for k, v in card.metrics.items()
                                                                 if k not in ("subjects", "clean")}}, indent=2))
        return 0
    from ..training.latent_residual import DEFAULT_ARCHITECTURE, ResidualTrainConfig, train

    config = ResidualTrainConfig(task=args.task, stage=args.stage, out=args.out, data=args.data, steps=args.steps,
                                 batch=args.batch, spacing=args.spacing, crop=list(args.crop),
                                 multiple=args.multiple, subjects=args.subjects, seed=args.seed, lr=args.lr,
                                 resume=args.resume, save_every=args.save_every, log_every=args.log_every,
                                 max_minutes=args.max_minutes, ema_decay=args.ema_decay, heldout=args.heldout,
                                 init_from=args.init_from, lesion_crops=args.lesion_crops,
                                 image_weight=args.image_weight, lesion_weight=args.lesion_weight,
                                 rule_weight=args.rule_weight, rule_loss=args.rule_loss,
                                 freeze_denoiser=args.freeze_denoiser,
                                 architecture=_merged(DEFAULT_ARCHITECTURE, overrides), command=command)
    final = train(config)
    print(json.dumps({k: final.get(k) for k in ("stage", "steps", "duration_s", "heldout_reconstruction_psnr_db",
                                                 "architecture_update")}, indent=2))
    return 0
