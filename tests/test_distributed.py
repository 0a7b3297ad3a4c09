"""Data-parallel fine-tuning: 2 gloo ranks follow the 1-process run, a dead rank saves nothing,
torchrun writes the entry that run() finds."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cv_core.errors import InvalidInputError
from cv_core.models.distributed import init_world, world_from_env

ROOT = Path(__file__).resolve().parent.parent
STEPS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, size: int, port: int) -> dict:
    return {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def _config(cache_dir: str, batch: int = 32, **settings):
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.pipeline import RunConfig
    return RunConfig(backbone="cvs-test-tiny:random", dataset="digits", device="cpu", cache_dir=cache_dir,
                     max_per_class=20, finetune=FinetuneConfig(**{"steps": STEPS, "batch_size": batch, "lr": 1e-3,
                                                                  "warmup": 2, **settings}))


def _rank_main(rank: int, size: int, port: int, cache_dir: str, out: str, die_at: int | None,
               settings: dict | None = None) -> None:
    """One rank: fine-tune through the real stages; record losses and the state, or the error."""
    os.environ.update(_env(rank, size, port))
    torch.set_num_threads(1)
    from cv_core.models.distributed import shutdown
    from cv_core.stages import finetune_stage, prepare
    world = init_world(torch.device("cpu"))
    losses, step = [], [0]

    def record(p):
        losses.append(p.loss)

    def cancel():  # polled by every rank at every step
        step[0] += 1
        if die_at is not None and rank == 1 and step[0] > die_at:
            os._exit(3)  # a rank killed mid-run
        return False

    try:
        inp = prepare(_config(cache_dir, **(settings or {})), None, {}, {}, world)
        state, hit, _ = finetune_stage(inp, record, cancel, world)
        torch.save({"losses": losses, "state": state, "hit": hit}, f"{out}/rank{rank}.pt")
        shutdown(world)
    except Exception as err:  # noqa: BLE001 - the test reads what the rank saw
        Path(f"{out}/rank{rank}.err").write_text(f"{type(err).__name__}: {err}")
        shutdown(world, clean=False)


def _spawn(size: int, cache_dir: Path, out: Path, die_at: int | None = None, settings: dict | None = None) -> None:
    """Start the ranks as forked processes (no re-import of torch and open_clip: seconds, not tens)."""
    ctx, port = mp.get_context("fork"), _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, size, port, str(cache_dir), str(out), die_at, settings))
             for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=50)
        if p.is_alive():
            p.kill()
            pytest.fail("a rank hung instead of failing")


def test_world_from_torchrun_and_slurm_variables():
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4, 1)
    assert world_from_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}) == (5, 8, 1)
    assert world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # a single srun task
    with pytest.raises(InvalidInputError, match="MASTER_ADDR"):
        init_world(torch.device("cpu"), {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


def test_run_under_several_ranks_points_to_finetune(monkeypatch, tmp_path, capsys):
    from cv_core.cli import main
    for k, v in _env(1, 2, 29500).items():
        monkeypatch.setenv(k, v)
    assert main(["run", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "launch 'finetune'" in capsys.readouterr().err


def test_two_gloo_ranks_follow_the_one_process_run(tmp_path, single_thread):
    from cv_core.stages import finetune_stage, prepare
    losses = []
    one_state, _, _ = finetune_stage(prepare(_config(str(tmp_path / "one")), None, {}, {}), losses.append, None)
    _spawn(2, tmp_path / "two", tmp_path)
    assert not list(tmp_path.glob("*.err")), [p.read_text() for p in tmp_path.glob("*.err")]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    one = [p.loss for p in losses]
    assert len(one) == len(r0["losses"]) == STEPS and r1["losses"] == []  # rank 0 reports the mean loss
    assert max(abs(a - b) for a, b in zip(one, r0["losses"])) < 1e-4
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), f"{name} differs across ranks"
    assert len(list((tmp_path / "two" / "encoders").glob("*.safetensors"))) == 1  # rank 0 saved, once


def test_early_stopping_under_two_ranks_stops_every_rank_at_the_same_step(tmp_path, single_thread):
    """Issue 12: every rank scores the val split, rank 0's decision is broadcast; the ranks keep one state."""
    settings = {"early_stop_patience": 1, "eval_every": 2, "steps": 40}
    from cv_core.stages import finetune_stage, prepare
    losses = []
    finetune_stage(prepare(_config(str(tmp_path / "one"), **settings), None, {}, {}), losses.append, None)
    _spawn(2, tmp_path / "two", tmp_path, settings=settings)
    assert not list(tmp_path.glob("*.err")), [p.read_text() for p in tmp_path.glob("*.err")]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["losses"]) == len(losses) < 40  # stopped early, at the step the 1-process run stopped
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), f"{name} differs across ranks"


def test_a_dying_rank_is_a_clear_error_and_saves_nothing(tmp_path):
    _spawn(2, tmp_path / "cache", tmp_path, die_at=3)
    err = (tmp_path / "rank0.err").read_text()
    assert err.startswith("DistributedError") and "another rank stopped" in err and "nothing was saved" in err
    assert not list((tmp_path / "cache").glob("encoders/*")), "no encoder entry may be written"


def test_torchrun_finetune_writes_the_entry_that_run_finds(tmp_path):
    args = ["--backbone", "builtin", "--dataset", "digits", "--device", "cpu", "--max-per-class", "8", "--steps",
            "4", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "cv_core", "finetune", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=150)  # ~25 s on 2 quiet cores; a loaded machine takes longer
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained on 2 processes (gloo)" in proc.stdout
    from cv_core.cli import config_from_args, build_parser
    from cv_core.pipeline import run
    result = run(config_from_args(build_parser().parse_args(["run", *args])))
    assert result.cache_hits["finetune"] and result.cache_hits["head"]
    assert json.loads(result.encoder_path.with_suffix(".json").read_text())["kind"] == "fine-tuned image encoder"
