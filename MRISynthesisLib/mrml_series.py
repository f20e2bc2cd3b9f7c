"""Input nodes that are time series: Slicer sequences and MultiVolume nodes, with their frame times.

In Slicer a 4D CT perfusion series loads as a sequence (a ``vtkMRMLSequenceNode`` of 3D volumes, shown through
a browser's 3D *proxy* node) or, from the MultiVolume importer, as one volume node whose voxels hold every
frame with the frame times in its ``MultiVolume.FrameLabels`` attribute. The user picks the volume they see
(the proxy) in the input selector; ``input_volume`` sends the whole series.
"""

from __future__ import annotations

import numpy as np

from . import mrml
from .errors import InputError
from .volume import Volume

TIME_UNITS_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3}


def frame_times_s(labels: list[str], unit: str | None) -> list[float] | None:
    """Frame labels in a time unit as seconds; ``None`` when the unit is not one of time or a label is not a
    number (a sequence indexed by something else)."""
    scale = TIME_UNITS_S.get((unit or "").strip().lower())
    if scale is None:
        return None
    try:
        return [float(label) * scale for label in labels]
    except ValueError:
        return None


def sequence_behind(node):
    """The sequence node ``node`` is (a ``vtkMRMLSequenceNode``) or shows (a sequence browser's proxy node);
    ``None`` for a plain node."""
    if node.IsA("vtkMRMLSequenceNode"):
        return node
    scene = node.GetScene()
    if scene is None:
        return None
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for index in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(index)
        if browser.IsProxyNodeID(node.GetID()):
            return browser.GetSequenceNode(node)
    return None


def sequence_to_volume(sequence, name: str) -> Volume:
    """A sequence of 3D volume nodes as a ``(frames, z, y, x)`` ``Volume``; its index values become
    ``metadata["frame_times_s"]`` when the index is a time.

    Raises:
        InputError: a frame that is not a 3D volume or has another grid than the first.
    """
    frames = []
    for index in range(sequence.GetNumberOfDataNodes()):
        node = sequence.GetNthDataNode(index)
        frame = mrml.node_to_volume(node) if node is not None and node.IsA("vtkMRMLVolumeNode") else None
        if frame is None or frame.array.ndim != 3:
            raise InputError(f"frame {index + 1} of sequence {sequence.GetName()!r} is not a 3D volume", name)
        if frames and not frame.same_grid(frames[0]):
            raise InputError(f"frame {index + 1} of sequence {sequence.GetName()!r} has a different grid from "
                             "frame 1; frames must share one grid", name)
        frames.append(frame)
    times = frame_times_s([sequence.GetNthIndexValue(i) for i in range(len(frames))], sequence.GetIndexUnit())
    metadata = {"node": sequence.GetName(), **({"frame_times_s": times} if times is not None else {})}
    first = frames[0]
    return Volume(np.stack([frame.array for frame in frames]), first.origin, first.spacing, first.direction,
                  metadata)


def input_volume(node, name: str = "input") -> Volume:
    """What the worker gets for an input node: the whole series behind a sequence (or its proxy) with two or
    more frames, else the node's voxels (``mrml.node_to_volume``; a MultiVolume node's frame labels become
    ``metadata["frame_times_s"]``)."""
    if node is None:
        raise InputError("no volume node selected", name)
    sequence = sequence_behind(node)
    if sequence is not None and sequence.GetNumberOfDataNodes() >= 2:
        return sequence_to_volume(sequence, name)
    volume = mrml.node_to_volume(node)
    labels = node.GetAttribute("MultiVolume.FrameLabels")
    if volume.array.ndim == 4 and labels:
        times = frame_times_s(labels.split(","), node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits"))
        if times is not None:
            volume.metadata["frame_times_s"] = times
    return volume
