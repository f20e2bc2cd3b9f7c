"""The module's self-test (run by ``slicer_add_python_unittest`` on build machines and by *Reload and Test*)
and its Sample Data entry (a simulated MS case generated on this computer, no download)."""

from __future__ import annotations

import importlib.util
import logging
import unittest

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

# import name -> distribution, for what a synthesis needs (requirements.txt + torch from the PyTorch extension)
RUNTIME_IMPORTS = {"torch": "torch", "monai": "monai", "einops": "einops", "safetensors": "safetensors",
                   "skimage": "scikit-image", "scipy": "scipy", "psutil": "psutil", "SimpleITK": "SimpleITK"}


def missingRuntimePackages() -> list[str]:
    return [dist for name, dist in RUNTIME_IMPORTS.items() if importlib.util.find_spec(name) is None]


class MRISynthesisTest(ScriptedLoadableModuleTest):
    """A real synthesis through the worker on a small synthetic head (seconds, no download, no phantom
    anatomy), or a skip naming what is missing: build machines have no torch/MONAI and the test never installs
    into Slicer's Python."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        try:
            self.test_synthesis_creates_nodes_on_the_input_grid()
        except unittest.SkipTest as skip:
            logging.warning(str(skip))
            self.delayDisplay(str(skip))

    def test_synthesis_creates_nodes_on_the_input_grid(self):
        missing = missingRuntimePackages()
        if missing:
            self.skipTest(_("MRISynthesis self-test skipped: not installed: {0} (press Apply once to install "
                            "them)").format(", ".join(missing)))
        import numpy as np

        from MRISynthesisLib import mrml
        from MRISynthesisLib.volume import Volume

        from .logic import MRISynthesisLogic

        shape = (20, 24, 24)
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        brain = (z / 0.8) ** 2 + (y / 0.85) ** 2 + (x / 0.75) ** 2 < 1
        geometry = dict(origin=(-24.0, -24.0, -20.0), spacing=(2.0, 2.0, 2.0))
        # Smooth contrast inside the "brain" (a constant image would be refused as a mask).
        images = {name: Volume(np.where(brain, base + 150.0 * x + 40.0 * y, 0.0).astype(np.float32), **geometry)
                  for name, base in (("T1w", 600.3), ("FLAIR", 400.7))}
        t1w = mrml.volume_to_node(slicer.mrmlScene, images["T1w"], "selftest T1w")
        flair = mrml.volume_to_node(slicer.mrmlScene, images["FLAIR"], "selftest FLAIR")
        self.delayDisplay(_("Synthesizing PSR (2 steps on the CPU)"))
        nodes = MRISynthesisLogic().process("myelin-psr", {"t1w": t1w, "flair": flair},
                                            options={"device": "cpu", "steps": 2, "samples": 1, "seed": 0}, timeout=600)
        psr = nodes.outputs["psr"]
        self.assertTrue(mrml.node_to_volume(psr).same_grid(mrml.node_to_volume(t1w)))
        self.assertEqual(psr.GetName(), "selftest T1w psr (myelin-psr)")
        self.delayDisplay(_("Synthesis test passed"))


def generateSamplePhantom(source=None):
    """Simulate one MS subject (1.5 mm) and load its T1w and FLAIR; needs the backend's dependencies."""
    from MRISynthesisLib import mrml
    from MRISynthesisLib.phantom import generate_subject

    from .logic import MRISynthesisLogic

    MRISynthesisLogic().ensureDependencies()
    subject = generate_subject(seed=0, pathology="ms", spacing=1.5, maps=["mprage", "flair"])
    return [mrml.volume_to_node(slicer.mrmlScene, subject.maps[name], f"MRISynthesis phantom {label}")
            for name, label in (("mprage", "T1w"), ("flair", "FLAIR"))]


def registerSampleData():
    try:
        import SampleData
    except ImportError:  # Sample Data module disabled
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MR Synthesis", sampleName="MRISynthesisPhantomMS", uris=[], fileNames=[], nodeNames=[],
        thumbnailFileName=None, customDownloader=generateSamplePhantom)
