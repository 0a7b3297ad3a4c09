"""The shipped v2 built-in CLIP (issue 12 part 2): pinned by its manifest, loaded the standard ways, and it reads
written numerals, which v1 does not."""
import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from cv_core.data.builtin import variant_arrays, written_labels
from cv_core.data.digits import digits_arrays
from cv_core.models import builtin
from cv_core.models.builtin.evaluate import accuracy, encode, images_tensor, preprocess_for, text_head


def _load(version: str):
    builtin.register_config()
    return open_clip.create_model(builtin.model_name(version), pretrained=str(builtin.weights_path(version))).eval()


@pytest.fixture(scope="module")
def v2():
    return _load("v2")


def _subset(labels: np.ndarray, per_class: int = 15) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])  # 150 images, fixed


def test_v2_weights_match_their_manifest_and_budget():
    builtin.verify_weights("v2")
    m = builtin.manifest("v2")
    path = builtin.weights_path("v2")
    assert m["model"] == "cvs-tiny-clip-v2" and m["sha256"] == builtin.sha256_file(path)
    assert path.stat().st_size == m["bytes"] <= 25 * 2**20
    assert m["config"] == json.loads(builtin.config_path("v2").read_text())
    assert m["recipe"]["version"] == "v2" and m["steps_done"] == m["recipe"]["steps"]
    assert builtin.manifest("v1")["sha256"] != m["sha256"]


def test_v2_loads_through_open_clip_and_the_product_path(v2):
    from cv_core.models.backbones import load_backbone

    state = load_file(str(builtin.weights_path("v2")))
    own = v2.state_dict()
    assert set(state) == set(own) and all(torch.equal(own[k].to(t.dtype), t) for k, t in state.items())
    b = load_backbone("builtin:v2")
    assert b.weights_id == builtin.manifest("v2")["sha256"] and b.spec.name == "builtin:v2"
    assert b.embed_dim == 256 and b.weights_id != load_backbone("builtin").weights_id


def test_v2_zero_shot_is_well_above_chance_and_it_reads_written_numerals(v2):
    pre, tok = preprocess_for(v2), open_clip.get_tokenizer(builtin.model_name("v2"))
    head = text_head(v2, tok)
    images, labels = digits_arrays("test")
    keep = _subset(labels)
    acc = accuracy(encode(v2, images_tensor(images[keep], pre)), head, torch.as_tensor(labels[keep]))
    assert acc >= 0.5, f"zero-shot {acc:.3f} on 150 fixed digits (chance 0.10)"
    typo, true = variant_arrays("typo", "test")
    written = written_labels("typo", "test")
    keep = _subset(true)
    read = accuracy(encode(v2, images_tensor(typo[keep], pre)), head, torch.as_tensor(written[keep].copy()))
    assert read >= 0.3, f"only {read:.3f} of 150 typographic digits read as the written class (chance 0.10)"
