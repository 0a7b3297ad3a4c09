"""Checks of a bring-your-own checkpoint before anything is computed, and the open_clip download with progress.

``check_checkpoint(model, path)`` reads only the file's index (safetensors header, or the torch zip archive
memory-mapped with ``weights_only=True``) and compares its keys and shapes with the architecture built on the
meta device: no weights are copied and nothing is downloaded. ``network_reachable`` answers within its timeout
even when name resolution hangs. ``download_with_progress`` fetches open_clip hub weights and reports megabytes.
"""
from __future__ import annotations

import socket
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import WeightsUnavailableError

SAFETENSORS_SUFFIX = ".safetensors"
#: open_clip resizes these to the model when they differ (loading still works), so their shape is not checked
RESIZED = ("positional_embedding", "visual.positional_embedding")


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """key -> shape of the tensors in a safetensors or torch weights file (reads the index only)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == SAFETENSORS_SUFFIX or (len(head) == 8 and not zipfile.is_zipfile(path)
                                            and int.from_bytes(head, "little") < 100_000_000 and head[:2] != b"PK"):
        from safetensors import safe_open
        try:
            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:
            if path.suffix == SAFETENSORS_SUFFIX:
                raise WeightsUnavailableError(f"{path.name} is not a readable safetensors file ({err})") from None
    if not zipfile.is_zipfile(path):
        raise WeightsUnavailableError(f"{path.name} is neither a safetensors file nor a PyTorch weights file "
                                      "(torch.save zip archive): it cannot hold model weights")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # pickled objects other than tensors, truncated archives
        raise WeightsUnavailableError(f"{path.name} cannot be read as plain weights ({type(err).__name__}); "
                                      "save the state dict with safetensors or torch.save(state_dict)") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{path.name} holds no state dict of tensors")
    return {k: tuple(v.shape) for k, v in obj.items()}


def check_checkpoint(model: str, path: str | Path) -> str:
    """Raise WeightsUnavailableError with the reason when ``path`` cannot be loaded into open_clip ``model``;
    return a one-line description when it can ('safetensors, 151 tensors, 87.8M values, fits ViT-B-32')."""
    import open_clip

    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsUnavailableError(f"no file at {path}")
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise WeightsUnavailableError(f"{path} cannot be read ({err.strerror})") from None
    shapes = {k.removeprefix("module."): v for k, v in _checkpoint_shapes(path).items()}
    with torch.device("meta"):
        net = open_clip.create_model(model, device="meta")
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    wrong = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k] and k not in RESIZED)
    if missing or wrong:
        what = (f"{len(missing)} of its {len(want)} weights are missing (e.g. {', '.join(missing[:3])})" if missing
                else f"{len(wrong)} weights have other shapes (e.g. {wrong[0]}: {shapes[wrong[0]]} in the file, "
                     f"{want[wrong[0]]} in {model})")
        raise WeightsUnavailableError(f"{path.name} does not fit architecture {model}: {what}. Is the architecture "
                                      "name right?")
    kind = "safetensors" if path.suffix == SAFETENSORS_SUFFIX else "PyTorch weights"
    n = sum(int(torch.Size(s).numel()) for k, s in shapes.items() if k in want)
    return f"{kind}, {len(shapes)} tensors, {n / 1e6:.1f}M values, fits {model}"


def network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can a TCP connection to host:port be opened within ``timeout`` seconds (name resolution included)?"""
    box: dict = {}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                box["ok"] = True
        except OSError:
            box["ok"] = False

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(box.get("ok"))


def mb_progress_class(report: Callable[[float, float | None], None]):
    """A tqdm-compatible class for ``huggingface_hub.hf_hub_download(tqdm_class=...)`` that calls
    ``report(done_mb, total_mb)`` as bytes arrive."""
    from tqdm.auto import tqdm

    class MBProgress(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            total = self.total / 2**20 if self.total else None
            report(self.n / 2**20, total)
            return out

    return MBProgress
