"""Datasets of images for mining, probing and embedding.

A dataset is a list of :class:`ImageItem` (a file and its labels) plus a name.
Sources: an image folder (one subfolder per class, or flat), a list of files,
the built-in samples, torchvision sets with download (CIFAR-10, STL-10; exported
to an image folder on first use), and the Geirhos cue-conflict stimuli.

:func:`open_dataset` parses the spec strings the CLI and dashboard accept.
:func:`iter_batches` decodes each image once per pass through a DataLoader and
reports the files it had to skip instead of failing the run.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from vizcore.data.stimuli import SUBSET_FOLDERS

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class ImageItem:
    """One image file and its labels (``label`` is the default; ``labels`` may hold more)."""

    path: str
    label: str | None = None
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    #: how reports name this item when it cannot be read ("list.txt line 3" for a list entry,
    #: so a list's text is never echoed); the path when empty
    origin: str = field(default="", compare=False)

    @property
    def shown(self) -> str:
        return self.origin or self.path

    def get_label(self, kind: str = "class") -> str | None:
        if kind in ("class", "label", None):
            return self.label
        return self.labels.get(kind)


@dataclass
class ImageDataset:
    """A named list of images. Cheap to build; nothing is decoded until iterated."""

    name: str
    items: list[ImageItem]
    root: str | None = None
    #: entries left out while listing, as ``{"file", "error"}`` (for a list: ``"<list> line N"``
    #: and the reason, never the line's text)
    unlisted: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> list[str]:
        return [it.path for it in self.items]

    def labels(self, kind: str = "class") -> list[str | None]:
        return [it.get_label(kind) for it in self.items]

    def classes(self, kind: str = "class") -> list[str]:
        return sorted({lab for lab in self.labels(kind) if lab is not None})

    def fingerprint(self) -> str:
        """A stable hash of paths, sizes and mtimes: changes when any file does."""
        h = hashlib.sha256(self.name.encode())
        for it in self.items:
            try:
                st = os.stat(it.path)
                h.update(f"{it.path}\0{st.st_size}\0{st.st_mtime_ns}\0{it.label}\n".encode())
            except OSError:
                h.update(f"{it.path}\0missing\n".encode())
        return h.hexdigest()[:20]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ImageDataset":
        return ImageDataset(name or f"{self.name}[{len(indices)}]", [self.items[i] for i in indices], self.root,
                            list(self.unlisted))

    def evenly_spaced(self, n: int | None) -> "ImageDataset":
        """``n`` images spread evenly over the dataset (:func:`evenly_spaced`), named ``NAME (n of N)``;
        the whole dataset when ``n`` is 0, ``None`` or at least its size. A folder sorted by class
        keeps every class."""
        if not n or n >= len(self):
            return self
        return self.subset(evenly_spaced(len(self), n), name=f"{self.name} ({int(n)} of {len(self)})")

    def first(self, n: int | None) -> "ImageDataset":
        """The first ``n`` images, named ``NAME[:n]``; the whole dataset when ``n`` is 0, ``None`` or at
        least its size."""
        if not n or n >= len(self):
            return self
        return self.subset(range(int(n)), name=f"{self.name}[:{int(n)}]")

    def to_json(self) -> dict:
        return {"name": self.name, "root": self.root, "n_images": len(self), "fingerprint": self.fingerprint()}


def evenly_spaced(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)``, first index 0: ``round(i * n_total / n)``.

    The one rule for "N evenly spaced images" everywhere (pages, benchmarks), so the same ``n``
    picks the same images; all indices when ``n >= n_total``.
    """
    n_total, n = int(n_total), int(n)
    if n >= n_total:
        return list(range(n_total))
    if n < 1:
        return []
    return sorted({round(i * n_total / n) for i in range(n)})


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _labels_csv(root: Path) -> dict[str, str]:
    """Labels for a flat folder from ``labels.csv`` with ``file`` and ``label`` columns, if present."""
    import csv

    f = root / "labels.csv"
    if not f.is_file():
        return {}
    with f.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        return {}
    return {r["file"]: r["label"] for r in rows}


class WalkLimitError(ValueError):
    """A folder or list too large to list within the bounds; the message says which bound."""


def walk_limits() -> tuple[int, float]:
    """``(max files, max seconds)`` for listing a folder or list: ``$VIZCORE_MAX_WALK_FILES``
    (default 200,000) and ``$VIZCORE_MAX_WALK_SECONDS`` (default 30)."""
    try:
        files = int(os.environ.get("VIZCORE_MAX_WALK_FILES", "200000"))
        seconds = float(os.environ.get("VIZCORE_MAX_WALK_SECONDS", "30"))
    except ValueError:
        raise ValueError("VIZCORE_MAX_WALK_FILES and VIZCORE_MAX_WALK_SECONDS must be numbers") from None
    return files, seconds


