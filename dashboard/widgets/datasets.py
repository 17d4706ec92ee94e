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
    "imagenet-samples": "ImageNet sample images (1,000 photos, one per class)",
    "samples": "Built-in sample photographs (10)",
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
    if source == "imagenet-samples":
        return imagenet_samples_input(key), "class"
    if source in ("cifar10", "stl10"):
        st.caption("Downloaded by torchvision on first use (needs a network), then exported once as PNGs.")
        return (source if st.checkbox("Download / use it", key=f"{key}_dl_{source}") else ""), "class"
    return "samples", "class"


def imagenet_samples_input(key: str) -> str:
    """The ImageNet sample images: the folder found ($VIZCORE_IMAGENET_SAMPLES, the download cache,
    the reference copy beside a checkout), or a Download button (once, with progress, checked)."""
    from vizcore.data.imagenet_samples import SAMPLES_REPO, download_samples, find_samples

    found = find_samples(candidates=(SHARED_DATA / "imagenet-samples",))
    if found is not None:
        st.caption(f"From {found}.")
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
            st.error(str(e))
            return ""
        st.rerun()
    return ""


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
