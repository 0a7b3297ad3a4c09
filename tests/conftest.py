"""Shared fixtures: a tiny open_clip architecture (random weights) and isolated cache/data folders."""
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never reach a hub

import open_clip
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TINY = "cvs-test-tiny"

open_clip.add_model_config(FIXTURES / "model_configs")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own cache and data root; nothing touches the network."""
    monkeypatch.setenv("CVS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CVS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_spec() -> str:
    return f"{TINY}:random"
