#!/usr/bin/env bash
# Set up ./.venv, simulate an MS patient (1 mm, built-in MNI152 anatomy, randomised acquisition) and
# synthesize its myelin (PSR) map with the bundled model (balanced preset: mean of 4 samples, 10 steps each).
# Results: demo/output/ (psr.nii.gz, psr_uncertainty.nii.gz, lesions.nii.gz, lesions.csv/json, montage.png,
# summary.json); the simulated case with its ground-truth PSR is in demo/case/sub-2026/.
source "$(dirname "$0")/env.sh"
mrisynthesis phantom --n 1 --seed 2026 --pathology ms --spacing 1.0 --randomize-acquisition \
  --maps mprage flair --out demo/case --overwrite
case_dir=demo/case/sub-2026  # subject folders are named after their seed
mrisynthesis synthesize --task myelin-psr \
  --input t1w="$case_dir/mprage.nii.gz" --input flair="$case_dir/flair.nii.gz" \
  --mask "$case_dir/mask_brain.nii.gz" --output demo/output --overwrite "$@"
echo "Maps, lesion table and montage: $(pwd)/demo/output (ground truth: $case_dir/psr.nii.gz)"
