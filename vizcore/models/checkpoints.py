"""Checkpoint safety: read a weights file without running code, and fit it to an architecture.

Files are read with ``torch.load(weights_only=True)``; a file that is not a checkpoint, would
run code (its pickle names a global outside torch's allow-list), or holds NaN/Inf values is
refused with one line that says which (:func:`read_checkpoint`, :func:`apply_state_dict`).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from vizcore.models.registry import ModelSpec, WeightSource


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the architecture."""


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
