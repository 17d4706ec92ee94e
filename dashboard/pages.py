"""Every page of the dashboard, once: its file, title, icon, address, section and what it is for.

The one list the navigation (``dashboard/app.py``), the links between pages
(:mod:`dashboard.widgets.links`, the overview) and the tests read; nothing else names a page
file. :meth:`PageInfo.page` makes the ``st.Page`` (a fresh object per script run:
``st.navigation`` marks its pages, so page objects are not shared between sessions).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageInfo:
    """One page: ``dashboard/app_pages/<name>.py``, answering at ``/<name>`` (the default page at ``/``)."""

    name: str
    title: str
    icon: str
    section: str
    summary: str = ""
    default: bool = False

    @property
    def file(self) -> Path:
        return ROOT / "app_pages" / f"{self.name}.py"

    @property
    def path(self) -> str:
        """The page file relative to the entry script, as ``st.switch_page``, ``st.page_link`` and
        ``AppTest.switch_page`` take it."""
        return f"app_pages/{self.name}.py"

    def page(self) -> st.Page:
        return st.Page(str(self.file), title=self.title, icon=self.icon, url_path=self.name, default=self.default)


# The default page is served at "/" only (its url_path is ignored), so it is a small overview page and
# every analysis page answers at its own address (/activations, /unit?model=..., ...).
HOME = PageInfo("home", "Overview", ":material/home:", "Start", default=True)
ACTIVATIONS = PageInfo("activations", "Activations", ":material/layers:", "Single network",
                       "every layer's channels for your image, predictions and Grad-CAM")
COMPARE = PageInfo("compare", "Compare", ":material/compare:", "Single network",
                   "the same image through several networks, aligned by depth")
ARCHITECTURES = PageInfo("architectures", "Architectures", ":material/account_tree:", "Single network",
                         "parameters, MACs and receptive fields, layer by layer")
EVIDENCE = PageInfo("evidence", "Evidence", ":material/travel_explore:", "Single network",
                    "where the evidence for a class lies, and how faithful each map is")
REGIONS = PageInfo("regions", "Regions and pixels", ":material/crop_free:", "Single network",
                   "R-CNN vs Fast R-CNN, RoIPool vs RoIAlign, Faster/Mask R-CNN, segmentation, transposed convolutions")
DATASET_EXAMPLES = PageInfo("dataset_examples", "Dataset examples", ":material/grid_view:", "What units want",
                            "the dataset patches that excite each channel most")
FEATURE_VIZ = PageInfo("feature_viz", "Feature visualisation", ":material/palette:", "What units want",
                       "images optimised to excite a channel")
UNIT = PageInfo("unit", "Unit", ":material/my_location:", "What units want",
                "one channel on one page, with a link you can share")
MODEL_ATLAS = PageInfo("model_atlas", "Model atlas", ":material/apps:", "What units want",
                       "every channel of a precomputed layer at a glance (vizcore precompute)")
PROBES = PageInfo("probes", "Linear probes", ":material/show_chart:", "What depth buys",
                  "what a linear classifier can read at each depth")
EMBEDDINGS = PageInfo("embeddings", "Embeddings", ":material/scatter_plot:", "What depth buys",
                      "maps of an early and a late layer")
SHAPE_BIAS = PageInfo("shape_bias", "Texture vs shape", ":material/pets:", "What depth buys",
                      "texture or shape: what the network decides by")
SIMILARITY = PageInfo("similarity", "Similarity", ":material/join_inner:", "What depth buys",
                      "how alike the layers of two networks are (CKA), and nearest neighbours")
CONCEPTS = PageInfo("concepts", "Concepts", ":material/hub:", "What depth buys",
                    "a layer's concepts and neuron groups, by matrix factorisation")
ATLAS = PageInfo("atlas", "Activation atlas", ":material/map:", "What depth buys",
                 "an activation atlas: a layer's vectors laid out and drawn cell by cell")

PAGES: tuple[PageInfo, ...] = (HOME, ACTIVATIONS, COMPARE, ARCHITECTURES, EVIDENCE, REGIONS, DATASET_EXAMPLES, FEATURE_VIZ,
                               UNIT, MODEL_ATLAS, PROBES, EMBEDDINGS, SHAPE_BIAS, SIMILARITY, CONCEPTS, ATLAS)
"""Every page, in navigation order."""


def navigation() -> dict[str, list[st.Page]]:
    """The ``st.Page`` objects of :data:`PAGES` by section, for ``st.navigation``."""
    out: dict[str, list[st.Page]] = {}
    for p in PAGES:
        out.setdefault(p.section, []).append(p.page())
    return out
