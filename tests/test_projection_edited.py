"""Placing edited rows from the map's coordinate table (issue 14, release -> map at 1M): the same
reduced coordinates and positions as reducing the edited latents, with its bounds and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cv_core.errors import InvalidInputError
from cv_core.projection import EditCoordinates, LatentMap, placement_text, release_epochs
from cv_core.projection.geometry import fit_reduction, membership_weight_pair

C, D = 6, 48


def _data(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)).astype(np.float32) * 3
    y = rng.integers(0, C, n)
    x = (centres[y] + rng.normal(size=(n, D))).astype(np.float32)
    kappa = rng.normal(size=(C, D)).astype(np.float32)
    return x, y, kappa


def _blocks(x, size=500):
    return ((s, x[s:s + size]) for s in range(0, len(x), size))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_table_gives_the_reduced_coordinates_of_the_edited_latents(metric):
    x, _, kappa = _data()
    reduction = fit_reduction(x, metric, 8)
    coords = EditCoordinates.build(reduction, kappa, _blocks(x), len(x))
    assert coords.table.shape == (len(x), 8 + C)              # d columns + the class vectors outside them
    rng = np.random.default_rng(1)
    rows = rng.choice(len(x), 300, replace=False)
    weights = torch.from_numpy(rng.normal(size=(300, C)).astype(np.float32))
    want = reduction(np.ascontiguousarray(x[rows] + weights.numpy() @ kappa))
    got = coords.reduce(rows, weights)
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, float(np.abs(want).max())))
    # an edit that does nothing gives the row's own reduced coordinates
    np.testing.assert_allclose(coords.reduce(rows, torch.zeros(300, C)), reduction(x[rows]), atol=1e-5)


def test_edited_rows_land_where_the_edited_latents_do():
    x, y, kappa = _data()
    lm = LatentMap(n_neighbors=10, n_epochs=60, reduce_dim=12).fit(x[:1000])
    coords = EditCoordinates.build(lm.reduction_, kappa, _blocks(x), len(x))
    rows = np.flatnonzero(y[1000:] == 2) + 1000
    weights = torch.zeros(rows.size, C)
    weights[:, 2] = -1.5
    span = np.ptp(lm.embedding_)
    # without layout epochs a position is a weighted mean of the same neighbours: equal to rounding
    by_latents = lm.reproject(x[rows] - 1.5 * kappa[2], epochs=0)
    by_table = lm.place_reduced(coords.reduce(rows, weights), epochs=0)
    np.testing.assert_allclose(by_table, by_latents, atol=1e-4 * span)
    # the epochs' stochastic steps amplify float rounding a little; the places stay the same
    by_latents = lm.reproject(x[rows] - 1.5 * kappa[2])
    by_table = lm.place_reduced(coords.reduce(rows, weights))
    assert np.median(np.linalg.norm(by_table - by_latents, axis=1)) < 0.02 * span


def test_too_many_classes_build_no_table_and_bad_input_is_refused():
    x, _, kappa = _data()
    reduction = fit_reduction(x, "cosine", 8)
    wide = np.random.default_rng(2).normal(size=(129, D)).astype(np.float32)
    assert EditCoordinates.build(reduction, wide, _blocks(x), len(x)) is None  # the caller reads the latents
    with pytest.raises(InvalidInputError, match="kappa"):
        EditCoordinates.build(reduction, kappa[:, :10], _blocks(x), len(x))
    with pytest.raises(InvalidInputError, match="rows"):
        EditCoordinates.build(reduction, kappa, _blocks(x[:700]), len(x))
    coords = EditCoordinates.build(reduction, kappa, _blocks(x), len(x))
    with pytest.raises(InvalidInputError, match="weights"):
        coords.reduce(np.arange(3), torch.zeros(3, C + 1))
    with pytest.raises(InvalidInputError, match="lie in"):
        coords.reduce(np.array([0, len(x)]), torch.zeros(2, C))


def test_release_epoch_budget_and_its_sentence():
    assert release_epochs(0, 20) == 20 and release_epochs(5_000, 20) == 20 and release_epochs(10_000, 20) == 10
    assert release_epochs(50_000, 20) == 2 and release_epochs(50_001, 20) == 0 and release_epochs(100_000, 20) == 0
    assert release_epochs(50, 5) == 5 and release_epochs(50, 1) == 0  # one epoch of umap's schedule moves nothing
    with pytest.raises(InvalidInputError):
        release_epochs(-1, 20)
    x, _, _ = _data(600)
    lm = LatentMap(n_neighbors=8, n_epochs=30, reduce_dim=8).fit(x[:500])
    info: dict = {}
    lm.reproject(x[500:], info=info, epochs=3)
    assert info == {"search": "exact", "rows": 100, "epochs": 3}
    text = placement_text(info, lm.refine_epochs())
    assert "3 of 20 layout epochs" in text and "100 points" in text
    assert placement_text({"search": "exact", "rows": 100, "epochs": 20}, 20) == ""  # the ordinary placement
    for bad in (-1, 2.5, True):
        with pytest.raises(InvalidInputError, match="epochs"):
            lm.reproject(x[500:], epochs=bad)
    with pytest.raises(InvalidInputError, match="dimension"):
        lm.place_reduced(np.zeros((2, 5), np.float32))


def test_membership_sigma_meets_umaps_rule_on_awkward_rows():
    rng = np.random.default_rng(3)
    d = np.sort(rng.gamma(2.0, 0.3, size=(2000, 15)), axis=1).astype(np.float32)
    d[0] = 0.0                      # a point on top of all its neighbours
    d[1] = 0.7                      # all neighbours equally far
    d[2, 1:] = 50.0                 # one near neighbour, the rest far away
    raw, w = membership_weight_pair(d)
    sums = raw.sum(1)
    np.testing.assert_allclose(sums[1:], np.log2(15), atol=1e-4)  # sum_j exp(-d/sigma) = log2(k)
    assert sums[0] == pytest.approx(15.0)                            # no sigma can lower exp(0) = 1
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(raw).all() and (np.diff(w[3:], axis=1) <= 1e-7).all()  # farther weighs no more


def test_layout_refinement_leaves_the_callers_initial_positions_alone():
    """umap's layout moves its head array in place; refine_layout hands it a copy, so the caller's array (a
    float32, C-ordered one that ascontiguousarray would not copy) keeps the positions it passed."""
    from cv_core.projection.refine import refine_layout

    rng = np.random.default_rng(0)
    fitted = rng.normal(size=(200, 2)).astype(np.float32)
    idx = rng.integers(0, 200, size=(50, 5))
    init = np.ascontiguousarray(fitted[idx].mean(1), dtype=np.float32)
    before = init.copy()
    out = refine_layout(init, fitted, idx, np.ones((50, 5), np.float32), 0.1, 10, 0)
    assert np.array_equal(init, before) and not np.array_equal(out, before)
