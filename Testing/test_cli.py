"""The command line: every subcommand documents its options; tasks are listed with their model state."""

import json
import subprocess
import sys

import pytest

from MRISynthesisLib.cli import SUBCOMMANDS, build_parser, main
from MRISynthesisLib.tasks import TASKS


def test_every_subcommand_is_wired_and_documented(capsys):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(choices) == set(SUBCOMMANDS)
    for name, subparser in choices.items():
        assert subparser.description, f"'{name}' has no description"
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"'{name} {action.option_strings[0]}' has no help text"


def test_synthesize_help_lists_the_documented_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synthesize", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ["--task", "--input", "--output", "--reference", "--device", "--steps", "--samples", "--seed",
                   "--mask", "--lesions", "--overwrite"]:
        assert option in text


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from MRISynthesisLib.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_tasks_json_lists_every_task_with_model_state(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path))
    assert main(["tasks", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"myelin-psr", "ms-lesions", "missing-contrast", "stroke-dwi-adc", "fmri-dmri"} == set(TASKS)
    assert rows["ms-lesions"]["outputs"] == [] and rows["ms-lesions"]["inputs"] == ["t1w?", "flair"]
    assert rows["myelin-psr"]["inputs"] == ["t1w", "flair"]
    assert rows["missing-contrast"]["installed"] is False


def test_task_inputs_auto_assign_by_file_name():
    psr = TASKS["myelin-psr"]
    assert psr.input("flair").matches("sub-01_FLAIR.nii.gz")
    assert psr.input("t1w").matches("sub-01_T1w.nii.gz")
    assert not psr.input("t1w").matches("sub-01_T1ce.nii.gz")
    contrasts = TASKS["missing-contrast"]
    assert contrasts.input("t1ce").matches("BraTS-GLI-00001-000-t1c.nii.gz")
    assert contrasts.input("flair").matches("BraTS-GLI-00001-000-t2f.nii.gz")
    assert not contrasts.input("t2w").matches("BraTS-GLI-00001-000-t2f.nii.gz")


def test_export_version_defaults_to_the_next_minor_of_the_shipped_model(tmp_path, monkeypatch):
    from MRISynthesisLib.commands.train import next_version
    from MRISynthesisLib.model_store.registry import ModelRegistry

    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path))  # no user models: the bundled card decides
    major, minor, _ = ModelRegistry().card("myelin-psr").version.split(".")
    assert next_version("myelin-psr") == f"{major}.{int(minor) + 1}.0"
    assert next_version("missing-contrast") == "0.1.0"  # no model yet
