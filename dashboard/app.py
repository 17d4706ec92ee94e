"""Entry point: ``streamlit run dashboard/app.py``.

Routing with ``st.navigation``; page files live in ``dashboard/app_pages/`` and
hold UI only. The shared sidebar is drawn here before the page runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT.parent) not in sys.path:  # so `import vizcore` and `import dashboard` work from a clone
    sys.path.insert(0, str(ROOT.parent))

from dashboard.widgets.errors import errors_shown  # noqa: E402
from vizcore import apply_speed_settings  # noqa: E402

apply_speed_settings()

st.set_page_config(page_title="vizcore: what CNN layers learn", page_icon=":material/biotech:", layout="wide")

# The default page is served at "/" only (its url_path is ignored), so it is a small overview page and
# every analysis page answers at its own address (/activations, /unit?model=..., ...).
PAGES = {
    "Start": [
        st.Page(str(ROOT / "app_pages" / "home.py"), title="Overview", icon=":material/home:", url_path="home",
                default=True),
    ],
    "Single network": [
        st.Page(str(ROOT / "app_pages" / "activations.py"), title="Activations", icon=":material/layers:",
                url_path="activations"),
        st.Page(str(ROOT / "app_pages" / "compare.py"), title="Compare", icon=":material/compare:", url_path="compare"),
        st.Page(str(ROOT / "app_pages" / "architectures.py"), title="Architectures", icon=":material/account_tree:",
                url_path="architectures"),
        st.Page(str(ROOT / "app_pages" / "evidence.py"), title="Evidence", icon=":material/travel_explore:",
                url_path="evidence"),
    ],
    "What units want": [
        st.Page(str(ROOT / "app_pages" / "dataset_examples.py"), title="Dataset examples", icon=":material/grid_view:",
                url_path="dataset_examples"),
        st.Page(str(ROOT / "app_pages" / "feature_viz.py"), title="Feature visualisation", icon=":material/palette:",
                url_path="feature_viz"),
        st.Page(str(ROOT / "app_pages" / "unit.py"), title="Unit", icon=":material/my_location:", url_path="unit"),
        st.Page(str(ROOT / "app_pages" / "model_atlas.py"), title="Model atlas", icon=":material/apps:",
                url_path="model_atlas"),
    ],
    "What depth buys": [
        st.Page(str(ROOT / "app_pages" / "probes.py"), title="Linear probes", icon=":material/show_chart:", url_path="probes"),
        st.Page(str(ROOT / "app_pages" / "embeddings.py"), title="Embeddings", icon=":material/scatter_plot:",
                url_path="embeddings"),
        st.Page(str(ROOT / "app_pages" / "shape_bias.py"), title="Texture vs shape", icon=":material/pets:",
                url_path="shape_bias"),
        st.Page(str(ROOT / "app_pages" / "similarity.py"), title="Similarity", icon=":material/join_inner:",
                url_path="similarity"),
    ],
}

page = st.navigation(PAGES)
with st.sidebar:
    st.caption("vizcore: look inside convolutional networks. Models load once and are shared.")
# Whatever a page raises ends as one st.error line (the traceback only with VIZCORE_DEBUG=1);
# st.stop / st.rerun / st.switch_page are BaseExceptions and pass through.
with errors_shown():
    page.run()
