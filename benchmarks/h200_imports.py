"""The lent H200's Python packages, simulated here: run a command whose Python processes (subprocesses and Dask
workers too) can import only what that image has plus the wheels ``benchmarks/gpu_wheels.sh`` carries.

``python benchmarks/h200_imports.py [--sets core,run] [--log FILE] -- CMD ARGS...`` runs ``CMD`` with a
``sitecustomize`` on ``PYTHONPATH`` that puts a wrapper in place of :class:`importlib.machinery.PathFinder`: a
module of a distribution installed here that is neither on the image (:data:`IMAGE_PACKAGES`, the
"Python packages already there" of the device tool's KINDS.md, read 2026-11-17) nor among the carried wheels
(the ``CORE`` / ``RUN`` arrays of ``gpu_wheels.sh``) is not found, exactly as if it were not installed
(``import`` raises ``ModuleNotFoundError``, ``importlib.util.find_spec`` returns None, ``importlib.metadata``
does not list it). Each refused import is appended to ``--log`` as ``pid module``.

``python benchmarks/h200_imports.py --sets core,run --check MODULE...`` imports the modules under the same
rule and names the ones that fail (exit 1): the fast test ``tests/test_h200_imports.py`` runs it.

The carried packages are taken from this environment (Python 3.11 here, 3.12 there: the wheels themselves
cannot be installed here), so versions may differ from the wheels'; what it proves is the set of names.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WHEELS_SCRIPT = HERE / "gpu_wheels.sh"

#: Distributions installed on the H200 image ('cuda'), as the device tool's KINDS.md listed them (2026-11-17).
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
#: Not on the image's list, but needed here by this environment's versions on Python 3.11: pandas 2 needs pytz
#: and tzdata (the image's pandas, whose list has neither, does not); dask needs importlib-metadata (with
#: lazy-importer) on Python < 3.12 only. The project itself travels as the working tree.
HERE_ONLY = ("pytz", "tzdata", "importlib-metadata", "lazy-importer", "miso-mapper")
#: Modules the check's sections import, as ``--trace`` recorded them (2026-11-30) in every process of
#: ``gpu_check.py --device cpu --quick``: sections 1-4 and 6 need only the CORE wheels, section 5 CORE + RUN.
#: ``tests/test_h200_imports.py`` imports them under that rule. To refresh: ``python benchmarks/h200_imports.py
#: --sets core,run --trace T -- python benchmarks/gpu_check.py --device cpu --quick --sections run`` and keep
#: the ``miso_mapper`` names of ``T``.
CORE_MODULES = ("gpu_check", "predictor", *(f"miso_mapper.{m}" for m in """
bands errors inference inference.chunk_cost inference.fixed_batch inference.flops inference.miso
inference.predictor inference.settings inference.synthetic inference.windows model model.config model.conformal
model.implicit_query model.location model.network model.sat_encoder model.swin_cov model.swin_sdpa""".split()))
RUN_MODULES = (*CORE_MODULES, *(f"miso_mapper.{m}" for m in """
checks cli config console filekind grid imagery imagery.catalog imagery.chunk imagery.composite
imagery.covariates imagery.load imagery.normalize imagery.profiles imagery.quality imagery.search labels layout
logs model.aoa model.card model.checkpoint pipeline pipeline.audit pipeline.clusters pipeline.commands
pipeline.extra_layers pipeline.geozarr pipeline.malloc pipeline.manifest pipeline.predictor_cache
pipeline.predictors pipeline.progress pipeline.run pipeline.store pipeline.tasks plan progressbar region runlock
signals trained workload world world.catalog world.cog world.fields world.generate world.geometry world.serve
world.spec world.spectra world.stac world.vectors writer""".split()))
ENV_MODULES, ENV_DISTS = "MISO_H200_BLOCKED", "MISO_H200_BLOCKED_DISTS"
ENV_LOG, ENV_TRACE = "MISO_H200_LOG", "MISO_H200_TRACE"

SITECUSTOMIZE = '''"""Written by benchmarks/h200_imports.py: modules of what the H200 image lacks are not found."""
import os as _os
import re as _re
import sys as _sys
from importlib.machinery import PathFinder as _PathFinder

_BLOCKED = frozenset(filter(None, _os.environ.get("{mods}", "").split(",")))
_DISTS = frozenset(filter(None, _os.environ.get("{dists}", "").split(",")))
_LOG = _os.environ.get("{log}")
_TRACE = _os.environ.get("{trace}")


def _append(path, name):
    with open(path, "a") as f:
        f.write(f"{{_os.getpid()}} {{name}}\\n")


def _norm(name):
    return _re.sub(r"[-_.]+", "-", name).lower()


def _visible(dists):
    return (d for d in dists if _norm(d.metadata["Name"] or "") not in _DISTS)


class _HidingBackport:
    """Loads the importlib_metadata backport (Python < 3.12 only), then hides the refused distributions from
    the finder it adds to sys.meta_path too."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        found = module.MetadataPathFinder.find_distributions
        module.MetadataPathFinder.find_distributions = classmethod(lambda cls, *a, **k: _visible(found(*a, **k)))


