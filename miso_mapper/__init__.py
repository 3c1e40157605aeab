"""miso-mapper: statewide 10 m permafrost and soil-order maps of Alaska with the MISO model.

The Python API (:mod:`miso_mapper.api`) is the command line as functions, each taking a workflow or its
YAML path::

    import miso_mapper as mm

    workflow = mm.load_workflow("workflows/demo.yaml")
    print(len(mm.plan(workflow).chunks))    # offline
    mm.train(workflow)                      # -> <train.directory>/<task>.safetensors
    summary = mm.run(workflow)              # maps.zarr, with the checkpoints train wrote
    mm.export(workflow); mm.report(workflow); mm.evaluate(workflow, quick=True)

The functions load lazily, so ``import miso_mapper`` loads neither torch nor Dask. ``plan``, ``train``,
``evaluate``, ``export`` and ``report`` are also the names of subpackages/modules: as attributes of this
package they are always the API functions; import from the modules themselves
(``from miso_mapper.plan import make_plan``).
"""

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("miso-mapper")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_API = ("load_workflow", "plan", "run", "export", "report", "train", "evaluate")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        # by name, not an import statement: miso_mapper.api imports modules that read __version__ from here
        function = getattr(import_module("miso_mapper.api"), name)
        globals()[name] = function
        return function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package's module type: importing a submodule named like an API function (``miso_mapper.plan``)
    does not replace the function with the submodule, so ``miso_mapper.plan`` means one thing."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules, where `from miso_mapper.plan import ...` finds it
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
