"""On-disk results cache and atomic writes.

Entries live under ``$VIZCORE_CACHE`` (default ``~/.cache/vizcore``), one
folder per kind, keyed by a hash of everything that determines the result.
Writes go to a temporary file renamed into place, so an interrupted run never
leaves a half-written entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    return Path(os.environ.get("VIZCORE_CACHE", Path.home() / ".cache" / "vizcore")).expanduser()


def cache_key(**parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be readable like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def entry_path(kind: str, key: str, suffix: str = ".pt") -> Path:
    return cache_root() / kind / f"{key}{suffix}"


def save_torch(kind: str, key: str, obj: Any) -> Path:
    """Save ``obj`` (tensors, dicts, lists, numbers, strings) atomically."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    path = entry_path(kind, key)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_torch(kind: str, key: str) -> Any | None:
    """The cached object, or ``None`` if absent or unreadable (a bad entry is removed)."""
    import torch

    path = entry_path(kind, key)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged entry is a miss, never a crash
        path.unlink(missing_ok=True)
        return None
