"""The knobs of the synthetic demo world (see ``DESIGN.md``, "Demo world").

Every field has a default that gives the standard demo: a 10 km x 10 km region in AKVEG tile AK050H50V15 near
Fairbanks (4 processing chunks of 500 px), two summers of Sentinel-2-like scenes and ~1500 field points.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class WorldSpec(BaseModel):
    """Parameters of a synthetic world. Same spec (including ``seed``) => byte-identical files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed of every random draw in the world.")
    region_bbox: tuple[float, float, float, float] = Field(
        (260_000.0, 1_660_000.0, 270_000.0, 1_670_000.0),
        description="(xmin, ymin, xmax, ymax) of the mapped region, EPSG:3338 metres, multiples of "
        "`resolution`. Labelled points lie inside it.",
    )
    margin_m: float = Field(
        2000.0, ge=0,
        description="Covariates, truth and imagery extend this far (metres) beyond the region on every "
        "side, so chunk halos (125 px) and training chips (250 px) around the region are fully covered.",
    )
    resolution: float = Field(10.0, gt=0, description="Pixel size of the EPSG:3338 rasters, metres.")
    years: tuple[int, ...] = Field((2021, 2022), min_length=1, description="Summers with imagery.")
    dates_per_year: int = Field(3, ge=1, le=8, description="Acquisition dates per summer (Jul-Aug).")
    n_points: int = Field(1500, ge=10, description="Number of field points.")
    unlabelled_fraction: float = Field(
        0.12, ge=0, le=0.5,
        description="Fraction of points missing each label independently (a few miss both).",
    )
    label_noise: float = Field(
        0.05, ge=0, le=0.5, description="Probability that a point label differs from the truth pixel."
    )
    boa_offset_from_year: int | None = Field(
        2022,
        description="Scenes from this year on model processing baseline 04.00+: DN = reflectance*10000 "
        "+ 1000 and raster:bands offset -0.1 (earthsearch:boa_offset_applied false). Earlier scenes are "
        "baseline 03.01 with offset 0. None: no scene carries the offset.",
    )

    @field_validator("years")
    @classmethod
    def _sorted_unique(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if list(v) != sorted(set(v)):
            raise ValueError("years must be strictly increasing")
        return v

    @model_validator(mode="after")
    def _check_region(self) -> WorldSpec:
        xmin, ymin, xmax, ymax = self.region_bbox
        if not (xmax > xmin and ymax > ymin):
            raise ValueError("region_bbox must be (xmin, ymin, xmax, ymax) with xmax>xmin, ymax>ymin")
        r = self.resolution
        for v in (*self.region_bbox, self.margin_m):
            if abs(v / r - round(v / r)) > 1e-9:
                raise ValueError(f"region_bbox and margin_m must be multiples of resolution ({r} m)")
        return self

    @property
    def world_bbox(self) -> tuple[float, float, float, float]:
        """Region grown by ``margin_m``: the extent of every EPSG:3338 raster, metres."""
        xmin, ymin, xmax, ymax = self.region_bbox
        m = self.margin_m
        return (xmin - m, ymin - m, xmax + m, ymax + m)
