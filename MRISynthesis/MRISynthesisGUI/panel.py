"""The module panel's behaviour: task-dependent selectors, Apply <-> Cancel, progress, log, devices, models.

Reacts to the parameter node, never to the task combo box directly: Qt calls slots in connection order, so a
slot on ``currentIndexChanged`` would run before the parameter node has the new task. The scene work is in
``MRISynthesisLib.mrml``, the run in a worker process (``MRISynthesisLib.worker``) started by the logic.
"""

from __future__ import annotations

import collections
import logging
import time

import qt
import slicer
from slicer.i18n import tr as _

from MRISynthesisLib.tasks import QUALITY_STEPS, get_task
from MRISynthesisLib.worker import progress_text

from .parameters import INPUT_SLOTS, OUTPUT_SLOTS, QualityPreset, TaskChoice, quality_tooltip, samples_for

LOG_LINES = 1000  # the log keeps the last lines only
DETAIL_LINES = 50  # worker lines shown under "Show details" of an error
POLL_MS = 200
SETTINGS = "MRISynthesis/"  # qt.QSettings keys: task, quality, device
logger = logging.getLogger("MRISynthesis")


class SynthesisPanel:
    """Wires the widgets of ``MRISynthesis.ui`` to a parameter node and a ``MRISynthesisLogic``."""

    def __init__(self, ui, logic, parameterNodeGetter):
        self.ui, self.logic, self.parameters = ui, logic, parameterNodeGetter
        self.process, self.runContext, self.started = None, None, 0.0
        self.recentLog = collections.deque(maxlen=DETAIL_LINES)
        self.deviceQuery, self.lastTask, self.resultsFolder = None, None, None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.poll)
        ui.logText.setMaximumBlockCount(LOG_LINES)
        ui.qualityComboBox.toolTip = quality_tooltip()
        ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        ui.installModelButton.connect("clicked(bool)", self.onInstallModel)
        ui.openCacheButton.connect("clicked(bool)", self.onOpenCache)
        ui.clearCacheButton.connect("clicked(bool)", self.onClearCache)
        ui.showResultsButton.connect("clicked(bool)", self.onShowResults)
        ui.showResultsButton.enabled = False
        # Fill before connecting: the first addItem emits currentIndexChanged(0) (no parameter node yet).
        ui.deviceComboBox.clear()
        ui.deviceComboBox.addItem(_("auto (GPU if available)"), "auto")
        ui.deviceComboBox.addItem(_("CPU"), "cpu")
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        # GPUs are listed by a worker process, only when the user opens the Advanced section.
        ui.advancedCollapsibleButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        self.deviceTimer = qt.QTimer()
        self.deviceTimer.setInterval(POLL_MS)
        self.deviceTimer.connect("timeout()", self.pollDevices)

    # -------------------------------------------------------------------------------- parameter node
    def restoreSettings(self, parameters) -> None:
        """Last task, quality and device from ``qt.QSettings`` (called for a new parameter node)."""
        settings = qt.QSettings()
        task, quality = settings.value(SETTINGS + "task"), settings.value(SETTINGS + "quality")
        if task in {choice.value for choice in TaskChoice}:
            parameters.task = TaskChoice(task)
        if quality in {preset.value for preset in QualityPreset}:
            parameters.quality = QualityPreset(quality)
        parameters.device = settings.value(SETTINGS + "device") or "auto"

    def onParameterNodeChanged(self) -> None:
        parameters = self.parameters()
        if parameters is None:
            return
        if parameters.task != self.lastTask:
            self.lastTask = parameters.task
            self.onTaskChanged()
        self.selectDevice(parameters.device)
        settings = qt.QSettings()
        settings.setValue(SETTINGS + "task", parameters.task.value)
        settings.setValue(SETTINGS + "quality", parameters.quality.value)
        settings.setValue(SETTINGS + "device", parameters.device)
        self.updateApply()

    # ------------------------------------------------------------------------------------- selectors
    def task(self):
        return get_task(self.parameters().task.value)

    def _showSlot(self, kind: str, slot: int, specs) -> tuple:
        """Label and selector of input/output ``slot``, shown only when the task has a spec for it; returns
        them with that spec (None when hidden)."""
        label, selector = getattr(self.ui, f"{kind}Label{slot}"), getattr(self.ui, f"{kind}{slot}")
        spec = specs[slot] if slot < len(specs) else None
        label.setVisible(spec is not None)
        selector.setVisible(spec is not None)
        return label, selector, spec

    def onTaskChanged(self) -> None:
        """Relabel and show the input/output slots for the task, then auto-assign loaded volumes."""
        task = self.task()
        for slot in range(INPUT_SLOTS):
            label, selector, spec = self._showSlot("input", slot, task.inputs)
            if spec is not None:
                required = spec.required and not task.any_subset
                label.setText(f"{spec.name}{' *' if required else ''}:")
                selector.toolTip = spec.description + ("" if required else _(" (optional)"))
        for slot in range(OUTPUT_SLOTS):
            label, selector, spec = self._showSlot("output", slot, task.outputs)
            if spec is not None:
                label.setText(f"{spec.name}:")
                selector.toolTip = spec.description
        self.ui.taskDescriptionLabel.setText(task.description)
        self.autoAssign()
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
        return _("Select the {0} volume.").format(missing[0]) if missing else ""

    def updateApply(self) -> None:
        if self.process is not None:
            self.ui.applyButton.text, self.ui.applyButton.enabled = _("Cancel"), True
            self.ui.applyButton.toolTip = _("Stop the synthesis; no node is created.")
            return
        reason = self.whyNotReady()
        self.ui.applyButton.text, self.ui.applyButton.enabled = _("Apply"), not reason
        self.ui.applyButton.toolTip = reason or _("Synthesize the output maps.")

    # --------------------------------------------------------------------------------------- devices
    def selectDevice(self, device: str) -> None:
        combo = self.ui.deviceComboBox
        index = combo.findData(device)
        if index < 0:  # remembered from an earlier session, not listed yet
            combo.addItem(_("{0} (not checked yet)").format(device), device)
            index = combo.findData(device)
        combo.setCurrentIndex(index)

    def onDeviceChanged(self, index: int) -> None:
        parameters = self.parameters()
        if parameters is not None and index >= 0:
            parameters.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onAdvancedCollapsed(self, collapsed: bool) -> None:
        if not collapsed and self.deviceQuery is None:
            self.deviceQuery = self.logic.queryDevices()
            self.deviceTimer.start()

    def pollDevices(self) -> None:
        query = self.deviceQuery
        if query is None or not query.done:
            return
        self.deviceTimer.stop()
        if query.error:
            self.log(_("Could not list GPUs: {0}").format(query.error))
            return
        combo = self.ui.deviceComboBox
        for device in query.devices:
            label = device["label"] if "free_gb" not in device else \
                _("{0} ({1}/{2} GB free)").format(device["label"], device["free_gb"], device["total_gb"])
            index = combo.findData(device["id"])
            if index < 0:
                combo.addItem(label, device["id"])
            else:  # e.g. a remembered "cuda:0 (not checked yet)"
                combo.setItemText(index, label)

    # ---------------------------------------------------------------------------------------- running
    def onApplyOrCancel(self) -> None:
        if self.process is not None:
            self.cancel()
            return
        parameters, task = self.parameters(), self.task()
        try:
            self.logic.ensureDependencies()  # asks before installing; pip_ensure shows its own progress
        except Exception as error:
            self.fail(_("Could not install the dependencies: {0}").format(error))
            return
        outputs = {spec.name: getattr(parameters, f"output{slot}") for slot, spec in enumerate(task.outputs[:OUTPUT_SLOTS])}
        options = {"device": parameters.device, "steps": QUALITY_STEPS[parameters.quality.value],
                   "samples": samples_for(parameters.samples, parameters.quality), "seed": parameters.seed}
        try:
            self.process, self.runContext = self.logic.start(task.id, self.inputs(), parameters.mask,
                                                             parameters.lesionSegmentation, options, outputs)
        except Exception as error:
            self.fail(_("Could not start the synthesis: {0}").format(error))
            return
        self.started, self.ui.progressBar.value = time.monotonic(), 0
        self.recentLog.clear()
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
            if "overall" in message:
                self.ui.progressBar.value = int(message["overall"])
                self.ui.statusLabel.text = progress_text(message, _)
            elif message.get("stage") in ("error", "cancelled", "done"):
                self.log(message.get("message", message["stage"]))
        while process.log:
            self.log(process.log.popleft(), worker=True)
        if process.running:
            return
        process.wait(5)
        self.poll_remaining(process)
        self.finish()

    def poll_remaining(self, process) -> None:
        """Lines read after the process ended (the reader threads finish after the exit)."""
        for message in process.poll():
            if message.get("stage") == "error":
                self.log(message.get("message", ""))
        while process.log:
            self.log(process.log.popleft(), worker=True)

    def finish(self) -> None:
        self.timer.stop()
        process, context, self.process = self.process, self.runContext, None
        final = process.final or {}
        try:
            if final.get("stage") == "done":
                nodes = self.logic.importResults(process, context)
                self.resultsFolder = self.logic.keepResultFiles(process, context.task)
                self.ui.showResultsButton.enabled = self.resultsFolder is not None
                self.ui.progressBar.value = 100
                self.ui.statusLabel.text = _("Done in {0:.0f} s: {1} nodes created.").format(
                    time.monotonic() - self.started, len(nodes.all()))
                self.log(self.ui.statusLabel.text)
                lesions = (final.get("summary") or {}).get("lesions")
                if lesions:
                    self.log(_("Lesions: {0}, {1} mL in total, made by {2}.").format(
                        lesions["count"], lesions["total_ml"], lesions.get("method") or lesions["source"]))
            elif final.get("stage") == "cancelled":
                self.ui.statusLabel.text = _("Cancelled.")
            else:
                self.fail(final.get("message") or _("The synthesis stopped (exit code {0}); see the log.").format(
                    process.returncode))
        except Exception as error:
            self.fail(_("Could not create the result nodes: {0}").format(error))
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

    def fail(self, message: str) -> None:
        """One-line message in a dialog, the worker's last lines as its details, and in Slicer's log."""
        self.ui.statusLabel.text = _("Failed.")
        logger.error(message)
        slicer.util.errorDisplay(message, detailedText="\n".join(self.recentLog) or None)

    def log(self, text: str, worker: bool = False) -> None:
        text = str(text)
        self.ui.logText.appendPlainText(text)
        self.recentLog.append(text)
        logger.info(("worker: " if worker else "") + text)

    # ------------------------------------------------------------------------------------------- models
    def updateModels(self) -> None:
        from MRISynthesisLib.model_store.registry import ModelRegistry

        registry, table = ModelRegistry(), self.ui.modelsTable
        cards = registry.list(include_available=True)
        table.setRowCount(len(cards))
        for row, card in enumerate(cards):
            state = _("installed") if registry.is_installed(card.id) else _("available")
            for column, value in enumerate([card.id, card.version, card.source, state]):
                table.setItem(row, column, qt.QTableWidgetItem(str(value)))
        task = self.task()
        if registry.is_installed(task.model_id):
            status = _("Model '{0}' is installed.").format(task.model_id)
        else:
            status = _("Model '{0}' is not installed: {1}").format(task.model_id, registry.install_command(task.model_id))
        rule = task.lesion_rule
        if rule is not None and rule.segmenter:
            status += " " + (_("Lesion overlay: trained segmenter '{0}'.").format(rule.segmenter)
                             if registry.is_installed(rule.segmenter) else _("Lesion overlay: FLAIR rule."))
        self.ui.modelStatusLabel.text = status

    def onInstallModel(self) -> None:
        # The registry installs from a model card (card.json next to its .safetensors files), not archives.
        path = qt.QFileDialog.getOpenFileName(None, _("Install model: choose its card.json"), "",
                                              _("Model card (*.json)"))
        if not path:
            return
        from MRISynthesisLib.model_store.registry import ModelRegistry

        try:
            card = ModelRegistry().install(path)
        except Exception as error:  # never a traceback from a button
            self.fail(_("Could not install the model: {0}").format(error))
        else:
            self.log(_("Installed model {0} {1}.").format(card.id, card.version))
        self.updateModels()

    def onOpenCache(self) -> None:
        from MRISynthesisLib.model_store.registry import ModelRegistry

        folder = ModelRegistry().models_dir
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def onShowResults(self) -> None:
        if self.resultsFolder is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.resultsFolder)))

    def onClearCache(self) -> None:
        from MRISynthesisLib.model_store.registry import ModelRegistry

        registry = ModelRegistry()
        if not slicer.util.confirmOkCancelDisplay(
                _("Remove every downloaded model from {0}? Bundled models stay.").format(registry.models_dir)):
            return
        try:
            removed = registry.remove_all()
        except Exception as error:
            self.fail(_("Could not clear the model cache: {0}").format(error))
        else:
            self.log(_("Removed models: {0}").format(", ".join(removed) or _("none")))
        self.updateModels()

    def cleanup(self) -> None:
        if self.process is not None:
            self.cancel()
