"""The stimuli of Geirhos et al. (ICLR 2019): find them, or download and verify them once.

Paper: "ImageNet-trained CNNs are biased towards texture; increasing shape bias
improves accuracy and robustness", https://openreview.net/forum?id=Bygh9j09KX

The layout is that of the ``stimuli/`` folder of the public repository
rgeirhos/texture-vs-shape: one folder per subset (:data:`SUBSET_FOLDERS`), each
with one subfolder per category. :func:`locate_stimuli` finds a root (a given
folder, ``$VIZCORE_STIMULI``, the download cache) or downloads one
(:func:`download_stimuli`), checked against the published file counts and
:func:`stimuli_digest`. :func:`vizcore.data.cue_conflict_dataset` opens a subset
as a dataset; :mod:`vizcore.cueconflict` scores models on them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

REPO = "https://github.com/rgeirhos/texture-vs-shape"

#: Folder of each subset under a stimuli root.
SUBSET_FOLDERS = {"cue-conflict": "style-transfer-preprocessed-512", "silhouettes": "filled-silhouettes",
                  "edges": "edges"}
#: Files per subset in the published stimuli folder.
STIMULI_COUNTS = {"cue-conflict": 1280, "silhouettes": 160, "edges": 160}
#: :func:`stimuli_digest` of the published stimuli (all three subsets).
STIMULI_DIGEST = "d7b9df40907d16558cbbdb897200601b9ed7483beb1f69bb533c2232a4037105"
STIMULI_URL = f"{REPO}/archive/refs/heads/master.zip"


class StimuliError(RuntimeError):
    """Stimuli that cannot be found, downloaded or verified; the message says what to do."""


def _looks_like_cue_conflict(p: Path) -> bool:
    """A folder of class subfolders holding ``<shape><i>-<texture><j>.png`` files."""
    if not p.is_dir():
        return False
    for sub in p.iterdir():
        if sub.is_dir() and any("-" in f.stem for f in sub.glob("*.png")):
            return True
    return False


def _root_of(p: Path) -> Path | None:
    """``p`` if it is a stimuli root or the cue-conflict folder itself, else ``None``."""
    if (p / SUBSET_FOLDERS["cue-conflict"]).is_dir():
        return p
    if _looks_like_cue_conflict(p):
        return p
    return None


def default_stimuli_dir() -> Path:
    """Where downloaded stimuli live: ``<vizcore cache>/stimuli/texture-vs-shape``."""
    from vizcore.cache import cache_root

    return cache_root() / "stimuli" / "texture-vs-shape"


def locate_stimuli(path: str | os.PathLike | None = None, *, download: bool = True,
                   progress: bool = True) -> Path:
    """The stimuli root to use.

    Order: ``path`` (a stimuli root, or the cue-conflict folder alone; a missing or empty
    folder is downloaded into), then ``$VIZCORE_STIMULI``, then the download cache
    (:func:`default_stimuli_dir`), then a download into that cache. Raises
    :class:`StimuliError` with a clear message when none works (e.g. offline).
    """
    if path is not None and str(path).strip():
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise StimuliError(f"{p} is not a folder")
        if p.is_dir() and (root := _root_of(p)) is not None:
            return root
        if p.is_dir() and any(p.iterdir()):
            raise StimuliError(
                f"{p} holds no cue-conflict stimuli: expected {SUBSET_FOLDERS['cue-conflict']}/ "
                "(with filled-silhouettes/ and edges/) or class folders of <shape><i>-<texture><j>.png")
        if not download:
            raise StimuliError(f"no stimuli at {p}")
        return download_stimuli(p, progress=progress)
    env = os.environ.get("VIZCORE_STIMULI", "").strip()
    if env:
        p = Path(env).expanduser()
        root = _root_of(p) if p.is_dir() else None
        if root is None:
            raise StimuliError(f"$VIZCORE_STIMULI={env} holds no cue-conflict stimuli")
        return root
    cached = default_stimuli_dir()
    if cached.is_dir() and (root := _root_of(cached)) is not None:
        return root
    if not download:
        raise StimuliError("no stimuli found: pass --stimuli DIR or set VIZCORE_STIMULI")
    return download_stimuli(cached, progress=progress)


def stimuli_digest(root: str | os.PathLike, subsets: Sequence[str] = tuple(SUBSET_FOLDERS)) -> str:
    """SHA-256 over the sorted lines ``<relative path>\\t<sha256 of file>`` of the subsets' files.

    Independent of how the files were packed, so the same stimuli always give the same digest.
    """
    root = Path(root)
    lines = []
    for sub in subsets:
        base = root / SUBSET_FOLDERS[sub]
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if p.is_file():
                lines.append(f"{p.relative_to(root).as_posix()}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def _stimuli_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """Archive members under ``.../stimuli/<subset folder>/``, with their safe relative paths."""
    wanted = set(SUBSET_FOLDERS.values())
    out = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = info.filename.replace("\\", "/").split("/")
        if "stimuli" not in parts:
            continue
        rel = parts[parts.index("stimuli") + 1:]
        if len(rel) < 2 or rel[0] not in wanted:
            continue
        if any(part in ("", ".", "..") for part in rel) or info.filename.startswith("/"):
            raise StimuliError(f"unsafe path in archive: {info.filename!r}")
        out.append((info, "/".join(rel)))
    return out


def download_stimuli(dest: str | os.PathLike | None = None, *, url: str | None = None,
                     progress: bool = True, counts: dict[str, int] | None = None,
                     digest: str | None = "published", timeout: float | None = None) -> Path:
    """Download the texture-vs-shape repository archive and extract its ``stimuli/`` into ``dest``.

    ``url`` defaults to :data:`STIMULI_URL` (a GitHub archive of the repository).
    A tqdm bar shows the download. The extracted files must match ``counts``
    (files per subset; default :data:`STIMULI_COUNTS` with the published digest)
    and ``digest`` (:func:`stimuli_digest`; ``"published"`` is
    :data:`STIMULI_DIGEST`, ``None`` skips the check).
    Extraction goes to a temporary folder renamed into place, so ``dest``
    either holds complete, verified stimuli or is left as it was. Fails within
    seconds without network (``VIZCORE_OFFLINE=1`` fails at once).
    """
    from vizcore.data.archive import install, staged_download

    dest = Path(dest).expanduser() if dest is not None else default_stimuli_dir()
    url = url or STIMULI_URL
    if digest == "published":
        digest = STIMULI_DIGEST
        counts = STIMULI_COUNTS if counts is None else counts
    how = (f"download {url} and pass the folder holding its stimuli/ contents with --stimuli DIR "
           "(or set VIZCORE_STIMULI)")
    with staged_download(url, dest, "texture-vs-shape.zip", error=StimuliError, what="cue-conflict stimuli", how=how,
                         progress=progress, timeout=timeout) as (work, archive):
        out = work / "stimuli"
        try:
            with zipfile.ZipFile(archive) as zf:
                members = _stimuli_members(zf)
                if not members:
                    raise StimuliError(f"{url} holds no stimuli/ folder")
                for info, rel in members:
                    target = out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as e:
            raise StimuliError(f"the download from {url} is not a valid zip archive ({e})") from None
        archive.unlink()
        found = {sub: sum(1 for p in (out / folder).rglob("*") if p.is_file())
                 for sub, folder in SUBSET_FOLDERS.items()}
        if counts is not None:
            bad = {k: (found.get(k, 0), v) for k, v in counts.items() if found.get(k, 0) != v}
            if bad:
                detail = ", ".join(f"{k}: {got} files, expected {want}" for k, (got, want) in bad.items())
                raise StimuliError(f"incomplete stimuli in {url}: {detail}")
        if digest is not None and (got := stimuli_digest(out)) != digest:
            raise StimuliError(f"checksum mismatch for the stimuli from {url}: {got[:16]}… != {digest[:16]}…")
        return install(out, dest)
