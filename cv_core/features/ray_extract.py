"""Extraction on Ray Data: both encoders' latents of every split, written into a feature store.

The dataset is read as blocks of row indices; CPU tasks decode and preprocess each block; a fixed pool
of actors (one per GPU with ``num_gpus=1``, CPU actors when there is none) holds BOTH image encoders, so
every image is decoded once and encoded twice. The driver streams the encoded blocks into a
:class:`~cv_core.features.store.FeatureStoreWriter` (blocks arrive in any order; the writer places them by
row). Class sums are then reduced in float64 from the store (``FeatureStore.class_sums``), so class
means divide once at the end, whatever the block order.

Ray Data's API for actor pools changed across 2.9-2.51; this module is written against ray[data]==2.60
(``compute=ActorPoolStrategy(size=n)``), the version the ``scale`` extra pins.
"""
from __future__ import annotations

import copy
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..device import autocast
from ..errors import CVError, InvalidInputError
from ..progress import CancelFn, ProgressFn, StageTimer, check_cancel
from .store import FeatureStoreWriter

SCALE_HINT = "pip install 'class-vector-studio[scale]' (Ray Data, ray[data]==2.60.0)"
CONNECT_TIMEOUT_S = 10.0


class RayUnavailableError(CVError):
    """Ray is not installed, or the cluster at the given address does not answer."""


def import_ray():
    """``ray`` and ``ray.data``, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed: {SCALE_HINT}") from None
    return ray


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when ``host:port`` (or ``ray://host:port``) does not accept a connection: ``ray.init``
    itself retries an unreachable GCS for minutes. 'auto' is resolved by Ray (it fails at once)."""
    if address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInputError(f"--ray-address must be 'auto' or HOST:PORT (e.g. 10.0.0.1:6379), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RayUnavailableError(f"the Ray cluster at {address} does not answer ({err}); start it with "
                                  "'ray start --head' or check the address") from None
    if not address.startswith("ray://"):  # a Ray Client server speaks another protocol: ray.init tells
        _probe_gcs(address, hostport, timeout_s)


def _probe_gcs(address: str, hostport: str, timeout_s: float) -> None:
    """Ask the head node's GCS for its cluster id. A port that accepts TCP but is not a Ray head (another
    service, a proxy) would otherwise make ``ray.init`` retry for about 20 s, after the fine-tuning."""
    import threading
    try:
        from ray._raylet import GcsClient
    except ImportError:  # this Ray moved it: ray.init reports the failure, only later
        return
    outcome: list = []

    def probe() -> None:
        try:
            GcsClient(address=hostport)
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - Ray's RpcError and friends: reported below
            outcome.append(err)

    worker = threading.Thread(target=probe, name="cvs-ray-gcs-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise RayUnavailableError(f"the Ray cluster at {address} does not answer within {timeout_s:.0f} s; "
                                  "check the address and that its head node is up")
    if outcome[0] is not None:
        first = (str(outcome[0]).strip().splitlines() or [type(outcome[0]).__name__])[0][:200]
        raise RayUnavailableError(f"the Ray cluster at {address} does not answer as a Ray head node ({first}); "
                                  "give the head's GCS address (ray start --head prints it, port 6379 by "
                                  "default)")


def resolve_auto_address() -> str | None:
    """The HOST:PORT that ``ray.init(address="auto")`` would join, found the way Ray finds it (RAY_ADDRESS,
    the last ``ray start`` cluster's address file, a running GCS on this machine), or a
    :class:`RayUnavailableError` when there is none. None when this Ray no longer has that helper (then
    ``ray.init`` reports the same, only later)."""
    import_ray()
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as err:
        reason = str(err).split(". ")[0].rstrip(".")
        raise RayUnavailableError(
            f"--ray-address auto found no Ray cluster to join ({reason}): start one with 'ray start --head', "
            "set RAY_ADDRESS or give HOST:PORT, or leave --ray-address out to start a local Ray") from None
    except ValueError:  # e.g. a ray://... RAY_ADDRESS: ray.init handles it
        return None


def preflight(address: str | None) -> None:
    """Before any long work of a Ray run: Ray is installed and the cluster address answers ('auto': a
    cluster is found and its address answers; a stale address file of a stopped cluster fails here)."""
    import_ray()
    if address == "auto":
        address = resolve_auto_address()
    if address:
        check_address(address)


