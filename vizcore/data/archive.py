"""Downloading a data archive into place: the one way stimuli and sample images arrive.

Both the cue-conflict stimuli and the ImageNet sample images come as a zip archive of a
public repository. :func:`staged_download` refuses at once when downloads are off or the
target is taken, downloads into a temporary folder beside the target (so the final rename
stays on one file system), turns a failed connection into the caller's one-line error, and
always removes the temporary folder; :func:`install` renames the verified result into place.
The target therefore either holds complete, verified data or is left as it was.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def staged_download(url: str, dest: Path, filename: str, *, error: type[Exception], what: str, how: str,
                    progress: bool | Callable[[int, int | None], None] = True,
                    timeout: float | None = None) -> Iterator[tuple[Path, Path]]:
    """Download ``url`` as ``filename`` into a temporary folder beside ``dest``.

    Yields ``(work folder, archive path)``; the caller extracts and verifies inside the work
    folder, then calls :func:`install`. Raises ``error`` (with ``what`` and ``how`` in the
    message) when downloads are off, ``dest`` is taken, or the download fails.
    """
    from vizcore.models.downloads import CONNECT_TIMEOUT_S, download, offline

    if offline():
        raise error(f"{what} not found and downloads are off (VIZCORE_OFFLINE=1); {how}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise error(f"cannot download into {dest}: it exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        archive = work / filename
        try:
            download(url, archive, progress=progress, timeout=CONNECT_TIMEOUT_S if timeout is None else timeout)
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise error(f"cannot download the {what} ({reason}); {how}") from None
        yield work, archive
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install(out: Path, dest: Path) -> Path:
    """Rename the verified folder ``out`` to ``dest`` (an empty ``dest`` is replaced)."""
    if dest.is_dir():
        dest.rmdir()  # empty: staged_download checked it
    os.replace(out, dest)
    return dest
