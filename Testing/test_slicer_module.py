"""The Slicer module on Slicer's own Python framework (``../shared/slicer-python``: ScriptedLoadableModule,
parameterNodeWrapper, packaging, i18n) and real MRML (slicer-core); Qt stand-ins from ``test_slicer_qt``.
Worker runs are real subprocesses with a tiny model (``conftest.tiny_model_home``)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

import test_slicer_qt as qtstub

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MRISynthesis"
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python" / "slicer_extra"
pytestmark = pytest.mark.skipif(
    not SLICER_PYTHON.is_dir(), reason="../shared/slicer-python (Slicer's own Python framework) is absent: "
    "the module cannot run on Slicer's real base classes here")


class FakeApplication:
    """The parts of ``slicer.app`` the framework calls: a ctest-like run (testing enabled, no translations)."""

    def moduleManager(self):
        return types.SimpleNamespace(connect=lambda *args: None)

    def connect(self, *args):
        pass

    def translate(self, context, text):
        return text

    def testingEnabled(self):
        return True

    def thread(self):
        return qtstub.MAIN_THREAD

    def processEvents(self):
        qtstub.process_events()


@pytest.fixture()
def env(monkeypatch, tmp_path, tiny_model_home):
    """Slicer's framework on real MRML with the Qt stand-ins; dialogs recorded; MRISYNTHESIS_HOME = tiny model."""
    qtstub.install_qt_modules()
    import slicer

    if str(SLICER_PYTHON) not in slicer.__path__:
        slicer.__path__.insert(0, str(SLICER_PYTHON))
    scene = slicer.vtkMRMLScene()
    for name, value in {"mrmlScene": scene, "qMRMLNodeComboBox": qtstub.qMRMLNodeComboBox,
                        "qMRMLWidget": qtstub.QWidget,
                        "app": FakeApplication()}.items():
        monkeypatch.setattr(slicer, name, value, raising=False)
    import re

    # Slicer's own Qt widget classes the connectors compare against: distinct placeholders (never used here).
    for name in set(re.findall(r"slicer\.(q[A-Z]\w+)", (SLICER_PYTHON / "parameterNodeWrapper" / "guiConnectors.py")
                                 .read_text())) - {"qMRMLNodeComboBox"}:
        monkeypatch.setattr(slicer, name, type(name, (qtstub.QWidget,), {}), raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    qtstub.QSettings.store = {}
    qtstub.QDesktopServices.opened = []
    dialogs = types.SimpleNamespace(errors=[], confirms=[])
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: dialogs.errors.append((text, kw)))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **kw: dialogs.confirms.append(text) or True)
    monkeypatch.setattr(slicer.util, "delayDisplay", lambda *a, **kw: None)
    monkeypatch.setattr(slicer.util, "settingsValue", lambda key, default, converter=None: default)
    monkeypatch.setattr(slicer.util, "loadUI", qtstub.load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", qtstub.child_widget_variables)
    monkeypatch.setattr(slicer.util, "modulePath", lambda name: str(MODULE_DIR / f"{name}.py"), raising=False)
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tiny_model_home))
    for name in [m for m in sys.modules if m.split(".")[0] in ("MRISynthesis", "MRISynthesisGUI")]:
        monkeypatch.delitem(sys.modules, name)
    state = types.SimpleNamespace(slicer=slicer, scene=scene, dialogs=dialogs, tmp=tmp_path, widgets=[])
    yield state
    for widget in state.widgets:
        widget.cleanup()
    qtstub._pending_single_shots.clear()  # timers of this test's widgets must not fire in the next test
    scene.Clear(True)


def volume_node(env, name, value=500.0, shape=(20, 24, 24)):
    from MRISynthesisLib import mrml
    from MRISynthesisLib.volume import Volume

    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (z / 0.8) ** 2 + (y / 0.85) ** 2 + (x / 0.75) ** 2 < 1
    array = np.where(brain, value + 100 * (x > 0), 0) + np.random.default_rng(0).normal(0, 5, shape)
    volume = Volume(array.astype(np.float32), origin=(-24.0, -24.0, -20.0), spacing=(2.0, 2.0, 2.0))
    return mrml.volume_to_node(env.scene, volume, name)


