"""The module's parameter node: typed fields bound to the .ui widgets through ``SlicerParameterName``.

Input and output selectors are generic slots (``input0``..``input3``, ``output0``..``output3``) that the
panel relabels for the selected task, so adding a task to ``MRISynthesisLib.tasks`` needs no GUI change.
"""

from __future__ import annotations

import enum
from typing import Annotated, Optional

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from MRISynthesisLib.tasks import TASKS

INPUT_SLOTS = 4
OUTPUT_SLOTS = 4

# One enum member per registered task (value = task id): the task combo box is generated from it.
TaskChoice = enum.Enum("TaskChoice", {task_id.replace("-", "_").upper(): task_id for task_id in TASKS})


class QualityPreset(enum.Enum):
    """Sampling quality: more denoising steps take longer and give smoother maps."""

    FAST = "fast"
    BALANCED = "balanced"
    BEST = "best"



@parameterNodeWrapper
class MRISynthesisParameterNode:
    task: TaskChoice = next(iter(TaskChoice))
    input0: Optional[vtkMRMLScalarVolumeNode] = None
    input1: Optional[vtkMRMLScalarVolumeNode] = None
    input2: Optional[vtkMRMLScalarVolumeNode] = None
    input3: Optional[vtkMRMLScalarVolumeNode] = None
    mask: Optional[vtkMRMLScalarVolumeNode] = None
    lesionSegmentation: Optional[vtkMRMLSegmentationNode] = None
    output0: Optional[vtkMRMLScalarVolumeNode] = None
    output1: Optional[vtkMRMLScalarVolumeNode] = None
    output2: Optional[vtkMRMLScalarVolumeNode] = None
    output3: Optional[vtkMRMLScalarVolumeNode] = None
    device: str = "auto"
    quality: QualityPreset = QualityPreset.BALANCED
    samples: Annotated[int, WithinRange(1, 16)] = 1
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
