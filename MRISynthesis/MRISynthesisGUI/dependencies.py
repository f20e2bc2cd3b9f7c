"""Install what the backend needs, at Apply time only (never at module load).

PyTorch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA build for the GPU; the
rest from ``Resources/requirements.txt`` via ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or, on
Slicer 5.10, ``slicer.util.pip_install`` of the requirements that are missing or too old.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import slicer

TORCH_REQUIREMENT = ">=2.1"


def ensure_torch(ask: bool = True) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise RuntimeError("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions "
                           "Manager and restart Slicer.") from None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        torch = logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError("PyTorch is required but was not installed.")


def _unsatisfied(requirements_path: Path) -> list[str]:
    """Requirement lines whose distribution is missing or outside the bounds (Slicer 5.10 fallback)."""
    from packaging.requirements import Requirement

    missing = []
    for line in requirements_path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if installed not in requirement.specifier:
            missing.append(line)
    return missing


def ensure_requirements(requirements_path: Path) -> None:
    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(packaging.load_requirements(str(requirements_path)), requester="MRISynthesis")
        return
    missing = _unsatisfied(requirements_path)
    if missing:
        slicer.util.pip_install(missing)


def ensure_dependencies(requirements_path: Path, ask: bool = True) -> None:
    """Make torch and every requirement importable; raises ``RuntimeError`` with a user-facing message."""
    ensure_torch(ask)
    ensure_requirements(Path(requirements_path))
