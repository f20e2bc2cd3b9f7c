#!/usr/bin/env bash
# Reproduce the bundled myelin-PSR model (MRISynthesisLib/models/bundled/myelin-psr) on CPU.
#
# Four commands, run in order into one run folder: two autoencoders (T1w+FLAIR and PSR, aligned latents),
# the unconditional latent denoiser (backbone), the conditioning streams on the frozen backbone (ControlNet +
# cross-attention tokens + LoRA), then export with held-out metrics (phantom seeds 10000-10003).
# Training subjects: phantom seeds 0-23 (MS and healthy alternating), randomised acquisition, 2 mm grid.
# Measured on 2 shared CPU cores (one torch thread: faster than two when the cores are shared): see the
# "training" field of the model card for the exact commands and durations. Diffusion and control were
# time-boxed with --max-minutes 13 / 22 and reached 282 / 1129 steps; the step counts below reproduce those
# runs exactly (constant learning rate, deterministic data stream, one thread).
#
# Usage: scripts/train_myelin_psr.sh [RUN_DIR] [MODEL_DIR]
set -euo pipefail
RUN=${1:-runs/myelin-psr}
MODEL=${2:-MRISynthesisLib/models/bundled/myelin-psr}
COMMON=(--task myelin-psr --data phantom --out "$RUN" --subjects 24 --seed 0 --spacing 2 --multiple 16 --threads 1)

mrisynthesis train "${COMMON[@]}" --stage autoencoder --steps 300 --batch 4 --crop 32 32 32 --lr 1e-3
mrisynthesis train "${COMMON[@]}" --stage diffusion --steps 282 --batch 2 --crop 64 64 64 --lr 1e-3 --ema-decay 0.99
mrisynthesis train "${COMMON[@]}" --stage control --steps 1129 --batch 2 --crop 48 48 48 --lr 1e-3 --ema-decay 0.99
mrisynthesis train --task myelin-psr --stage export --out "$RUN" --model-dir "$MODEL" --heldout 4 --threads 1
