"""Tests of the 2-D map: estimator protocol, fast re-projection, cache, warm-up."""
import warnings

import numpy as np
import pytest

from cv_core.errors import InvalidInputError, NumericalError
from cv_core.features.cache import ArtifactCache
from cv_core.projection import LatentMap, fit_cached, neighbour_agreement, warm_up
from cv_core.projection.geometry import knn, membership_weights

C, PER, D = 4, 60, 32


def _clusters(seed=0):
    """(C*PER, D) latents: well-separated Gaussian classes around a shared offset, and labels."""
    rng = np.random.default_rng(seed)
    means = 4.0 * rng.normal(size=(C, D))
    labels = np.repeat(np.arange(C), PER)
    x = 10.0 + means[labels] + 0.3 * rng.normal(size=(C * PER, D))
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def fitted():
    x, y = _clusters()
    events = []
    m = LatentMap(n_neighbors=10, n_epochs=50, reduce_dim=16).fit(x, progress=events.append)
    return m, x, y, events


def test_fit_shapes_and_progress(fitted):
    m, x, _, events = fitted
    assert m.embedding_.shape == (len(x), 2) and m.embedding_.dtype == np.float32
    assert np.isfinite(m.embedding_).all()
    assert m.reduced_.shape == (len(x), 16)
    assert [e.step for e in events] == [0, 1, 2, 3] and all(e.total == 3 for e in events)
    assert m.transform(x[:7]).shape == (7, 2)


def test_map_separates_classes(fitted):
    m, _, y, _ = fitted
    centres = np.stack([m.embedding_[y == c].mean(0) for c in range(C)])
    spread = max(np.linalg.norm(m.embedding_[y == c] - centres[c], axis=1).mean() for c in range(C))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[~np.eye(C, dtype=bool)]
    assert gaps.min() > 2 * spread


def test_error_before_fit_and_bad_settings():
    with pytest.raises(InvalidInputError, match="not fitted"):
        LatentMap().reproject(np.zeros((2, 4), np.float32))
    for bad in ({"n_neighbors": 1}, {"metric": "hamming"}, {"min_dist": -1}, {"reduce_dim": 1}, {"n_epochs": 0}):
        with pytest.raises(InvalidInputError):
            LatentMap(**bad)
    with pytest.raises(InvalidInputError, match="more than n_neighbors"):
        LatentMap(n_neighbors=15).fit(np.zeros((10, 4), np.float32))


def test_input_validation(fitted):
    m, x, _, _ = fitted
    with pytest.raises(InvalidInputError, match="dimension"):
        m.reproject(x[:3, :5])
    with pytest.raises(NumericalError):
        m.reproject(np.full((2, D), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="index"):
        m.reproject(x[:3], index=np.array([0, 1, 10_000]))


def test_unchanged_points_keep_their_positions(fitted):
    m, x, _, _ = fitted
    sel = np.array([0, 5, 77, 200])
    np.testing.assert_array_equal(m.reproject(x[sel], index=sel), m.embedding_[sel])
    np.testing.assert_allclose(m.reproject(x[sel]), m.embedding_[sel], atol=1e-6)  # found by search too


def test_edited_point_moves_to_its_new_neighbours(fitted):
    m, x, y, _ = fitted
    src = np.flatnonzero(y == 0)[:10]
    edited = x[src] + (x[y == 2].mean(0) - x[y == 0].mean(0))  # class 0 steered onto class 2
    pos = m.reproject(edited, index=src)
    centres = np.stack([m.embedding_[y == c].mean(0) for c in range(C)])
    nearest = np.linalg.norm(pos[:, None] - centres[None], axis=2).argmin(1)
    assert (nearest == 2).all()
    assert np.linalg.norm(pos - m.embedding_[src], axis=1).min() > 0


def test_membership_weights_follow_umap_rule():
    d = np.array([[0.1, 0.2, 0.4, 0.8], [0.3, 0.3, 0.3, 0.3]], np.float32)
    w = membership_weights(d)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert (np.diff(w[0]) < 0).all()            # closer neighbours weigh more
    np.testing.assert_allclose(w[1], 0.25, rtol=1e-5)


def test_neighbour_agreement_bounds(fitted):
    m, _, _, _ = fitted
    p = m.embedding_[:20]
    assert neighbour_agreement(p, p, m.embedding_).min() == 1.0
    far = p + 1000.0 * np.array([1.0, 0.0], np.float32)
    assert neighbour_agreement(p[:1], far[:1], m.embedding_, k=5)[0] < 1.0


def test_cache_round_trip_and_corrupt_entry(tmp_path):
    x, _ = _clusters(seed=1)
    settings = dict(n_neighbors=8, n_epochs=20, reduce_dim=8)
    first, hit = fit_cached(LatentMap(**settings), x, tmp_path)
    assert not hit
    second, hit = fit_cached(LatentMap(**settings), x, ArtifactCache(tmp_path))
    assert hit
    np.testing.assert_array_equal(first.embedding_, second.embedding_)
    np.testing.assert_array_equal(second.reproject(x[:3], index=np.arange(3)), first.embedding_[:3])
    _, hit = fit_cached(LatentMap(**{**settings, "min_dist": 0.5}), x, tmp_path)  # other settings: own entry
    assert not hit
    for f in (tmp_path / "projection").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:40])  # truncate every entry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third, hit = fit_cached(LatentMap(**settings), x, tmp_path)
    assert not hit and any("broken cache entry" in str(w.message) for w in caught)
    assert third.embedding_.shape == (len(x), 2)
    assert fit_cached(LatentMap(**settings), x, tmp_path)[1]  # rewritten entry is served again


