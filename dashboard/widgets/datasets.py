"""Dataset widgets of the dataset-driven pages: source choice, opening, errors.

Every path typed here is read only under the allowed roots (:mod:`vizcore.data.roots`:
``$VIZCORE_DATA_ROOTS``, by default home, working directory, cache and the reference data
beside the checkout); a folder walk is bounded and shows its progress.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import streamlit as st

from dashboard.widgets.errors import show_error
from dashboard.widgets.text import plain
from vizcore.data.roots import allowed_roots, check_allowed
from vizcore.jobs import RunOptions

# ----------------------------------------------------------------------- datasets
# The reference data beside a developer's checkout, offered as defaults when present.
SHARED_DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
DATASET_SOURCES = {
    "imagenet-samples": "ImageNet sample images (1,000 photos, one per class)",
    "samples": "Built-in sample photographs (10)",
    "folder": "Image folder (class subfolders or flat)",
    "cue-conflict": "Cue-conflict stimuli (Geirhos et al.)",
    "cifar10": "CIFAR-10 test set (download)",
    "stl10": "STL-10 test set (download)",
}


def _shared_default(name: str) -> str:
    return str(SHARED_DATA / name) if (SHARED_DATA / name).is_dir() else ""


def _as_path_spec(path: str) -> str:
    """A typed path as a spec that can only mean a path: ``x:y`` typed here must not be read as a
    ``cue-conflict:``/``cifar10``-style spec (which would skip the path checks), so a relative path
    gets ``./`` in front."""
    path = path.strip()
    if not path or path.startswith(("/", "~", ".")):
        return path
    return f"./{path}"


def dataset_input(key: str, sources: Sequence[str] = ("samples", "folder", "cue-conflict"),
                  folder_default: str = "") -> tuple[str, str]:
    """Dataset source widgets; returns (spec for ``vizcore.data.open_dataset`` or '', default label kind)."""
    source = st.radio("Images", list(sources), format_func=DATASET_SOURCES.__getitem__, key=f"{key}_source")
    if source == "folder":
        path = st.text_input("Folder (class subfolders or flat), or a .txt list of files", key=f"{key}_folder",
                             value=_shared_default(folder_default) if folder_default else "")
        return _as_path_spec(path), "class"
    if source == "cue-conflict":
        path = st.text_input("Stimuli root (holds style-transfer-preprocessed-512/)", key=f"{key}_cc",
                             value=_shared_default("cue-conflict"))
        return (f"cue-conflict:{path.strip()}" if path.strip() else ""), "shape"
    if source == "imagenet-samples":
        return imagenet_samples_input(key), "class"
    if source in ("cifar10", "stl10"):
        st.caption("Downloaded by torchvision on first use (needs a network), then exported once as PNGs.")
        return (source if st.checkbox("Download / use it", key=f"{key}_dl_{source}") else ""), "class"
    return "samples", "class"


def data_roots() -> tuple[Path, ...]:
    """The folders dashboard inputs may read: ``$VIZCORE_DATA_ROOTS``, or by default home,
    working directory, cache, and the reference data and stimuli this server offers as defaults."""
    extra = [SHARED_DATA] if SHARED_DATA.is_dir() else []
    if os.environ.get("VIZCORE_STIMULI", "").strip():
        extra.append(os.environ["VIZCORE_STIMULI"].strip())
    return allowed_roots(extra)


# ----------------------------------------------------------------------- short names
SESSION_DATASET = "session_dataset"
"""Session-state key of the session's dataset, as a short name (:mod:`vizcore.data.refs`): set by the
pages that mine top images (Dataset examples, Unit) and carried by the links between pages, like the
session's image."""


def offered_imagenet() -> Path | None:
    """The ImageNet sample images this server offers as ``imagenet-samples`` (found, not downloaded)."""
    from vizcore.data.imagenet_samples import find_samples

    return find_samples(candidates=(SHARED_DATA / "imagenet-samples",))


def offered_stimuli() -> str | None:
    """The cue-conflict stimuli root this server offers as ``stimuli``: $VIZCORE_STIMULI, the download
    cache, or the reference copy beside a checkout."""
    from vizcore.data.stimuli import default_stimuli_dir

    for p in (os.environ.get("VIZCORE_STIMULI", "").strip(), default_stimuli_dir(), SHARED_DATA / "cue-conflict"):
        if p and Path(p).is_dir():
            return str(p)
    return None


def dataset_ref(spec: str) -> str:
    """The short name of a dataset spec for an address (never a server path); raises
    ``PathNotAllowedError`` for a path outside :func:`data_roots`."""
    from vizcore.data.refs import dataset_ref as ref

    return ref(spec, data_roots(), imagenet=offered_imagenet(), stimuli=offered_stimuli())


def dataset_spec(ref: str) -> str:
    """The spec an address's dataset name stands for; raises ``DatasetRefError`` /
    ``PathNotAllowedError`` (one line each) for a name this server does not resolve."""
    from vizcore.data.refs import ref_spec

    return ref_spec(ref, data_roots(), imagenet=offered_imagenet(), stimuli=offered_stimuli())


def set_session_dataset(spec: str) -> str | None:
    """Make ``spec`` the session's dataset; returns its short name (``None`` when it has none)."""
    try:
        ref = dataset_ref(spec)
    except (PermissionError, ValueError):
        return None
    st.session_state[SESSION_DATASET] = ref
    return ref


def session_dataset() -> str | None:
    """The session's dataset as a short name, or ``None`` before one was chosen."""
    return st.session_state.get(SESSION_DATASET)


