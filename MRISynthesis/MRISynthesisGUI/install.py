"""Install what the backend needs, at Apply time only (never at module load).

- PyTorch only through the PyTorch extension (``PyTorchUtils``), which picks the CUDA build for the GPU.
- Everything else from ``Resources/requirements.txt``, installed without letting pip touch torch (nor Slicer's
  own numpy, SimpleITK, requests): MONAI requires torch, and a plain ``pip install monai`` would replace the
  CUDA build PyTorchUtils chose with whatever PyPI serves (SlicerNNUnet's approach).
- The torch requirement is derived from the installed MONAI's metadata (MONAI 1.6 needs torch >= 2.8), so
  PyTorchUtils installs a torch that MONAI accepts.

Slicer >= 5.12: ``slicer.packaging.pip_ensure`` (asks, shows progress, ``skip_packages``). ``slicer.packaging``
must be imported explicitly (``slicer/__init__`` does not). Older Slicer: ask first, then
``slicer.util.pip_install`` with ``--no-deps`` and the dependencies one by one, skipping the same packages.
"""

from __future__ import annotations

import importlib.metadata
import logging

import slicer
from slicer.i18n import tr as _

from .signal import Signal

TORCH_FLOOR = ">=2.1"  # the backend's own minimum; MONAI's requirement is added to it
NOT_FROM_PIP = ("torch", "torchvision", "SimpleITK", "numpy", "requests")  # PyTorchUtils' or Slicer's own


def _requirement(text):
    from packaging.requirements import Requirement

    return text if hasattr(text, "specifier") else Requirement(str(text))


def _satisfied(requirement) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        return importlib.metadata.version(requirement.name) in requirement.specifier
    except importlib.metadata.PackageNotFoundError:
        return False


def slicerPackaging():
    """``slicer.packaging`` on Slicer >= 5.12, else None."""
    try:
        import slicer.packaging

        return slicer.packaging
    except ImportError:
        return None


class DependencyInstaller:
    """Checks and installs the backend's dependencies; raises ``RuntimeError`` with a one-line message.

    Args:
        requirementsPath: ``Resources/requirements.txt``.
        askConfirmation: ask before installing (False in batch use and tests).
        torchLogicFactory: returns ``PyTorchUtils.PyTorchUtilsLogic()`` (injected by tests).
    """

    def __init__(self, requirementsPath, askConfirmation: bool = True, torchLogicFactory=None):
        self.requirementsPath = str(requirementsPath)
        self.askConfirmation = askConfirmation
        self.torchLogicFactory = torchLogicFactory or self._pyTorchUtilsLogic
        self.progressInfo = Signal()

    def _log(self, text: str) -> None:
        logging.info(text)
        self.progressInfo(text)

    @staticmethod
    def _pyTorchUtilsLogic():
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions "
                                 "Manager and restart Slicer.")) from None
        return PyTorchUtils.PyTorchUtilsLogic()

    def requirements(self) -> list:
        lines = []
        with open(self.requirementsPath, encoding="utf-8") as handle:
            for line in handle:
                line = line.split("#", 1)[0].strip()
                if line and not line.startswith("-"):
                    lines.append(_requirement(line))
        return lines

    def missingRequirements(self) -> list:
        return [requirement for requirement in self.requirements() if not _satisfied(requirement)]

    def torchRequirement(self) -> str:
        """The backend's torch floor combined with what the installed MONAI requires (e.g. ``>=2.1,>=2.8``)."""
        specifiers = [TORCH_FLOOR]
        try:
            for text in importlib.metadata.requires("monai") or []:
                requirement = _requirement(text)
                if requirement.name.lower() == "torch" and (requirement.marker is None or requirement.marker.evaluate()):
                    specifiers += [str(spec) for spec in requirement.specifier]
        except importlib.metadata.PackageNotFoundError:
            pass
        return ",".join(dict.fromkeys(specifiers))

    def ensure(self) -> None:
        torchLogic = self.torchLogicFactory()  # fails first (and cheaply) without the PyTorch extension
        missing = self.missingRequirements()
        if missing:
            self._install(missing)
        torchSpec = self.torchRequirement()
        if not _satisfied(_requirement("torch" + torchSpec)):
            self._log(_("Installing PyTorch {0} with the PyTorch extension...").format(torchSpec))
            if torchLogic.installTorch(askConfirmation=self.askConfirmation, torchVersionRequirement=torchSpec) is None:
                raise RuntimeError(_("PyTorch is required but was not installed."))

    def _install(self, missing: list) -> None:
        names = [str(requirement) for requirement in missing]
        self._log(_("Installing Python packages: {0}").format(", ".join(names)))
        packaging = slicerPackaging()
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:
                skipped = packaging.pip_ensure(missing, skip_packages=list(NOT_FROM_PIP), requester="MRISynthesis",
                                               prompt_install=self.askConfirmation, skip_in_testing=False)
            except RuntimeError as error:  # the user declined
                raise RuntimeError(_("Python packages are required but were not installed ({0}).").format(error)) from None
            self._log(_("Left to PyTorchUtils / Slicer: {0}").format(", ".join(skipped or []) or _("nothing")))
            return
        # Slicer 5.8 / 5.10: pip_install neither asks nor skips, so do both here.
        if self.askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("MRISynthesis needs these Python packages:\n{0}\n\nInstall them now? This can take a few "
                  "minutes.").format("\n".join(names))):
            raise RuntimeError(_("Python packages are required but were not installed."))
        done = set()
        for requirement in missing:
            self._installWithoutSkipped(requirement, done)

    def _installWithoutSkipped(self, requirement, done: set) -> None:
        name = requirement.name.lower()
        if name in done or name in {n.lower() for n in NOT_FROM_PIP} or _satisfied(requirement):
            return
        done.add(name)
        slicer.util.pip_install(f"{requirement.name}{requirement.specifier} --no-deps")
        for text in importlib.metadata.requires(requirement.name) or []:
            dependency = _requirement(text)
            if dependency.marker is None or dependency.marker.evaluate():
                self._installWithoutSkipped(dependency, done)
