"""The viewer's one HTML page: a Leaflet map (vendored under ``static/leaflet``, BSD-2 licence beside it) and a
side panel with the layer menu, opacity slider, legend, chunk-status switch and the values under a click.

Everything it loads comes from the viewer's own server (``static/``): no CDN, so it works on offline nodes.
The behaviour lives in ``static/viewer.js``; :data:`~miso_mapper.htmlpage.READY_SCRIPT` records JavaScript
errors and the load, so a headless browser can check the page.
"""

from __future__ import annotations

import html

from miso_mapper.htmlpage import ERROR_ELEMENT, READY_SCRIPT


def viewer_page(title: str) -> str:
    """The page's HTML, titled ``title`` (escaped)."""
    name = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} · miso-mapper view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="static/leaflet/leaflet.css">
<link rel="stylesheet" href="static/viewer.css">
{READY_SCRIPT}
</head><body>
<div id="map"></div>
<div id="panel">
<h1>{name}</h1>
<label for="layer">Layer</label><select id="layer"></select>
<label for="opacity">Opacity</label><input id="opacity" type="range" min="0" max="1" step="0.05" value="0.85">
<div id="legend"></div>
<label><input id="chunks" type="checkbox" checked> chunk status</label>
<div id="chunk-counts"></div>
<label>Values under the click</label><div id="values">click the map</div>
</div>
{ERROR_ELEMENT}
<script src="static/leaflet/leaflet.js"></script>
<script src="static/viewer.js"></script>
</body></html>
"""
