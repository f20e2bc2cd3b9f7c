"""Runs through the Slicer module: real worker subprocesses started by ``slicer.util.launchConsoleProcess``,
results imported into real MRML; cancel, errors, devices, models (fixtures from ``test_slicer_module``)."""

from __future__ import annotations

import logging
import time
import types

import pytest

import test_slicer_qt as qtstub
from test_slicer_module import env, make_widget, pytestmark, volume_node  # noqa: F401 (fixture, skip mark)


def wait_for(panel, timeout=240):
    deadline = time.monotonic() + timeout
    while panel.process is not None:
        assert time.monotonic() < deadline, list(panel.ui.logText.lines)[-20:]
        panel.poll()
        time.sleep(0.05)


def select_inputs(widget, env):
    params = widget._parameterNode
    params.input0, params.input1 = volume_node(env, "sub T1w"), volume_node(env, "sub FLAIR", 400.0)
    return params


def test_apply_runs_worker_through_launch_console_process_and_imports_nodes(env, monkeypatch):
    launched = []
    real_launch = env.slicer.util.launchConsoleProcess

    def recording_launch(args, **kw):
        launched.append((args, kw))
        return real_launch(args, **kw)

    monkeypatch.setattr(env.slicer.util, "launchConsoleProcess", recording_launch)
    widget = make_widget(env)
    params = select_inputs(widget, env)
    params.quality = type(params.quality)("fast")
    params.device = "cpu"
    before = env.scene.GetNumberOfNodes()
    widget.ui.applyButton.click()
    assert widget.ui.applyButton.text == "Cancel"
    wait_for(widget.panel)
    assert env.dialogs.errors == []
    assert launched and launched[0][1]["useStartupEnvironment"] is False  # console hidden on Windows
    psr = env.slicer.util.getNode("sub T1w psr (myelin-psr)")
    assert psr.GetImageData().GetDimensions() == (24, 24, 20)
    assert env.scene.GetNumberOfNodes() > before and widget.ui.progressBar.value == 100
    assert widget.ui.showResultsButton.enabled
    widget.ui.showResultsButton.click()
    assert qtstub.QDesktopServices.opened[-1].endswith(widget.panel.resultsFolder.name)
    assert (widget.panel.resultsFolder / "psr.nrrd").is_file()


def test_failed_run_shows_worker_lines_as_details_and_logs_them(env, caplog):
    widget = make_widget(env)
    params = select_inputs(widget, env)
    params.device = "cuda:7"  # no such GPU: the worker refuses with a one-line message (exit code 2)
    before = env.scene.GetNumberOfNodes()
    with caplog.at_level(logging.INFO, logger="MRISynthesis"):
        widget.ui.applyButton.click()
        wait_for(widget.panel)
    (message, options), = env.dialogs.errors
    assert "--device" in message and "\n" not in message
    assert options["detailedText"] and "Started myelin-psr" in options["detailedText"]  # not drained
    assert env.scene.GetNumberOfNodes() == before  # no partial node
    assert any(record.levelname == "ERROR" and "--device" in record.getMessage() for record in caplog.records)
    assert widget.ui.applyButton.text == "Apply"


def test_cancel_stops_the_worker_and_creates_no_node(env):
    widget = make_widget(env)
    params = select_inputs(widget, env)
    params.device, params.quality = "cpu", type(params.quality)("best")
    before = env.scene.GetNumberOfNodes()
    widget.ui.applyButton.click()
    process = widget.panel.process
    deadline = time.monotonic() + 240
    while not any(m.get("stage") == "sample" for m in process.poll()):
        assert process.running and time.monotonic() < deadline
        time.sleep(0.05)
    widget.ui.applyButton.click()  # Cancel
    assert not process.running and widget.panel.process is None
    assert widget.ui.applyButton.text == "Apply" and widget.ui.statusLabel.text == "Cancelled."
    assert env.scene.GetNumberOfNodes() == before and env.dialogs.errors == []


