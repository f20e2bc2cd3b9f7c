"""``mrisynthesis tasks``: list the registered tasks, their inputs, outputs and model status."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list synthesis tasks", description=
                                   "List the synthesis tasks with their inputs, outputs and whether their model is installed.")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..model_store.registry import ModelRegistry
    from ..tasks import TASKS

    registry = ModelRegistry()
    rows = []
    for task in TASKS.values():
        rows.append({
            "id": task.id,
            "title": task.title,
            "inputs": [f"{s.name}{'' if s.required else '?'}" for s in task.inputs],
            "outputs": [s.name for s in task.outputs],
            "model": task.model_id,
            "installed": registry.is_installed(task.model_id),
            "install_command": registry.install_command(task.model_id),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        status = "installed" if row["installed"] else f"not installed ({row['install_command']})"
        if not row["outputs"] and not row["installed"]:
            status += "; the lesion rule is used meanwhile"
        print(f"{row['id']:<18} {row['title']}")
        outputs = ", ".join(row["outputs"]) or "lesion overlay and table only"
        print(f"{'':<18} inputs: {', '.join(row['inputs'])}  (? = optional)   outputs: {outputs}")
        print(f"{'':<18} model: {row['model']} -- {status}")
    return 0
