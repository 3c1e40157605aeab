"""The per-process predictor cache: each worker process builds the predictor of a spec once and keeps it."""

from __future__ import annotations

import threading

from miso_mapper.inference.predictor import Predictor
from miso_mapper.pipeline.malloc import relax_malloc_trim
from miso_mapper.pipeline.predictors import PredictorSpec, build_predictor

_CACHE: dict[str, Predictor] = {}
_LOADS: dict[str, int] = {}
_LOCK = threading.Lock()


def get_predictor(spec: PredictorSpec) -> tuple[Predictor, int]:
    """The process's predictor for ``spec``, built on first use; also how many times this process built it.

    The first build in a process also relaxes glibc's malloc trimming (:func:`relax_malloc_trim`): it is the
    first thing a worker does before mapping.
    """
    with _LOCK:
        predictor = _CACHE.get(spec.key)
        if predictor is None:
            relax_malloc_trim()
            predictor = build_predictor(spec)
            _CACHE[spec.key] = predictor
            _LOADS[spec.key] = _LOADS.get(spec.key, 0) + 1
        return predictor, _LOADS[spec.key]