def imagenet_samples_input(key: str) -> str:
    """The ImageNet sample images: the folder found ($VIZCORE_IMAGENET_SAMPLES, the download cache,
    the reference copy beside a checkout), or a Download button (once, with progress, checked)."""
    from vizcore.data.imagenet_samples import SAMPLES_REPO, download_samples, find_samples

    found = find_samples(candidates=(SHARED_DATA / "imagenet-samples",))
    if found is not None:
        st.caption(f"From {plain(found)}.")
        return f"imagenet-samples:{found}"
    st.caption(f"Not on this machine yet: one download from [GitHub]({SAMPLES_REPO}), checked and cached "
               "(or set VIZCORE_IMAGENET_SAMPLES to a folder of them).")
    if st.button("Download", key=f"{key}_dl_imagenet", icon=":material/download:"):
        from dashboard.widgets.progress import progress_bar

        bar = progress_bar(f"{key}_dl", 0, 1, what="Downloading the ImageNet sample images", unit="kB",
                           rate_unit="kB")
        try:
            download_samples(progress=lambda d, t: progress_bar(
                f"{key}_dl", d // 1000, max(1, (t or d) // 1000), what="Downloading the ImageNet sample images",
                unit="kB", rate_unit="kB", bar=bar))
        except Exception as e:  # noqa: BLE001 - offline, bad archive: one clear message
            show_error(e, "Cannot download the ImageNet sample images")
            return ""
        st.rerun()
    return ""


def allowed_path_or_stop(path: str, what: str = "Path") -> str:
    """``path`` (stripped) when it lies under :func:`data_roots`; else one error line and ``st.stop()``."""
    try:
        check_allowed(path, data_roots())
    except (PermissionError, ValueError) as e:
        show_error(e, what)
        st.stop()
    return path.strip()


# Opened datasets, shared by all sessions like st.cache_resource, which cannot be used here: the
# walk draws its progress into the page, and a cached function may not draw outside itself.
_OPENED: OrderedDict = OrderedDict()
_OPENED_LOCK = threading.Lock()
_OPENED_MAX, _OPENED_TTL = 8, 600.0


def _open_dataset(spec: str, roots: tuple[Path, ...]):
    from vizcore.data.datasets import open_dataset, walk_limits

    key = (spec, roots)
    with _OPENED_LOCK:
        hit = _OPENED.get(key)
        if hit is not None and time.monotonic() - hit[0] < _OPENED_TTL:
            _OPENED.move_to_end(key)
            return hit[1]
    max_files, max_seconds = walk_limits()
    slot, t0 = st.empty(), time.monotonic()

    def progress(seen: int, found: int) -> None:
        frac = min(1.0, max(seen / max(1, max_files), (time.monotonic() - t0) / max(1e-9, max_seconds)))
        slot.progress(frac, text=f"Listing images: {seen:,} entries seen, {found:,} images (the listing "
                                 f"stops at {max_files:,} entries or {max_seconds:g} s)")

    try:
        with st.spinner("Opening the dataset…"):
            ds = open_dataset(spec, roots=roots, progress=progress)
    finally:
        slot.empty()
    with _OPENED_LOCK:
        _OPENED[key] = (time.monotonic(), ds)
        while len(_OPENED) > _OPENED_MAX:
            _OPENED.popitem(last=False)
    return ds


def open_dataset_or_stop(spec: str):
    """The dataset for ``spec``; an info or error message and ``st.stop()`` when there is none.

    Paths must lie under :func:`data_roots`. A list's skipped lines are shown by line number
    and reason, never by their text.
    """
    if not spec:
        st.info("Choose a dataset in the sidebar.")
        st.stop()
    try:
        ds = _open_dataset(spec, data_roots())
    except Exception as e:  # noqa: BLE001 - outside the roots, missing folder, no network, too many files, ...
        show_error(e, "Cannot open the dataset")
        st.stop()
    if ds.unlisted:
        with st.expander(f"{len(ds.unlisted)} entr{'y' if len(ds.unlisted) == 1 else 'ies'} of the list "
                         "skipped (not an image file)", icon=":material/warning:"):
            st.dataframe(ds.unlisted, hide_index=True)
    return ds


# ----------------------------------------------------------------------- engines
ENGINES = {"local": "This process", "ray": "Ray"}


def engine_input(key: str) -> str:
    """Where a dataset pass runs: ``local`` (default) or ``ray`` (Ray Data; the same results)."""
    return st.radio("Engine", list(ENGINES), format_func=ENGINES.__getitem__, horizontal=True,
                    key=f"{key}_engine",
                    help="Ray runs the pass on Ray Data workers: the cluster at $RAY_ADDRESS, else a local "
                         "Ray with this machine's CPUs (started once per dashboard process). Results are "
                         "identical and land in the same cache.")


@st.cache_resource(show_spinner="Starting Ray…")
def _ray(address: str | None):
    """Ray, initialised once per dashboard process (never on a rerun), shared by every session."""
    from vizcore.distributed import init_ray

    return init_ray(address)


def ray_or_stop():
    """The process's Ray (:class:`vizcore.distributed.RayInfo`); an error and ``st.stop()`` when it
    cannot start or be reached."""
    try:
        info = _ray(os.environ.get("RAY_ADDRESS") or None)
    except Exception as e:  # noqa: BLE001 - unreachable cluster, Ray not installed, ...
        st.error(plain(f"Ray is not available: {e}"))
        st.stop()
    st.caption(f"Ray at {plain(info.address)}: {info.cpus:g} CPUs, {info.gpus:g} GPUs")
    return info


def run_options(engine: str, batch_size: int = 16) -> RunOptions:
    """The run options of a page's job on ``engine``, in this process's threads (``workers=0``);
    with ``ray``, Ray is started or reached first (an error and ``st.stop()`` when it cannot be)."""
    if engine == "ray":
        ray_or_stop()
    return RunOptions(batch_size=batch_size, workers=0, engine=engine)
