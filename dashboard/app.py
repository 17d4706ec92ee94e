"""Entry point: ``streamlit run dashboard/app.py``.

Routing with ``st.navigation`` over the one list of pages in :mod:`dashboard.pages`; page
files live in ``dashboard/app_pages/`` and hold UI only. The shared sidebar is drawn here before the page runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT.parent) not in sys.path:  # so `import vizcore` and `import dashboard` work from a clone
    sys.path.insert(0, str(ROOT.parent))

from dashboard.pages import navigation  # noqa: E402
from dashboard.widgets.errors import errors_shown  # noqa: E402
from vizcore import apply_speed_settings  # noqa: E402

apply_speed_settings()

# An emoji icon: the browser draws it from a data: URL. A ":material/...:" page icon (of the app or of
# an st.Page) makes every visitor's browser fetch it from fonts.gstatic.com.
st.set_page_config(page_title="vizcore: what CNN layers learn", page_icon="🔬", layout="wide")

page = st.navigation(navigation(), expanded=True)  # every page (dashboard/pages.py), all 17 listed: no "View more"
with st.sidebar:
    st.caption("vizcore: look inside convolutional networks. Models load once and are shared.")
# Whatever a page raises ends as one st.error line (the traceback only with VIZCORE_DEBUG=1);
# st.stop / st.rerun / st.switch_page are BaseExceptions and pass through.
with errors_shown():
    page.run()
