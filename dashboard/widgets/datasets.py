"""Dataset widgets of the dataset-driven pages: source choice, opening, errors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import streamlit as st

# ----------------------------------------------------------------------- datasets
# The reference data beside a developer's checkout, offered as defaults when present.
SHARED_DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
DATASET_SOURCES = {
    "samples": "Built-in sample photographs",
    "folder": "Image folder (class subfolders or flat)",
    "cue-conflict": "Cue-conflict stimuli (Geirhos et al.)",
    "cifar10": "CIFAR-10 test set (download)",
    "stl10": "STL-10 test set (download)",
}


def _shared_default(name: str) -> str:
    return str(SHARED_DATA / name) if (SHARED_DATA / name).is_dir() else ""


def dataset_input(key: str, sources: Sequence[str] = ("samples", "folder", "cue-conflict"),
                  folder_default: str = "") -> tuple[str, str]:
    """Dataset source widgets; returns (spec for ``vizcore.data.open_dataset`` or '', default label kind)."""
    source = st.radio("Images", list(sources), format_func=DATASET_SOURCES.__getitem__, key=f"{key}_source")
    if source == "folder":
        path = st.text_input("Folder (class subfolders or flat), or a .txt list of files", key=f"{key}_folder",
                             value=_shared_default(folder_default) if folder_default else "")
        return path.strip(), "class"
    if source == "cue-conflict":
        path = st.text_input("Stimuli root (holds style-transfer-preprocessed-512/)", key=f"{key}_cc",
                             value=_shared_default("cue-conflict"))
        return (f"cue-conflict:{path.strip()}" if path.strip() else ""), "shape"
    if source in ("cifar10", "stl10"):
        st.caption("Downloaded by torchvision on first use (needs a network), then exported once as PNGs.")
        return (source if st.checkbox("Download / use it", key=f"{key}_dl_{source}") else ""), "class"
    return "samples", "class"


@st.cache_resource(show_spinner="Listing images…", max_entries=8, ttl=600)
def _open_dataset(spec: str):
    from vizcore.data import open_dataset

    return open_dataset(spec)


def open_dataset_or_stop(spec: str):
    """The dataset for ``spec``; an info or error message and ``st.stop()`` when there is none."""
    if not spec:
        st.info("Choose a dataset in the sidebar.")
        st.stop()
    try:
        return _open_dataset(spec)
    except Exception as e:  # noqa: BLE001 - missing folder, no network for a download, ...
        st.error(f"Cannot open dataset {spec!r}: {e}")
        st.stop()


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
        st.error(f"Ray is not available: {e}")
        st.stop()
    st.caption(f"Ray at {info.address}: {info.cpus:g} CPUs, {info.gpus:g} GPUs")
    return info
