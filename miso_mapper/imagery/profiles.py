"""Collection profiles: how one STAC provider names Sentinel-2 L2A assets and scales their values.

Every profile maps the model's band names (:data:`~miso_mapper.bands.S2_BANDS` plus ``scl``) to the asset
keys of that provider, and says how to *harmonise* digital numbers to the pre-2022 scale (reflectance x
10000, no offset) that the model was trained on.

Pitfall: from processing baseline 04.00 (acquisitions from 2022-01-25, and all Collection-1 reprocessing)
ESA adds BOA_ADD_OFFSET = -1000 DN: reflectance = (DN - 1000) / 10000. Providers differ in whether they
already removed it, so the decision is made per item from its own metadata:

* Earth Search v1 ``sentinel-2-l2a``: ``earthsearch:boa_offset_applied: true`` means the provider already
  subtracted the offset; otherwise items with ``s2:processing_baseline`` >= 04.00 still carry it.
* Planetary Computer ``sentinel-2-l2a``: never harmonised; baseline >= 04.00 carries the offset. Asset hrefs
  need a SAS token (``planetary-computer`` extra): :meth:`CollectionProfile.signed` signs the hrefs of the
  assets a chunk reads right before the read (a token lasts about an hour, so signed items are never stored:
  the run manifest keeps the unsigned ones); tokens are stripped from anything we log.
* demo: written by ``miso-mapper world create`` with Earth Search's metadata conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from miso_mapper.bands import S2_BAND_IDS, S2_BANDS
from miso_mapper.errors import MisoError

BOA_ADD_OFFSET_DN: Final[int] = -1000


class CollectionProfile(BaseModel):
    """Asset naming and value harmonisation of one provider's Sentinel-2 L2A collection."""

    model_config = ConfigDict(frozen=True)

    name: str
    asset_keys: dict[str, str]
    """Model band name (and ``scl``) -> asset key in this provider's items."""
    offset_applied_property: str | None = None
    """Item property saying the provider already removed BOA_ADD_OFFSET, if the provider has one."""
    signs_hrefs: bool = False

    def asset_key(self, band: str) -> str:
        """Asset key for a model band name or ``scl``."""
        return self.asset_keys[band]

    def dn_offset(self, properties: Mapping[str, Any]) -> int:
        """DN to *add* to this item's reflectance values to reach the baseline-03 scale (0 or -1000)."""
        baseline = _baseline(properties)
        if baseline is None or baseline < 4.0:
            return 0
        if self.offset_applied_property and properties.get(self.offset_applied_property) is True:
            return 0
        return BOA_ADD_OFFSET_DN

    def signer(self) -> Callable[[Any], Any] | None:
        """A function that signs items (Planetary Computer), or None when hrefs are usable as they are."""
        if not self.signs_hrefs:
            return None
        try:
            import planetary_computer
        except ImportError:
            raise MisoError(
                "the planetary-computer profile needs the `planetary-computer` package: "
                "pip install 'miso-mapper[planetary-computer]'"
            ) from None
        return planetary_computer.sign

    def signed(self, items: list[dict[str, Any]], assets: list[str]) -> list[dict[str, Any]]:
        """Copies of ``items`` whose ``assets`` (asset keys) carry hrefs signed for reading; ``items`` itself
        when this profile signs nothing. The originals are never changed. Raises :class:`MisoError` when the
        signing package is missing."""
        sign = self.signer()
        if sign is None:
            return items
        out = []
        for item in items:
            copied = dict(item.get("assets", {}))
            for key in assets:
                if key in copied:
                    copied[key] = {**copied[key], "href": sign(copied[key]["href"])}
            out.append({**item, "assets": copied})
        return out


def _baseline(properties: Mapping[str, Any]) -> float | None:
    raw = properties.get("s2:processing_baseline", properties.get("sentinel:processing_baseline"))
    if raw is None:
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


_EARTH_SEARCH_KEYS = {band: band for band in S2_BANDS} | {"scl": "scl"}

PROFILES: Final[dict[str, CollectionProfile]] = {
    "earth-search-v1": CollectionProfile(
        name="earth-search-v1", asset_keys=_EARTH_SEARCH_KEYS, offset_applied_property="earthsearch:boa_offset_applied"
    ),
    "planetary-computer": CollectionProfile(
        name="planetary-computer",
        asset_keys={band: S2_BAND_IDS[band] for band in S2_BANDS} | {"scl": "SCL"},
        signs_hrefs=True,
    ),
    "demo": CollectionProfile(
        name="demo", asset_keys=_EARTH_SEARCH_KEYS, offset_applied_property="earthsearch:boa_offset_applied"
    ),
}


def get_profile(name: str) -> CollectionProfile:
    """The profile called ``name``; raises :class:`MisoError` listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise MisoError(f"unknown imagery profile {name!r}; known: {', '.join(PROFILES)}") from None
