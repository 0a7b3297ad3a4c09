"""The v2 corpus and the resumable pretraining loop (issue 12 parts 2-3): deterministic, and a run split across
sittings ends with the weights of an unbroken one."""
import numpy as np
import pytest
import torch

from cv_core.errors import InvalidInputError, UnknownNameError
from cv_core.models import builtin
from cv_core.models.builtin import captions as C
from cv_core.models.builtin import corpus
from cv_core.models.builtin import pretrain as P


def test_v2_corpus_is_deterministic_and_order_free():
    a_img, a_cap = corpus.generate(40, seed=2, version="v2")
    b_img, b_cap = corpus.generate(40, seed=2, version="v2")
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    tail_img, tail_cap = corpus.generate(5, seed=2, start=35, version="v2")
    assert np.array_equal(tail_img, a_img[35:]) and tail_cap == a_cap[35:]
    v1_img, v1_cap = corpus.generate(40, seed=2)  # the default stays v1's corpus
    assert v1_cap != a_cap
    with pytest.raises(InvalidInputError, match="corpus version"):
        corpus.generate(4, version="v9")


def test_v2_mix_holds_every_v1_kind_and_the_new_ones():
    assert abs(sum(corpus.MIX_V2.values()) - 1) < 1e-9 and abs(sum(corpus.MIX.values()) - 1) < 1e-9
    assert set(corpus.MIX) < set(corpus.MIX_V2)
    assert {"labelled", "environment"} <= set(corpus.MIX_V2)


def test_v3_mix_is_v2_with_more_labelled_samples_written_as_words_more_often():
    v2, v3 = corpus.MIX_V2, corpus.MIX_V3
    assert abs(sum(v3.values()) - 1) < 1e-9 and list(v3) == [k if k != "labelled" else "labelled_words" for k in v2]
    assert v3["labelled_words"] > v2["labelled"] and v3["numeral"] < v2["numeral"]


def test_labelled_words_writes_number_words_more_often(monkeypatch):
    """v3's labelled samples are v2's renderer with a higher chance of a number word (what is drawn is spied)."""
    written = []
    original = corpus.R.text_mask

    def spy(text, *args, **kwargs):
        written.append(text)
        return original(text, *args, **kwargs)

    monkeypatch.setattr(corpus.R, "text_mask", spy)

    def word_share(render) -> float:
        last = []  # the writing is the sample's last text drawn (a numeral scene draws its own digit first)
        for i in range(300):
            written.clear()
            render(np.random.default_rng([11, i]), 32)
            last.append(written[-1])
        return sum(t in C.NUMBER_WORDS for t in last) / len(last)

    v2, v3 = word_share(corpus.labelled), word_share(corpus.labelled_words)
    assert abs(v2 - corpus.LABEL_WORD_SHARE) < 0.08 and abs(v3 - corpus.LABEL_WORD_SHARE_V3) < 0.08, (v2, v3)
    assert v3 > v2


def _digit_in(caption: str) -> set[int]:
    return {d for d in range(10) if str(d) in caption or C.NUMBER_WORDS[d] in caption}


def test_labelled_captions_name_one_written_number(monkeypatch):
    """The caption names what is written, never the numeral the scene shows (drawn from the same generator)."""
    scenes = []
    original = corpus._uci_scene

    def spy(rng, size):
        img, d = original(rng, size)
        scenes.append(d)
        return img, d

    monkeypatch.setattr(corpus, "_uci_scene", spy)
    conflicts = 0
    for i in range(120):
        scenes.clear()
        img, caption = corpus.labelled(np.random.default_rng([7, i]), 32)
        assert img.shape == (32, 32, 3) and img.std() > 3
        named = _digit_in(caption)
        assert len(named) == 1, caption
        if scenes:
            assert scenes[0] not in named, (scenes, caption)
            conflicts += 1
    assert 30 <= conflicts <= 90  # about half the scenes are another numeral


