"""The built-in CLIP: standard open_clip loading, weights pinned by sha256, real zero-shot skill."""
import json
import shutil

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from cv_core.data.digits import digits_arrays
from cv_core.errors import WeightsUnavailableError
from cv_core.models import builtin
from cv_core.models.builtin.evaluate import MNIST_TEMPLATE, accuracy, encode, images_tensor, text_head


@pytest.fixture(scope="module")
def model():
    builtin.register_config()
    return open_clip.create_model(builtin.BUILTIN_MODEL_NAME, pretrained=str(builtin.weights_path())).eval()


def test_register_config_is_idempotent_and_tokenizer_works():
    builtin.register_config()
    builtin.register_config()
    assert open_clip.list_models().count(builtin.BUILTIN_MODEL_NAME) == 1
    tokens = open_clip.get_tokenizer(builtin.BUILTIN_MODEL_NAME)([MNIST_TEMPLATE.format("7")])
    assert tokens.shape == (1, builtin.manifest()["config"]["text_cfg"]["context_length"])


def test_weights_match_manifest_and_size_budget():
    builtin.verify_weights()
    m = builtin.manifest()
    assert m["sha256"] == builtin.sha256_file(builtin.weights_path())
    assert builtin.weights_path().stat().st_size == m["bytes"] <= 25 * 2**20
    assert m["config"] == json.loads(builtin.CONFIG_PATH.read_text())


def test_corrupt_or_missing_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / builtin.WEIGHTS_FILE
    shutil.copyfile(builtin.weights_path(), bad)
    with open(bad, "r+b") as f:  # flip one byte in the tensor data
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(builtin, "weights_path", lambda version="v1": bad)
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        builtin.verify_weights()
    monkeypatch.setattr(builtin, "weights_path", lambda version="v1": tmp_path / "gone.safetensors")
    with pytest.raises(WeightsUnavailableError, match="missing"):
        builtin.verify_weights()


def test_loads_through_open_clip_with_every_tensor_from_the_file(model):
    state = load_file(str(builtin.weights_path()))
    own = model.state_dict()
    assert set(state) == set(own)
    for name, tensor in state.items():
        assert torch.equal(own[name].to(tensor.dtype), tensor), name


def test_loads_through_the_product_backbone_path():
    from cv_core.models.backbones import load_backbone

    b = load_backbone("builtin")
    assert b.weights_id == builtin.manifest()["sha256"]
    x = b.preprocess(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (8, 8)))
    assert tuple(x.shape) == (3, 32, 32)


def test_zero_shot_is_well_above_chance_on_a_fixed_subset(model):
    images, labels = digits_arrays("test")
    keep = np.concatenate([np.flatnonzero(labels == c)[:15] for c in range(10)])  # 150 images, fixed
    from cv_core.models.builtin.evaluate import preprocess_for

    x = images_tensor(images[keep], preprocess_for(model))
    head = text_head(model, open_clip.get_tokenizer(builtin.BUILTIN_MODEL_NAME))
    acc = accuracy(encode(model, x), head, torch.as_tensor(labels[keep]))
    assert acc >= 0.3, f"zero-shot accuracy {acc:.3f} on 150 fixed digits (chance is 0.10)"


def test_weights_are_compared_tensor_by_tensor_not_by_file_hash(tmp_path):
    """A pretraining rerun is checked with compare_weights: equal tensors under another header are identical."""
    from safetensors.torch import save_file

    shipped = builtin.weights_path()
    state = load_file(str(shipped))
    reordered = tmp_path / "same.safetensors"
    save_file(state, str(reordered), metadata={"model": builtin.BUILTIN_MODEL_NAME, "note": "another header"})
    assert builtin.sha256_file(reordered) != builtin.sha256_file(shipped)
    same = builtin.compare_weights(reordered, shipped)
    assert same["identical"] and same["tensors"] == len(state) and same["max_abs_diff"] == 0.0
    name = sorted(state)[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] += 1.0
    del state[sorted(state)[-1]]
    changed = tmp_path / "changed.safetensors"
    save_file(state, str(changed))
    diff = builtin.compare_weights(changed, shipped)
    assert not diff["identical"] and diff["differing"] == [name] and diff["missing"] == [sorted(load_file(str(shipped)))[-1]]
    assert diff["max_abs_diff"] == pytest.approx(1.0, abs=0.01)
