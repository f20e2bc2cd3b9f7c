"""MRISynthesis: synthesize MR maps a clinic did not acquire (myelin PSR, missing contrasts, DWI/ADC from CT
perfusion). The panel lives in ``MRISynthesisGUI``; the synthesis runs in a worker process; nothing heavy
(torch, MONAI, SimpleITK) is imported when the module loads.
"""

import os
import sys

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


def _addSourceCheckoutToPath():
    """Loaded from a source checkout (Application Settings > Modules > additional path), the backend package
    sits next to this folder instead of inside qt-scripted-modules: make it importable."""
    import importlib.util

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if importlib.util.find_spec("MRISynthesisLib") is None and os.path.isdir(os.path.join(checkout, "MRISynthesisLib")):
        sys.path.insert(0, checkout)


_addSourceCheckoutToPath()

from MRISynthesisGUI.logic import MRISynthesisLogic  # noqa: E402 (needs the path above)
from MRISynthesisGUI.selftest import MRISynthesisTest, registerSampleData  # noqa: E402,F401


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
        slicer.app.connect("startupCompleted()", registerSampleData)


class MRISynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None):
        VTKObservationMixin.__init__(self)
        self.logic, self.panel, self._parameterNode, self._guiTag = logic, None, None, None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MRISynthesisGUI.panel import SynthesisPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or MRISynthesisLogic()
        self.panel = SynthesisPanel(self.ui, self.logic, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *_: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.initializeParameterNode()

    def cleanup(self):
        if self.panel is not None:
            self.panel.cleanup()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onNodeAdded(self, caller, event):
        if self._parameterNode is not None and self.panel.process is None:
            import qt

            qt.QTimer.singleShot(0, self.panel.autoAssign)  # the node has no name/image yet at this event

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if parameterNode is not None:
            if parameterNode.parameterNode.GetAttribute("MRISynthesis.SettingsRestored") is None:
                parameterNode.parameterNode.SetAttribute("MRISynthesis.SettingsRestored", "1")
                self.panel.restoreSettings(parameterNode)
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.panel.lastTask = None  # relabel for this node's task
            self.panel.onParameterNodeChanged()

    def onParameterChanged(self, caller=None, event=None):
        self.panel.onParameterNodeChanged()
