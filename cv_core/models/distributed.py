"""Data-parallel fine-tuning: the process group that torchrun or Slurm's srun describes in the environment.

``torchrun --standalone --nproc_per_node N -m cv_core finetune ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; ``srun`` sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID (MASTER_ADDR and
MASTER_PORT are then the user's to export, as in open_clip_train). Backend: nccl on CUDA, gloo otherwise.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import CVError, InvalidInputError

#: How long a collective waits for a silent rank before failing (a dead peer usually fails at once).
DEFAULT_TIMEOUT_S = 600


class DistributedError(CVError):
    """A rank died or could not join the process group; nothing was saved."""


@dataclass(frozen=True)
class World:
    """This process's place in the group: rank, world size, rank on its node, backend, device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's or Slurm's variables; None when not launched by them."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return None


def init_world(device: torch.device, env: Mapping[str, str] | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> World | None:
    """Join the process group described by the environment; None for a single process.

    device: the resolved device of the run; on CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    env = os.environ if env is None else env
    info = world_from_env(env)
    if info is None or info[1] == 1:
        return None
    rank, size, local = info
    if "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        raise InvalidInputError("a distributed launch needs MASTER_ADDR and MASTER_PORT; under srun export them, "
                                "e.g. MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) "
                                "MASTER_PORT=29500, or launch with torchrun")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=size,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as err:
            raise DistributedError(f"rank {rank} could not join the {backend} process group of {size} at "
                                   f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}: {str(err).splitlines()[0]}") from None
    return World(rank, size, local, backend, device)


def barrier(world: World | None) -> None:
    if world is not None:
        with collective(world, "waiting for the other ranks"):
            dist.barrier()


def broadcast_flag(world: World | None, value: bool, what: str = "agreeing on the cache state") -> bool:
    """Rank 0's ``value`` on every rank (so that all ranks take the same branch)."""
    if world is None:
        return value
    t = torch.tensor([int(value)], device=world.device if world.backend == "nccl" else "cpu")
    with collective(world, what):
        dist.broadcast(t, src=0)
    return bool(t.item())


def mean_across(world: World | None, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the ranks (a copy; the input keeps its graph)."""
    if world is None:
        return value.detach()
    t = value.detach().clone()
    with collective(world, "averaging the loss"):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world.world_size


class collective:
    """Context manager: a failure inside a collective (a peer died) becomes a DistributedError."""

    def __init__(self, world: World, what: str):
        self.world, self.what = world, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, (RuntimeError, dist.DistBackendError)) \
                and not issubclass(exc_type, CVError):
            line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc_type.__name__
            raise DistributedError(f"rank {self.world.rank} of {self.world.world_size}: another rank stopped "
                                   f"while {self.what} ({line}); nothing was saved") from None
        return False


def shutdown(world: World | None, clean: bool = True) -> None:
    """Leave the process group. After a failure it is left alone: destroying a group whose peer died
    can block forever, and the process is about to exit with the error anyway."""
    if world is not None and clean and dist.is_initialized():
        dist.destroy_process_group()
