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

Only what the cache wrote is the cache's. The cache root is also a default data root, so a user
may keep folders there: a folder under the root is a kind only if vizcore writes that kind
(:data:`RESULT_KINDS`, :data:`DATA_KINDS`) or holds the marker :data:`MARKER` that the cache
writes into every kind folder it creates; an entry of a result kind is a file or folder named
like a cache key (``<key>``, ``<key>.pt``, ``<key>.json``) or a stale temporary file of a write.
Symbolic links are never followed, counted or deleted, wherever they are; everything else under
the root is left alone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_MB = 5000
DATA_KINDS = ("datasets", "stimuli")
"""Folders of the cache root that hold data (exported datasets, downloaded stimuli), not results."""
RESULT_KINDS = ("embed", "featviz", "features", "patches", "probes", "shape_bias", "similarity")
"""Folders of results that vizcore writes (a new kind is marked with :data:`MARKER` when written)."""
MARKER = ".vizcore-cache"
"""A file the cache writes into each kind folder it creates: the folder is the cache's."""
KEY_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
"""What a key may be (:func:`cache_key` gives 24 hex digits); entries are ``<key>[.pt|.json]``."""
ENTRY_SUFFIXES = ("", ".pt", ".json")
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


def _check_name(what: str, name: str) -> None:
    if not KEY_PATTERN.fullmatch(name):
        raise ValueError(f"bad cache {what} {name!r}: letters, digits, '_' and '-' only "
                         "(at most 128, starting with a letter or digit)")


def _mark(folder: Path) -> None:
    """Create ``folder`` (a kind) and mark it as the cache's; a read-only cache is not an error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER
        if not marker.exists():
            marker.write_text("vizcore results cache: this folder's entries may be deleted by the cache\n")
    except OSError:
        pass


def entry_path(kind: str, key: str, suffix: str = ".pt") -> Path:
    """Where the entry ``key`` of ``kind`` lives (nothing is created: asking is not writing).

    Raises:
        ValueError: ``kind`` or ``key`` is not a plain name (no path separators, no dots).
    """
    _check_name("kind", kind)
    _check_name("key", key)
    return cache_root() / kind / f"{key}{suffix}"


def _regular_file(path: Path) -> bool:
    """A regular file, not a link (a link under the cache is someone else's: never read through it)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def save_torch(kind: str, key: str, obj: Any) -> Path:
    """Save ``obj`` (tensors, dicts, lists, numbers, strings) atomically, then keep the budget."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    path = entry_path(kind, key)
    _mark(path.parent)  # the kind's folder, created and marked as the cache's on its first write
    atomic_write_bytes(path, buf.getvalue())
    enforce_budget(keep=path)
    return path


def load_torch(kind: str, key: str) -> Any | None:
    """The cached object, or ``None`` if absent or unreadable (a bad entry is removed)."""
    import torch

    path = entry_path(kind, key)
    if not _regular_file(path):
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
    _mark(path.parent)  # the kind's folder, created and marked as the cache's on its first write
    atomic_write_text(path, json.dumps(obj))
    enforce_budget(keep=path)
    return path


def load_json(kind: str, key: str) -> Any | None:
    """The cached JSON object, or ``None`` if absent or unreadable (a bad entry is removed)."""
    path = entry_path(kind, key, ".json")
    if not _regular_file(path):
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
    """Bytes and latest mtime of a file, or of the regular files under a folder (links not followed)."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime
    size, latest = 0, st.st_mtime
    for dirpath, _dirs, files in os.walk(path):  # followlinks=False: a linked folder is not entered
        for f in files:
            try:
                s = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if stat.S_ISREG(s.st_mode):
                size += s.st_size
                latest = max(latest, s.st_mtime)
    return size, latest


def _real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(p.lstat().st_mode)
    except OSError:
        return False


def kinds(root: Path | None = None) -> list[str]:
    """The kind folders under the cache root (results and data), sorted: folders vizcore writes or
    that carry the cache's :data:`MARKER`; links and anyone else's folders are not kinds."""
    root = cache_root() if root is None else root
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    return sorted(p.name for p in children
                  if _real_dir(p) and (p.name in RESULT_KINDS or p.name in DATA_KINDS
                                       or (p / MARKER).is_file() and not (p / MARKER).is_symlink()))


def _is_entry(kind: str, p: Path) -> bool:
    """Whether ``p`` (a child of a kind folder) is something the cache wrote: never a link; in a data
    kind any file or folder; in a result kind a name like a key or a temporary file of a write."""
    try:
        mode = p.lstat().st_mode
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or p.name == MARKER:
        return False
    if kind in DATA_KINDS:
        return True
    if p.name.startswith(".") and p.name.endswith((".tmp", ".part")):
        return stat.S_ISREG(mode)
    for suffix in ENTRY_SUFFIXES:
        if suffix and not p.name.endswith(suffix):
            continue
        stem = p.name[: len(p.name) - len(suffix)] if suffix else p.name
        if KEY_PATTERN.fullmatch(stem) and (stat.S_ISDIR(mode) == (suffix == "")):
            return True
    return False


def entries(which: Iterable[str] | None = None) -> list[Entry]:
    """Every entry of the result kinds (or of ``which``, data kinds included if named).

    Temporary files of writes in progress (younger than :data:`STALE_TMP_S`) are skipped, and so is
    whatever the cache did not write (see the module's docstring).
    """
    root = cache_root()
    present = kinds(root)
    names = [k for k in present if k not in DATA_KINDS] if which is None else [k for k in which if k in present]
    now = time.time()
    out = []
    for kind in names:
        folder = root / kind
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        for p in children:
            if not _is_entry(kind, p):
                continue
            try:
                size, used = _tree(p)
            except OSError:  # removed meanwhile
                continue
            if p.name.endswith((".tmp", ".part")) and now - used < STALE_TMP_S:
                continue
            out.append(Entry(kind, p, size, used))
    return out


def remove(entry: Entry) -> None:
    """Delete one entry. A folder's links are removed as links (``shutil.rmtree`` never follows them)."""
    if _real_dir(entry.path):
        shutil.rmtree(entry.path, ignore_errors=True)
    elif not entry.path.is_symlink():
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
    keep = Path(keep).absolute() if keep is not None else None
    evicted = []
    for e in sorted(found, key=lambda e: e.last_used):
        if total <= budget:
            break
        if keep is not None and e.path.absolute() == keep:
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
