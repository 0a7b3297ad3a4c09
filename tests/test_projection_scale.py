"""Maps at scale: the stratified sample, placement of the other points, the fidelity figure, and
umap's compiled code cached on disk."""
import numpy as np
import pytest

from cv_core.errors import InvalidInputError
from cv_core.projection import LatentMap, fit_sampled, stratified_sample
from cv_core.projection.numba_cache import _with_cache
from cv_core.projection.scale import placement_fidelity, sample_for_browser

C, D = 5, 32


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    means = 4.0 * rng.normal(size=(C, D))
    labels = rng.integers(0, C, n)
    x = 10.0 + means[labels] + 0.5 * rng.normal(size=(n, D))
    return x.astype(np.float32), labels


def test_stratified_sample_keeps_class_shares_and_every_class():
    y = np.array([0] * 900 + [1] * 90 + [2] * 9 + [3])
    s = stratified_sample(y, 100, seed=3)
    assert s.size == 100 and np.all(np.diff(s) > 0)                      # exact size, sorted, no repeats
    counts = np.bincount(y[s], minlength=4)
    assert counts[0] in (89, 90) and counts[1] in (8, 9) and counts[2] >= 1 and counts[3] == 1
    assert np.array_equal(stratified_sample(y, 5000), np.arange(y.size))  # larger than N: everything
    assert not np.array_equal(stratified_sample(y, 100, seed=4), s)      # the seed matters
    with pytest.raises(InvalidInputError):
        stratified_sample(y.astype(float), 10)
    with pytest.raises(InvalidInputError):
        stratified_sample(y, 0)


@pytest.fixture(scope="module")
def scaled():
    x, y = _data(3000)
    events = []
    lm = LatentMap(n_neighbors=10, n_epochs=60, reduce_dim=16)
    m = fit_sampled(x, y, sample_size=600, latent_map=lm, fidelity_points=300, fidelity_k=10,
                    progress=events.append, batch=1000)
    return m, x, y, events


def test_fit_on_sample_places_the_rest_and_names_the_sample(scaled):
    m, x, y, events = scaled
    assert m.embedding.shape == (3000, 2) and np.isfinite(m.embedding).all()
    assert m.sample_size == 600 and m.sampled
    assert np.array_equal(m.embedding[m.sample], m.projector.embedding_)  # fitted points keep their positions
    assert "600 of 3,000" in m.describe() and "2,400 placed" in m.describe()
    assert any("stratified sample of 600" in e.message for e in events)
    # placed points land near their class: nearest fitted point's class agrees for most of them
    rest = np.setdiff1d(np.arange(3000), m.sample)
    d = ((m.embedding[rest][:, None, :] - m.projector.embedding_[None, :, :]) ** 2).sum(-1)
    assert (y[m.sample][d.argmin(1)] == y[rest]).mean() > 0.9


def test_fidelity_is_measured_and_falls_for_a_scrambled_map(scaled):
    m, x, y, _ = scaled
    f = m.fidelity
    assert 0.0 < f.placed <= 1.0 and 0.0 < f.fitted <= 1.0 and f.checked == 300 and f.k == 10
    rest = np.setdiff1d(np.arange(3000), m.sample)[:300]
    good = placement_fidelity(m.projector, x[rest], m.embedding[rest], k=10)
    scrambled = placement_fidelity(m.projector, x[rest], m.embedding[np.random.default_rng(0).permutation(rest)], k=10)
    assert good > 2 * scrambled


def test_small_split_is_fitted_whole():
    x, y = _data(400, seed=2)
    m = fit_sampled(x, y, sample_size=1000, latent_map=LatentMap(n_neighbors=8, n_epochs=30, reduce_dim=8),
                    fidelity_points=100)
    assert not m.sampled and m.fidelity.placed is None and "all 400 points" in m.describe()
    with pytest.raises(InvalidInputError):
        fit_sampled(x, y[:10])


def test_browser_sample_only_above_the_limit():
    y = np.arange(50) % 5
    assert sample_for_browser(50, 50, y) is None
    s = sample_for_browser(50, 20, y)
    assert s.size == 20 and np.bincount(y[s]).tolist() == [4] * 5


def test_umap_functions_get_the_disk_cache_and_others_do_not():
    import numba

    njit = _with_cache(numba.njit)

    def add(a, b):
        return a + b

    theirs = njit(add)
    add.__module__ = "umap.layouts"
    ours_plain = njit(add)
    ours_factory = njit(fastmath=True)(add)
    ours_explicit = njit(cache=False)(add)
    assert type(theirs._cache).__name__ == "NullCache"
    assert type(ours_plain._cache).__name__ == "FunctionCache"
    assert type(ours_factory._cache).__name__ == "FunctionCache"
    assert type(ours_explicit._cache).__name__ == "NullCache"   # the package's own choice wins


