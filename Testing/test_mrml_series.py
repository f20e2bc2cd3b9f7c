"""Time-series input nodes on the real MRML library (slicer-core): a CT perfusion sequence picked through its
proxy node, a MultiVolume-style vector node, and the frame checks."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from MRISynthesisLib import mrml
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.mrml_series import input_volume
from MRISynthesisLib.perfusion import frame_times
from MRISynthesisLib.volume import Volume, read_volume, write_volume

from test_mrml import make_volume, scene  # noqa: F401  (the scene fixture)


@pytest.fixture()
def sequences(scene):  # noqa: F811
    """The scene with Slicer's Sequences logic, which registers the browser node as in Slicer."""
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    scene.sequences_logic_keepalive = logic
    return scene, logic


def add_sequence(scene, logic, frames: list[Volume], labels: list[str], unit: str = "s"):
    """A sequence of the frames (stored as copies, as the sequence importer does) shown by a browser; returns
    ``(sequence, proxy)``."""
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "CTP")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit(unit)
    for frame, label in zip(frames, labels):
        node = mrml.volume_to_node(scene, frame, "frame")
        sequence.SetDataNodeAtValue(node, label)
        scene.RemoveNode(node)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "CTP browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    logic.UpdateProxyNodesFromSequences(browser)
    return sequence, browser.GetProxyNode(sequence)


def test_a_sequence_proxy_sends_the_whole_series_with_its_times(sequences, tmp_path):
    scene, logic = sequences
    frames = [make_volume(seed=k) for k in range(4)]
    sequence, proxy = add_sequence(scene, logic, frames, ["0", "1500", "3000", "6000"], unit="ms")
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")  # what the input selector shows
    series = input_volume(proxy, "ctp")
    assert series.channels == 4 and series.same_grid(mrml.node_to_volume(proxy))
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(series.array[k], frame.array)
    np.testing.assert_allclose(frame_times(series), [0.0, 1.5, 3.0, 6.0])
    assert input_volume(sequence, "ctp").channels == 4  # the sequence node itself works too
    # What the worker reads back from the file the Slicer run writes (NRRD keeps irregular times).
    loaded = read_volume(write_volume(series, tmp_path / "ctp.nrrd"))
    np.testing.assert_allclose(frame_times(loaded), [0.0, 1.5, 3.0, 6.0], atol=1e-4)


def test_a_plain_volume_and_a_one_frame_sequence_stay_3d(sequences):
    scene, logic = sequences
    plain = mrml.volume_to_node(scene, make_volume(), "t1w")
    assert input_volume(plain, "t1w").array.ndim == 3
    _, proxy = add_sequence(scene, logic, [make_volume()], ["0"])
    assert input_volume(proxy, "ctp").array.ndim == 3  # then the CTP check says: no time axis / single frame


def test_sequence_frames_of_another_grid_or_without_time_index_are_refused(sequences):
    scene, logic = sequences
    moved = make_volume(seed=1)
    moved.origin = (5.0, 0.0, 0.0)
    _, proxy = add_sequence(scene, logic, [make_volume(), moved], ["0", "2"])
    with pytest.raises(InputError, match="frame 2 .* different grid"):
        input_volume(proxy, "ctp")
    _, proxy = add_sequence(scene, logic, [make_volume(seed=k) for k in range(3)], ["1", "2", "3"], unit="")
    with pytest.raises(InputError, match="no frame timing"):
        frame_times(input_volume(proxy, "ctp"), "ctp")


def test_multivolume_frame_labels_become_frame_times(scene):  # noqa: F811
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "ctp")
    frames = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)
    slicer.util.updateVolumeFromArray(node, np.moveaxis(frames, 0, -1).copy())
    node.SetAttribute("MultiVolume.FrameLabels", "0,2000,5000")
    node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms")
    series = input_volume(node, "ctp")
    np.testing.assert_array_equal(series.array, frames)
    np.testing.assert_allclose(frame_times(series), [0.0, 2.0, 5.0])
