"""Cross-validation splits: the spatial distance guarantee, coverage, determinism, JSON round trip."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from miso_mapper.errors import MisoError
from miso_mapper.train.splits import load_split, make_folds, save_split, scheme_distance, validation_split


def clustered_points(n=900, span=120_000.0, clusters=25, seed=1):
    """Field-like points: clusters of a few km scattered over ``span`` metres, plus a uniform share."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, span, size=(clusters, 2))
    which = rng.integers(0, clusters, n)
    xy = centres[which] + rng.normal(0, 1500, size=(n, 2))
    uniform = rng.uniform(size=n) < 0.15
    xy[uniform] = rng.uniform(0, span, size=(int(uniform.sum()), 2))
    ids = np.array([f"P{i:05d}" for i in range(n)])
    return ids, xy[:, 0] + 100_000, xy[:, 1] + 1_500_000


@pytest.mark.parametrize("scheme", ["random", "spatial-1km", "spatial-10km"])
def test_every_point_tested_exactly_once(scheme):
    ids, x, y = clustered_points()
    split = make_folds(ids, x, y, scheme, k=5, seed=3)
    tested = [p for f in split.folds for p in f.test]
    assert sorted(tested) == sorted(ids.tolist())
    for f in split.folds:
        assert not set(f.train) & set(f.test)
        assert not set(f.buffer) & (set(f.train) | set(f.test))
        assert len(f.train) + len(f.test) + len(f.buffer) == ids.size
        assert len(f.train) > 0.2 * ids.size


@pytest.mark.parametrize("scheme,distance", [("spatial-1km", 1000.0), ("spatial-10km", 10_000.0)])
def test_no_test_point_within_distance_of_training(scheme, distance):
    ids, x, y = clustered_points()
    pos = {p: i for i, p in enumerate(ids)}
    xy = np.column_stack([x, y])
    split = make_folds(ids, x, y, scheme, k=5, seed=0)
    assert split.distance_m == distance
    for f in split.folds:
        train = xy[[pos[p] for p in f.train]]
        test = xy[[pos[p] for p in f.test]]
        nearest = cKDTree(train).query(test)[0]
        assert nearest.min() >= distance


def test_deterministic_per_seed_and_different_across_seeds():
    ids, x, y = clustered_points()
    a = make_folds(ids, x, y, "spatial-1km", 5, seed=7).to_json()
    b = make_folds(ids, x, y, "spatial-1km", 5, seed=7).to_json()
    c = make_folds(ids, x, y, "spatial-1km", 5, seed=8).to_json()
    assert a == b
    assert a != c
    r1 = make_folds(ids, x, y, "random", 5, seed=7).to_json()
    assert r1 == make_folds(ids, x, y, "random", 5, seed=7).to_json()
    sizes = [len(f["test"]) for f in r1["folds"]]
    assert max(sizes) - min(sizes) <= 1


def test_json_round_trip(tmp_path):
    ids, x, y = clustered_points(200)
    split = make_folds(ids, x, y, "spatial-1km", 5, 0)
    path = save_split(split, tmp_path / "s.json")
    assert load_split(path).to_json() == split.to_json()


def test_region_too_small_for_distance_is_refused():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10_000, 300), rng.uniform(0, 10_000, 300)
    ids = np.array([f"p{i}" for i in range(300)])
    with pytest.raises(MisoError, match="span only"):
        make_folds(ids, x, y, "spatial-10km", 5, 0)
    make_folds(ids, x, y, "spatial-1km", 5, 0)  # feasible


def test_scheme_names():
    assert scheme_distance("random") is None
    assert scheme_distance("spatial-2km") == 2000.0
    assert scheme_distance("spatial-500m") == 500.0
    with pytest.raises(MisoError):
        scheme_distance("blocks")


def test_validation_split_is_a_partition():
    ids, x, y = clustered_points(300)
    keep, val = validation_split(ids, x, y, 0.1, 1000.0, 0)
    assert (keep ^ val).all() and 0 < val.sum() < 0.4 * ids.size
