"""One synthesis run on MRML scene nodes: write the inputs, start the worker, import the result.

Shared by the Slicer module (``MRISynthesisGUI.logic``) and the web app (``MRISynthesisLib.web``), so both
send the same request and create the same nodes. The run itself happens in a ``worker.WorkerProcess``; the
caller polls it (Qt timer, asyncio task) and calls ``import_run`` when it is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from . import mrml
from .mrml_series import input_volume
from .errors import InputError
from .tasks import get_task
from .volume import write_volume
from .worker import WorkerProcess


@dataclass
class RunContext:
    """What ``import_run`` needs besides the finished process."""

    task: str
    reference: object                                   # the reference input node (grid of every output)
    outputs: dict = field(default_factory=dict)         # output name -> existing volume node to fill, or None


def start_run(scene, task_id: str, input_nodes: dict, mask_node=None, lesion_node=None, options: dict | None = None,
              output_nodes: dict | None = None, python=None, launcher=None,
              env: dict | None = None) -> tuple[WorkerProcess, RunContext]:
    """Write the input nodes to a private temp folder (removed with the run) and start the worker.

    Args:
        input_nodes: input name -> volume node (``None`` for an input left empty). The first given input of
            the task's order is the reference. A sequence's proxy node sends the whole series
            (``mrml_series.input_volume``).
        lesion_node: a segmentation node with the user's lesions (wins over the segmenter and the rule).
        options: worker options (device, steps, samples, seed); outputs are always written as NRRD.
        python, launcher: how the worker process is started (``worker.WorkerProcess``).
    Raises:
        InputError: no input selected.
    """
    task = get_task(task_id)
    names = [spec.name for spec in task.inputs if input_nodes.get(spec.name) is not None]
    if not names:
        raise InputError("Select at least one input volume.")
    reference = input_nodes[names[0]]
    folder = tempfile.mkdtemp(prefix="mrisynthesis-inputs-")
    try:
        paths = {name: str(write_volume(input_volume(input_nodes[name], name), os.path.join(folder, name + ".nrrd")))
                 for name in names}
        request = {"task": task.id, "inputs": paths, "reference": names[0],
                   "options": {"output_format": "nrrd", **(options or {})}}
        if mask_node is not None:
            request["mask"] = str(write_volume(mrml.node_to_volume(mask_node), os.path.join(folder, "mask.nrrd")))
        if lesion_node is not None:
            labels = mrml.segmentation_to_volume(scene, lesion_node, reference)
            request["lesions"] = str(write_volume(labels, os.path.join(folder, "lesions.nrrd"), None))
        process = WorkerProcess(request, python=python, cleanup_paths=[folder], launcher=launcher, env=env).start()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return process, RunContext(task.id, reference, dict(output_nodes or {}))


def import_run(scene, process: WorkerProcess, context: RunContext) -> mrml.ImportedNodes:
    """Create the result nodes (all or nothing) of a finished run."""
    return mrml.import_result(scene, get_task(context.task), process.load_result(), context.reference,
                              context.outputs)
