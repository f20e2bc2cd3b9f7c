"""Lesion segmentation scores: voxel Dice, lesion-wise F1 and absolute volume difference.

Lesions are 26-connected components. A true lesion is *detected* when at least ``DETECTION_OVERLAP`` of its
voxels are predicted; a predicted lesion is *correct* when at least that fraction of its voxels are true
lesion. Lesion-wise F1 = 2 * recall * precision / (recall + precision) with recall = detected / true lesions
and precision = correct / predicted lesions (the MSSEG-2016 style of counting, with a 10 % overlap).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DETECTION_OVERLAP = 0.10
_CONNECTIVITY = np.ones((3, 3, 3), bool)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Voxel Dice of two binary masks; 1.0 when both are empty."""
    prediction, truth = prediction > 0, truth > 0
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def _fraction_covered(components: np.ndarray, count: int, other: np.ndarray) -> np.ndarray:
    """Per component 1..count, the fraction of its voxels inside ``other``."""
    if count == 0:
        return np.zeros(0)
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones(components.shape, np.float32), components, index)
    covered = ndimage.sum_labels(other.astype(np.float32), components, index)
    return covered / np.maximum(sizes, 1)


def lesion_detection(prediction: np.ndarray, truth: np.ndarray, overlap: float = DETECTION_OVERLAP) -> dict:
    """Lesion-wise counts and F1: ``true_lesions, predicted_lesions, detected, correct, recall, precision, f1``."""
    prediction, truth = prediction > 0, truth > 0
    true_components, true_count = ndimage.label(truth, _CONNECTIVITY)
    predicted_components, predicted_count = ndimage.label(prediction, _CONNECTIVITY)
    detected = int((_fraction_covered(true_components, true_count, prediction) >= overlap).sum())
    correct = int((_fraction_covered(predicted_components, predicted_count, truth) >= overlap).sum())
    recall = detected / true_count if true_count else 1.0
    precision = correct / predicted_count if predicted_count else 1.0
    f1 = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
    return {"true_lesions": true_count, "predicted_lesions": predicted_count, "detected": detected,
            "correct": correct, "recall": recall, "precision": precision, "f1": f1}


def score_segmentation(prediction: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    """Dice, lesion-wise detection (see ``lesion_detection``), volumes (mL) and the volume difference.

    ``volume_difference`` is ``|predicted - true| / true`` (inf when the truth is empty and something was found).
    """
    true_ml = float((truth > 0).sum()) * voxel_ml
    predicted_ml = float((prediction > 0).sum()) * voxel_ml
    if true_ml > 0:
        difference = abs(predicted_ml - true_ml) / true_ml
    else:
        difference = 0.0 if predicted_ml == 0 else float("inf")
    return {"dice": dice(prediction, truth), **lesion_detection(prediction, truth), "true_ml": true_ml,
            "predicted_ml": predicted_ml, "volume_difference": difference}
