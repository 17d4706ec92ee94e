"""Downloads that never hang: weights into the torch hub cache, atomically, with a short connect
timeout, and a quick probe of whether a host answers (``$VIZCORE_OFFLINE``, ``$VIZCORE_CONNECT_TIMEOUT``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from vizcore.models.building import WeightsInfo
from vizcore.models.checkpoints import WeightsError
from vizcore.models.registry import ModelSpec, WeightSource

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = float(os.environ.get("VIZCORE_CONNECT_TIMEOUT", "5"))


def hub_cache_path(source: WeightSource) -> Path | None:
    if source.kind != "url" or not source.filename:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / source.filename


def offline() -> bool:
    return os.environ.get("VIZCORE_OFFLINE", "").lower() in ("1", "true", "yes")


def download(url: str, dst: Path, *, progress: bool | Callable[[int, int | None], None] = True,
             check_hash: bool = False, timeout: float | None = None) -> Path:
    """Download ``url`` to ``dst`` atomically (temp file + rename), with a tqdm bar.

    ``progress``: ``True`` for the tqdm bar, or ``progress(bytes_done, bytes_total or None)``
    after every chunk (the dashboard's bar). Fails fast where there is no network: the
    connection attempt has a short timeout, so a machine without internet falls back within seconds.
    """
    from tqdm.auto import tqdm

    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    dst.parent.mkdir(parents=True, exist_ok=True)
    req = urllib.request.Request(url, headers={"User-Agent": "vizcore"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - https URLs from the registry
        total = int(resp.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name, suffix=".part")
        sha = hashlib.sha256()
        got = 0
        try:
            with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                               desc=dst.name, disable=progress is not True) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
                    got += len(chunk)
                    if callable(progress):
                        progress(got, total)
            if check_hash:
                m = re.search(r"-([a-f0-9]{6,})\.", dst.name)
                if m and not sha.hexdigest().startswith(m.group(1)):
                    raise WeightsError(f"checksum mismatch for {url}")
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dst


def try_download(source: WeightSource, progress: bool) -> Path | None:
    """Download into the hub cache, or ``None`` (with a logged reason) if that fails."""
    dst = hub_cache_path(source)
    if dst is None or offline():
        return None
    try:
        return download(source.url, dst, progress=progress, check_hash=source.check_hash)
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, WeightsError) as e:
        log.warning("download of %s failed: %s", source.url, e)
        return None


_REACHABLE: dict[tuple[str, int], bool] = {}


def host_reachable(url: str) -> bool:
    """Whether the URL's host accepts a connection now (one quick probe per host per process)."""
    parts = urllib.parse.urlparse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (host, port) not in _REACHABLE:
        try:
            socket.create_connection((host, port), timeout=min(2.0, CONNECT_TIMEOUT_S)).close()
            _REACHABLE[host, port] = True
        except OSError:
            _REACHABLE[host, port] = False
    return _REACHABLE[host, port]


def timm_pretrained(spec: ModelSpec, model: nn.Module, progress: bool) -> WeightsInfo | None:
    """timm models: use timm's own loader (Hugging Face hub cache, then download)."""
    import timm.models

    name = spec.name[len("timm/"):]
    try:
        if offline():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        else:
            # Only try the hub when it answers quickly; timm's loader can otherwise retry for minutes.
            socket.create_connection(("huggingface.co", 443), timeout=CONNECT_TIMEOUT_S).close()
        timm.models.load_checkpoint  # noqa: B018 - ensure timm is importable
        pretrained = timm.create_model(name, pretrained=True)
    except Exception as e:  # noqa: BLE001
        log.warning("timm weights for %s unavailable: %s", name, e)
        return None
    model.load_state_dict(pretrained.state_dict())
    return WeightsInfo("download", f"timm/Hugging Face hub: {name}")
