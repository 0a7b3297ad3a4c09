"""Loading and checking weight files safely, and the open_clip download with progress.

``load_weights(path)`` is the one loader of every weights file (local checkpoints, hub downloads, the built-in
model): safetensors, or a ``torch.save`` zip archive whose pickle is first scanned for globals that torch's
weights-only unpickler does not allow (``torch.serialization.get_unsafe_globals_in_checkpoint``, which
executes nothing) and then loaded with an explicit ``weights_only=True``. It never falls back to a full
unpickle, whatever the environment says (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only changes calls that do not
pass ``weights_only``); legacy pickles and TorchScript archives are refused. open_clip then only ever sees
the state dict (``backbones._load_weights``), never a path: its loader retries a failed safe load unsafely.

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


SAVE_HINT = "save the state dict with safetensors (safetensors.torch.save_file) or torch.save(state_dict)"


def _is_safetensors(path: Path) -> bool:
    """A .safetensors name, or (any name) an 8-byte little-endian header length that is not a zip archive."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    with open(path, "rb") as f:
        head = f.read(8)
    return (len(head) == 8 and head[:2] != b"PK" and int.from_bytes(head, "little") < 100_000_000
            and not zipfile.is_zipfile(path))


def _torch_load_safely(path: Path, mmap: bool = False):
    """``torch.load`` of a zip archive with weights only, after a static scan of its pickle; never unsafe."""
    if not zipfile.is_zipfile(path):
        raise WeightsUnavailableError(f"{path.name} is neither a safetensors file nor a PyTorch weights file "
                                      "(torch.save zip archive); legacy pickles are not loaded for safety: "
                                      f"{SAVE_HINT}")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # TorchScript archives, opcodes the weights-only unpickler lacks, broken archives
        raise WeightsUnavailableError(f"{path.name} cannot be read as plain weights ({type(err).__name__}: "
                                      f"{str(err)[:200]}); it is not loaded for safety: {SAVE_HINT}") from None
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:5])
        raise WeightsUnavailableError(f"{path.name} holds arbitrary Python objects ({shown}), which are not loaded "
                                      f"for safety: {SAVE_HINT}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # a pickle the weights-only unpickler refuses, truncated archives
        raise WeightsUnavailableError(f"{path.name} cannot be read as plain weights ({type(err).__name__}); it is "
                                      f"not loaded for safety: {SAVE_HINT}") from None


def _state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: unwrap {'state_dict': ...}, drop a DataParallel 'module.' prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{path.name} holds no state dict of tensors: {SAVE_HINT}")
    if all(str(k).startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (safetensors, or a torch.save zip of tensors), loaded without ever
    running its pickle's code; WeightsUnavailableError with the reason otherwise (see the module docstring)."""
    path = Path(path).expanduser()
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file
            try:
                obj = load_file(str(path), device="cpu")
            except Exception as err:
                raise WeightsUnavailableError(f"cannot read checkpoint {path}: {path.name} is not a readable "
                                              f"safetensors file ({err})") from None
        else:
            obj = _torch_load_safely(path)
    except OSError as err:
        raise WeightsUnavailableError(f"cannot read checkpoint {path} ({err.strerror}); check the path and its "
                                      "permissions") from None
    return _state_dict(obj, path)


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
    obj = _state_dict(_torch_load_safely(path, mmap=True), path)
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