class RecordingLogic:
    """Stands in for MRISynthesisLogic in panel tests (like SlicerNNUnet's mocked SegmentationLogic)."""

    def __init__(self, real):
        self.real, self.starts, self.dependencyError = real, [], None

    def getParameterNode(self):
        return self.real.getParameterNode()

    def ensureDependencies(self):
        if self.dependencyError:
            raise self.dependencyError

    def start(self, taskId, inputNodes, maskNode, lesionNode, options, outputs=None):
        self.starts.append((taskId, {k: v.GetName() for k, v in inputNodes.items()}, options))
        return self.real.start(taskId, inputNodes, maskNode, lesionNode, options, outputs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def make_widget(env, logic=None):
    from MRISynthesis import MRISynthesisLogic, MRISynthesisWidget

    parent = qtstub.QWidget()
    parent.isEntered = True  # qSlicerScriptedLoadableModuleWidget's property: the module is shown
    widget = MRISynthesisWidget(parent, logic=logic or RecordingLogic(MRISynthesisLogic()))
    widget.setup()
    env.widgets.append(widget)
    return widget


# ------------------------------------------------------------------------------------- item 1, 6, 7
def test_logic_finds_its_requirements_and_installs_through_slicer_packaging(env, monkeypatch, tmp_path):
    """1: the Logic (real ScriptedLoadableModuleLogic, which has no resourcePath) finds requirements.txt;
    6: slicer.packaging is imported explicitly and pip_ensure is used; 7: pip never installs torch (MONAI's
    torch requirement goes to PyTorchUtils)."""
    from MRISynthesis import MRISynthesisLogic

    pip_calls, torch_calls = [], []
    monkeypatch.setattr(env.slicer.util, "executePythonModule", lambda module, args, **kw: pip_calls.append(args),
                        raising=False)  # the pip subprocess boundary: record instead of installing
    sys.modules.pop("slicer.packaging", None)  # as in Slicer: slicer/__init__ does not import it
    env.slicer.__dict__.pop("packaging", None)
    logic = MRISynthesisLogic()
    assert Path(logic.installer.requirementsPath) == MODULE_DIR / "Resources" / "requirements.txt"
    # The same requirements with MONAI unsatisfiable here, so something has to be installed.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(Path(logic.installer.requirementsPath).read_text().replace("monai>=", "monai>=99,>="))
    logic.installer.requirementsPath = str(requirements)
    logic.installer.torchLogicFactory = lambda: types.SimpleNamespace(
        installTorch=lambda **kw: torch_calls.append(kw) or object())
    logic.installer.askConfirmation = False
    import slicer.packaging

    # _scrub_metadata edits installed packages' METADATA (of this test venv): keep it from doing so.
    monkeypatch.setattr(slicer.packaging, "_scrub_metadata", lambda *a: None)
    logic.ensureDependencies()
    installed = [arg for args in pip_calls for arg in args]
    assert any(arg.startswith("monai") for arg in installed) and "--no-deps" in installed, installed
    names = [arg.split("<")[0].split(">")[0].split("=")[0].lower() for arg in installed if not arg.startswith("-")]
    assert not {"torch", "numpy", "simpleitk", "requests"} & set(names), installed
    assert torch_calls == []  # torch satisfied (stubbed): PyTorchUtils not asked


def test_torch_requirement_comes_from_monai_and_goes_to_pytorchutils(env, monkeypatch):
    from MRISynthesisGUI import install

    installer = install.DependencyInstaller(MODULE_DIR / "Resources" / "requirements.txt", askConfirmation=False)
    spec = installer.torchRequirement()
    assert ">=2.8" in spec  # MONAI 1.6 requires torch >= 2.8
    calls = []
    installer.torchLogicFactory = lambda: types.SimpleNamespace(installTorch=lambda **kw: calls.append(kw) or object())
    monkeypatch.setattr(install, "_satisfied", lambda req: req.name != "torch")
    installer.ensure()
    assert calls == [{"askConfirmation": False, "torchVersionRequirement": spec}]


def test_without_pytorch_extension_apply_shows_one_line_error_and_starts_nothing(env, monkeypatch):
    widget = make_widget(env)
    widget.logic.dependencyError = RuntimeError("The PyTorch extension is not installed. Install 'PyTorch' ...")
    widget._parameterNode.input0 = volume_node(env, "sub T1w")
    widget._parameterNode.input1 = volume_node(env, "sub FLAIR")
    widget.ui.applyButton.click()
    assert widget.logic.starts == [] and len(env.dialogs.errors) == 1
    assert "PyTorch extension is not installed" in env.dialogs.errors[0][0]


# -------------------------------------------------------------------------------------- items 4, 5, 10
def test_setup_on_real_framework_labels_combos_and_fills_devices_without_traceback(env):
    widget = make_widget(env)
    ui = widget.ui
    labels = [ui.taskComboBox.itemText(i) for i in range(ui.taskComboBox.count())]
    assert "Myelin PSR from T1w + FLAIR" in labels and not any("_" in label for label in labels)
    assert [ui.qualityComboBox.itemText(i) for i in range(3)] == [
        "fast (4 steps x 2 samples)", "balanced (10 steps x 4 samples)", "best (25 steps x 8 samples)"]
    assert "4 sampling steps" in ui.qualityComboBox.toolTip and "mean of 8 samples, 25 sampling steps" in \
        ui.qualityComboBox.toolTip
    assert ui.deviceComboBox.itemData(ui.deviceComboBox.currentIndex) == "auto"
    assert widget._parameterNode.device == "auto"


def test_task_switch_relabels_slots_for_the_new_task_and_apply_sends_its_names(env):
    widget = make_widget(env)
    ui, params = widget.ui, widget._parameterNode
    stroke = next(i for i in range(ui.taskComboBox.count()) if "CT perfusion" in ui.taskComboBox.itemText(i))
    ui.taskComboBox.currentIndex = stroke  # what a user's click does
    assert params.task.value == "stroke-dwi-adc"
    assert ui.inputLabel0.text.startswith("ctp") and ui.outputLabel0.text.startswith("dwi")
    psr = next(i for i in range(ui.taskComboBox.count()) if "PSR" in ui.taskComboBox.itemText(i))
    ui.taskComboBox.currentIndex = psr
    assert ui.inputLabel0.text.startswith("t1w") and ui.inputLabel1.text.startswith("flair")
    assert not ui.inputLabel2.visible
    params.input0, params.input1 = volume_node(env, "sub T1w"), volume_node(env, "sub FLAIR")
    assert ui.applyButton.enabled
    ui.applyButton.click()
    task, names, options = widget.logic.starts[0]
    assert task == "myelin-psr" and names == {"t1w": "sub T1w", "flair": "sub FLAIR"}
    assert options["steps"] == 10 and options["device"] == "auto"
    assert options["samples"] == 4  # samples left at 0: the balanced preset's K
    widget.panel.cancel()


def test_apply_sends_the_presets_samples_unless_the_user_sets_them(env):
    widget = make_widget(env)
    params = widget._parameterNode
    params.input0, params.input1 = volume_node(env, "sub T1w"), volume_node(env, "sub FLAIR")
    from MRISynthesisGUI.parameters import QualityPreset

    params.quality = QualityPreset.FAST
    widget.ui.applyButton.click()
    widget.panel.cancel()
    params.samples = 3
    widget.ui.applyButton.click()
    widget.panel.cancel()
    (_, _, fast), (_, _, chosen) = widget.logic.starts[:2]
    assert (fast["steps"], fast["samples"]) == (4, 2) and (chosen["steps"], chosen["samples"]) == (4, 3)


def test_settings_are_remembered_across_sessions(env):
    first = make_widget(env)
    first.ui.qualityComboBox.currentIndex = 0
    first.ui.taskComboBox.currentIndex = 2
    first.panel.selectDevice("cuda:1")
    remembered = (first._parameterNode.task, first._parameterNode.quality)
    env.scene.Clear(False)  # a new session: new scene, new parameter node, same QSettings
    second = make_widget(env)
    assert (second._parameterNode.task, second._parameterNode.quality) == remembered
    assert second._parameterNode.device == "cuda:1"
    assert second.ui.deviceComboBox.itemData(second.ui.deviceComboBox.currentIndex) == "cuda:1"


# ---------------------------------------------------------------------------------------------- item 11
SOURCE_CHECKOUT_PROBE = r"""
import importlib, importlib.util, json, sys, types
# What Slicer gives a module found through Application Settings > Modules > additional path: its folder on
# sys.path, Slicer's Python (here: site-packages, stdlib) and nothing of this repository.
sys.path[:] = json.loads(sys.argv[1])
import test_slicer_qt
test_slicer_qt.install_qt_modules()
import slicer
slicer.__path__.insert(0, sys.argv[2])
slicer.app = types.SimpleNamespace(connect=lambda *a: None, translate=lambda context, text: text)
before = importlib.util.find_spec("MRISynthesisLib") is not None
importlib.import_module("MRISynthesis")
import MRISynthesisLib.tasks
print(json.dumps({"before": before, "lib": MRISynthesisLib.__file__}))
"""


def test_module_loaded_from_a_source_checkout_imports_the_backend(tmp_path):
    """11: a fresh interpreter that has never seen the editable install (``-I -S``: no environment variables,
    no site-packages .pth files, so no editable-install finder) and whose sys.path holds only the module's
    folder, the stdlib and site-packages (added as a plain folder) loads MRISynthesis.py; the backend is then
    importable from the checkout."""
    import json
    import subprocess
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = [p for p in sys.path if p.startswith((paths["stdlib"], paths["platstdlib"])) or p.endswith(".zip")]
    path = [str(MODULE_DIR), str(ROOT / "Testing"), *stdlib, paths["purelib"], paths["platlib"]]
    completed = subprocess.run([sys.executable, "-I", "-S", "-c", SOURCE_CHECKOUT_PROBE, json.dumps(path),
                                str(SLICER_PYTHON)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["before"] is False  # the probe is honest: nothing but the module can make the backend importable
    assert Path(result["lib"]).resolve() == ROOT / "MRISynthesisLib" / "__init__.py"


# ------------------------------------------------------------------------------------------- sample data
# SampleDataLogic.registerCustomSampleDataSource's parameters, in order, as read in Slicer/Slicer
# Modules/Scripted/SampleData/SampleData.py (commit 01c2def0e79b18c3258a34676781f7ec128197a3). That file also
# shows: SampleDataSource raises unless uris, fileNames and nodeNames have one length (None is not iterated
# safely), and the Sample Data panel's button calls ``source.customDownloader(source)``.
SLICER_REGISTER_PARAMETERS = ["category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                              "thumbnailFileName", "loadFileType", "loadFiles", "loadFileProperties", "checksums"]


def test_sample_data_is_registered_with_slicers_signature(env, monkeypatch):
    import inspect

    calls = []

    def registerCustomSampleDataSource(*args, **kwargs):
        calls.append((args, kwargs))

    signature = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                                   for name in SLICER_REGISTER_PARAMETERS])
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = types.SimpleNamespace(registerCustomSampleDataSource=registerCustomSampleDataSource)
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    from MRISynthesis import registerSampleData

    registerSampleData()
    (args, kwargs), = calls
    bound = signature.bind(*args, **kwargs).arguments  # TypeError for a name Slicer does not take
    assert bound["category"] and bound["sampleName"]
    assert [len(bound[name]) for name in ("uris", "fileNames", "nodeNames")] == [0, 0, 0]
    inspect.signature(bound["customDownloader"]).bind(object())  # called with the source
