#!/usr/bin/env bash
# Reproduce the bundled stroke model (MRISynthesisLib/model_store/bundled/stroke-dwi-adc) on 2 CPU cores.
#
# Recipe "latent-residual" (MRISynthesisLib/engine/latent_residual.py) with the condition a 15-channel summary of
# the CT perfusion series (preprocess "ctp-channels"), on 40 phantom stroke subjects (2 mm grid). The decoded
# mean gets LAPT's lesion-aware terms (L1 in the brain and in the infarct core, half of the crops centred on the
# core) and the soft Dice of the core rule ADC < 0.62; benchmarks/results/stroke_ablation.json measures what
# each adds. ~100 min on one core (latents of 40 subjects ~25 min, 8400 steps ~75 min). Resumable: run again
# to continue into the same RUN_DIR (raise STEPS to train longer).
#
# 0.3.0 continues 0.2.0 (CONTINUE=1, with 0.2.0 bundled): the mean predictor alone (--freeze-denoiser keeps 0.2.0's
# denoiser file byte for byte), its head grown to local-affine, and the rule term as a hinge (--rule-loss margin)
# instead of the soft Dice, whose sigmoid tail had raised normal-tissue ADC by 0.15e-3 mm^2/s; 80 minutes.
#
# Usage: scripts/train_stroke.sh [RUN_DIR] [MODEL_DIR]     (env: STEPS=8400 SUBJECTS=40 RULE_WEIGHT=0.5 CONTINUE=0)
set -euo pipefail
source "$(dirname "$0")/env.sh"
RUN=${1:-runs/stroke-dwi-adc}
MODEL=${2:-MRISynthesisLib/model_store/bundled/stroke-dwi-adc}
export OMP_NUM_THREADS=1
COMMON=(--task stroke-dwi-adc --data phantom --out "$RUN" --subjects "${SUBJECTS:-40}" --seed 0 --spacing 2
        --multiple 16 --threads 1)
LOSSES=(--lesion-crops 0.5 --image-weight 1 --lesion-weight 1 --log-every 50 --heldout 0 --resume)

mrisynthesis train "${COMMON[@]}" --stage autoencoder --heldout 2
if [ "${CONTINUE:-0}" = 1 ]; then
  mrisynthesis train "${COMMON[@]}" --stage latent --steps 12000 --batch 2 --crop 64 64 64 --lr 5e-4 "${LOSSES[@]}" \
    --rule-weight 1 --rule-loss margin --init-from stroke-dwi-adc --freeze-denoiser --max-minutes 80 --save-every 500
else
  mrisynthesis train "${COMMON[@]}" --stage latent --steps "${STEPS:-8400}" --batch 2 --crop 64 64 64 --lr 1e-3 \
    "${LOSSES[@]}" --rule-weight "${RULE_WEIGHT:-0.5}" --architecture '{"predictor": {"head": "direct"}}' \
    --save-every 200
fi
mrisynthesis train --task stroke-dwi-adc --stage export --out "$RUN" --model-dir "$MODEL" --heldout 6 --samples 4 \
  --map-estimate predictor --threads 1
