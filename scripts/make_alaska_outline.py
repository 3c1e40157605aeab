"""Write workflows/regions/alaska.geojson: a coarse, hand-digitised outline of Alaska.

The file is in EPSG:3338 (named by a GeoJSON "crs" member, which GDAL honours) because the Aleutian chain
crosses the antimeridian, where a lon/lat polygon would need splitting.

Vertices were placed by hand from well-known coastal places (Utqiagvik, Point Hope, Nome, Bethel's coast,
Cold Bay, Kodiak, Anchorage, Cordova, Yakutat, Sitka, Ketchikan, the 141st meridian border); islands are
buffered lines and points. It is accurate to roughly +-15 km and is buffered by 10 km, which is enough to
select the 50 km tiles and 25 km processing chunks a statewide run needs. A production run that must not
waste chunks on open ocean should pass a precise coastline as `region.vector` instead.

Run: python scripts/make_alaska_outline.py
"""

import json
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, mapping

MAINLAND = [  # (lon, lat) clockwise from the Arctic coast at the Canadian border
    (-141.0, 69.65), (-143.5, 70.1), (-146.0, 70.2), (-148.5, 70.35), (-150.5, 70.5), (-152.5, 70.85),
    (-154.5, 70.9), (-156.8, 71.35), (-158.5, 70.8), (-160.0, 70.5), (-162.0, 70.2), (-163.0, 69.75),
    (-166.2, 68.9), (-166.8, 68.35), (-164.5, 67.7), (-163.7, 67.1), (-162.6, 66.9), (-161.5, 66.3),
    (-163.8, 66.1), (-163.6, 66.55), (-166.1, 66.25), (-168.1, 65.6), (-166.4, 65.25), (-165.4, 64.5),
    (-164.4, 64.55), (-163.0, 64.5), (-161.3, 64.8), (-160.8, 63.9), (-162.0, 63.5), (-165.0, 62.7),
    (-166.1, 61.8), (-166.1, 61.5), (-165.5, 60.9), (-164.8, 60.5), (-162.5, 59.9), (-161.9, 59.8),
    (-161.6, 59.1), (-162.2, 58.65), (-160.4, 59.05), (-158.5, 59.05), (-157.0, 58.7), (-157.4, 58.2),
    (-158.6, 56.95), (-160.5, 56.0), (-162.7, 55.2), (-163.4, 54.85), (-162.0, 55.0), (-160.5, 55.3),
    (-158.4, 56.3), (-156.5, 57.0), (-155.0, 57.8), (-154.5, 58.2), (-153.4, 59.0), (-153.0, 59.8),
    (-151.1, 61.05), (-149.9, 61.2), (-151.3, 60.55), (-151.5, 59.65), (-151.9, 59.2), (-149.4, 60.1),
    (-148.7, 60.8), (-146.3, 61.1), (-145.8, 60.55), (-143.9, 60.0), (-141.0, 59.9), (-139.7, 59.55),
    (-136.6, 58.2), (-135.3, 57.05), (-134.7, 56.15), (-133.9, 55.7), (-132.6, 54.7), (-130.0, 54.75),
    (-130.0, 55.9), (-131.0, 56.4), (-132.1, 57.0), (-133.0, 58.0), (-134.0, 58.8), (-135.5, 59.8),
    (-137.5, 59.2), (-138.7, 59.8), (-139.2, 60.35), (-141.0, 60.3),
]
ALEUTIANS = [  # lon west of -180 written as < -180 so the line does not wrap
    (-164.0, 54.6), (-166.5, 53.9), (-168.5, 53.3), (-170.0, 52.8), (-174.5, 52.2), (-176.6, 51.9),
    (-178.0, 51.8), (-180.8, 51.5), (-182.5, 52.0), (-187.0, 52.9),
]
ISLANDS = [
    [(-152.2, 58.6), (-152.0, 57.4), (-153.9, 56.7), (-154.8, 57.3), (-153.8, 58.0)],  # Kodiak
    [(-171.8, 63.5), (-170.3, 63.7), (-168.7, 63.2), (-170.0, 63.0), (-171.5, 63.3)],  # St Lawrence
    [(-166.2, 60.4), (-165.5, 60.1), (-166.5, 59.8), (-167.4, 60.1)],  # Nunivak
]
POINTS = [(-170.3, 57.15), (-169.6, 56.6)]  # Pribilof Islands

_to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)


def to_albers(geom):
    return shapely.transform(geom, lambda xy: np.column_stack(_to_albers.transform(xy[:, 0], xy[:, 1])))


parts = [Polygon(MAINLAND), *(Polygon(p) for p in ISLANDS)]
albers = [to_albers(shapely.segmentize(p, 0.2)) for p in parts]
albers.append(to_albers(LineString(ALEUTIANS)).buffer(20_000))
albers += [to_albers(Point(p)).buffer(15_000) for p in POINTS]
outline = shapely.union_all(albers).buffer(10_000).simplify(2_000)
feature = {"type": "Feature", "properties": {"name": "Alaska (coarse outline, +-15 km)"},
           "geometry": mapping(shapely.set_precision(outline, 1.0))}
collection = {"type": "FeatureCollection",
              "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
              "features": [feature]}
out = Path(__file__).resolve().parents[1] / "workflows" / "regions" / "alaska.geojson"
out.write_text(json.dumps(collection) + "\n")
print(f"wrote {out} ({outline.area / 1e6:,.0f} km2 in EPSG:3338)")
