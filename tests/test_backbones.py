"""Backbones: specs, safe checkpoint loading, offline errors, the zero-shot head."""
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cv_core.errors import InvalidInputError, UnknownNameError, WeightsUnavailableError
from cv_core.models.backbones import _needs_quick_gelu, check_backbone, load_backbone, parse_spec
from cv_core.models.zeroshot import build_head
from tests.conftest import TINY


def _encode(backbone):
    x = backbone.preprocess(Image.new("RGB", (20, 20), (10, 200, 30)))[None]
    with torch.no_grad():
        return backbone.model.encode_image(x)


def test_random_tiny_backbone(tiny_spec):
    b = load_backbone(tiny_spec)
    assert b.embed_dim == 32 and b.weights_id == "random:0" and not b.model.training
    assert _encode(b).shape == (1, 32)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_file_round_trip(tmp_path, tiny_spec, suffix):
    ref = load_backbone(tiny_spec, seed=3)
    path = tmp_path / f"model{suffix}"
    state = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = load_backbone(f"{TINY}:{path}")
    assert loaded.spec.source == "file" and len(loaded.weights_id) == 64
    assert torch.allclose(_encode(loaded), _encode(ref), atol=1e-6)
    assert check_backbone(f"{TINY}:{path}").available_offline


class Evil:
    """Unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('this must never run')",))


@pytest.mark.parametrize("how", ["pickle.dump", "torch.save"])
def test_pickled_objects_are_refused(tmp_path, how):
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    if how == "torch.save":
        torch.save({"x": Evil(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"x": Evil(marker)}, f)
    with pytest.raises(WeightsUnavailableError, match="not loaded for safety"):
        load_backbone(f"{TINY}:{path}")
    with pytest.raises(WeightsUnavailableError, match="not loaded for safety"):
        check_backbone(f"{TINY}:{path}")
    assert not marker.exists(), "the checkpoint's pickle ran"


def test_wrong_architecture_and_truncated_file(tmp_path, tiny_spec):
    other = tmp_path / "rn.safetensors"
    save_file({"visual.weight": torch.zeros(3)}, str(other))
    with pytest.raises(WeightsUnavailableError, match="does not fit architecture"):
        load_backbone(f"{TINY}:{other}")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00")
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        load_backbone(f"{TINY}:{broken}")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_backbone(f"{TINY}:{tmp_path / 'nope.safetensors'}")


def test_spec_errors_list_close_matches():
    with pytest.raises(UnknownNameError, match="Did you mean: ViT-B-32"):
        parse_spec("ViT-B-23:openai")
    with pytest.raises(UnknownNameError, match="Did you mean: openai"):
        parse_spec("ViT-B-32:opena")
    with pytest.raises(InvalidInputError, match="MODEL:TAG"):
        parse_spec("ViT-B-32")


def test_openai_weights_get_quickgelu_and_offline_error_is_actionable():
    spec = parse_spec("ViT-B-32:openai")
    assert _needs_quick_gelu(spec) and not _needs_quick_gelu(parse_spec("ViT-B-32:laion2b_s34b_b79k"))
    assert not _needs_quick_gelu(parse_spec("ViT-B-32-quickgelu:openai"))  # the config already has it
    avail = check_backbone("ViT-B-32:openai")
    assert not avail.available_offline and 500 < avail.download_mb < 700
    with pytest.raises(WeightsUnavailableError, match="not cached.*builtin"):
        load_backbone("ViT-B-32:openai")


def test_zero_shot_head_rows_are_unit_and_validated(tiny_spec):
    b = load_backbone(tiny_spec)
    head = build_head(b, ["cat", "dog", "bird"], ("a photo of a {}.", "a {}."))
    assert head.weights.shape == (3, 32)
    assert torch.allclose(head.weights.norm(dim=1), torch.ones(3), atol=1e-5)
    feats = torch.randn(5, 32)
    logits = head.logits(feats)
    assert logits.shape == (5, 3) and torch.equal(logits.argmax(1), head.predict(feats))
    with pytest.raises(InvalidInputError, match="template"):
        build_head(b, ["cat"], ("a photo",))
