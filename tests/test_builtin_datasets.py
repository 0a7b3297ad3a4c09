"""Offline digits variants: environment shifts and typographic attack, registered like other datasets."""
import numpy as np
import pytest
from PIL import Image

from cv_core.data.builtin import DATASET_NAMES, VARIANTS, shifted_digits_arrays, typographic_digits_arrays, \
    variant_arrays
from cv_core.data.builtin.shifts import upsample
from cv_core.data.datasets import list_datasets, load_split
from cv_core.data.digits import digits_arrays
from cv_core.errors import InvalidInputError, UnknownNameError


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_shapes_labels_and_change(variant):
    images, labels = variant_arrays(variant, "val")
    clean, clean_labels = digits_arrays("val")
    assert images.shape == (len(clean), 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(labels, clean_labels)
    diff = np.abs(images.astype(int) - upsample(clean).astype(int)).mean()
    assert diff > 5, f"{variant} barely changes the images ({diff:.1f})"


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_variants_load_like_any_dataset(name):
    assert name in list_datasets()
    ds = load_split(name, "test", max_per_class=3)
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    assert len(ds) == 30 and ds.class_names == tuple(str(d) for d in range(10)) and 0 <= label <= 9


def test_generation_is_deterministic_and_seeded():
    a, _ = shifted_digits_arrays("snow", "val", seed=1)
    b, _ = shifted_digits_arrays("snow", "val", seed=1)
    c, _ = shifted_digits_arrays("snow", "val", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("style", ["numeral", "word"])
def test_typography_always_writes_a_wrong_class(style):
    images, labels, written = typographic_digits_arrays("val", style)
    assert len(images) == len(labels) == len(written)
    assert (written != labels).all() and set(np.unique(written)) == set(range(10))


def test_unknown_names_are_rejected():
    with pytest.raises(UnknownNameError, match="snow"):
        variant_arrays("snowy", "val")
    with pytest.raises(InvalidInputError):
        shifted_digits_arrays("hail", "val")
    with pytest.raises(InvalidInputError):
        typographic_digits_arrays("val", style="emoji")


def test_written_class_follows_the_loaded_images():
    """``datasets.written_targets`` gives the text's class for each loaded image, also through a capped view."""
    from cv_core.data.datasets import load_split, written_targets

    full = typographic_digits_arrays("test", "word")
    ds = load_split("digits-typo-word", "test", max_per_class=5, seed=3)
    written = written_targets(ds)
    assert written == [int(full[2][i]) for i in ds.indices] and len(written) == 50
    assert all(w != t for w, t in zip(written, ds.targets))
    assert written_targets(load_split("digits-fog", "test")) is None
    assert written_targets(load_split("digits", "test")) is None