#: ``progress(entries seen, images found)`` while a folder or list is listed
WalkProgress = Callable[[int, int], None]


class _Walk:
    """The bounds and the progress report of one listing (files seen, seconds spent)."""

    def __init__(self, what: str, max_files: int | None, max_seconds: float | None,
                 progress: WalkProgress | None, roots: Sequence[Path] | None):
        limit_files, limit_seconds = walk_limits()
        self.what, self.roots, self.progress = what, roots, progress
        self.max_files = limit_files if max_files is None else max_files
        self.max_seconds = limit_seconds if max_seconds is None else max_seconds
        self.t0 = self.last = time.monotonic()
        self.seen = self.found = 0

    def tick(self, is_image: bool = False) -> None:
        self.seen += 1
        self.found += is_image
        if self.seen > self.max_files:
            raise WalkLimitError(f"stopped listing {self.what}: more than {self.max_files:,} entries "
                                 "(VIZCORE_MAX_WALK_FILES); choose a smaller folder or list")
        if self.seen % 256 == 0:
            now = time.monotonic()
            if now - self.t0 > self.max_seconds:
                raise WalkLimitError(f"stopped listing {self.what}: more than {self.max_seconds:g} s "
                                     f"({self.seen:,} entries seen; VIZCORE_MAX_WALK_SECONDS); choose a "
                                     "smaller folder or list")
            if self.progress is not None and now - self.last > 0.2:
                self.last = now
                self.progress(self.seen, self.found)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.seen, self.found)

    def allowed(self, path: str) -> bool:
        if self.roots is None:
            return True
        from vizcore.data.roots import is_allowed

        return is_allowed(path, self.roots)


def _image_entry(e: os.DirEntry, walk: _Walk) -> bool:
    """An image file by name; a symlink must point to a file under the allowed roots."""
    if e.name.startswith(".") or os.path.splitext(e.name)[1].lower() not in IMAGE_EXTS:
        return False
    try:
        if not e.is_file():  # follows a symlink: a dangling one or one to a folder is not an image
            return False
    except OSError:
        return False
    return not e.is_symlink() or walk.allowed(e.path)


def _scan(folder: str | os.PathLike, walk: _Walk, *, hidden_dirs: bool,
          strict: bool = False) -> tuple[list[str], list[str]]:
    """``(image files, subfolders)`` of one folder, each entry counted against the bounds as it
    is read (a folder of millions of entries stops at the bound, not after listing them all).

    Symlinked subfolders are returned only when allowed; hidden subfolders only with ``hidden_dirs``.
    An unreadable folder gives nothing (an unreadable subfolder is left out as an unreadable file
    is), or ``PermissionError`` with ``strict``.
    """
    images, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for e in it:
                is_img = _image_entry(e, walk)
                walk.tick(is_img)
                if is_img:
                    images.append(e.path)
                    continue
                if not hidden_dirs and e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()  # follows a symlink
                except OSError:
                    continue
                if is_dir and (not e.is_symlink() or walk.allowed(e.path)):
                    dirs.append(e.path)
    except PermissionError:
        if strict:
            raise PermissionError(f"cannot read the folder {folder}: permission denied") from None
    except OSError:
        if strict:
            raise
    return images, dirs


def _images_below(folder: str, walk: _Walk) -> list[str]:
    """Every image file under ``folder`` (any depth, symlinked folders followed once)."""
    out, stack, visited = [], [folder], set()
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in visited:  # a symlink loop, or a folder reached twice
            continue
        visited.add(real)
        images, dirs = _scan(d, walk, hidden_dirs=True)
        out += images
        stack += dirs
    return sorted(out, key=Path)


