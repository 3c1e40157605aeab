"""The exported STAC validates offline against the core STAC 1.1.0 schemas (pystac's bundled copies) and the
vendored extension schemas (tests/data/stac-schemas); it has a license link, summaries and item_assets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.export import export_workflow
from miso_mapper.export.layers import LAYER_SPECS, LAYERS
from miso_mapper.export.stac import TERMS_FILE

from .test_export import make_store

SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"
CORE = "https://schemas.stacspec.org/v1.1.0/{0}-spec/json-schema/{0}.json"


def _vendored() -> dict[str, dict]:
    """Extension schema URI -> schema, for every vendored file (``<name>-v<version>.json``)."""
    out = {}
    for path in SCHEMAS.glob("*-v*.json"):
        name, version = path.stem.rsplit("-v", 1)
        out[f"https://stac-extensions.github.io/{name}/v{version}/schema.json"] = json.loads(path.read_text())
    return out


def _registry() -> Registry:
    schemas = get_local_schema_cache() | _vendored()
    return Registry().with_resources((uri, Resource.from_contents(s)) for uri, s in schemas.items())


def validate(doc: dict) -> list[str]:
    """Every schema violation of a STAC item or collection (core + vendored extensions it declares); the
    extensions it declares that have no vendored schema are returned as 'unchecked: URI'."""
    registry, vendored = _registry(), _vendored()
    kind = "item" if doc["type"] == "Feature" else "collection"
    errors = [e.message for e in Draft7Validator({"$ref": CORE.format(kind)}, registry=registry).iter_errors(doc)]
    for uri in doc.get("stac_extensions", []):
        if uri not in vendored:
            errors.append(f"unchecked: {uri}")
            continue
        errors += [f"{uri}: {e.message}" for e in Draft7Validator(vendored[uri], registry=registry).iter_errors(doc)]
    return errors


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_workflow(make_store(tmp_path_factory.mktemp("stac")))


def _docs(exported) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(exported.stac.parent.rglob("*.json"))]


def test_every_document_validates_offline(exported):
    docs = _docs(exported)
    assert {d["type"] for d in docs} == {"Collection", "Feature"} and len(docs) == 3
    for doc in docs:
        assert doc["stac_version"] == "1.1.0"
        errors = [e for e in validate(doc) if not e.startswith("unchecked:")]
        assert errors == [], (doc["id"], errors)
        # no offline copy of these yet (tests/data/stac-schemas/README.md): listed so the gap stays visible
        assert {e.removeprefix("unchecked: ") for e in validate(doc) if e.startswith("unchecked:")} == {
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/classification/v2.0.0/schema.json"}
        assert "https://stac-extensions.github.io/file/v2.1.0/schema.json" in doc["stac_extensions"]


def test_the_validator_catches_broken_documents(exported):
    collection, item = _docs(exported)[0], _docs(exported)[1]
    assert validate(collection | {"license": 7})
    assert validate({k: v for k, v in item.items() if k != "geometry"})
    broken = json.loads(json.dumps(item))
    broken["assets"]["taxonomy_class"]["file:size"] = -1
    assert any("file/v2.1.0" in e for e in validate(broken))


def test_license_link_points_to_the_terms_written_with_the_products(exported):
    doc = json.loads(exported.stac.read_text())
    assert doc["license"] == "other"
    links = [link for link in doc["links"] if link["rel"] == "license"]
    assert len(links) == 1 and links[0]["type"] == "text/plain"
    terms = (exported.stac.parent / links[0]["href"]).resolve()
    assert terms == (exported.stac.parent / TERMS_FILE).resolve()
    assert "No licence has been set" in terms.read_text() and terms in exported.files


def test_summaries_and_item_assets(exported):
    doc = json.loads(exported.stac.read_text())
    s = doc["summaries"]
    assert s["miso:layers"] == [spec.name for spec in LAYER_SPECS]
    assert s["gsd"] == [10.0] and s["proj:code"] == ["EPSG:3338"]
    assert s["constellation"] == ["sentinel-2"] and s["instruments"] == ["msi"]
    assert [c["name"] for c in s["classification:classes"]] == list(SOIL_ORDERS)
    assert s["miso:permafrost_probability"] == {"minimum": 0.0, "maximum": 1.0}
    assert s["miso:permafrost_spread"] == {"minimum": 0.0, "maximum": 0.508}  # 254 x 0.002
    assert s["miso:valid_observations"] == {"minimum": 0.0, "maximum": 254.0}
    assert "miso:taxonomy_class" not in s  # classes, no range
    item = _docs(exported)[1]
    assert set(doc["item_assets"]) == set(item["assets"]) == set(LAYERS)
    for key, definition in doc["item_assets"].items():
        asset = item["assets"][key]
        assert "href" not in definition and "proj:transform" not in definition and "file:size" not in definition
        assert definition["raster:bands"] == asset["raster:bands"] and definition["type"] == asset["type"]
        assert definition.get("classification:classes") == asset.get("classification:classes")
        cog = exported.products / "cogs" / key / f"{item['id']}.tif"
        assert asset["file:size"] == cog.stat().st_size > 0
