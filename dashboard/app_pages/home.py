"""Overview: the app's front page at ``/``, so every analysis page answers at its own address.

(The default page of ``st.navigation`` is served at ``/`` only; were it Activations,
``/activations`` would show "Page not found".) It says what each page is for and takes
the session's image, which every page then uses.
"""
from __future__ import annotations

import streamlit as st

from dashboard import widgets as w

KEY = "home"

st.title("What CNN layers learn")
st.markdown("Look inside convolutional networks: what every layer does with your image, what single "
            "units respond to, and what depth buys. Choose an image once: every page uses it until "
            "you replace it.")
image, caption = w.image_input(KEY)
c1, c2 = st.columns([1, 3])
c1.image(w.png_bytes(image), caption=caption, width=160)
with c2:
    for page, text in [
        ("app_pages/activations.py", "every layer's channels for your image, predictions and Grad-CAM"),
        ("app_pages/compare.py", "the same image through several networks, aligned by depth"),
        ("app_pages/architectures.py", "parameters, MACs and receptive fields, layer by layer"),
        ("app_pages/evidence.py", "where the evidence for a class lies, and how faithful each map is"),
        ("app_pages/dataset_examples.py", "the dataset patches that excite each channel most"),
        ("app_pages/feature_viz.py", "images optimised to excite a channel"),
        ("app_pages/unit.py", "one channel on one page, with a link you can share"),
        ("app_pages/model_atlas.py", "every channel of a precomputed layer at a glance (vizcore precompute)"),
        ("app_pages/probes.py", "what a linear classifier can read at each depth"),
        ("app_pages/embeddings.py", "maps of an early and a late layer"),
        ("app_pages/shape_bias.py", "texture or shape: what the network decides by"),
        ("app_pages/similarity.py", "how alike the layers of two networks are (CKA), and nearest neighbours"),
    ]:
        a, b = st.columns([1, 2])
        with a:
            st.page_link(page)
        b.caption(text)
