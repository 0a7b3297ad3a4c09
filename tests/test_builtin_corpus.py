"""The built-in model's procedural corpus: deterministic, varied, and font-independent of the system."""
import numpy as np
import pytest

from cv_core.errors import InvalidInputError, WeightsUnavailableError
from cv_core.models.builtin import captions as C
from cv_core.models.builtin import corpus, render


def test_same_seed_same_images_and_captions():
    a_img, a_cap = corpus.generate(24, seed=5)
    b_img, b_cap = corpus.generate(24, seed=5)
    assert a_img.shape == (24, 32, 32, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and a_cap == b_cap


def test_other_seed_differs_and_samples_are_order_free():
    img, cap = corpus.generate(24, seed=5)
    other_img, other_cap = corpus.generate(24, seed=6)
    assert not np.array_equal(img, other_img) and cap != other_cap
    tail_img, tail_cap = corpus.generate(4, seed=5, start=20)  # sample i depends only on (seed, i)
    assert np.array_equal(tail_img, img[20:]) and tail_cap == cap[20:]


@pytest.mark.parametrize("kind", sorted(corpus.MIX))
def test_every_renderer_draws_something_with_a_caption(kind):
    rng = np.random.default_rng(0)
    img, caption = corpus.RENDERERS.get(kind)(rng, 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert img.std() > 3, "the image is blank"
    assert isinstance(caption, str) and caption.strip()


def test_numeral_captions_name_their_digit_and_both_polarities_occur():
    polarities = set()
    for i in range(60):
        rng = np.random.default_rng([1, i])
        img, caption = corpus.numeral(rng, 32)
        digit = next(d for d in range(10) if str(d) in caption or C.NUMBER_WORDS[d] in caption)
        assert str(digit) in caption or C.NUMBER_WORDS[digit] in caption
        grey = img.mean(-1)
        polarities.add(bool(np.median(grey) < grey.mean()))  # sparse bright ink on dark, or the reverse
    assert polarities == {True, False}
    assert 'a photo of the number: "{d}".' in C.NUMERAL_GENERIC  # the MNIST prompt is seen in training


def test_fonts_ship_with_the_project():
    for name in render.FONT_FILES:
        assert (render.FONT_DIR / name).is_file()
    assert (render.FONT_DIR / "LICENSE-DejaVu.txt").is_file()
    mask = render.text_mask("7", render.PILLOW_DEFAULT, 30)
    assert mask.max() > 0.5
    with pytest.raises(WeightsUnavailableError, match="missing"):
        render.font("NoSuchFont.ttf", 12)


def test_generate_rejects_bad_sizes():
    with pytest.raises(InvalidInputError):
        corpus.generate(-1)
