"""The factored live loop (cv_core.math.factored) against steering the latents and predicting."""
import pytest
import torch

from cv_core.errors import InvalidInputError
from cv_core.math.factored import FactoredScores
from cv_core.math.steering import edit_from_coefficients, move_edit, steer
from cv_core.results import ClassVectors


def _random_run(n=3000, c=7, d=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu_ft = 3 * torch.randn(c, d, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    latents = mu_ft[labels] + 1.5 * torch.randn(n, d, generator=g)
    kappa = mu_ft - 3 * torch.randn(c, d, generator=g)  # pretrained centroids unrelated to the head
    cv = ClassVectors(kappa, mu_ft - kappa, mu_ft, tuple(f"class {i}" for i in range(c)))
    head = torch.nn.functional.normalize(mu_ft + 0.5 * torch.randn(c, d, generator=g), dim=-1)
    return latents, head, cv


def _full_predictions(latents, head, cv, coefs, gamma, moves):
    """The reference: steer every latent with the library's gated edit terms, then the head's argmax."""
    before = (torch.nn.functional.normalize(latents, dim=-1) @ head.T).argmax(-1)
    edited = steer(latents, edit_from_coefficients(cv, coefs, gamma), before)
    for s, t, a in moves:
        edited = edited + (steer(latents, move_edit(cv, s, t, a, gamma), before) - latents)
    return (torch.nn.functional.normalize(edited, dim=-1) @ head.T).argmax(-1)


@pytest.mark.parametrize("gamma", [None, 0.2, "per-class", 0.999])  # 0.999: the cosine gate closed, the prediction term alone
@pytest.mark.parametrize("coefs,moves", [
    ([0, -1, 0, 0, 0, 0, 0], []),
    ([0.5, -2, 0, 1.25, 0, 0, -0.75], []),
    ([0] * 7, [(2, 5, 0.6)]),
    ([0, 0, -1, 0, 0, 0, 0.3], [(c, (c + 1) % 7, 1.0) for c in range(7)]),
])
def test_factored_predictions_equal_steering_the_latents(coefs, moves, gamma):
    latents, head, cv = _random_run()
    if gamma == "per-class":
        gamma = torch.linspace(0.1, 0.6, 7)
    f = FactoredScores.from_latents(latents, head, cv)
    weights = f.edit_weights(coefs, gamma, moves)
    expected = _full_predictions(latents, head, cv, coefs, gamma, moves)
    got = f.predict(weights)
    assert (got == expected).float().mean() == 1.0
    # the rows it reports as changed are exactly the rows the gates let through
    assert (expected != f.predict()).sum() > 0
    changed = torch.zeros(len(latents), dtype=torch.bool)
    changed[f.changed_rows(weights)] = True
    assert not (got != f.predict())[~changed].any()
    # the live loop's sparse path: only the gated rows, the same weights and predictions
    rows, sparse = f.edit_rows(coefs, gamma, moves)
    assert set(f.changed_rows(weights).tolist()) <= set(rows.tolist())
    assert torch.equal(weights[rows], sparse) and not weights[~torch.isin(torch.arange(len(latents)), rows)].any()
    assert torch.equal(f.predict_rows(rows, sparse), got[rows])


def test_edited_latents_are_the_latents_plus_weighted_class_vectors():
    latents, head, cv = _random_run(n=200)
    f = FactoredScores.from_latents(latents, head, cv)
    coefs = [0, -1, 0, 0.5, 0, 0, 0]
    b = f.edit_weights(coefs, 0.1)
    expected = steer(latents, edit_from_coefficients(cv, coefs, 0.1), f.predict())
    torch.testing.assert_close((latents.double() + b @ cv.kappa.double()).float(), expected, atol=1e-5, rtol=1e-5)


def test_unedited_predictions_are_the_heads():
    latents, head, cv = _random_run(n=500)
    f = FactoredScores.from_latents(latents, head, cv)
    assert torch.equal(f.predict(), (torch.nn.functional.normalize(latents, dim=-1) @ head.T).argmax(-1))
    assert not f.changed_rows(f.edit_weights([0] * 7, 0.2)).numel()


def test_bad_input_is_refused_with_a_reason():
    latents, head, cv = _random_run(n=50)
    f = FactoredScores.from_latents(latents, head, cv)
    with pytest.raises(InvalidInputError, match="expected 7 finite coefficients"):
        f.edit_weights([0.0] * 6)
    with pytest.raises(InvalidInputError, match="expected 7 finite coefficients"):
        f.edit_weights([float("nan")] + [0.0] * 6)
    with pytest.raises(InvalidInputError, match="outside 0..6"):
        f.edit_weights([0.0] * 7, None, [(0, 9, 0.5)])
    with pytest.raises(InvalidInputError, match="gate gamma"):
        f.edit_weights([0.0] * 7, 1.5)
    with pytest.raises(InvalidInputError, match="do not match"):
        FactoredScores.from_latents(latents, head[:, :10], cv)


def test_tables_from_blocks_equal_one_pass_and_rescore_equals_score():
    from cv_core.math.metrics import rescore, score

    latents, head, cv = _random_run()
    whole = FactoredScores.from_latents(latents, head, cv, block_rows=len(latents))
    blocked = FactoredScores.from_latents(latents.numpy(), head, cv, block_rows=128)   # a numpy array too
    assert torch.allclose(whole.base, blocked.base, atol=1e-5)
    assert torch.allclose(whole.cosines, blocked.cosines, atol=1e-6)
    assert blocked.cosines.T.is_contiguous()  # class-major: a gate reads one contiguous column
    labels = latents.new_zeros(len(latents), dtype=torch.long) + torch.arange(len(latents)) % 7
    before = whole.predict()
    rows, w = whole.edit_rows([0, -1.5, 0, 0, 0, 0, 0], 0.2, [(4, 2, 0.7)])
    assert 0 < rows.numel() < len(latents)
    after = before.clone()
    after[rows] = whole.predict_rows(rows, w)
    full = score(after, labels, 7)
    quick = rescore(score(before, labels, 7), labels[rows], before[rows], after[rows])
    assert torch.equal(full.confusion, quick.confusion) and full.accuracy == quick.accuracy
    assert torch.allclose(full.per_class, quick.per_class, equal_nan=True)
    with pytest.raises(InvalidInputError, match="rows"):
        FactoredScores.from_blocks([(0, latents[:10])], 20, head, cv)
