"""On-disk results cache, its disk budget, and atomic writes.

Entries live under ``$VIZCORE_CACHE`` (default ``~/.cache/vizcore``), one
folder per kind, keyed by a hash of everything that determines the result
(:func:`vizcore.identity.result_key`). Writes go to a temporary file renamed into
place, so an interrupted run never leaves a half-written entry behind.

Budget. Results take at most ``$VIZCORE_CACHE_MAX_MB`` (default 5000) MB. An entry is one
file or folder directly inside a kind's folder (``patches/<key>.pt``, ``probes/<key>.json``,
...); reading it marks it used (its mtime: access times are unreliable on ``noatime``/``relatime``
mounts) and every :func:`save_torch` / :func:`save_json` then evicts the least recently used
entries until the total fits, never the one just written. Exported datasets (``datasets/``) and
downloaded stimuli (``stimuli/``) are data, not results: costly to get again and not
recomputable from anything in the cache, so they are outside the budget; ``vizcore cache info``
shows them and ``vizcore cache clear --kind datasets`` removes them on request.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_MB = 5000
DATA_KINDS = ("datasets", "stimuli")
"""Folders of the cache root that hold data (exported datasets, downloaded stimuli), not results."""
STALE_TMP_S = 3600
"""A temporary file older than this is a leftover of a killed write (counted and evictable);
younger ones may be a write in progress in another process and are left alone."""


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
    """Save ``obj`` (tensors, dicts, lists, numbers, strings) atomically, then keep the budget."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    path = entry_path(kind, key)
    atomic_write_bytes(path, buf.getvalue())
    enforce_budget(keep=path)
    return path


def load_torch(kind: str, key: str) -> Any | None:
    """The cached object, or ``None`` if absent or unreadable (a bad entry is removed)."""
    import torch

    path = entry_path(kind, key)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged entry is a miss, never a crash
        path.unlink(missing_ok=True)
        return None
    touch(path)
    return obj


def save_json(kind: str, key: str, obj: Any) -> Path:
    """Save a JSON-serialisable ``obj`` atomically as ``<kind>/<key>.json``, then keep the budget."""
    path = entry_path(kind, key, ".json")
    atomic_write_text(path, json.dumps(obj))
    enforce_budget(keep=path)
    return path


def load_json(kind: str, key: str) -> Any | None:
    """The cached JSON object, or ``None`` if absent or unreadable (a bad entry is removed)."""
    path = entry_path(kind, key, ".json")
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    touch(path)
    return obj


# ----------------------------------------------------------------------- budget
def cache_budget_mb() -> float:
    """The results budget in MB (``$VIZCORE_CACHE_MAX_MB``, default 5000), read at every use."""
    raw = os.environ.get("VIZCORE_CACHE_MAX_MB", "").strip()
    if not raw:
        return float(DEFAULT_CACHE_MAX_MB)
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"VIZCORE_CACHE_MAX_MB must be a number of MB, not {raw!r}") from None
    if mb < 0:
        raise ValueError(f"VIZCORE_CACHE_MAX_MB must not be negative, not {raw!r}")
    return mb


def touch(path: Path) -> None:
    """Mark an entry as just used (least recently used entries are evicted first)."""
    try:
        os.utime(path)
    except OSError:  # evicted by another process meanwhile, or a read-only cache: not an error
        pass


@dataclass(frozen=True)
class Entry:
    """One cache entry: a file or folder directly inside a kind's folder."""

    kind: str
    path: Path
    bytes: int
    last_used: float


def _tree(path: Path) -> tuple[int, float]:
    """Bytes and latest mtime of a file, or of everything under a folder."""
    st = path.stat()
    if not path.is_dir():
        return st.st_size, st.st_mtime
    size, latest = 0, st.st_mtime
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                s = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            size += s.st_size
            latest = max(latest, s.st_mtime)
    return size, latest


def kinds(root: Path | None = None) -> list[str]:
    """The kind folders under the cache root (results and data), sorted."""
    root = cache_root() if root is None else root
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def entries(which: Iterable[str] | None = None) -> list[Entry]:
    """Every entry of the result kinds (or of ``which``, data kinds included if named).

    Temporary files of writes in progress (younger than :data:`STALE_TMP_S`) are skipped.
    """
    root = cache_root()
    names = [k for k in kinds(root) if k not in DATA_KINDS] if which is None else list(which)
    now = time.time()
    out = []
    for kind in names:
        folder = root / kind
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        for p in children:
            try:
                size, used = _tree(p)
            except OSError:  # removed meanwhile
                continue
            if p.name.endswith((".tmp", ".part")) and now - used < STALE_TMP_S:
                continue
            out.append(Entry(kind, p, size, used))
    return out


def remove(entry: Entry) -> None:
    if entry.path.is_dir() and not entry.path.is_symlink():
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)


def enforce_budget(keep: Path | None = None, budget_mb: float | None = None) -> list[Entry]:
    """Evict the least recently used result entries until they fit the budget; return them.

    ``keep`` (the entry just written) is never evicted, even when it alone exceeds the budget:
    the caller is about to use it.
    """
    budget = int((cache_budget_mb() if budget_mb is None else budget_mb) * 2**20)
    found = entries()
    total = sum(e.bytes for e in found)
    if total <= budget:
        return []
    keep = Path(keep).resolve() if keep is not None else None
    evicted = []
    for e in sorted(found, key=lambda e: e.last_used):
        if total <= budget:
            break
        if keep is not None and e.path.resolve() == keep:
            continue
        remove(e)
        total -= e.bytes
        evicted.append(e)
    if evicted:
        log.info("results cache: evicted %d entries (%.1f MB) to stay within %.0f MB", len(evicted),
                 sum(e.bytes for e in evicted) / 2**20, budget / 2**20)
    return evicted


def info() -> dict:
    """Per kind: entries and MB, whether it counts towards the budget; the total against the budget."""
    root = cache_root()
    per_kind = {}
    for kind in kinds(root):
        found = entries([kind])
        per_kind[kind] = {"entries": len(found), "mb": sum(e.bytes for e in found) / 2**20,
                          "in_budget": kind not in DATA_KINDS}
    total = sum(k["mb"] for k in per_kind.values() if k["in_budget"])
    return {"root": str(root), "budget_mb": cache_budget_mb(), "results_mb": total,
            "data_mb": sum(k["mb"] for k in per_kind.values() if not k["in_budget"]), "kinds": per_kind}


def clear(kind: str | None = None) -> tuple[int, int]:
    """Remove every result entry (or every entry of ``kind``, data kinds included); return (entries, bytes).

    Raises:
        ValueError: ``kind`` is not a folder of the cache.
    """
    if kind is not None and kind not in kinds():
        known = ", ".join(kinds()) or "none yet"
        raise ValueError(f"no cache kind {kind!r} under {cache_root()} (kinds: {known})")
    found = entries(None if kind is None else [kind])
    for e in found:
        remove(e)
    return len(found), sum(e.bytes for e in found)
