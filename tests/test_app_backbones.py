"""AppTests of the tap pages on a detector's backbone: the Activations and unit pages on
``fasterrcnn_mobilenet_v3_large_fpn`` (random weights offline, a small upload): its backbone's taps
are ordinary taps, and the pages say it has no classification head."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import pages
from vizcore.activations import extract
from vizcore.data import load_sample
from vizcore.models import load_model

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
DET = "fasterrcnn_mobilenet_v3_large_fpn"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_activations_page_shows_a_detectors_backbone_taps():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(pages.ACTIVATIONS.path).run()
    assert any(o.endswith(f" {DET}") for o in at.selectbox(key="activations_model").options)  # after the classifiers
    at.selectbox(key="activations_model").set_value(DET)
    at.radio(key="activations_weights").set_value("random")
    at.run()
    img = load_sample("astronaut").resize((96, 80))
    at.file_uploader(key="activations_upload").set_value(("small.png", _png(img), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    lm = load_model(DET, "random")
    want = extract(lm, Image.open(io.BytesIO(_png(img))), topk=0)
    labels = [e.label for e in at.expander if e.label.startswith("**")]
    assert len(labels) == len(lm.taps()) == len(want.layers)
    for label, (name, la) in zip(labels, want.layers.items()):
        assert label == f"**{name}** · {la.kind} · {'×'.join(map(str, la.shape))}"
    infos = [i.value for i in at.info]
    assert any("no classification head" in i and "backbone" in i for i in infos), infos
    assert "**Top-5 predictions**" not in [m.value for m in at.markdown]
    # The grid of the first spatial tap ranks its channels by the engine's mean activation.
    first = next(e for e in at.expander if e.label.startswith("**backbone.body.0**"))
    chans = [int(c) for c in first.image[0].captions[0].split(": ", 1)[1].split(", ")]
    assert chans == [int(c) for c in want.layers["backbone.body.0"].stats.order("mean")[:16]]


def test_unit_page_on_a_detectors_backbone_tap():
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"model": DET, "weights": "random", "layer": "backbone.body.12", "channel": "3"})
    at.switch_page(pages.UNIT.path).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert [t.value for t in at.title] == [f"{DET} · backbone.body.12 · channel 3"]
    infos = [i.value for i in at.info]
    assert any("no classification head" in i and "backbone" in i for i in infos), infos
    lm = load_model(DET, "random")
    act = extract(lm, load_sample("cat"), ["backbone.body.12"], topk=0).layers["backbone.body.12"]
    text = " ".join(m.value for m in at.markdown)
    assert f"peaks at {float(act.output[3].max()):.3g}" in text, text


@pytest.mark.parametrize("button,page", [("dsx", "dataset_examples"), ("fv", "feature_viz")])
def test_a_backbone_channel_opens_on_dataset_examples_and_feature_visualisation(button, page):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["activations_model"] = DET
    at.session_state["activations_weights"] = "random"
    at.switch_page(pages.ACTIVATIONS.path).run()
    at.number_input(key=f"activations_ch_{DET}_backbone.body.2").set_value(5).run()
    at.button(key=f"activations_link_{DET}_backbone.body.2_{button}").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert at.session_state["channel_target"] == {"model": DET, "layer": "backbone.body.2", "channel": 5}
    assert at.selectbox(key=f"{page}_model").value == DET  # offered there too, not taken for a timm name
    assert at.selectbox(key=f"{page}_layer").value == "backbone.body.2"
    assert at.selectbox(key=f"{page}_layer").options[0] == "backbone.body.0"
