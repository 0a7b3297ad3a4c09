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


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: thread hand-offs cost more than the maths on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_digits_run(tmp_path_factory):
    """A real pipeline run of the tiny random CLIP on 12 digits per class, computed once per session and
    shared by every module that only reads it (a RunResult is frozen; its cache folder is its own)."""
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.pipeline import RunConfig, run
    cfg = RunConfig(backbone=f"{TINY}:random", dataset="digits", device="cpu",
                    cache_dir=str(tmp_path_factory.mktemp("cache")), max_per_class=12,
                    finetune=FinetuneConfig(steps=6, batch_size=32, lr=1e-3, warmup=1))
    return run(cfg)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every Ray test of the session (start and stop cost about 5 s each)."""
    ray = pytest.importorskip("ray", reason="the 'scale' extra (ray[data]) is not installed")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
