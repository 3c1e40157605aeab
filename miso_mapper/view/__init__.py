"""``miso-mapper view``: browse a run's exported maps in a web browser, served on 127.0.0.1 (no internet).

Tiles come from the COG mosaics (VRTs) and statewide overviews that ``export`` wrote, read by rio-tiler
(:mod:`.render`); one page (:mod:`.page`, Leaflet vendored under ``static/leaflet``) shows one layer at a time
with its legend (colours from :mod:`miso_mapper.export.layers`, as in the COGs), an opacity slider, the values of
every layer under a click and the run manifest's chunk status as an overlay (:mod:`.chunks`). Modules:
:mod:`.catalog` (which layers, colour maps, legends), :mod:`.server` (routes), :mod:`.command` (the CLI).
"""

from miso_mapper.view.server import ViewerData, ViewerServer

__all__ = ["ViewerData", "ViewerServer"]
