"""Binary packets for the browser components: a JSON header and little-endian typed arrays.

Streamlit's components v2 deliver ``bytes`` data to the browser as one ``Uint8Array``, without JSON or
base64 (a million map positions as float16 are 4 MB on the wire instead of ~11 MB of base64 float32
inside JSON). Layout::

    b"CVSP" | uint32 header length | header (UTF-8 JSON) | zero padding to 8 | array bytes ...

The header holds the component's other data plus ``arrays``: for each array its name, dtype code,
shape, byte offset (from the end of the padded header, 8-aligned) and byte length. ``map_canvas.js``
(``unpackPacket``) decodes it; :func:`unpack` is the same in Python, for tests.
"""
from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"CVSP"
#: dtype codes the browser decodes (map_canvas.js, ARRAY_TYPES) -> numpy little-endian dtypes
DTYPES = {"f4": "<f4", "f2": "<f2", "u1": "u1", "u2": "<u2", "i4": "<i4", "u4": "<u4"}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def pack(header: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """header: JSON-serialisable dict (must not use the key ``arrays``); arrays: name -> numpy array of
    one of :data:`DTYPES` (converted to little-endian; shapes are kept in the header)."""
    if "arrays" in header:
        raise ValueError("the header key 'arrays' is reserved for the array table")
    specs, blobs, offset = [], [], 0
    for name, a in (arrays or {}).items():
        a = np.asarray(a)
        code = _CODES.get(a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype)
        if code is None:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; the browser reads {sorted(DTYPES)}")
        data = np.ascontiguousarray(a, dtype=DTYPES[code]).tobytes()
        pad = (-offset) % 8
        blobs.append(b"\0" * pad)
        offset += pad
        specs.append({"name": name, "dtype": code, "shape": list(a.shape), "offset": offset, "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    head = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    prefix = MAGIC + struct.pack("<I", len(head)) + head
    prefix += b"\0" * ((-len(prefix)) % 8)
    return prefix + b"".join(blobs)


def unpack(buf: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The inverse of :func:`pack`: (header without ``arrays``, name -> array)."""
    if buf[:4] != MAGIC:
        raise ValueError("not a CVS packet")
    (length,) = struct.unpack("<I", buf[4:8])
    header = json.loads(buf[8:8 + length].decode())
    start = 8 + length + (-(8 + length)) % 8
    arrays = {}
    for s in header.pop("arrays"):
        raw = buf[start + s["offset"]:start + s["offset"] + s["nbytes"]]
        arrays[s["name"]] = np.frombuffer(raw, dtype=DTYPES[s["dtype"]]).reshape(s["shape"])
    return header, arrays
