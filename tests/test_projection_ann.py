"""Approximate neighbours for placing many points (cv_core.projection.ann, faiss IVF)."""
import numpy as np
import pytest

from cv_core.errors import InvalidInputError
from cv_core.projection import LatentMap, fit_sampled
from cv_core.projection.ann import APPROX_MIN_ROWS, IVFIndex
from cv_core.projection.geometry import knn

C, D = 6, 24


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.normal(size=(C, D))
    labels = rng.integers(0, C, n)
    return (means[labels] + rng.normal(size=(n, D))).astype(np.float32), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ivf_search_finds_the_exact_neighbours_and_measures_its_recall(metric):
    points, _ = _data(5000)
    queries, _ = _data(3000, seed=1)
    idx, dist, info = IVFIndex(points, seed=0).search(queries, 10, metric)
    e_idx, e_dist = knn(queries, points, 10, metric)
    recall = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(idx, e_idx)])
    assert recall > 0.8  # isotropic noise in 24-D: a hard case for cells (0.86 measured); named, not hidden
    assert info.rows == 3000 and info.checked == 256 and abs(info.recall - recall) < 0.05
    assert info.lists == round(np.sqrt(5000)) and info.probes == 8 and "recall" in info.describe()
    # distances in geometry.knn's scale, ascending; where the same neighbour is found, the same distance
    assert np.all(np.diff(dist, axis=1) >= -1e-6)
    same = idx[:, 0] == e_idx[:, 0]
    assert same.mean() > 0.85 and np.allclose(dist[same, 0], e_dist[same, 0], rtol=1e-3, atol=1e-4)


def test_queries_whose_probed_cells_hold_too_few_points_are_searched_exactly():
    points, _ = _data(200)
    index = IVFIndex(points, seed=0)             # 14 cells of ~14 points: one probed cell cannot hold 30
    idx, dist, _ = index.search(points[:50], 30, "euclidean", probes=1)
    assert (idx >= 0).all() and np.isfinite(dist).all()
    e_idx, _ = knn(points[:50], points, 30, "euclidean")
    assert np.mean([np.intersect1d(a, b).size / 30 for a, b in zip(idx, e_idx)]) > 0.8


@pytest.fixture(scope="module")
def fitted():
    x, y = _data(4500)
    return LatentMap(n_neighbors=10, n_epochs=60, reduce_dim=16).fit(x[:4000]), x, y


def test_reproject_searches_approximately_on_request_and_says_so(fitted):
    lm, x, _ = fitted
    exact_info, approx_info = {}, {}
    exact = lm.reproject(x[4000:], search="exact", info=exact_info)
    approx = lm.reproject(x[4000:], search="approximate", info=approx_info)
    assert exact_info == {"search": "exact", "rows": 500, "epochs": 20}
    assert approx_info["search"] == "approximate" and approx_info["approx"].recall > 0.9
    span = np.ptp(lm.embedding_, axis=0).max()
    assert np.median(np.linalg.norm(exact - approx, axis=1)) < 0.02 * span  # the same places, nearly
    auto = {}
    lm.reproject(x[4000:], info=auto)                                          # 500 < APPROX_MIN_ROWS: exact
    assert auto["search"] == "exact" and 500 < APPROX_MIN_ROWS
    with pytest.raises(InvalidInputError, match="search"):
        lm.reproject(x[4000:], search="fast")


def test_a_large_placement_names_its_approximate_search():
    x, y = _data(APPROX_MIN_ROWS + 3000, seed=2)
    m = fit_sampled(x, y, sample_size=3000, latent_map=LatentMap(n_neighbors=10, n_epochs=40, reduce_dim=16),
                    fidelity_points=300, fidelity_k=10)
    assert m.search is not None and m.search.rows == APPROX_MIN_ROWS and m.search.recall > 0.9
    text = m.describe()
    assert "approximate neighbours (faiss IVF" in text and f"recall {m.search.recall:.3f}" in text
    exact = fit_sampled(x, y, sample_size=3000, latent_map=LatentMap(n_neighbors=10, n_epochs=40, reduce_dim=16),
                        fidelity_points=300, fidelity_k=10, search="exact")
    assert exact.search is None and "exact-neighbour re-projection" in exact.describe()
    # approximate placement keeps the neighbourhoods about as well as the exact one
    assert m.fidelity.placed > exact.fidelity.placed - 0.05