@dataclass
class RaySession:
    """A connection to Ray: one this process already has (kept: e.g. inside a Ray job), or one this run
    starts, joining ``address`` or a new local cluster (shut down at the end)."""

    ray: object
    started: bool

    @classmethod
    def connect(cls, address: str | None, workers: int) -> RaySession:
        ray = import_ray()
        if ray.is_initialized():
            return cls(ray, False)
        if address:
            check_address(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except ConnectionError as err:
                raise RayUnavailableError(f"cannot join the Ray cluster at {address!r}: {err}") from None
            return cls(ray, True)
        # a local cluster: one CPU per encoder actor plus one for the preprocessing tasks
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
        return cls(ray, True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


_RESOLVED: dict[str, object] = {}


def _resolve(value):
    """An ObjectRef's value, fetched once per worker process (Ray passes refs nested in kwargs as refs)."""
    import ray
    if not isinstance(value, ray.ObjectRef):
        return value
    key = value.hex()
    if key not in _RESOLVED:
        while len(_RESOLVED) >= 8:  # a few runs' objects at most
            _RESOLVED.pop(next(iter(_RESOLVED)))
        _RESOLVED[key] = ray.get(value)
    return _RESOLVED[key]


def _on_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` itself when it is on the CPU, else a CPU copy (the caller's model stays where it is)."""
    if all(p.device.type == "cpu" for p in module.parameters()):
        return module
    return copy.deepcopy(module).cpu()


def _worker_env() -> dict | None:
    """Workers must import cv_core. Installed, or the driver started in the folder that holds it (Ray's
    workers start there too): nothing to do. Otherwise (e.g. a driver run from bench/) that folder goes
    first on the workers' PYTHONPATH (a runtime_env: slower worker start, so only when needed)."""
    root = Path(__file__).resolve().parents[2]
    if "site-packages" in Path(__file__).parts or Path.cwd().resolve() == root:
        return None
    rest = os.environ.get("PYTHONPATH")
    return {"env_vars": {"PYTHONPATH": str(root) + (os.pathsep + rest if rest else "")}}


def _preprocess_block(batch: dict, datasets: dict, transform, offsets: np.ndarray) -> dict:
    """Ray task: {'id'} global row ids -> decoded, preprocessed images with their split, row and label."""
    datasets, transform = _resolve(datasets), _resolve(transform)
    ids = np.asarray(batch["id"], dtype=np.int64)
    split_idx = np.searchsorted(offsets, ids, side="right") - 1
    names = list(datasets)
    rows = ids - offsets[split_idx]
    images, labels = [], []
    for s, r in zip(split_idx, rows):
        image, label = datasets[names[s]][int(r)]
        images.append(transform(image).numpy())
        labels.append(label)
    return {"split": split_idx.astype(np.int64), "row": rows.astype(np.int64),
            "label": np.asarray(labels, dtype=np.int64), "image": np.stack(images).astype(np.float32)}


class EncodePair:
    """Ray actor: holds both image encoders; encodes each preprocessed batch with the two of them."""

    def __init__(self, pre_visual, ft_visual, device: str, threads: int):
        from ..models.finetune import ImageEncoder
        pre_visual, ft_visual = _resolve(pre_visual), _resolve(ft_visual)
        torch.set_num_threads(max(1, threads))
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        self.pre = ImageEncoder(pre_visual).to(self.device).eval()
        self.ft = ImageEncoder(ft_visual).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        images = torch.from_numpy(np.array(batch["image"], dtype=np.float32)).to(self.device, non_blocking=True)
        with autocast(self.device):
            pre = self.pre(images).float().cpu().numpy()
            ft = self.ft(images).float().cpu().numpy()
        return {"split": batch["split"], "row": batch["row"], "label": batch["label"], "pre": pre, "ft": ft}


def extract_with_ray(pre_visual: torch.nn.Module, ft_visual: torch.nn.Module, datasets: Mapping[str, object],
                     transform, writer: FeatureStoreWriter, *, workers: int = 2, address: str | None = None,
                     device: torch.device = torch.device("cpu"), batch_size: int = 256, source=None,
                     progress: ProgressFn = None, cancel: CancelFn = None) -> None:
    """Encode every image of ``datasets`` (split -> ImageDataset) with both encoders into ``writer``.

    pre_visual / ft_visual: the pretrained and fine-tuned image towers (``visual`` modules, CPU or not);
    transform: PIL image -> (3, H, W) tensor; source(split, i) -> str: the metadata's source column.
    The writer is not closed here: the caller publishes the store once this returns.
    """
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    session = RaySession.connect(address, workers)
    ray = session.ray
    try:
        _run_pipeline(ray, pre_visual, ft_visual, datasets, transform, writer, workers, device, batch_size,
                      source, progress, cancel)
    except ray.exceptions.RayError as err:
        raise CVError(f"Ray extraction failed and nothing was published: {_reason(err)}") from err
    finally:
        session.close()


def _run_pipeline(ray, pre_visual, ft_visual, datasets, transform, writer, workers, device, batch_size, source,
                  progress, cancel) -> None:
    from ray.data import ActorPoolStrategy, DataContext
    DataContext.get_current().enable_progress_bars = False  # the library reports through ``progress``
    names = list(datasets)
    sizes = np.array([len(datasets[s]) for s in names], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    total = int(sizes.sum())
    gpu = device.type == "cuda"
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # CPU actors leave at least one CPU to the preprocessing tasks, or the pipeline starves
    actor_cpus = 1.0 if gpu else max(0.25, min(1.0, (cpus - 1) / workers))
    batch_size = max(1, min(batch_size, -(-total // (workers * 4))))  # small runs still feed every actor
    blocks = max(workers * 4, -(-total // (batch_size * 4)))
    ds = ray.data.range(total, override_num_blocks=blocks)
    env = _worker_env()
    ds = ds.map_batches(_preprocess_block, batch_size=batch_size, num_cpus=1, runtime_env=env, fn_kwargs={
        "datasets": ray.put(dict(datasets)), "transform": ray.put(transform), "offsets": offsets})
    ds = ds.map_batches(EncodePair, batch_size=batch_size, compute=ActorPoolStrategy(size=workers),
                        num_gpus=1 if gpu else 0, num_cpus=actor_cpus, runtime_env=env,
                        fn_constructor_kwargs={"pre_visual": ray.put(_on_cpu(pre_visual)),
                                               "ft_visual": ray.put(_on_cpu(ft_visual)),
                                               "device": "cuda" if gpu else "cpu",
                                               "threads": 1 if gpu else int(actor_cpus) or 1})
    timer = StageTimer(progress, "extract:ray", total)
    done, start = 0, time.perf_counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        check_cancel(cancel, "extraction")
        for s in np.unique(batch["split"]):
            m = batch["split"] == s
            split, rows = names[int(s)], batch["row"][m]
            src = [source(split, int(r)) for r in rows] if source is not None else None
            writer.add(split, "pre", batch["pre"][m], batch["label"][m], rows, src)
            writer.add(split, "ft", batch["ft"][m], batch["label"][m], rows, src)
        done += len(batch["row"])
        rate = done / max(1e-9, time.perf_counter() - start)
        timer.update(done, f"{done}/{total} images, {rate:.0f}/s on {workers} Ray workers")
    if done != total:
        raise CVError(f"Ray extraction returned {done} of {total} images; nothing was published")



_RAISED = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.+)$")


def _reason(err: BaseException) -> str:
    """One line from a Ray error: the deepest cause that is not Ray's own wrapper (the user code's error).
    Ray Data hands the driver a RayTaskError whose chain ends in Ray's UserCodeException: the user's
    exception survives only in the worker's traceback text, so the last non-Ray "Name: message" line of it."""
    seen, found, cur = set(), None, err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if not type(cur).__module__.startswith("ray"):
            found = cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    if found is None:
        text = "\n".join(str(x) for x in (getattr(err, "traceback_str", None), err) if x)
        raised = [m.groups() for m in map(_RAISED.match, text.splitlines()) if m and not m.group(1).startswith("ray")]
        if raised:
            return f"{raised[-1][0].rsplit('.', 1)[-1]}: {raised[-1][1].strip()[:300]}"
    shown = found or err
    lines = [ln for ln in str(shown).splitlines() if ln.strip()]
    return f"{type(shown).__name__}: {(lines[-1] if lines else '')[:300]}"
