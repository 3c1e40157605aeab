"""The GPU check's modules import with what the lent H200 has plus the wheels ``benchmarks/gpu_wheels.sh`` carries
(``benchmarks/h200_imports.py`` refuses the rest by name): a module on those paths that starts importing a
package the image lacks, and that no wheel set carries, fails here instead of on the GPU."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from benchmarks.h200_imports import CORE_MODULES, RUN_MODULES, check_imports, environment, wheel_sets

from .helpers import REPO


def gpu_check_run_packages() -> tuple[str, ...]:
    """``RUN_PACKAGES`` of gpu_check.py (what section 5 looks for before it runs), read without importing it."""
    tree = ast.parse((REPO / "benchmarks/gpu_check.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "RUN_PACKAGES":
            return ast.literal_eval(node.value)
    raise AssertionError("gpu_check.py has no RUN_PACKAGES")


def test_wheel_sets_carry_the_run_path_and_not_the_servers():
    sets = wheel_sets()
    assert {"pydantic", "pydantic-core", "odc-geo", "pyproj", "shapely"} <= set(sets["core"])
    assert {"dask", "distributed", "dask-cuda", "zarr", "numcodecs", "google-crc32c", "rasterio", "pystac-core",
            "stackstac"} <= set(sets["run"])
    # the static catalog on disk replaces the STAC API server; vector regions and COG export are not on the path
    assert not {"rustac", "pyogrio", "pystac-client", "odc-stac", "rio-cogeo"} & set(sets["run"])


def test_the_harness_refuses_what_the_image_lacks():
    failed = check_imports(["torch", "yaml", "xarray", "pydantic", "dask", "pyogrio", "rustac", "odc.geo",
                            "odc.stac"], ["core"])
    assert set(failed) == {"dask", "pyogrio", "rustac", "odc.stac"}  # odc.geo shares the odc namespace: carried
    assert all(err.startswith("ModuleNotFoundError") for err in failed.values()), failed


def test_gpu_check_sections_import_with_the_carried_wheels():
    # sections 1-4 and 6 with CORE alone (the first device call when RUN travels separately)
    assert check_imports(list(CORE_MODULES), ["core"]) == {}
    # section 5: what `miso-mapper run` loads in the CLI and its workers, and what the check looks for
    assert check_imports([*RUN_MODULES, *gpu_check_run_packages()], ["core", "run"]) == {}


def test_without_pyogrio_or_rustac_vector_regions_and_geoparquet_catalogs_say_what_is_missing(tmp_path):
    """The packages left out of the RUN set are imported where they are used, with a one-line MisoError."""
    (tmp_path / "region.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "items.parquet").write_bytes(b"PAR1")
    code = f"""
from pathlib import Path
from miso_mapper.errors import MisoError
from miso_mapper.imagery.catalog import open_catalog
from miso_mapper.region import vector_geometry
for call in (lambda: vector_geometry(Path({str(tmp_path / "region.geojson")!r}), None, "EPSG:3338"),
             lambda: open_catalog(Path({str(tmp_path / "items.parquet")!r}))):
    try:
        call()
    except MisoError as e:
        print(e)
"""
    site = tmp_path / "site"
    site.mkdir()
    env = environment(["core", "run"], site)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "pyogrio is not installed (pip install pyogrio); it reads region vector files",
        f"rustac is not installed (pip install rustac); it reads the catalog {tmp_path.resolve() / 'items.parquet'}"]