def test_pynndescent_signatures_compile_at_first_call_and_others_at_decoration():
    import numba

    njit = _with_cache(numba.njit)

    def add(a, b):
        return a + b

    theirs = njit("float64(float64, float64)")(add)
    add.__module__ = "pynndescent.rp_trees"
    deferred = njit("float64(float64, float64)", cache=False)(add)
    deferred_kw = njit(signature_or_function="float64(float64, float64)", cache=False)(add)
    assert len(theirs.overloads) == 1                      # eager, as numba does
    assert len(deferred.overloads) == 0 and len(deferred_kw.overloads) == 0  # nothing compiled at import
    assert deferred(1.0, 2.0) == 3.0 and len(deferred.overloads) == 1      # compiled when first called


def test_umap_graph_functions_compile_serially_and_the_rest_keep_parallel():
    import numba

    njit = _with_cache(numba.njit)

    def smooth_knn_dist(a):
        return a

    def other(a):
        return a

    smooth_knn_dist.__module__ = other.__module__ = "umap.umap_"
    smooth_knn_dist.__qualname__ = "smooth_knn_dist"
    assert njit(parallel=True, cache=False)(smooth_knn_dist).targetoptions["parallel"] is False
    assert njit(parallel=True, cache=False)(other).targetoptions["parallel"] is True
    not_umap = smooth_knn_dist
    not_umap.__module__ = "mypackage"
    assert njit(parallel=True)(not_umap).targetoptions["parallel"] is True


def test_a_map_fit_compiles_no_neighbour_search_code():
    """LatentMap hands umap exact neighbours: pynndescent's tree and graph builders stay uncompiled."""
    from cv_core.projection.numba_cache import import_umap

    umap = import_umap()
    x = np.random.default_rng(3).normal(size=(300, 12)).astype(np.float32)
    LatentMap(n_neighbors=8, n_epochs=10).fit(x)
    import pynndescent.pynndescent_ as nnd
    import pynndescent.rp_trees as rp

    assert umap.umap_.smooth_knn_dist.targetoptions["parallel"] is False
    # make_hub_euclidean_tree and bit_hub_split carry explicit signatures: numba would compile them at import
    assert len(rp.make_hub_euclidean_tree.overloads) == 0 and len(rp.bit_hub_split.overloads) == 0
    assert len(rp.make_dense_tree.overloads) == 0 and len(nnd.nn_descent.overloads) == 0


def test_a_sampled_map_is_kept_on_disk_and_restored_to_place_edited_points_alike(tmp_path):
    """fit_sampled_cached: the second call restores the map (embedding, sample, fidelity, search) from the cache
    instead of fitting, places new points where the original map places them, and says it was restored; another
    source or sample size misses; a corrupted entry is ignored with a warning and refitted; no cache: no files."""
    from cv_core.features.cache import ArtifactCache
    from cv_core.projection import fit_sampled_cached
    from cv_core.projection.map_cache import MAP_VERSION, SAMPLED_KIND

    x, y = _data(2500, seed=3)
    new, _ = _data(40, seed=4)
    settings = dict(n_neighbors=8, n_epochs=30, reduce_dim=8)
    first, hit = fit_sampled_cached(x, y, {"latents": "a"}, tmp_path, 800, LatentMap(**settings))
    assert hit is False and not first.cached
    again, hit = fit_sampled_cached(x, y, {"latents": "a"}, tmp_path, 800, LatentMap(**settings))
    assert hit is True and again.cached and "Loaded from the cache" in again.describe()
    assert np.array_equal(again.embedding, first.embedding) and np.array_equal(again.sample, first.sample)
    assert again.fidelity == first.fidelity and again.fit_s == first.fit_s
    np.testing.assert_allclose(again.projector.reproject(new), first.projector.reproject(new), atol=1e-5)
    assert fit_sampled_cached(x, y, {"latents": "b"}, tmp_path, 800, LatentMap(**settings))[1] is False
    assert fit_sampled_cached(x, y, {"latents": "a"}, tmp_path, 900, LatentMap(**settings))[1] is False
    cache = ArtifactCache(tmp_path)
    key = {"source": {"latents": "a"}, "n": 2500, "sample_size": 800, "seed": 0,
           "settings": LatentMap(**settings).settings(), "map_version": MAP_VERSION}
    tensors, _ = cache.paths(SAMPLED_KIND, key)
    tensors.write_bytes(tensors.read_bytes()[:100])                      # a truncated entry
    with pytest.warns(UserWarning):
        redone, hit = fit_sampled_cached(x, y, {"latents": "a"}, tmp_path, 800, LatentMap(**settings))
    assert hit is False and np.array_equal(redone.embedding, first.embedding)
    plain, hit = fit_sampled_cached(x, y, {"latents": "a"}, None, 800, LatentMap(**settings))
    assert hit is False and not plain.cached
