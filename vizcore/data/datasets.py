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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class ImageItem:
    """One image file and its labels (``label`` is the default; ``labels`` may hold more)."""

    path: str
    label: str | None = None
    labels: dict = field(default_factory=dict, hash=False, compare=False)

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
        return ImageDataset(name or f"{self.name}[{len(indices)}]", [self.items[i] for i in indices], self.root)

    def to_json(self) -> dict:
        return {"name": self.name, "root": self.root, "n_images": len(self), "fingerprint": self.fingerprint()}


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


def image_folder(root: str | os.PathLike, *, name: str | None = None) -> ImageDataset:
    """A folder with one subfolder per class (labels = subfolder names), or flat.

    A flat folder takes labels from a ``labels.csv`` (columns ``file``, ``label``) if it has one.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    flat_labels = _labels_csv(root)
    items = [ImageItem(str(p), flat_labels.get(p.name)) for p in sorted(root.iterdir()) if _is_image(p)]
    for sub in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        items += [ImageItem(str(p), sub.name) for p in sorted(sub.rglob("*")) if _is_image(p)]
    if not items:
        raise ValueError(f"no images found in {root}")
    return ImageDataset(name or root.name, items, str(root))


def file_list(paths: Sequence[str | os.PathLike], *, name: str = "files") -> ImageDataset:
    """Explicit files (labels = parent folder names); a ``.txt`` file lists one path per line."""
    out: list[ImageItem] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            out += [ImageItem(str((p.parent / ln).resolve()), Path(ln).parent.name or None) for ln in lines]
        else:
            out.append(ImageItem(str(p), p.parent.name or None))
    if not out:
        raise ValueError("empty file list")
    return ImageDataset(name, out)


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
    folders = {"cue-conflict": "style-transfer-preprocessed-512", "silhouettes": "filled-silhouettes",
               "edges": "edges"}
    if subset not in folders:
        raise KeyError(f"unknown stimuli subset {subset!r}; choose from {', '.join(folders)}")
    base = root / folders[subset]
    if not base.is_dir() and subset == "cue-conflict" and root.is_dir():
        base = root  # the cue-conflict folder itself was given
    if not base.is_dir():
        raise FileNotFoundError(f"no {subset} stimuli under {root} (expected {folders[subset]}/)")
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


def open_dataset(spec: str | os.PathLike) -> ImageDataset:
    """Parse a dataset spec.

    - ``samples``: the built-in photographs;
    - ``cifar10`` / ``stl10`` (optionally ``cifar10:train``): torchvision sets;
    - ``cue-conflict:ROOT``, ``silhouettes:ROOT``, ``edges:ROOT``: Geirhos stimuli;
    - a folder path (class subfolders or flat); a ``.txt`` file listing images; an image file.
    """
    s = str(spec)
    if s == "samples":
        return samples_dataset()
    head, _, rest = s.partition(":")
    if head.lower() in TORCHVISION_SETS and (rest in ("", "train", "test", "unlabeled")):
        return torchvision_dataset(head, split=rest or "test")
    if head in ("cue-conflict", "silhouettes", "edges") and rest:
        return cue_conflict_dataset(rest, head)
    p = Path(s).expanduser()
    if p.is_dir():
        # A stimuli root is recognised by its layout.
        if (p / "style-transfer-preprocessed-512").is_dir() or p.name == "style-transfer-preprocessed-512":
            return cue_conflict_dataset(p, "cue-conflict")
        return image_folder(p)
    if p.is_file():
        return file_list([p], name=p.stem)
    raise FileNotFoundError(f"no such dataset: {s} (a folder, a .txt list, samples, cifar10, stl10, "
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


def _collate(batch):
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
        collate_fn=_collate, persistent_workers=False)
    report = report if report is not None else BatchReport()
    for xs, idx, bad in loader:
        report.skipped += [{"file": ds.items[i].path, "error": err} for i, err in bad]
        if xs is not None:
            report.n_ok += len(idx)
            yield xs, idx
