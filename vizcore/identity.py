"""What a result came from: one function per ingredient, used by every cache key.

A cached result is only valid for the exact weights, preprocessing and data that
made it. Paths and labels are not enough: a checkpoint overwritten in place keeps
its path, and two processes that initialise the same architecture at random get
different weights unless they are seeded. So weights are identified by content (a
hash of every parameter and buffer), data by the dataset fingerprint (paths, sizes
and mtimes), and preprocessing by its full recipe. :func:`result_key` combines them.
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    import torch.nn as nn
    from PIL import Image

    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel

_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def state_digest(model: "nn.Module") -> str:
    """SHA-256 (24 hex digits) over every parameter and buffer of ``model``, names included.

    Computed once per module object (loaded models are never mutated); about 0.1 s per
    100 MB of weights on a laptop CPU.
    """
    with _LOCK:
        hit = _DIGESTS.get(model)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes()
                 if t.numel() else b"")
    digest = h.hexdigest()[:24]
    with _LOCK:
        _DIGESTS[model] = digest
    return digest


def _byte_dtype():
    import torch

    return torch.uint8


def weights_identity(lm: "LoadedModel") -> str:
    """The identity of ``lm``'s weights: ``<model name>@<content digest>``."""
    return f"{lm.spec.name}@{state_digest(lm.model)}"


def preprocess_identity(lm: "LoadedModel") -> dict:
    """The preprocessing recipe of ``lm`` as plain data."""
    return lm.spec.preprocess.to_json()


def data_identity(dataset: "ImageDataset") -> dict:
    """The dataset's name, size and fingerprint (changes when any file does)."""
    return {"name": dataset.name, "n": len(dataset), "fingerprint": dataset.fingerprint()}


def image_identity(image: "Image.Image | str | os.PathLike") -> str:
    """SHA-256 (24 hex digits) of an image's content: a file's bytes, or a PIL image's mode, size
    and pixels. Two copies of one photo share it; an edited file in place does not."""
    import os

    h = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()[:24]


def result_key(kind: str, version: int, lm: "LoadedModel | None" = None,
               dataset: "ImageDataset | None" = None, **settings: Any) -> str:
    """The cache key of one result: its kind and version, the weights and preprocessing of
    ``lm``, the data, and every setting that changes the result (JSON-serialisable)."""
    from vizcore.cache import cache_key

    parts: dict[str, Any] = {"kind": kind, "version": version, "settings": settings}
    if lm is not None:
        parts["weights"] = weights_identity(lm)
        parts["preprocess"] = preprocess_identity(lm)
    if dataset is not None:
        parts["data"] = data_identity(dataset)
    return cache_key(**parts)
