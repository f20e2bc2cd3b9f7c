"""The module's parameter node: typed fields bound to the .ui widgets through ``SlicerParameterName``.

Input and output selectors are generic slots (``input0``..``input3``, ``output0``..``output3``) that the
panel relabels for the selected task, so adding a task to ``MRISynthesisLib.tasks`` needs no GUI change.
Enum combo boxes show ``label()`` (Slicer's enum connector uses it, else the member name).
"""

from __future__ import annotations

import enum
from typing import Annotated, Optional

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from MRISynthesisLib.tasks import QUALITY_SAMPLES, QUALITY_STEPS, TASKS

INPUT_SLOTS = 4
OUTPUT_SLOTS = 4


class _TaskChoiceBase(enum.Enum):
    def label(self) -> str:
        return _(TASKS[self.value].title)


# One member per registered task (value = task id): the task combo box is generated from it.
TaskChoice = _TaskChoiceBase("TaskChoice", {task_id.replace("-", "_").upper(): task_id for task_id in TASKS})


class QualityPreset(enum.Enum):
    """Sampling quality: more denoising steps take longer and give smoother maps."""

    FAST = "fast"
    BALANCED = "balanced"
    BEST = "best"

    def label(self) -> str:
        return _("{0} ({1} steps x {2} samples)").format(_(self.value), QUALITY_STEPS[self.value],
                                                         QUALITY_SAMPLES[self.value])


def quality_tooltip() -> str:
    return ", ".join(_("{0}: mean of {1} samples, {2} sampling steps each").format(
        _(name), QUALITY_SAMPLES[name], steps) for name, steps in QUALITY_STEPS.items())


def samples_for(samples: int, quality: "QualityPreset") -> int:
    """The number of samples to average: the user's choice, or the quality preset's when left at 0."""
    return int(samples) if samples > 0 else QUALITY_SAMPLES[quality.value]


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
    device: str = "auto"  # "auto", "cpu", "cuda:N" or "mps"; its combo box is filled at run time
    quality: QualityPreset = QualityPreset.BALANCED
    samples: Annotated[int, WithinRange(0, 16)] = 0  # 0 = the quality preset's number of samples
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
