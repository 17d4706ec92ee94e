"""ImageNet sample images: one photograph per ImageNet-1k class (1,000 in all).

The photos come from the public GitHub repository
`EliSchwartz/imagenet-sample-images <https://github.com/EliSchwartz/imagenet-sample-images>`_
(one validation image per class, named ``n<wnid>_<label>.JPEG``). They are downloaded once, as
the repository's zip archive, with a progress bar, checked and cached under
``<vizcore cache>/datasets/imagenet-samples``; extraction goes to a temporary folder renamed into
place, so the cache holds either the complete, checked set or nothing.

Checks: the archive must hold exactly the expected number of images (1,000), their WordNet ids must
be distinct ImageNet-1k classes, and, where a digest is given (:data:`SAMPLES_DIGEST` or
``digest=``), the content digest (:func:`samples_digest`: SHA-256 over the sorted
``<file>\\t<sha256 of file>`` lines, independent of how the archive was packed) must match. The
digest of the download is kept in ``manifest.json`` beside the photos.

Labels: each file's WordNet id gives its index in the standard ImageNet-1k order (the sorted
1,000 wnids, as in timm's ``imagenet_synsets.txt``); its name is the file name's ``<label>`` with
spaces for underscores (the repository's names, in which two classes are "crane" and two
"maillot": the index tells them apart); ``labels.csv`` has columns ``index, wnid, label, file``, like the copy in
``../shared/data/imagenet-samples`` (the same photos resized to a 256 px short side).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable

from vizcore.data.datasets import IMAGE_EXTS, ImageDataset, image_folder, register_spec_prefix

SAMPLES_REPO = "https://github.com/EliSchwartz/imagenet-sample-images"
SAMPLES_COMMIT = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"
"""The repository's commit the photos are downloaded from (its head since 2021): a fixed commit, so
the pinned digest below stays true whatever is pushed later."""
SAMPLES_URL = f"{SAMPLES_REPO}/archive/{SAMPLES_COMMIT}.zip"
SAMPLES_COUNT = 1000
SAMPLES_DIGEST: str | None = "4082281a3d0ae4ff1a1d5d4068f058df92d4e9fe573738096be2907d6b213d8d"
"""The :func:`samples_digest` of the 1,000 photos at :data:`SAMPLES_COMMIT`, computed from a
snapshot of that commit. It is over the files' bytes, not the zip's, so GitHub re-packing the
archive does not break it."""
ENV = "VIZCORE_IMAGENET_SAMPLES"
NAME = "imagenet-samples"

_FILE = re.compile(r"^(n\d{8})_(.+)$")


class SamplesError(RuntimeError):
    """ImageNet sample images that cannot be found, downloaded or verified; the message says what to do."""


def default_dir() -> Path:
    """Where downloaded samples live: ``<vizcore cache>/datasets/imagenet-samples``."""
    from vizcore.cache import cache_root

    return cache_root() / "datasets" / NAME


def imagenet_index() -> dict[str, int]:
    """wnid -> index in the standard ImageNet-1k order (the sorted WordNet ids)."""
    from timm.data import ImageNetInfo

    return {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}


def _complete(p: Path) -> bool:
    return p.is_dir() and (p / "labels.csv").is_file()


def find_samples(path: str | os.PathLike | None = None, candidates: tuple[str | os.PathLike, ...] = ()) -> Path | None:
    """The samples folder that is present now, without downloading, or ``None``.

    Order: ``path``, ``$VIZCORE_IMAGENET_SAMPLES``, the download cache, then ``candidates`` (e.g. a
    reference copy beside a checkout). A folder counts when it has a ``labels.csv``.
    """
    for p in (path, os.environ.get(ENV, "").strip() or None, default_dir(), *candidates):
        if p is not None and str(p).strip() and _complete(Path(p).expanduser()):
            return Path(p).expanduser()
    return None


def locate_samples(path: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True,
                   candidates: tuple[str | os.PathLike, ...] = ()) -> Path:
    """The samples folder to use (see :func:`find_samples`), downloading into the cache when allowed.

    Raises :class:`SamplesError` with a clear message when none is found and none can be had.
    """
    if path is not None and str(path).strip():
        p = Path(path).expanduser()
        if _complete(p):
            return p
        raise SamplesError(f"{p} holds no ImageNet sample images (expected labels.csv and the photos)")
    env = os.environ.get(ENV, "").strip()
    if env and not _complete(Path(env).expanduser()):
        raise SamplesError(f"${ENV}={env} holds no ImageNet sample images (expected labels.csv and the photos)")
    found = find_samples(None, candidates)
    if found is not None:
        return found
    if not download:
        raise SamplesError(f"ImageNet sample images not found: set {ENV} to a folder of them, "
                           f"or download them (spec `{NAME}`)")
    return download_samples(default_dir(), progress=progress)


def samples_digest(root: str | os.PathLike) -> str:
    """SHA-256 over the sorted lines ``<file name>\\t<sha256 of file>`` of the images in ``root``."""
    lines = sorted(f"{p.name}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in Path(root).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """The archive's ``n<wnid>_<label>.<image ext>`` files, each with its bare file name (no folders:
    nothing can be written outside the target)."""
    out = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
        if info.is_dir() or not _FILE.match(Path(name).stem) or Path(name).suffix.lower() not in IMAGE_EXTS:
            continue
        out.append((info, name))
    return out


def download_samples(dest: str | os.PathLike | None = None, *, url: str | None = None,
                     progress: bool | Callable[[int, int | None], None] = True,
                     count: int | str | None = "published", digest: str | None = "published",
                     timeout: float | None = None) -> Path:
    """Download the repository archive, extract its photos into ``dest`` and write ``labels.csv``.

    Args:
        dest: target folder (default :func:`default_dir`); must not exist or be empty.
        url: the archive (default :data:`SAMPLES_URL`).
        progress: ``True`` for a tqdm bar, or ``progress(bytes_done, bytes_total or None)``.
        count: images the archive must hold; ``"published"`` is :data:`SAMPLES_COUNT` (1,000),
            ``None`` any number.
        digest: expected :func:`samples_digest`; ``"published"`` is :data:`SAMPLES_DIGEST`
            (pinned), ``None`` skips the check.
        timeout: connection timeout in seconds (default ``$VIZCORE_CONNECT_TIMEOUT``, 5 s).

    Fails within seconds without network, at once with ``VIZCORE_OFFLINE=1``, and leaves ``dest``
    as it was on any failure.
    """
    from vizcore.data.archive import install, staged_download

    dest = Path(dest).expanduser() if dest is not None else default_dir()
    url = url or SAMPLES_URL
    if digest == "published":
        digest = SAMPLES_DIGEST
    if count == "published":
        count = SAMPLES_COUNT
    how = f"download {url}, unpack it and set {ENV} to the folder of photos"
    with staged_download(url, dest, "imagenet-sample-images.zip", error=SamplesError, what="ImageNet sample images", how=how,
                         progress=progress, timeout=timeout) as (work, archive):
        out = work / NAME
        out.mkdir()
        index = imagenet_index()
        rows, seen = [], {}
        try:
            with zipfile.ZipFile(archive) as zf:
                for info, name in _members(zf):
                    wnid, label = _FILE.match(Path(name).stem).groups()
                    if wnid not in index:
                        raise SamplesError(f"{name} in {url} is not an ImageNet-1k class ({wnid})")
                    if wnid in seen:
                        raise SamplesError(f"{url} holds two photos of class {wnid}: {seen[wnid]}, {name}")
                    seen[wnid] = name
                    with zf.open(info) as src, open(out / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    rows.append({"index": index[wnid], "wnid": wnid, "label": label.replace("_", " "), "file": name})
        except zipfile.BadZipFile as e:
            raise SamplesError(f"the download from {url} is not a valid zip archive ({e})") from None
        archive.unlink()
        if not rows:
            raise SamplesError(f"{url} holds no n<wnid>_<label> photos")
        if count is not None and len(rows) != count:
            raise SamplesError(f"incomplete ImageNet samples in {url}: {len(rows)} photos, expected {count}")
        got = samples_digest(out)
        if digest is not None and got != digest:
            raise SamplesError(f"checksum mismatch for the ImageNet samples from {url}: "
                               f"{got[:16]}… != {digest[:16]}…")
        rows.sort(key=lambda r: r["index"])
        with open(out / "labels.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["index", "wnid", "label", "file"])
            wr.writeheader()
            wr.writerows(rows)
        (out / "manifest.json").write_text(json.dumps({"url": url, "n_images": len(rows), "digest": got}, indent=1))
        return install(out, dest)


def imagenet_samples_dataset(path: str | os.PathLike | None = None, *, download: bool = True,
                             progress: bool = True, candidates: tuple[str | os.PathLike, ...] = ()) -> ImageDataset:
    """The ImageNet sample images as a dataset (label = class name, from ``labels.csv``)."""
    root = locate_samples(path, download=download, progress=progress, candidates=candidates)
    return image_folder(root, name=NAME)


register_spec_prefix("imagenet-samples", imagenet_samples_dataset)
