"""The module panel's behaviour: task-dependent selectors, Apply <-> Cancel, progress, log, models panel.

Kept out of ``MRISynthesis.py`` so the module file stays thin; the scene work itself is in
``MRISynthesisLib.mrml`` and the background run in ``MRISynthesisLib.worker``.
"""

from __future__ import annotations

import time

import qt
import slicer
from slicer.i18n import tr as _

from MRISynthesisLib.tasks import QUALITY_STEPS, get_task

from .parameters import INPUT_SLOTS, OUTPUT_SLOTS

LOG_LINES = 1000  # the log keeps the last lines only
POLL_MS = 200


def format_eta(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return _("ETA {0} min {1:02d} s").format(seconds // 60, seconds % 60) if seconds >= 60 else \
        _("ETA {0} s").format(seconds)


class SynthesisPanel:
    """Wires the widgets of ``MRISynthesis.ui`` to a parameter node and a ``MRISynthesisLogic``."""

    def __init__(self, ui, logic, parameterNodeGetter):
        self.ui = ui
        self.logic = logic
        self.parameters = parameterNodeGetter
        self.process = None
        self.runContext = None
        self.started = 0.0
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.poll)
        ui.logText.setMaximumBlockCount(LOG_LINES)
        ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        ui.taskComboBox.connect("currentIndexChanged(int)", lambda _index: self.onTaskChanged())
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        ui.installModelButton.connect("clicked(bool)", self.onInstallModel)
        ui.openCacheButton.connect("clicked(bool)", self.onOpenCache)
        ui.clearCacheButton.connect("clicked(bool)", self.onClearCache)
        self.fillDevices()

    # ------------------------------------------------------------------------------------- selectors
    def task(self):
        return get_task(self.parameters().task.value)

    def onTaskChanged(self) -> None:
        """Relabel and show the input/output slots for the task, then auto-assign loaded volumes."""
        task = self.task()
        for slot in range(INPUT_SLOTS):
            label, selector = getattr(self.ui, f"inputLabel{slot}"), getattr(self.ui, f"input{slot}")
            visible = slot < len(task.inputs)
            label.setVisible(visible)
            selector.setVisible(visible)
            if visible:
                spec = task.inputs[slot]
                required = spec.required and not task.any_subset
                label.setText(f"{spec.name}{' *' if required else ''}:")
                selector.toolTip = spec.description + ("" if required else _(" (optional)"))
        for slot in range(OUTPUT_SLOTS):
            label, selector = getattr(self.ui, f"outputLabel{slot}"), getattr(self.ui, f"output{slot}")
            visible = slot < len(task.outputs)
            label.setVisible(visible)
            selector.setVisible(visible)
            if visible:
                label.setText(f"{task.outputs[slot].name}:")
                selector.toolTip = task.outputs[slot].description
        self.ui.taskDescriptionLabel.setText(task.description)
        self.autoAssign()
        self.updateApply()
        self.updateModels()

    def autoAssign(self) -> None:
        """Fill empty input slots with loaded volumes whose names match the input's pattern."""
        parameters, task = self.parameters(), self.task()
        used = {getattr(parameters, f"input{slot}") for slot in range(INPUT_SLOTS)} - {None}
        volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
        for slot, spec in enumerate(task.inputs[:INPUT_SLOTS]):
            if getattr(parameters, f"input{slot}") is not None:
                continue
            match = next((node for node in volumes if node not in used and spec.matches(node.GetName())
                          and node.GetAttribute("MRISynthesis.Role") is None), None)
            if match is not None:
                setattr(parameters, f"input{slot}", match)
                used.add(match)

    def inputs(self) -> dict:
        """Task input name -> selected node."""
        parameters, task = self.parameters(), self.task()
        return {spec.name: getattr(parameters, f"input{slot}") for slot, spec in enumerate(task.inputs[:INPUT_SLOTS])
                if getattr(parameters, f"input{slot}") is not None}

    def whyNotReady(self) -> str:
        task, given = self.task(), self.inputs()
        if task.any_subset and not given:
            return _("Select at least one input volume.")
        missing = [name for name in task.required_inputs if name not in given and not task.any_subset]
        if missing:
            return _("Select the {0} volume.").format(missing[0])
        return ""

    def updateApply(self) -> None:
        if self.process is not None:
            self.ui.applyButton.text, self.ui.applyButton.enabled = _("Cancel"), True
            self.ui.applyButton.toolTip = _("Stop the synthesis; no node is created.")
            return
        reason = self.whyNotReady()
        self.ui.applyButton.text = _("Apply")
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or _("Synthesize the output maps.")

    # ----------------------------------------------------------------------------------------- devices
    def fillDevices(self) -> None:
        """auto / cpu / each CUDA GPU (queried only if torch is already importable: no install here)."""
        combo = self.ui.deviceComboBox
        combo.clear()
        combo.addItem(_("auto (GPU if available)"), "auto")
        combo.addItem(_("CPU"), "cpu")
        try:
            import importlib.util
            if importlib.util.find_spec("torch") is not None:
                import torch
                for index in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(index)
                    combo.addItem(f"cuda:{index} {torch.cuda.get_device_name(index)} "
                                  f"({free / 2**30:.1f}/{total / 2**30:.1f} GB free)", f"cuda:{index}")
        except Exception as error:  # a broken CUDA install must not break the panel
            self.log(_("GPU query failed: {0}").format(error))

    def onDeviceChanged(self, index: int) -> None:
        self.parameters().device = self.ui.deviceComboBox.itemData(index) or "auto"

    # ------------------------------------------------------------------------------------------ running
    def onApplyOrCancel(self) -> None:
        if self.process is not None:
            self.cancel()
            return
        parameters, task = self.parameters(), self.task()
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not install the dependencies."), waitCursor=True):
                self.logic.ensureDependencies()
        except Exception:
            return
        outputs = {spec.name: getattr(parameters, f"output{slot}") for slot, spec in enumerate(task.outputs[:OUTPUT_SLOTS])}
        options = {"device": parameters.device, "steps": QUALITY_STEPS[parameters.quality.value],
                   "samples": parameters.samples,
                   "seed": parameters.seed}
        try:
            self.process, self.runContext = self.logic.start(task.id, self.inputs(), parameters.mask,
                                                             parameters.lesionSegmentation, options)
        except Exception as error:
            slicer.util.errorDisplay(str(error))
            return
        self.runContext["outputs"] = outputs
        self.started = time.monotonic()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self.log(_("Started {0} ({1} steps, {2} samples, device {3}).").format(
            task.id, options["steps"], options["samples"], options["device"]))
        self.updateApply()
        self.timer.start()

    def poll(self) -> None:
        process = self.process
        if process is None:
            return
        for message in process.poll():
            stage = message.get("stage")
            if "overall" in message:
                self.ui.progressBar.value = int(message["overall"])
                self.ui.statusLabel.text = f"{stage} {message['step']}/{message['total']} " \
                                           f"({message['percent']:.0f}%) {format_eta(message.get('eta_s'))}"
            elif stage in ("error", "cancelled", "done"):
                self.log(message.get("message", stage))
        while process.log:
            self.log(process.log.popleft())
        if process.running:
            return
        process.wait(5)
        for message in process.poll():  # lines read after the process ended
            if message.get("stage") == "error":
                self.log(message.get("message", ""))
        self.finish()

    def finish(self) -> None:
        self.timer.stop()
        process, context, self.process = self.process, self.runContext, None
        final = process.final or {}
        try:
            if final.get("stage") == "done":
                nodes = self.logic.importResults(process, context)
                self.ui.progressBar.value = 100
                self.ui.statusLabel.text = _("Done in {0:.0f} s: {1} nodes created.").format(
                    time.monotonic() - self.started, len(nodes.all()))
                slicer.util.resetSliceViews()
            elif final.get("stage") == "cancelled":
                self.ui.statusLabel.text = _("Cancelled.")
            else:
                message = final.get("message") or _("The synthesis stopped (exit code {0}); see the log.").format(
                    process.returncode)
                self.ui.statusLabel.text = _("Failed.")
                slicer.util.errorDisplay(message, detailedText="\n".join(list(process.log)[-50:]))
        except Exception as error:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Could not create the result nodes: {0}").format(error))
        finally:
            process.cleanup()
            self.updateApply()
            self.updateModels()

    def cancel(self) -> None:
        self.timer.stop()
        process, self.process = self.process, None
        if process is not None:
            process.cancel()
        self.ui.statusLabel.text = _("Cancelled.")
        self.log(_("Cancelled by the user; no node was created."))
        self.updateApply()

    def log(self, text: str) -> None:
        self.ui.logText.appendPlainText(str(text))

    # ------------------------------------------------------------------------------------------- models
    def updateModels(self) -> None:
        from MRISynthesisLib.models.registry import ModelRegistry

        registry = ModelRegistry()
        table = self.ui.modelsTable
        cards = registry.list(include_available=True)
        table.setRowCount(len(cards))
        for row, card in enumerate(cards):
            installed = registry.is_installed(card.id)
            values = [card.id, card.version, card.source, _("installed") if installed else _("available")]
            for column, value in enumerate(values):
                table.setItem(row, column, qt.QTableWidgetItem(str(value)))
        task = self.task()
        if registry.is_installed(task.model_id):
            self.ui.modelStatusLabel.text = _("Model '{0}' is installed.").format(task.model_id)
        else:
            self.ui.modelStatusLabel.text = _("Model '{0}' is not installed: {1}").format(
                task.model_id, registry.install_command(task.model_id))

    def onInstallModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Install model (card.json or .zip)"), "",
                                              _("Model files (card.json *.zip *.json)"))
        if not path:
            return
        from MRISynthesisLib.models.registry import ModelRegistry

        with slicer.util.tryWithErrorDisplay(_("Could not install the model."), waitCursor=True):
            card = ModelRegistry().install(path)
            self.log(_("Installed model {0} {1}.").format(card.id, card.version))
        self.updateModels()

    def onOpenCache(self) -> None:
        from MRISynthesisLib.models.registry import ModelRegistry

        folder = ModelRegistry().models_dir
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def onClearCache(self) -> None:
        from MRISynthesisLib.models.registry import ModelRegistry

        registry = ModelRegistry()
        if not slicer.util.confirmOkCancelDisplay(
                _("Remove every downloaded model from {0}? Bundled models stay.").format(registry.models_dir)):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not clear the model cache."), waitCursor=True):
            removed = registry.remove_all()
            self.log(_("Removed models: {0}").format(", ".join(removed) or _("none")))
        self.updateModels()

    def cleanup(self) -> None:
        if self.process is not None:
            self.cancel()
