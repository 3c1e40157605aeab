"""The synthetic demo world: generate it (:func:`create_world`) and serve it (:func:`serve_world`).

See ``DESIGN.md`` ("Demo world") and the docstrings of :mod:`.generate` (directory layout) and :mod:`.serve`
(what the STAC API supports) for details.
"""

from miso_mapper.world.generate import WorldManifest, create_world, load_manifest
from miso_mapper.world.serve import ServedWorld, serve_folder, serve_forever, serve_world
from miso_mapper.world.spec import WorldSpec

__all__ = ["ServedWorld", "WorldManifest", "WorldSpec", "create_world", "load_manifest", "serve_folder",
           "serve_forever", "serve_world"]
