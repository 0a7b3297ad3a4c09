"""Bring-your-own-model checks before Compute: checkpoint files, no network, download progress in MB."""
from __future__ import annotations

import pickle
import time

import pytest
import torch
from safetensors.torch import save_file

from cv_core.errors import WeightsUnavailableError
from cv_core.models.backbones import check_backbone, load_backbone
from cv_core.models.checkpoints import check_checkpoint, mb_progress_class, network_reachable
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny_state():
    b = load_backbone(f"{TINY}:random")
    return {k: v.contiguous() for k, v in b.model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_fitting_checkpoint_is_described(tmp_path, tiny_state, suffix):
    path = tmp_path / f"w{suffix}"
    save_file(tiny_state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": tiny_state}, path)
    text = check_checkpoint(TINY, path)
    assert f"fits {TINY}" in text and f"{len(tiny_state)} tensors" in text
    assert "local file:" in check_backbone(f"{TINY}:{path}").message


def test_unusable_files_are_refused_with_the_reason_before_compute(tmp_path, tiny_state):
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not weights\n" * 20)
    with pytest.raises(WeightsUnavailableError, match="neither a safetensors file nor a PyTorch weights file"):
        check_backbone(f"{TINY}:{text}")
    with pytest.raises(WeightsUnavailableError, match="no file at"):
        check_backbone(f"{TINY}:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(WeightsUnavailableError, match="is a folder"):
        check_backbone(f"{TINY}:{tmp_path}/")
    partial = dict(list(tiny_state.items())[: len(tiny_state) // 2])
    save_file(partial, str(tmp_path / "half.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="weights are missing"):
        check_checkpoint(TINY, tmp_path / "half.safetensors")
    wrong = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim and k.endswith("weight") else v)
             for k, v in tiny_state.items()}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="other shapes"):
        check_checkpoint(TINY, tmp_path / "wrong.safetensors")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": object()}, f)
    with pytest.raises(WeightsUnavailableError):
        check_checkpoint(TINY, tmp_path / "evil.pt")


def test_an_uncached_hub_model_without_network_fails_fast(monkeypatch):
    import cv_core.models.checkpoints as ck

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(ck, "network_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not cached and there is no network"):
        load_backbone("ViT-B-32:laion2b_s34b_b79k")
    assert time.perf_counter() - start < 5


def test_network_probe_answers_within_its_timeout():
    start = time.perf_counter()
    network_reachable("10.255.255.1", 9, timeout=0.5)  # unroutable: must give up, not hang
    assert time.perf_counter() - start < 2


def test_download_progress_is_reported_in_megabytes():
    seen = []
    bar = mb_progress_class(lambda done, total: seen.append((done, total)))(total=3 * 2**20, unit="B")
    for _ in range(3):
        bar.update(2**20)
    bar.close()
    assert seen == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