class UntouchableTorch(types.ModuleType):
    touched: list = []

    def __getattr__(self, name):
        UntouchableTorch.touched.append(name)
        raise AssertionError(f"torch.{name} used in Slicer's process")


def test_devices_are_listed_by_the_worker_only_when_advanced_opens(env, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", UntouchableTorch("torch"))
    UntouchableTorch.touched = []
    widget = make_widget(env)
    queries = []
    real_query = widget.logic.real.queryDevices
    monkeypatch.setattr(widget.logic.real, "queryDevices", lambda: queries.append(1) or real_query())
    assert queries == [] and UntouchableTorch.touched == []
    widget.ui.advancedCollapsibleButton.collapsed = False
    widget.ui.advancedCollapsibleButton.collapsed = True
    widget.ui.advancedCollapsibleButton.collapsed = False
    assert queries == [1]  # once, lazily
    widget.panel.deviceQuery.thread.join(120)
    widget.panel.pollDevices()
    combo = widget.ui.deviceComboBox
    assert [combo.itemData(i) for i in range(2)] == ["auto", "cpu"] and widget.panel.deviceQuery.error is None
    assert UntouchableTorch.touched == []


def test_model_install_errors_are_one_line_messages_and_only_cards_are_offered(env, monkeypatch, tmp_path):
    widget = make_widget(env)
    offered = []
    bad = tmp_path / "card.json"
    bad.write_text("{not json")
    monkeypatch.setattr(qtstub.QFileDialog, "getOpenFileName",
                        staticmethod(lambda *args: offered.append(args) or str(bad)))
    widget.ui.installModelButton.click()  # must not raise into Qt
    assert "zip" not in offered[0][3] and "json" in offered[0][3]
    (message, _), = env.dialogs.errors
    assert message.startswith("Could not install the model:") and "\n" not in message


def test_self_test_skips_with_a_clear_message_when_dependencies_are_missing(env, monkeypatch, caplog):
    from MRISynthesisGUI import selftest

    monkeypatch.setattr(selftest, "missingRuntimePackages", lambda: ["monai", "torch"])
    with caplog.at_level(logging.WARNING):
        selftest.MRISynthesisTest().runTest()
    assert any("skipped: not installed: monai, torch" in record.getMessage() for record in caplog.records)


def test_self_test_runs_a_synthesis_in_seconds(env):
    from MRISynthesisGUI import selftest

    started = time.monotonic()
    selftest.MRISynthesisTest().runTest()
    assert time.monotonic() - started < 120
    assert env.slicer.util.getNode("selftest T1w psr (myelin-psr)") is not None


def test_lesions_only_task_creates_a_segmentation_and_table_and_logs_how(env):
    widget = make_widget(env)
    ui = widget.ui
    ui.taskComboBox.currentIndex = next(i for i in range(ui.taskComboBox.count())
                                        if ui.taskComboBox.itemText(i) == "MS lesions only (no synthesis)")
    params = widget._parameterNode
    assert params.task.value == "ms-lesions"
    params.input0, params.input1 = None, volume_node(env, "sub FLAIR", 400.0)  # FLAIR alone
    params.device = "cpu"
    classes = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode")
    before = {name: env.scene.GetNumberOfNodesByClass(name) for name in classes}
    widget.ui.applyButton.click()
    wait_for(widget.panel)
    assert env.dialogs.errors == []
    after = {name: env.scene.GetNumberOfNodesByClass(name) for name in classes}
    assert after["vtkMRMLScalarVolumeNode"] == before["vtkMRMLScalarVolumeNode"], "no map is synthesized"
    assert after["vtkMRMLSegmentationNode"] == before["vtkMRMLSegmentationNode"] + 1
    lines = [line for line in ui.logText.lines if line.startswith("Lesions:")]
    assert lines and ("made by segmenter" in lines[-1] or "made by rule" in lines[-1])
    segmentations = env.scene.GetNodesByClass("vtkMRMLSegmentationNode")
    newest = segmentations.GetItemAsObject(segmentations.GetNumberOfItems() - 1)
    assert newest.GetAttribute("MRISynthesis.LesionMethod") in lines[-1]