def image_folder(root: str | os.PathLike, *, name: str | None = None, roots: Sequence[Path] | None = None,
                 progress: WalkProgress | None = None, max_files: int | None = None,
                 max_seconds: float | None = None) -> ImageDataset:
    """A folder with one subfolder per class (labels = subfolder names), or flat.

    A flat folder takes labels from a ``labels.csv`` (columns ``file``, ``label``) if it has one.
    The walk is bounded (:func:`walk_limits`, or ``max_files`` entries and ``max_seconds``) and
    raises :class:`WalkLimitError` beyond; ``progress(entries seen, images found)`` reports it.

    Args:
        roots: when given (the dashboard), symlinks that lead outside these resolved folders are
            left out (see :mod:`vizcore.data.roots`).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    walk = _Walk(str(root), max_files, max_seconds, progress, roots)
    flat, subs = _scan(root, walk, hidden_dirs=False, strict=True)
    flat_labels = _labels_csv(root)
    items = [ImageItem(p, flat_labels.get(os.path.basename(p))) for p in sorted(flat, key=Path)]
    for sub in sorted(subs, key=Path):
        label = os.path.basename(sub)
        items += [ImageItem(p, label) for p in _images_below(sub, walk)]
    walk.done()
    if not items:
        raise ValueError(f"no images found in {root}")
    return ImageDataset(name or root.name, items, str(root))


def image_list(path: str | os.PathLike, *, name: str | None = None, roots: Sequence[Path] | None = None,
               progress: WalkProgress | None = None, max_files: int | None = None,
               max_seconds: float | None = None) -> ImageDataset:
    """A text file listing one image per line (relative to the list's folder; ``#`` comments).

    Lines that name no image file (missing, a folder, not an image type, outside ``roots``)
    are left out and recorded in :attr:`ImageDataset.unlisted` by line number and reason,
    never by their text: the list may be any file (a config with a password, say). Entries
    that later fail to decode are reported as ``"<list> line N"`` for the same reason.
    Raises ``ValueError`` when no line names an image, with the count and first line numbers.
    """
    p = Path(path).expanduser()
    label = p.name
    walk = _Walk(label, max_files, max_seconds, progress, roots)
    try:
        with p.open("rb") as fh:
            raw = fh.read(64 * 2**20 + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {p}") from None
    except PermissionError:
        raise PermissionError(f"cannot read {p}: permission denied") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{p} is a folder, not a list") from None
    if len(raw) > 64 * 2**20:
        raise WalkLimitError(f"{label} is larger than 64 MB; a list of images is much smaller")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{label} is not a text list of image paths (not UTF-8 text)") from None
    if "\0" in text:
        raise ValueError(f"{label} is not a text list of image paths (binary data)")
    items, unlisted = [], []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = (p.parent / line).expanduser()
        reason = None
        if "\0" in line:
            reason = "not a path"
        elif f.suffix.lower() not in IMAGE_EXTS:
            reason = "not an image file name"
        elif not walk.allowed(str(f)):
            reason = "outside the allowed folders"
        else:
            try:
                if not f.is_file():
                    reason = "no such file"
            except OSError:
                reason = "unreadable path"
        walk.tick(reason is None)
        where = f"{label} line {n}"
        if reason:
            unlisted.append({"file": where, "error": reason})
        else:
            items.append(ImageItem(str(f.resolve()), Path(line).parent.name or None, origin=where))
    walk.done()
    if not items:
        if not unlisted:
            raise ValueError(f"{label} lists no files")
        lines = ", ".join(s["file"].rsplit(" ", 1)[1] for s in unlisted[:5])
        more = ", …" if len(unlisted) > 5 else ""
        reasons = ", ".join(sorted({s["error"] for s in unlisted}))
        raise ValueError(f"{label} lists no readable image: {len(unlisted)} line(s) skipped "
                         f"(lines {lines}{more}: {reasons})")
    return ImageDataset(name or p.stem, items, str(p.parent), unlisted)


def file_list(paths: Sequence[str | os.PathLike], *, name: str = "files",
              roots: Sequence[Path] | None = None) -> ImageDataset:
    """Explicit files (labels = parent folder names); a ``.txt`` file lists one path per line
    (see :func:`image_list`)."""
    out: list[ImageItem] = []
    unlisted: list[dict] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.suffix.lower() == ".txt" and p.is_file():
            try:
                sub = image_list(p, roots=roots)
            except ValueError:
                if len(paths) == 1:
                    raise
                unlisted.append({"file": p.name, "error": "lists no readable image"})
                continue
            out += sub.items
            unlisted += sub.unlisted
        else:
            out.append(ImageItem(str(p), p.parent.name or None))
    if not out:
        raise ValueError("empty file list")
    return ImageDataset(name, out, unlisted=unlisted)


def samples_dataset() -> ImageDataset:
    """The built-in sample photographs (see :mod:`vizcore.data.samples`)."""
    from vizcore.data.samples import sample_names, sample_path

    return ImageDataset("samples", [ImageItem(str(sample_path(n)), n) for n in sample_names()])


TORCHVISION_SETS = {"cifar10": "CIFAR10", "stl10": "STL10"}


def torchvision_dataset(name: str, root: str | os.PathLike | None = None, *, split: str = "test",
                        download: bool = True, limit: int | None = None) -> ImageDataset:
    """CIFAR-10 or STL-10 via torchvision (downloaded on first use), exported once as PNGs.

    Exporting to an image folder gives these sets the same fingerprint, caching
    and per-file provenance as any folder of images.
    """
    from vizcore.cache import cache_root

    key = name.lower()
    if key not in TORCHVISION_SETS:
        raise KeyError(f"unknown torchvision dataset {name!r}; choose from {', '.join(TORCHVISION_SETS)}")
    root = Path(root or cache_root() / "datasets").expanduser()
    export = root / f"{key}-{split}-png"
    done = export / ".complete"
    if not done.exists():
        import torchvision.datasets as tvd

        cls = getattr(tvd, TORCHVISION_SETS[key])
        kwargs = {"train": split == "train"} if key == "cifar10" else {"split": split}
        try:
            ds = cls(str(root), download=download, **kwargs)
        except Exception as e:  # noqa: BLE001 - no network, bad archive, ...
            raise RuntimeError(f"cannot get {name} ({e}); download it with network access "
                               f"or place it under {root}") from None
        classes = list(ds.classes)
        tmp = export.with_suffix(".part")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of an interrupted export
        n = len(ds) if limit is None else min(limit, len(ds))
        for i in range(n):
            img, y = ds[i]
            d = tmp / classes[y]
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i:06d}.png")
        if export.exists():
            shutil.rmtree(export)
        os.replace(tmp, export)
        done.touch()
    return image_folder(export, name=f"{key}-{split}")


def cue_conflict_dataset(root: str | os.PathLike, subset: str = "cue-conflict", *,
                         drop_same: bool = True) -> ImageDataset:
    """The Geirhos et al. stimuli (layout of rgeirhos/texture-vs-shape ``stimuli/``).

    ``subset`` is ``cue-conflict`` (labels ``shape`` and ``texture`` from the file
    name ``<shape><i>-<texture><j>.png``; ``label`` is the shape), ``silhouettes``
    or ``edges`` (``label`` = class folder). ``root`` may be the stimuli root or
    the cue-conflict folder itself. With ``drop_same`` the images whose shape and
    texture class coincide are left out, as in the standard protocol.
    """
    import re

    root = Path(root).expanduser()
    if subset not in SUBSET_FOLDERS:
        raise KeyError(f"unknown stimuli subset {subset!r}; choose from {', '.join(SUBSET_FOLDERS)}")
    base = root / SUBSET_FOLDERS[subset]
    if not base.is_dir() and subset == "cue-conflict" and root.is_dir():
        base = root  # the cue-conflict folder itself was given
    if not base.is_dir():
        raise FileNotFoundError(f"no {subset} stimuli under {root} (expected {SUBSET_FOLDERS[subset]}/)")
    items = []
    pat = re.compile(r"^([a-z]+)\d+-([a-z]+)\d+$")
    for cls in sorted(d for d in base.iterdir() if d.is_dir()):
        for p in sorted(cls.iterdir()):
            if not _is_image(p):
                continue
            if subset == "cue-conflict":
                m = pat.match(p.stem)
                if not m:
                    continue
                shape, texture = m.groups()
                if drop_same and shape == texture:
                    continue
                items.append(ImageItem(str(p), shape, {"shape": shape, "texture": texture}))
            else:
                items.append(ImageItem(str(p), cls.name, {"shape": cls.name}))
    if not items:
        raise ValueError(f"no stimuli found in {base}")
    return ImageDataset(subset, items, str(root))


def _looks_like_text(p: Path) -> bool:
    """Whether a file starts as UTF-8 text without NUL bytes (a list, not an image)."""
    try:
        with p.open("rb") as fh:
            head = fh.read(8192)
    except OSError:
        return True  # image_list says why it cannot be read
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


_SPEC_PREFIXES: dict[str, Callable[[str | None], "ImageDataset"]] = {}
"""Dataset specs ``<prefix>`` / ``<prefix>:ARG`` opened by another module (``imagenet-samples``)."""


def register_spec_prefix(prefix: str, open_spec: Callable[[str | None], "ImageDataset"]) -> None:
    """Let :func:`open_dataset` open ``prefix`` and ``prefix:ARG`` with ``open_spec(ARG or None)``.

    The module that knows the dataset registers it beside its definition (imported by
    :mod:`vizcore.data`), so this module never imports it back."""
    if prefix in _SPEC_PREFIXES:
        raise ValueError(f"dataset spec {prefix!r} is registered twice")
    _SPEC_PREFIXES[prefix] = open_spec


def open_dataset(spec: str | os.PathLike, *, roots: Sequence[Path] | None = None,
                 progress: WalkProgress | None = None) -> ImageDataset:
    """Parse a dataset spec.

    - ``samples``: the built-in photographs;
    - ``imagenet-samples`` (or ``imagenet-samples:DIR``): one photo per ImageNet class
      (:mod:`vizcore.data.imagenet_samples`; ``$VIZCORE_IMAGENET_SAMPLES``, the cache, else a download);
    - ``cifar10`` / ``stl10`` (optionally ``cifar10:train``): torchvision sets;
    - ``cue-conflict:ROOT``, ``silhouettes:ROOT``, ``edges:ROOT``: Geirhos stimuli;
    - a folder path (class subfolders or flat); an image file; a text file (``.txt`` or
      any other text) is read as a list of images, one path per line (see :func:`image_list`).

    Args:
        roots: when given (the dashboard), every path the spec names must lie under these
            resolved folders (:func:`vizcore.data.roots.check_allowed`), and so must list
            entries and symlinks met while listing. ``None`` (the CLI): any path.
        progress: ``progress(entries seen, images found)`` while a folder or list is listed.
    """
    s = str(spec)
    if s == "samples":
        return samples_dataset()
    head, _, rest = s.partition(":")
    if roots is not None:
        from vizcore.data.roots import check_allowed

        # Both the whole spec and the part after a ``prefix:`` must be allowed paths: a prefix
        # that takes a folder (``cue-conflict:ROOT``) then cannot lead out, whichever it is;
        # a split name (``cifar10:test``) is a harmless relative path.
        for part in dict.fromkeys(x for x in (s, rest) if x):
            check_allowed(part, roots)
    if head in _SPEC_PREFIXES:
        return _SPEC_PREFIXES[head](rest or None)
    if head.lower() in TORCHVISION_SETS and (rest in ("", "train", "test", "unlabeled")):
        return torchvision_dataset(head, split=rest or "test")
    if head in SUBSET_FOLDERS and rest:
        return cue_conflict_dataset(rest, head)
    p = Path(s).expanduser()
    if p.is_dir():
        # A stimuli root is recognised by its layout.
        cue = SUBSET_FOLDERS["cue-conflict"]
        if (p / cue).is_dir() or p.name == cue:
            return cue_conflict_dataset(p, "cue-conflict")
        return image_folder(p, roots=roots, progress=progress)
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTS or not _looks_like_text(p):
            return file_list([p], name=p.stem)  # one image (Pillow reads more types than IMAGE_EXTS)
        return image_list(p, roots=roots, progress=progress)
    if p.exists():
        raise ValueError(f"{s} is neither a folder nor a file")
    raise FileNotFoundError(f"no such dataset: {s} (a folder, a .txt list, samples, imagenet-samples, cifar10, stl10, "
                            "or cue-conflict:ROOT)")


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, ds: ImageDataset, transform: Callable):
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        from vizcore.data.images import ImageLoadError, load_image

        try:
            return self.transform(load_image(self.ds.items[i].path)), i, ""
        except (ImageLoadError, OSError) as e:
            return None, i, str(e) or type(e).__name__


def collate_decoded(batch):
    ok = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, err) for x, i, err in batch if x is None]
    xs = _stack([x for x, _ in ok]) if ok else None
    return xs, [i for _, i in ok], bad


def _stack(xs: list):
    """Stack per-image tensors; tuples (one tensor per model's preprocessing) element-wise."""
    if isinstance(xs[0], (tuple, list)):
        return tuple(torch.stack(parts) for parts in zip(*xs))
    return torch.stack(xs)


@dataclass
class BatchReport:
    """Filled while iterating: the files that could not be decoded, with why."""

    skipped: list[dict] = field(default_factory=list)
    n_ok: int = 0


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def iter_batches(ds: ImageDataset, transform: Callable, *, batch_size: int = 32,
                 workers: int | None = None, report: BatchReport | None = None
                 ) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Yield ``(images (B, 3, H, W), dataset indices)``, each image decoded once.

    A ``transform`` that returns a tuple of tensors (one per model's preprocessing) yields a
    tuple of stacked batches instead.

    Unreadable files are skipped and recorded in ``report.skipped`` as
    ``{"file", "error"}``; the run never fails because of one bad file.
    """
    workers = default_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _Decoded(ds, transform), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_decoded, persistent_workers=False)
    report = report if report is not None else BatchReport()
    for xs, idx, bad in loader:
        report.skipped += [{"file": ds.items[i].shown, "error": err} for i, err in bad]
        if xs is not None:
            report.n_ok += len(idx)
            yield xs, idx
