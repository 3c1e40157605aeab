"""Where training and evaluation read imagery from: the workflow's STAC API, or its demo world served locally.

:func:`imagery_workflow` yields the workflow with ``imagery.stac_url`` set. A demo workflow (one with a
``world`` section and no ``stac_url``) gets its world created if it is missing and served on 127.0.0.1 for
the duration of the ``with`` block, so training reads through exactly the production path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError


def world_fingerprint(workflow: Workflow) -> str | None:
    """SHA-256 of the demo world's ``world.json`` (it lists every file with its size), or None."""
    if workflow.world is None:
        return None
    path = workflow.world.directory / "world.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def ensure_world_exists(workflow: Workflow, echo: Callable[[str], Any] | None = None) -> None:
    """Create the demo world of a workflow that has one (and no STAC URL) if it is not on disk yet."""
    if workflow.world is None or workflow.imagery.stac_url is not None or workflow.imagery.catalog is not None:
        return
    from miso_mapper.world import WorldSpec, create_world

    directory = workflow.world.directory
    if not (directory / "world.json").is_file():
        if echo:
            echo(f"creating the demo world in {directory} (seed {workflow.world.seed}) ...")
        create_world(directory, WorldSpec(seed=workflow.world.seed), overwrite=directory.exists())


@contextmanager
def imagery_workflow(workflow: Workflow, echo: Callable[[str], Any] | None = None) -> Iterator[Workflow]:
    """The workflow with a reachable ``imagery.stac_url`` or a ``catalog`` (serving its demo world if needed)."""
    if workflow.imagery.stac_url is not None or workflow.imagery.catalog is not None:
        yield workflow
        return
    if workflow.world is None:
        raise MisoError("imagery.stac_url is not set and the workflow has no demo `world` to serve")
    from miso_mapper.world import serve_world

    ensure_world_exists(workflow, echo)
    with serve_world(workflow.world.directory) as served:
        if echo:
            echo(f"serving the demo world: STAC API {served.stac_url}")
        imagery = workflow.imagery.model_copy(update={"stac_url": served.stac_url})
        yield workflow.model_copy(update={"imagery": imagery})
