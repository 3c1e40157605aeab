#!/usr/bin/env bash
# Download into .whl/ the wheels benchmarks/gpu_check.py needs on the lent H200 image (Python 3.12, manylinux
# x86_64, torch/numpy/scipy/xarray/pandas/safetensors/typer/rich/pyyaml/psutil/filelock already there), run here
# where pip reaches the registry. Versions are the ones this project's venv runs (tested together).
#
#   CORE: what `import miso_mapper.inference.miso` and the synthetic inputs need (sections 1-4 and 6):
#         pydantic (+ pydantic-core, annotated-types, typing-inspection) and odc-geo (+ pyproj, shapely,
#         affine, cachetools; miso_mapper.inference.predictor and .synthetic import it).
#   RUN:  section 5 (`miso-mapper run` on a local-cuda cluster over the demo world read from a static catalog on
#         disk): dask, distributed (+ tornado, tblib, zict, partd, locket), dask-cuda (+ rapids-dask-dependency),
#         zarr (+ numcodecs, donfig, google-crc32c), rasterio (+ cligj, click-plugins; affine is in CORE),
#         pystac-core (pystac's code; the pystac meta-package would add 23 extension packages the path never
#         imports) and stackstac. No rustac, pyogrio, pystac-client, odc-stac or rio-cogeo: the path does not
#         import them, as `python benchmarks/h200_imports.py -- python benchmarks/gpu_check.py --device cpu
#         --quick --sections run` proves here (imports of anything the image lacks and no set carries refused).
#
# When the working tree + CORE + RUN fit the device tool's 64 MiB, everything goes to .whl/ and ONE device call
# runs every section. Otherwise RUN goes to .whl-run/ for a SECOND call made at once after the first (while the
# machine is still warm, so the CORE installed by the first call into .site/ is still there) that runs
# `--sections run`; benchmarks/README.md ("Running it on a lent H200") has both commands.
#
# Usage: bash benchmarks/gpu_wheels.sh [--no-run]   (then carry ".whl" with the device call; see benchmarks/README.md)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
LIMIT=$((${GPU_WHEELS_LIMIT_MIB:-64} * 1024 * 1024))  # the device call carries 64 MiB (lower: to try the split)
PY=${PYTHON:-python3}
CORE=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
      odc-geo==0.5.3 pyproj==3.7.2 shapely==2.2.0 affine==3.0.1 cachetools==8.0.2)
# dask/distributed 2026.7.1: what `pip install 'miso-mapper[gpu]'` resolves (rapids-dask-dependency 26.10 pins
# them; its .pth hook, skipped by --target, only installs no-op patches). tests/test_gpu_dask.py, test_pipeline.py
# and the gpu_check dry run pass on it (2026-11-30).
RUN=(dask==2026.7.1 distributed==2026.7.1 tornado==6.6.1 tblib==3.2.2 zict==3.0.0 partd==1.4.2 locket==1.0.0
     "dask-cuda==26.10.*" "rapids-dask-dependency==26.10.*" zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1
     google-crc32c==1.9.0 rasterio==1.4.4 cligj==0.7.2 click-plugins==1.1.1.2 pystac-core==1.15.2 stackstac==0.5.1)

download() {  # download DEST SPEC...: binary wheels for CPython 3.12 on manylinux x86_64, no dependencies
  local dest=$1; shift
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$dest" "$@"
}
size_of() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

exclude=$(git rev-parse --git-path info/exclude)
for ignored in /.whl/ /.whl-run/ /.site/; do
  grep -qx "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
done
rm -rf .whl .whl-run && mkdir -p .whl
download .whl "${CORE[@]}"
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
core=$(size_of .whl/*.whl)
echo "working tree (tracked files): $(mib "$tree"); CORE wheels ($(ls .whl | wc -l)): $(mib "$core")"
if [[ "${1:-}" != "--no-run" ]]; then
  staging=$(mktemp -d)
  download "$staging" "${RUN[@]}"
  run=$(size_of "$staging"/*.whl)
  echo "RUN wheels (section 5, $(ls "$staging" | wc -l)): $(mib "$run"); the largest:"
  ls -S "$staging" | head -4 | while read -r f; do echo "  $(mib "$(size_of "$staging/$f")")  $f"; done
  if (( tree + core + run <= LIMIT )); then
    mv "$staging"/*.whl .whl/
    echo "tree + CORE + RUN = $(mib $((tree + core + run))) <= $((LIMIT / 1048576)) MiB: one device call runs every section"
  else
    mkdir -p .whl-run && mv "$staging"/*.whl .whl-run/
    echo "tree + CORE + RUN = $(mib $((tree + core + run))) > $((LIMIT / 1048576)) MiB: RUN wheels in .whl-run/ for a second" \
         "call (--sections run) right after the first (benchmarks/README.md)"
    (( tree + run <= LIMIT )) || { echo "tree + RUN alone exceed $((LIMIT / 1048576)) MiB: section 5 cannot travel" >&2; exit 1; }
  fi
  rm -rf "$staging"
fi
total=$(size_of .whl/*.whl)
echo ".whl/: $(ls .whl | wc -l) wheels, $(mib "$total"); with the working tree $(mib $((tree + total))) of $((LIMIT / 1048576)) MiB"
(( tree + total <= LIMIT )) || { echo "too large for one device call" >&2; exit 1; }
