"""Quicklooks and the HTML run report of a ``miso-mapper run``.

* :func:`write_quicklooks` (:mod:`.quicklooks`): PNG previews of the store's layers, read decimated;
* :func:`write_run_report` (:mod:`.run_report`): one self-contained HTML page (config, model cards,
  coverage, timings, quicklooks, accuracy against the demo world's truth, evaluation tables, products);
* :func:`map_accuracy` (:mod:`.accuracy`): the map against truth rasters and labelled points.

Names are imported lazily, so that importing one submodule (e.g. :mod:`.source`) does not load the others.
"""

from __future__ import annotations

from typing import Any

__all__ = ["map_accuracy", "write_quicklooks", "write_run_report"]

_WHERE = {"map_accuracy": "accuracy", "write_quicklooks": "quicklooks", "write_run_report": "run_report"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"miso_mapper.report.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
