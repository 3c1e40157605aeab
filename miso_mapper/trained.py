"""The MISO checkpoints ``run`` maps with when a workflow names none: the ones ``train`` wrote.

``train`` writes ``<train.directory>/<task>.safetensors`` (:meth:`~miso_mapper.layout.TrainLayout.checkpoint`;
``train.directory`` defaults to ``<output.directory>/train``). A workflow with ``model.kind: miso`` and neither
``model.permafrost_checkpoint`` nor ``model.taxonomy_checkpoint`` set is mapped with those files when they
exist, so ``train`` then ``run`` on one workflow file needs no copied paths. A checkpoint set in the workflow
always wins: nothing is filled in then. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout

TASKS = ("permafrost", "taxonomy")


def trained_checkpoints(workflow: Workflow) -> dict[str, Path]:
    """Task -> ``<train.directory>/<task>.safetensors`` for each task whose file exists (absolute paths when
    the workflow was loaded from a file)."""
    layout = RunLayout.of(workflow).train
    return {task: layout.checkpoint(task) for task in TASKS if layout.checkpoint(task).is_file()}


def with_trained_checkpoints(workflow: Workflow, required: bool = True) -> tuple[Workflow, str | None]:
    """``workflow`` with its MISO checkpoints filled in from ``train``'s outputs when it sets none, and a line
    saying which files it now uses (None when nothing was filled in).

    Unchanged when ``model.kind`` is not ``miso`` or any checkpoint is set. ``required`` (``run``): with no
    checkpoint set and none written by ``train``, raise :class:`MisoError` naming the paths ``train`` writes
    and how to set them; otherwise the workflow comes back unchanged.
    """
    model = workflow.model
    if model.kind != "miso" or model.permafrost_checkpoint is not None or model.taxonomy_checkpoint is not None:
        return workflow, None
    found = trained_checkpoints(workflow)
    if not found:
        if not required:
            return workflow, None
        layout = RunLayout.of(workflow).train
        expected = " and ".join(str(layout.checkpoint(task)) for task in workflow.train.tasks)
        raise MisoError(f"model: no MISO checkpoint to map with: neither model.permafrost_checkpoint nor "
                        f"model.taxonomy_checkpoint is set, and `train` has not written {expected}; run "
                        "`miso-mapper train CONFIG` first, or set model.permafrost_checkpoint / "
                        "model.taxonomy_checkpoint to your .safetensors files")
    filled = model.model_copy(update={f"{task}_checkpoint": path for task, path in found.items()})
    used = ", ".join(f"{task} {path}" for task, path in found.items())
    return workflow.model_copy(update={"model": filled}), f"model: using the checkpoints `train` wrote: {used}"