def test_environment_samples_are_shifted_and_say_so():
    words = {w for pair in C.ENVIRONMENT_WORDS.values() for w in pair}
    said = 0
    for i in range(60):
        img, caption = corpus.environment(np.random.default_rng([3, i]), 32)
        assert img.shape == (32, 32, 3) and len(_digit_in(caption)) == 1, caption
        said += any(w in caption for w in words)
    assert said >= 30  # most templates name the environment; two plain ones keep the MNIST prompt in play


def test_builtin_versions_resolve_and_unknown_ones_are_named():
    from cv_core.models.backbones import is_builtin, parse_spec

    assert parse_spec("builtin").name == "builtin" and parse_spec("builtin:v1").version == "v1"
    v2 = parse_spec("builtin:V2")
    assert v2.model == builtin.model_name("v2") and v2.name == "builtin:v2" and is_builtin("builtin:v2")
    with pytest.raises(UnknownNameError, match="v9"):
        parse_spec("builtin:v9")
    assert builtin.version_of("cvs-tiny-clip-v2") == "v2" and builtin.version_of("RN50") is None
    v3 = parse_spec("builtin:v3")
    assert v3.model == "cvs-tiny-clip-v3" and v3.name == "builtin:v3" and builtin.version_of(v3.model) == "v3"
    assert P.RECIPES["v3"] == P.replace(P.V2_RECIPE, version="v3")  # v2's recipe on v3's corpus


def _tiny(tmp_path, **kw):
    cfg = P.PretrainConfig(steps=6, batch_size=8, corpus_size=64, warmup=2, eval_every=3, version="v2", threads=1)
    return P.run(cfg, tmp_path, 10.0, torch.device("cpu"), log=lambda *_: None, evaluate_weights=False, **kw)


def test_a_run_stopped_and_resumed_ends_with_the_weights_of_an_unbroken_run(tmp_path):
    whole = _tiny(tmp_path / "whole")
    assert whole is not None and whole["steps_done"] == 6
    split = tmp_path / "split"
    assert _tiny(split, checkpoint_every=2, stop_at=3) is None  # stopped: checkpoint kept, no weights yet
    assert (split / P.CHECKPOINT_FILE).is_file() and not (split / "cvs-tiny-clip-v2.safetensors").exists()
    resumed = _tiny(split, checkpoint_every=2)
    assert resumed["steps_done"] == 6 and not (split / P.CHECKPOINT_FILE).exists()
    same = builtin.compare_weights(tmp_path / "whole" / "cvs-tiny-clip-v2.safetensors",
                                   split / "cvs-tiny-clip-v2.safetensors")
    assert same["identical"], same["differing"][:5]
    assert resumed["recipe"]["version"] == "v2" and resumed["model"] == "cvs-tiny-clip-v2"


def test_a_checkpoint_of_another_recipe_is_refused(tmp_path):
    assert _tiny(tmp_path, checkpoint_every=2, stop_at=2) is None
    cfg = P.PretrainConfig(steps=7, batch_size=8, corpus_size=64, warmup=2, eval_every=3, version="v2", threads=1)
    with pytest.raises(InvalidInputError, match="another recipe"):
        P.run(cfg, tmp_path, 10.0, torch.device("cpu"), log=lambda *_: None, checkpoint_every=2,
              evaluate_weights=False)


@pytest.mark.parametrize("version, digest", [
    ("v1", "53da281700c9de941962719550a5c124f0a8d6a1add2764769e19dd1c5e18ed1"),
    ("v2", "cdc2d1f32265c35dede2a6a49f5dd3dda123833ac7c42aa08a826e2c8d810d75"),
    ("v3", "0bcd537f55978a859ceb12cd8b9608fab26ab3279eda375b2525858d7d9dfff0"),
])
def test_the_shipped_corpora_are_pinned(version, digest):
    """The first 60 samples of each version's seed-0 corpus, as the shipped weights were trained on them: a change
    to a renderer, a template or the order of random draws shows here before it silently changes a retrain."""
    import hashlib

    images, captions = corpus.generate(60, seed=0, version=version)
    assert hashlib.sha256(images.tobytes() + "\n".join(captions).encode()).hexdigest() == digest