def test_warm_up_reports_and_returns_time():
    events = []
    assert warm_up(events.append) > 0
    assert [e.step for e in events] == [0, 1]


def _umap_specialisations() -> set:
    """(function, argument types) of every compiled or cache-loaded umap / pynndescent numba function."""
    import sys

    from numba.core.dispatcher import Dispatcher

    out = set()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("umap", "pynndescent"):
            for attr, value in vars(module).items():
                if isinstance(value, Dispatcher):
                    out.update((f"{name}.{attr}", sig) for sig in value.overloads)
    return out


def test_after_the_warm_up_a_map_of_many_separated_classes_needs_no_new_compiled_code():
    """The warm-up compiles (or loads from the disk cache) what a real map needs, including the spectral
    initialisation's component metric that umap only calls for more than four connected components."""
    warm_up()
    before = _umap_specialisations()
    rng = np.random.default_rng(2)
    means = 8.0 * rng.normal(size=(7, D))
    x = (means[np.arange(7 * 30) % 7] + 0.2 * rng.normal(size=(7 * 30, D))).astype(np.float32)
    LatentMap(n_neighbors=8, n_epochs=20).fit(x)
    assert _umap_specialisations() - before == set()


@pytest.mark.parametrize("clustered", [True, False])
def test_the_cluster_index_finds_the_same_neighbours_as_the_brute_force(clustered, monkeypatch):
    from cv_core.projection import index as index_mod
    from cv_core.projection.index import ClusterIndex, indexed_knn

    rng = np.random.default_rng(5)
    if clustered:  # like the latents of a fine-tuned encoder: tight classes
        centres = rng.normal(size=(20, 16)) * 3
        points = (centres[rng.integers(0, 20, 6000)] + rng.normal(size=(6000, 16)) * 0.3).astype(np.float32)
    else:  # no structure: nothing can be skipped, the answer must still be exact
        points = rng.normal(size=(6000, 16)).astype(np.float32)
    queries = (points[rng.integers(0, 6000, 300)] + rng.normal(size=(300, 16)) * 0.5).astype(np.float32)
    index = ClusterIndex.build(points, clusters=64)
    assert index.offsets[-1] == 6000 and sorted(index.order.tolist()) == list(range(6000))
    brute = {metric: knn(queries, points, 15, metric) for metric in ("euclidean", "cosine")}
    if clustered:  # the pruned search itself must run, not its brute-force fallback
        def no_fallback(*args, **kwargs):
            raise AssertionError("fell back to the brute force on clustered points")
        monkeypatch.setattr(index_mod, "knn", no_fallback)
    for metric, (brute_i, brute_d) in brute.items():
        fast_i, fast_d = indexed_knn(queries, points, 15, metric, index)
        np.testing.assert_allclose(fast_d, brute_d, rtol=1e-4, atol=1e-5)
        same = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(fast_i, brute_i)])
        assert same > 0.999  # only exact ties may be ordered differently
