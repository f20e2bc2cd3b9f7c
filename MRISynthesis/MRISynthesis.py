"""MRISynthesis: synthesize MR maps a clinic did not acquire (myelin PSR, missing contrasts, DWI/ADC from CT
perfusion) with conditional 3D latent diffusion. The synthesis runs in a separate process
(``MRISynthesisLib.worker``); nodes are created by ``MRISynthesisLib.mrml``. Nothing heavy (torch, MONAI,
SimpleITK) is imported when the module loads.
"""

import os
import shutil
import sys
import tempfile

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


class MRISynthesis(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MR Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["MRISynthesis contributors"]
        self.parent.helpText = _(
            "Synthesize quantitative or missing MR maps (myelin PSR from T1w + FLAIR, missing contrasts, DWI/ADC "
            "from CT perfusion) with conditional 3D latent diffusion. Select a task, its input volumes and press "
            "Apply. Results are research use only, not for diagnosis. All data stays on this computer.<br>"
            "<a href='https://github.com/mrisynthesis/SlicerMRISynthesis'>Documentation</a>")
        self.parent.acknowledgementText = _("Built on MONAI, PyTorch, SimpleITK and 3D Slicer.")


class MRISynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MRISynthesisGUI.panel import SynthesisPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRISynthesisLogic()
        self.panel = SynthesisPanel(self.ui, self.logic, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.initializeParameterNode()

    def cleanup(self):
        if self.panel is not None:
            self.panel.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onNodeAdded(self, caller, event):
        if self._parameterNode is not None and self.panel.process is None:
            qt.QTimer.singleShot(0, self.panel.autoAssign)  # the node has no name/image yet at this event

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.panel.onTaskChanged()

    def onParameterChanged(self, caller=None, event=None):
        self.panel.updateApply()


class MRISynthesisLogic(ScriptedLoadableModuleLogic):
    """Runs a synthesis on nodes without any dialog (usable from the Python console and batch scripts)."""

    def getParameterNode(self):
        from MRISynthesisGUI.parameters import MRISynthesisParameterNode

        return MRISynthesisParameterNode(super().getParameterNode())

    def ensureDependencies(self, ask=True):
        from MRISynthesisGUI.dependencies import ensure_dependencies

        ensure_dependencies(self.resourcePath("requirements.txt"), ask)

    @staticmethod
    def pythonExecutable():
        """``PythonSlicer`` (Slicer's Python with its environment) for the worker process."""
        if os.path.basename(sys.executable).lower().startswith("pythonslicer"):
            return sys.executable
        return shutil.which("PythonSlicer") or sys.executable

    def start(self, taskId, inputNodes, maskNode=None, lesionNode=None, options=None):
        """Write the input nodes to a private temp folder and start the worker.

        Returns ``(WorkerProcess, context)``; poll the process, then call ``importResults(process, context)``.
        """
        from MRISynthesisLib import mrml
        from MRISynthesisLib.tasks import get_task
        from MRISynthesisLib.volume import write_volume
        from MRISynthesisLib.worker import WorkerProcess

        task = get_task(taskId)
        if not inputNodes:
            raise ValueError(_("Select at least one input volume."))
        names = [spec.name for spec in task.inputs if spec.name in inputNodes]
        referenceName = names[0]
        folder = tempfile.mkdtemp(prefix="mrisynthesis-inputs-")
        try:
            paths = {name: str(write_volume(mrml.node_to_volume(inputNodes[name]), os.path.join(folder, name + ".nrrd")))
                     for name in names}
            request = {"task": task.id, "inputs": paths, "reference": referenceName,
                       "options": {**(options or {}), "output_format": "nrrd"}}
            if maskNode is not None:
                request["mask"] = str(write_volume(mrml.node_to_volume(maskNode), os.path.join(folder, "mask.nrrd")))
            if lesionNode is not None:
                labels = mrml.segmentation_to_volume(slicer.mrmlScene, lesionNode, inputNodes[referenceName])
                request["lesions"] = str(write_volume(labels, os.path.join(folder, "lesions.nrrd"), None))
            process = WorkerProcess(request, python=self.pythonExecutable(), cleanup_paths=[folder]).start()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return process, {"task": task.id, "reference": inputNodes[referenceName]}

    def importResults(self, process, context):
        """Create the result nodes (all or nothing) from a finished run."""
        from MRISynthesisLib import mrml
        from MRISynthesisLib.tasks import get_task

        result = process.load_result()
        return mrml.import_result(slicer.mrmlScene, get_task(context["task"]), result, context["reference"],
                                  context.get("outputs"))

    def process(self, taskId, inputNodes, maskNode=None, lesionNode=None, options=None, timeout=None):
        """Blocking run (batch use and tests); returns the created nodes or raises with the worker's message."""
        worker, context = self.start(taskId, inputNodes, maskNode, lesionNode, options)
        try:
            worker.wait(timeout)
            return self.importResults(worker, context)
        finally:
            if worker.running:  # timed out
                worker.cancel()
            worker.cleanup()


class MRISynthesisTest(ScriptedLoadableModuleTest):
    """A real synthesis on a simulated MS case (phantom), or the 'model not installed' path without a model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_synthesis_on_phantom()

    def test_synthesis_on_phantom(self):
        from MRISynthesisLib import mrml
        from MRISynthesisLib.models.registry import ModelRegistry
        from MRISynthesisLib.phantom import generate_subject

        self.delayDisplay(_("Simulating an MS phantom"))
        subject = generate_subject(seed=0, pathology="ms", spacing=2.0)
        t1w = mrml.volume_to_node(slicer.mrmlScene, subject.maps["mprage"], "phantom T1w")
        flair = mrml.volume_to_node(slicer.mrmlScene, subject.maps["flair"], "phantom FLAIR")
        before = slicer.mrmlScene.GetNumberOfNodes()
        logic = MRISynthesisLogic()
        options = {"device": "cpu", "steps": 2, "samples": 1, "seed": 0}
        if not ModelRegistry().is_installed("myelin-psr"):
            with self.assertRaises(Exception) as raised:
                logic.process("myelin-psr", {"t1w": t1w, "flair": flair}, options=options, timeout=600)
            self.assertIn("install", str(raised.exception))
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)  # nothing created on error
            self.delayDisplay(_("Model not installed: error path checked"))
            return
        nodes = logic.process("myelin-psr", {"t1w": t1w, "flair": flair}, options=options, timeout=1800)
        psr = nodes.outputs["psr"]
        self.assertTrue(mrml.node_to_volume(psr).same_grid(mrml.node_to_volume(t1w)))
        self.assertEqual(psr.GetName(), "phantom T1w psr (myelin-psr)")
        self.assertIsNotNone(nodes.segmentation)
        self.delayDisplay(_("Synthesis test passed"))
