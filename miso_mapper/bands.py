"""Names and sizes that tie the model's inputs and outputs to data: band order, covariate layers, soil orders,
the window the network sees.

These are facts of the MISO model (a checkpoint trained by the reference code expects exactly this order),
not tunables, which is why they live here rather than in the workflow configuration.
"""

from typing import Final

#: The 9 Sentinel-2 bands the satellite encoder takes, in the reference's channel order.
S2_BANDS: Final[tuple[str, ...]] = (
    "red", "green", "blue", "rededge1", "rededge2", "rededge3", "nir", "swir16", "swir22",
)

#: Sentinel-2 L2A band ids (ESA naming) of :data:`S2_BANDS`, same order. NIR is the 10 m B08.
S2_BAND_IDS: Final[dict[str, str]] = {
    "red": "B04", "green": "B03", "blue": "B02",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
    "nir": "B08", "swir16": "B11", "swir22": "B12",
}

#: Native ground sample distance of each band in metres (the 20 m bands are resampled to 10 m on load).
S2_BAND_GSD: Final[dict[str, int]] = {
    "red": 10, "green": 10, "blue": 10, "nir": 10,
    "rededge1": 20, "rededge2": 20, "rededge3": 20, "swir16": 20, "swir22": 20, "scl": 20,
}

#: The 10 covariate layers the covariate encoder takes, in the reference's channel order:
#: 7 IfSAR DEM derivatives then 3 climate normals.
COVARIATES: Final[tuple[str, ...]] = (
    "aspct_4", "elevation", "maxc_4", "sl_4", "spi", "swi_10", "tpi_4",
    "ppt_annual", "tmean_swi", "tmin_january",
)

#: File stem of each covariate layer as the reference's data release names it.
COVARIATE_FILE_STEMS: Final[dict[str, str]] = {name: name for name in COVARIATES} | {
    "elevation": "elevation_full_10m_3338",
}

#: Side of the window the MISO network sees, in 10 m pixels (the reference's crop size): what training cuts
#: around a point and what the map predictor tiles a chunk with. A checkpoint trained on another size says so in
#: its ``crop_size``, and the predictor refuses it unless ``model.predictor.window`` is changed to match.
WINDOW_PX: Final[int] = 250

#: The 7 soil orders of the taxonomy head, in the reference's class-index order.
SOIL_ORDERS: Final[tuple[str, ...]] = (
    "Andisols", "Entisols", "Gelisols", "Histosols", "Inceptisols", "Mollisols", "Spodosols",
)

#: Sentinel-2 scene classification (SCL) codes.
SCL_CLASSES: Final[dict[int, str]] = {
    0: "no_data", 1: "saturated_or_defective", 2: "dark_area_pixels", 3: "cloud_shadows",
    4: "vegetation", 5: "not_vegetated", 6: "water", 7: "unclassified",
    8: "cloud_medium_probability", 9: "cloud_high_probability", 10: "thin_cirrus", 11: "snow",
}
