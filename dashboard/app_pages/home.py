"""Overview: the app's front page at ``/``, so every analysis page answers at its own address.

(The default page of ``st.navigation`` is served at ``/`` only; were it Activations,
``/activations`` would show "Page not found".) It says what each page is for and takes
the session's image, which every page then uses.
"""
from __future__ import annotations

import streamlit as st

from dashboard import widgets as w
from dashboard.pages import PAGES

KEY = "home"

st.title("What CNN layers learn")
st.markdown("Look inside convolutional networks: what every layer does with your image, what single "
            "units respond to, and what depth buys. Choose an image once: every page uses it until "
            "you replace it.")
image, caption = w.image_input(KEY)
c1, c2 = st.columns([1, 3])
c1.image(w.png_bytes(image), caption=w.plain(caption), width=160)
with c2:
    for p in PAGES:
        if p.default:
            continue
        a, b = st.columns([1, 2])
        with a:
            st.page_link(p.path)
        b.caption(p.summary)
