"""The shipped v2 and v3 built-in CLIPs (issue 12 part 2): pinned by their manifests, loaded the standard ways,
and they read written numerals, which v1 does not; v3 also reads written number words."""
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


VERSIONS = ("v2", "v3")
#: Floors on 150 fixed test images (the whole test split's figures are in each model card): zero-shot on digits,
#: read share of digits-typo (written numeral) and of digits-typo-word (written number word); chance is 0.10.
FLOORS = {"v2": (0.5, 0.3, None), "v3": (0.5, 0.3, 0.4)}


@pytest.fixture(scope="module", params=VERSIONS)
def model(request):
    return request.param, _load(request.param)


def _subset(labels: np.ndarray, per_class: int = 15) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])  # 150 images, fixed


@pytest.mark.parametrize("version", VERSIONS)
def test_weights_match_their_manifest_and_budget(version):
    builtin.verify_weights(version)
    m = builtin.manifest(version)
    path = builtin.weights_path(version)
    assert m["model"] == builtin.model_name(version) and m["sha256"] == builtin.sha256_file(path)
    assert path.stat().st_size == m["bytes"] <= 25 * 2**20
    assert m["config"] == json.loads(builtin.config_path(version).read_text())
    assert m["recipe"]["version"] == version and m["steps_done"] == m["recipe"]["steps"]
    assert len({builtin.manifest(v)["sha256"] for v in ("v1", *VERSIONS)}) == 1 + len(VERSIONS)


def test_loads_through_open_clip_and_the_product_path(model):
    from cv_core.models.backbones import load_backbone

    version, clip = model
    state = load_file(str(builtin.weights_path(version)))
    own = clip.state_dict()
    assert set(state) == set(own) and all(torch.equal(own[k].to(t.dtype), t) for k, t in state.items())
    b = load_backbone(f"builtin:{version}")
    assert b.weights_id == builtin.manifest(version)["sha256"] and b.spec.name == f"builtin:{version}"
    assert b.embed_dim == 256 and b.weights_id != load_backbone("builtin").weights_id


def _read_share(clip, pre, head, variant: str) -> float:
    typo, true = variant_arrays(variant, "test")
    written = written_labels(variant, "test")
    keep = _subset(true)
    return accuracy(encode(clip, images_tensor(typo[keep], pre)), head, torch.as_tensor(written[keep].copy()))


def test_zero_shot_is_well_above_chance_and_it_reads_what_is_written(model):
    version, clip = model
    zero_shot, numeral, word = FLOORS[version]
    pre, tok = preprocess_for(clip), open_clip.get_tokenizer(builtin.model_name(version))
    head = text_head(clip, tok)
    images, labels = digits_arrays("test")
    keep = _subset(labels)
    acc = accuracy(encode(clip, images_tensor(images[keep], pre)), head, torch.as_tensor(labels[keep]))
    assert acc >= zero_shot, f"{version}: zero-shot {acc:.3f} on 150 fixed digits (chance 0.10)"
    read = _read_share(clip, pre, head, "typo")
    assert read >= numeral, f"{version}: only {read:.3f} of 150 typographic digits read as the written numeral"
    if word is not None:
        read = _read_share(clip, pre, head, "typo-word")
        assert read >= word, f"{version}: only {read:.3f} of 150 digits read as the written number word"
