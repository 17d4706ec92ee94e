"""Short dataset names for addresses: what a shared link says instead of a server path.

A dashboard address (the unit page's ``dataset=``, the links between pages) must not carry
the server's folders: the person who receives the link learns nothing about the server's
disk from it, and cannot point the server anywhere by editing it. So an address names a
dataset by a short *reference* that the server resolves:

- ``builtin``: the built-in sample photographs (spec ``samples``, which is accepted too);
- ``imagenet-samples``: the ImageNet sample images this server offers;
- ``stimuli``: the cue-conflict stimuli this server offers (``silhouettes:stimuli`` and
  ``edges:stimuli`` for the other subsets);
- ``cifar10``, ``stl10`` (optionally ``cifar10:train``): the torchvision sets;
- ``<root>/<relative path>``: a folder, image or list under one of the allowed data roots
  (:mod:`vizcore.data.roots`), ``<root>`` being the root folder's name (``data/cats`` for
  ``/srv/data/cats`` when ``/srv/data`` is a root); a prefixed spec keeps its prefix
  (``cue-conflict:data/stimuli``).

:func:`dataset_ref` turns a spec (what :func:`vizcore.data.open_dataset` reads) into a
reference, :func:`ref_spec` turns a reference back into a spec, refusing anything that would
lead outside the roots, and :func:`resolve_dataset_ref` opens it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from vizcore.data.datasets import TORCHVISION_SETS, ImageDataset, WalkProgress, open_dataset
from vizcore.data.roots import PathNotAllowedError, check_allowed
from vizcore.data.stimuli import SUBSET_FOLDERS

BUILTIN = "builtin"
IMAGENET = "imagenet-samples"
STIMULI = "stimuli"


class DatasetRefError(ValueError):
    """A dataset reference the server cannot resolve; the message is one line meant for users."""


def root_names(roots: Sequence[Path]) -> dict[str, Path]:
    """Each root's name in references: its folder name (``root`` for ``/``), with ``-2``, ``-3``, …
    after names that repeat, in the order of ``roots``."""
    out: dict[str, Path] = {}
    for r in roots:
        base = r.name or "root"
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}-{n}"
        out[name] = r
    return out


def _same(a: str | os.PathLike, b: str | os.PathLike | None) -> bool:
    if b is None:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def path_ref(path: str | os.PathLike, roots: Sequence[Path]) -> str:
    """``<root name>/<relative path>`` of a path under ``roots`` (the most specific root it lies
    under; the path resolved through symlinks and ``..``); :class:`PathNotAllowedError` outside."""
    check_allowed(path, roots)
    real = Path(path).expanduser().resolve()
    best = None
    for name, r in root_names(roots).items():
        if (real == r or real.is_relative_to(r)) and (best is None or len(r.parts) > len(best[1].parts)):
            best = (name, r)
    if best is None:  # check_allowed passed, so this cannot happen; kept as a clear error
        raise PathNotAllowedError(f"{path} is outside the folders this dashboard may read")
    rel = real.relative_to(best[1]).as_posix()
    return f"{best[0]}/{'' if rel == '.' else rel}"


def dataset_ref(spec: str, roots: Sequence[Path], *, imagenet: str | os.PathLike | None = None,
                stimuli: str | os.PathLike | None = None) -> str:
    """The reference of a dataset spec, for an address (never an absolute path).

    Args:
        spec: a spec :func:`vizcore.data.open_dataset` reads (``samples``, ``imagenet-samples:DIR``,
            ``cue-conflict:ROOT``, a folder, ...); a relative path is taken from the working directory.
        roots: the resolved allowed folders (:func:`vizcore.data.roots.allowed_roots`).
        imagenet: the ImageNet samples folder the server offers as ``imagenet-samples``.
        stimuli: the stimuli root the server offers as ``stimuli``.

    Raises:
        PathNotAllowedError: the spec names a path outside ``roots`` (it has no reference).
    """
    s = str(spec).strip()
    if s in ("samples", BUILTIN):
        return BUILTIN
    head, sep, rest = s.partition(":")
    if head == IMAGENET and sep:
        return IMAGENET if not rest or _same(rest, imagenet) else f"{IMAGENET}:{path_ref(rest, roots)}"
    if s == IMAGENET:
        return IMAGENET
    if head.lower() in TORCHVISION_SETS and rest in ("", "train", "test", "unlabeled"):
        return s
    if head in SUBSET_FOLDERS and rest:
        if _same(rest, stimuli):
            return STIMULI if head == "cue-conflict" else f"{head}:{STIMULI}"
        return f"{head}:{path_ref(rest, roots)}"
    return path_ref(s, roots)


def _ref_path(ref: str, roots: Sequence[Path]) -> str:
    """The path of ``<root name>/<relative path>``; :class:`DatasetRefError` or
    :class:`PathNotAllowedError` when it names no root or leads outside one."""
    if "\0" in ref:
        raise DatasetRefError("a dataset name cannot contain a NUL character")
    if ref.startswith(("/", "~", "\\")) or (len(ref) > 1 and ref[1] == ":" and ref[0].isalpha()):
        raise DatasetRefError("an address names a dataset by a short name (builtin, imagenet-samples, stimuli, "
                              "or a data root's name and a path under it), not by a path on the server")
    name, _, rel = ref.partition("/")
    names = root_names(roots)
    if name not in names:
        raise DatasetRefError(f"unknown dataset {ref!r}: use builtin, imagenet-samples, stimuli, cifar10, stl10 "
                              f"or <root>/<path> under a data root of this server ({', '.join(names)})")
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetRefError(f"the dataset name {ref!r} leads out of its data root ('..')")
    path = names[name].joinpath(*parts)
    check_allowed(path, roots)  # a symlink under the root that leads out is refused here
    return str(path)


def ref_spec(ref: str, roots: Sequence[Path], *, imagenet: str | os.PathLike | None = None,
             stimuli: str | os.PathLike | None = None) -> str:
    """The spec a reference stands for (see :func:`dataset_ref`; the same ``imagenet`` and ``stimuli``).

    Raises:
        DatasetRefError: an unknown name, an absolute path, ``..``, or a name the server does not offer.
        PathNotAllowedError: a path that resolves (through a symlink) outside ``roots``.
    """
    r = str(ref).strip()
    if not r:
        raise DatasetRefError("no dataset named")
    if r in ("samples", BUILTIN):
        return "samples"
    if r == IMAGENET:
        return f"{IMAGENET}:{imagenet}" if imagenet is not None else IMAGENET
    head, sep, rest = r.partition(":")
    if head.lower() in TORCHVISION_SETS and rest in ("", "train", "test", "unlabeled"):
        return r
    if r == STIMULI or (head in SUBSET_FOLDERS and rest == STIMULI):
        if stimuli is None:
            raise DatasetRefError("this server offers no cue-conflict stimuli under the name 'stimuli'")
        return f"{'cue-conflict' if r == STIMULI else head}:{stimuli}"
    if sep and head in (*SUBSET_FOLDERS, IMAGENET):
        return f"{head}:{_ref_path(rest, roots)}"
    return _ref_path(r, roots)


def resolve_dataset_ref(ref: str, roots: Sequence[Path], *, imagenet: str | os.PathLike | None = None,
                        stimuli: str | os.PathLike | None = None,
                        progress: WalkProgress | None = None) -> ImageDataset:
    """Open the dataset a reference names (:func:`ref_spec`, then :func:`open_dataset` under ``roots``)."""
    return open_dataset(ref_spec(ref, roots, imagenet=imagenet, stimuli=stimuli), roots=roots, progress=progress)
