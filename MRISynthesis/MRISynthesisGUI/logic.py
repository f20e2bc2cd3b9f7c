"""MRISynthesisLogic: runs a synthesis on scene nodes without any dialog (Python console, batch, tests).

The worker runs in a separate process started through an injected *launcher* (default:
``slicer.util.launchConsoleProcess``, which hides the console window on Windows); tests pass their own.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

MODULE_DIR = Path(__file__).resolve().parent.parent  # the folder of MRISynthesis.py


def resourcePath(name: str) -> str:
    """``Resources/<name>`` of the module (``ScriptedLoadableModuleLogic`` has no ``resourcePath``)."""
    return str(MODULE_DIR / "Resources" / name)


def slicerLauncher(args: list[str], envUpdates: dict):
    """Start a process like Slicer does: no console window on Windows, stderr merged into stdout."""
    return slicer.util.launchConsoleProcess(args, useStartupEnvironment=False, updateEnvironment=envUpdates)


class DeviceQuery:
    """Lists devices in a worker process (torch never loads in Slicer's process); poll ``done``/``result``."""

    def __init__(self, python, launcher):
        from MRISynthesisLib.devices import query_devices

        self.devices, self.error = None, None

        def run():
            try:
                self.devices = query_devices(python, launcher)
            except Exception as error:  # reported to the panel's log; auto and CPU stay usable
                self.error = str(error)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class MRISynthesisLogic(ScriptedLoadableModuleLogic):
    def __init__(self, launcher=None, installer=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.launcher = launcher or slicerLauncher
        self._installer = installer

    # ------------------------------------------------------------------------------------ parameters
    def getParameterNode(self):
        from .parameters import MRISynthesisParameterNode

        return MRISynthesisParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------------- dependencies
    @property
    def installer(self):
        if self._installer is None:
            from .install import DependencyInstaller

            self._installer = DependencyInstaller(resourcePath("requirements.txt"))
        return self._installer

    def ensureDependencies(self) -> None:
        """Install torch (PyTorch extension) and the requirements when missing; ``RuntimeError`` if not."""
        self.installer.ensure()

    @staticmethod
    def pythonExecutable() -> str:
        """``PythonSlicer`` (Slicer's Python with its environment) for the worker process."""
        if os.path.basename(sys.executable).lower().startswith("pythonslicer"):
            return sys.executable
        return shutil.which("PythonSlicer") or sys.executable

    def queryDevices(self) -> DeviceQuery:
        return DeviceQuery(self.pythonExecutable(), self.launcher)

    # ------------------------------------------------------------------------------------------- run
    def start(self, taskId, inputNodes, maskNode=None, lesionNode=None, options=None, outputNodes=None):
        """Write the input nodes to a private temp folder and start the worker (``mrml_run.start_run``).

        Returns ``(WorkerProcess, RunContext)``; poll the process, then call ``importResults(process, context)``.
        """
        from MRISynthesisLib.mrml_run import start_run

        return start_run(slicer.mrmlScene, taskId, inputNodes, maskNode, lesionNode, options, outputNodes,
                         python=self.pythonExecutable(), launcher=self.launcher)

    def importResults(self, process, context):
        """Create the result nodes (all or nothing) from a finished run."""
        from MRISynthesisLib.mrml_run import import_run

        return import_run(slicer.mrmlScene, process, context)

    @staticmethod
    def resultsRoot() -> Path:
        from MRISynthesisLib.model_store.registry import default_home

        return Path(default_home()) / "results"

    def keepResultFiles(self, process, taskId: str) -> Path | None:
        """Copy a finished run's output files to ``<MRISYNTHESIS_HOME>/results/<task>-<time>`` ("Show results
        folder"); the run's own work folder is removed afterwards."""
        source = Path(process.work_dir or "", "outputs")
        if not source.is_dir():
            return None
        target = self.resultsRoot() / f"{taskId}-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

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
