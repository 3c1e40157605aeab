"""How a points file spells its labels: permafrost yes/no spellings, soil-order names, "no label" values.

A :class:`LabelSpelling` (built from :class:`~miso_mapper.config.PointsConfig`) turns one property value into a
label code: permafrost 1.0 / 0.0 / NaN (no label), soil order an index into :data:`~miso_mapper.bands.SOIL_ORDERS`
/ -1 (no label), or :data:`UNKNOWN` when the value is none of the accepted spellings. Values are compared as
text, trimmed and lower-cased (:func:`as_text`), so JSON ``true``, ``"True"`` and ``"yes "`` are all text.
The reference reads the same labels from its own point files (``MISO/datasets/dataset.py``: ``aksdb_pf1m_bin``
0/1, ``tax_order`` plural order names) and drops values it does not know; here they are an error by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from miso_mapper.bands import SOIL_ORDERS


class SpellingSettings(Protocol):
    """The spelling settings of :class:`~miso_mapper.config.PointsConfig` (a protocol, so that the config,
    which uses this module to validate them, is not imported back)."""

    permafrost_true: Sequence[str]
    permafrost_false: Sequence[str]
    no_label_values: Sequence[str]
    soil_order_names: Mapping[str, str | None]


UNKNOWN: Final = object()
"""Returned for a value that is no accepted spelling of a label (nor of "no label")."""


def as_text(value: Any) -> str | None:
    """``value`` as compared with the spellings: None for JSON null or a NaN number; ``true``/``false`` for
    booleans; whole numbers without a decimal part (``1.0`` -> ``1``); anything else its trimmed lower-case
    text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value).strip().lower()


def soil_order_index(name: str) -> int | None:
    """Index in SOIL_ORDERS of an order's name in any case, plural or singular (``gelisol``); None if none."""
    text = name.strip().lower()
    for i, order in enumerate(SOIL_ORDERS):
        if text in (order.lower(), order.lower()[:-1]):
            return i
    return None


@dataclass(frozen=True)
class LabelSpelling:
    """The accepted spellings of a points file's labels, all as :func:`as_text` text."""

    permafrost_true: frozenset[str]
    permafrost_false: frozenset[str]
    no_label: frozenset[str]
    soil_order_names: dict[str, int]
    """file value -> SOIL_ORDERS index (-1: no label), besides the orders' own names."""

    @classmethod
    def of(cls, cfg: SpellingSettings) -> LabelSpelling:
        """The spellings set in ``points`` (the config validated the mapping's targets)."""
        def texts(values: Sequence[str]) -> frozenset[str]:
            return frozenset(t for v in values if (t := as_text(v)) is not None)

        names = {as_text(k) or "": -1 if v is None else SOIL_ORDERS.index(v) for k, v in cfg.soil_order_names.items()}
        return cls(texts(cfg.permafrost_true), texts(cfg.permafrost_false), texts(cfg.no_label_values), names)

    def permafrost(self, value: Any) -> float | object:
        """1.0 (present), 0.0 (absent), NaN (no label) or :data:`UNKNOWN`."""
        text = as_text(value)
        if text is None or text in self.no_label:
            return math.nan
        if text in self.permafrost_true:
            return 1.0
        if text in self.permafrost_false:
            return 0.0
        return UNKNOWN

    def soil_order(self, value: Any) -> int | object:
        """Index into SOIL_ORDERS, -1 (no label) or :data:`UNKNOWN`."""
        text = as_text(value)
        if text is None or text in self.no_label:
            return -1
        if text in self.soil_order_names:
            return self.soil_order_names[text]
        index = soil_order_index(text)
        return UNKNOWN if index is None else index

    def accepted(self, task: str) -> str:
        """The accepted spellings of ``task`` in words, for an error message."""
        none = "/".join(repr(t) for t in sorted(self.no_label))
        if task == "permafrost":
            return (f"accepted: present {'/'.join(sorted(self.permafrost_true))} (points.permafrost_true), absent "
                    f"{'/'.join(sorted(self.permafrost_false))} (points.permafrost_false), no label null/{none} "
                    "(points.no_label_values), any case")
        mapped = f", {len(self.soil_order_names)} names in points.soil_order_names" if self.soil_order_names else ""
        return (f"accepted: {', '.join(SOIL_ORDERS)} (any case, singular too){mapped}, no label null/{none} "
                "(points.no_label_values); map other names with points.soil_order_names")