class H200PathFinder(_PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        parts = fullname.split(".")
        if any(".".join(parts[:i]) in _BLOCKED for i in range(1, len(parts) + 1)):
            if _LOG:
                _append(_LOG, fullname)
            return None
        spec = _PathFinder.find_spec(fullname, path, target)
        if _TRACE and spec is not None and ("." not in fullname or fullname.startswith("miso_mapper.")):
            _append(_TRACE, fullname)
        if fullname == "importlib_metadata" and spec is not None and spec.loader is not None:
            spec.loader = _HidingBackport(spec.loader)
        return spec

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return _visible(_PathFinder.find_distributions(*args, **kwargs))


_sys.meta_path[:] = [H200PathFinder if f is _PathFinder else f for f in _sys.meta_path]
'''


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_sets(script: Path = WHEELS_SCRIPT) -> dict[str, list[str]]:
    """Distribution names (normalised, versions dropped) of each ``NAME=( ... )`` array of ``gpu_wheels.sh``,
    by lower-case array name (``core``, ``run``)."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"^([A-Z_]+)=\((.*?)\)", script.read_text(), flags=re.S | re.M):
        specs = [s.strip("\"'") for s in re.sub(r"#.*", "", body).split()]
        out[name.lower()] = [norm(re.split(r"[=<>!~\[]", s)[0]) for s in specs if s]
    return out


def allowed_distributions(sets: list[str]) -> set[str]:
    """Normalised names of what the image has plus the wheel ``sets`` carried."""
    known = wheel_sets()
    unknown = [s for s in sets if s not in known]
    if unknown:
        raise SystemExit(f"no wheel set {unknown} in {WHEELS_SCRIPT} (it has {sorted(known)})")
    return {norm(n) for n in IMAGE_PACKAGES + list(HERE_ONLY)} | {n for s in sets for n in known[s]}


def _modules(dist: importlib.metadata.Distribution) -> set[tuple[str, ...]]:
    """Dotted module paths (as tuples) of the Python files and extension modules ``dist`` installs, packages
    as their folder (``pkg/__init__.py`` -> ``("pkg",)``)."""
    out = set()
    for f in dist.files or []:
        parts = f.parts
        if (parts[0].endswith((".dist-info", ".data")) or ".." in parts or "__pycache__" in parts
                or f.suffix not in (".py", ".so", ".pyd")):
            continue
        mods = (*parts[:-1], parts[-1].split(".")[0])
        mods = mods[:-1] if mods[-1] == "__init__" else mods
        if mods and all(m.isidentifier() for m in mods):
            out.add(mods)
    return out


def blocked(allowed: set[str]) -> tuple[set[str], set[str]]:
    """(module prefixes to refuse, distribution names to hide) for the distributions installed here that are
    not ``allowed``. A prefix is refused where every distribution providing modules under it is; one shared
    with allowed ones (namespace packages: ``odc``, ``pystac.extensions``) is split a level further down."""
    dists = {norm(d.metadata["Name"] or ""): d for d in importlib.metadata.distributions()}
    refused = {n for n in dists if n not in allowed}
    owners: dict[tuple[str, ...], set[str]] = {}
    for name, dist in dists.items():
        for mod in _modules(dist):
            for i in range(1, len(mod) + 1):
                owners.setdefault(mod[:i], set()).add(name)
    modules = set()
    for prefix, who in owners.items():
        if prefix[0] in sys.stdlib_module_names or not who <= refused:
            continue
        if len(prefix) == 1 or not owners[prefix[:-1]] <= refused:  # the outermost refused prefix only
            modules.add(".".join(prefix))
    return modules, refused


def environment(sets: list[str], site_dir: Path, log: Path | None = None,
                trace: Path | None = None) -> dict[str, str]:
    """``os.environ`` plus what makes Python processes see only the H200's packages (``site_dir`` gets the
    ``sitecustomize.py``)."""
    modules, dists = blocked(allowed_distributions(sets))
    hook = SITECUSTOMIZE.format(mods=ENV_MODULES, dists=ENV_DISTS, log=ENV_LOG, trace=ENV_TRACE)
    (site_dir / "sitecustomize.py").write_text(hook)
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"PYTHONPATH": path, ENV_MODULES: ",".join(sorted(modules)), ENV_DISTS: ",".join(sorted(dists))}
    for var, file in ((ENV_LOG, log), (ENV_TRACE, trace)):
        if file is not None:
            env[var] = str(file)
    return env


def check_imports(modules: list[str], sets: list[str]) -> dict[str, str]:
    """{module: its one-line error} for each of ``modules`` that fails to import under the H200 rule, all tried
    in one fresh interpreter (the rule refuses by name, so what one module imported cannot hide what another
    needs), with the repository and ``benchmarks/`` on its path."""
    code = ("import importlib, json, sys\nfailed = {}\nfor m in sys.argv[1:]:\n    try:\n"
            "        importlib.import_module(m)\n    except Exception as e:\n"
            "        failed[m] = f'{type(e).__name__}: {e}'.splitlines()[0]\nprint(json.dumps(failed))\n")
    with tempfile.TemporaryDirectory(prefix="h200-site-") as tmp:
        env = environment(sets, Path(tmp))
        env["PYTHONPATH"] = os.pathsep.join([tmp, str(HERE.parent), str(HERE), env["PYTHONPATH"]])
        proc = subprocess.run([sys.executable, "-c", code, *modules], env=env, capture_output=True, text=True,
                              cwd=tmp, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"the import check exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="core,run", help="wheel sets of gpu_wheels.sh carried (comma-separated)")
    ap.add_argument("--log", type=Path, default=None, help="append refused imports here (pid module)")
    ap.add_argument("--trace", type=Path, default=None,
                    help="append each top-level and miso_mapper module found here (pid module)")
    ap.add_argument("--check", nargs="+", metavar="MODULE", help="import these and name the ones that fail")
    ap.add_argument("--list", action="store_true", help="print the refused module prefixes")
    ap.add_argument("command", nargs="*", help="the command to run (after --)")
    args = ap.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    if args.list:
        print("\n".join(sorted(blocked(allowed_distributions(sets))[0])))
        return 0
    if args.check:
        failed = check_imports(args.check, sets)
        for m, err in failed.items():
            print(f"{m}: {err}")
        print(f"{len(args.check) - len(failed)} of {len(args.check)} modules import with the H200's packages + "
              f"wheel sets {sets}")
        return 1 if failed else 0
    if not args.command:
        ap.error("nothing to run: give --check MODULE..., --list or -- CMD ARGS...")
    with tempfile.TemporaryDirectory(prefix="h200-site-") as tmp:
        return subprocess.run(args.command, env=environment(sets, Path(tmp), args.log, args.trace)).returncode


if __name__ == "__main__":
    sys.exit(main())
