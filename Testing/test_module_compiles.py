"""The Slicer module without the Slicer application: it compiles, is packaged completely, its .ui binds to the
parameter node, and it imports nothing heavy at load time."""

from __future__ import annotations

import ast
import json
import py_compile
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "MRISynthesis"
UI = MODULE / "Resources" / "UI" / "MRISynthesis.ui"
HEAVY = {"torch", "monai", "SimpleITK", "numpy", "scipy", "skimage", "safetensors"}


def module_scripts() -> list[Path]:
    return sorted(p for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)


def cmake_list(variable: str) -> list[str]:
    text = (MODULE / "CMakeLists.txt").read_text()
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "MRISynthesis") for line in block.splitlines() if line.strip()]


def top_level_imports(path: Path) -> set[str]:
    """Top-level package names imported at module scope (not inside functions or classes' methods)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def parameter_names() -> set[str]:
    tree = ast.parse((MODULE / "MRISynthesisGUI" / "parameters.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MRISynthesisParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


@pytest.mark.parametrize("path", module_scripts(), ids=lambda p: str(p.relative_to(MODULE)))
def test_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_cmake_lists_every_script_and_resource():
    scripts, resources = cmake_list("MODULE_PYTHON_SCRIPTS"), cmake_list("MODULE_PYTHON_RESOURCES")
    assert sorted(scripts) == sorted(str(p.relative_to(MODULE)) for p in module_scripts())
    existing = sorted(str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file())
    assert sorted(resources) == existing
    assert "WITH_GENERIC_TESTS" in (MODULE / "CMakeLists.txt").read_text()


def test_top_level_cmake_and_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "project(MRISynthesis)" in text
    assert re.search(r'EXTENSION_DEPENDS\s+"PyTorch"', text)
    assert re.search(r'EXTENSION_CATEGORY\s+"Image Synthesis"', text)
    assert "Slicer_QTSCRIPTEDMODULES_LIB_DIR" in text and "MRISynthesisLib/*.py" in text
    assert "MRISynthesisLib/*.safetensors" in text  # bundled models are packaged
    entry = json.loads((ROOT / "MRISynthesis.json").read_text())
    assert entry["category"] == "Image Synthesis" and "PyTorch" in entry["build_dependencies"]
    assert entry["scm_url"].endswith("SlicerMRISynthesis.git")


def test_ui_binds_to_parameter_node_and_panel_widgets_exist():
    tree = ElementTree.parse(UI)
    bound = {prop.find("string").text for prop in tree.iter("property") if prop.get("name") == "SlicerParameterName"}
    parameters = parameter_names()
    assert bound and bound <= parameters, bound - parameters
    widgets = {w.get("name") for w in tree.iter("widget")}
    panel = (MODULE / "MRISynthesisGUI" / "panel.py").read_text()
    used = set(re.findall(r"\bui\.(\w+)", panel))
    for pattern in re.findall(r'getattr\(self\.ui, f"(\w+)\{slot\}"\)', panel):
        used |= {f"{pattern}{i}" for i in range(4)}
    assert used <= widgets, used - widgets
    combos = [w for w in tree.iter("widget") if w.get("class") == "qMRMLNodeComboBox"]
    receivers = {c.find("receiver").text for c in tree.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert {c.get("name") for c in combos} == receivers  # every node selector gets the scene


def test_slots_cover_every_task():
    from MRISynthesisLib.tasks import TASKS

    parameters = parameter_names()
    inputs = max(len(t.inputs) for t in TASKS.values())
    outputs = max(len(t.outputs) for t in TASKS.values())
    assert {f"input{i}" for i in range(inputs)} <= parameters
    assert {f"output{i}" for i in range(outputs)} <= parameters


def test_nothing_heavy_at_module_load():
    for path in [MODULE / "MRISynthesis.py", *sorted((MODULE / "MRISynthesisGUI").glob("*.py"))]:
        heavy = top_level_imports(path) & HEAVY
        assert not heavy, f"{path.name} imports {heavy} at load time"
    # MRISynthesisLib modules the GUI imports at load time must stay light as well.
    assert not top_level_imports(ROOT / "MRISynthesisLib" / "tasks.py") & HEAVY


def test_backend_never_imports_qt_and_only_mrml_imports_slicer():
    for path in sorted((ROOT / "MRISynthesisLib").rglob("*.py")):
        names = {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        assert "qt" not in names, path
        if not path.name.startswith("mrml"):  # the MRML bridge: mrml.py, mrml_transaction.py
            assert "slicer" not in names, path


def test_requirements_and_icon():
    lines = [line.split("#")[0].strip() for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines}
    assert not names & {"torch", "numpy", "simpleitk", "requests"}
    assert all(">=" in line and "==" not in line for line in lines)
    png = (MODULE / "Resources" / "Icons" / "MRISynthesis.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (128, 128)
