"""Field-sampling guidance: where a new field label would help the maps most (``miso-mapper sample-sites``).

* :mod:`.layers`: the store layers a site is scored from, and their stored scalings;
* :mod:`.candidates`: candidate pixels on a lattice of the store, scored and kept best-first;
* :mod:`.constraints`: the optional polygon mask and access lines (roads, rivers);
* :mod:`.select`: greedy choice by score with a minimum distance between sites;
* :mod:`.output`: the sites as GeoJSON (EPSG:4326) and CSV;
* :mod:`.run`: :func:`~miso_mapper.sites.run.sample_sites`, the command's body.
"""
