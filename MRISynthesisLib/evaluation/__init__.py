"""Evaluation of synthesis models against ground truth and baselines.

- ``harness``: held-out cases (phantom seeds 10000.. or subject folders), methods, metrics, tables, montage;
- ``baselines``: per-voxel polynomial regression and a deterministic MONAI UNet regressor (trained by
  ``training.train_baseline`` into the user model cache; not bundled);
- ``real_case``: plausibility checks on a real patient without a ground-truth map;
- ``run``: ``run_evaluation`` behind ``mrisynthesis evaluate``.
"""
