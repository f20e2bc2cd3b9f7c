#!/usr/bin/env bash
# Set up ./.venv, simulate an MS patient from the built-in anatomy and synthesize its myelin (PSR) map.
# Results: demo/output/ (psr.nii.gz, lesions.nii.gz, lesions.csv, montage.png, summary.json).
source "$(dirname "$0")/env.sh"
mrisynthesis phantom --n 1 --seed 2026 --pathology ms --spacing 1.0 --randomize-acquisition --out demo/case --overwrite
case_dir=demo/case/sub-000
mrisynthesis synthesize --task myelin-psr \
  --input t1w="$case_dir/mprage.nii.gz" --input flair="$case_dir/flair.nii.gz" \
  --mask "$case_dir/brain.nii.gz" --samples 3 --output demo/output --overwrite "$@"
echo "Maps, lesion table and montage written to $(pwd)/demo/output (ground truth PSR: $case_dir/psr.nii.gz)"
