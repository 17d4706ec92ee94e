"""AppTest of the Compare page: 2 to 4 real networks on one photograph, aligned by
relative depth; each column must show what the engine computes for that network."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.widgets import nearest_tap
from dashboard import pages
from vizcore.activations import extract
from vizcore.render import channel_grid
from vizcore.data import load_sample
from vizcore.models import load_model

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "compare"


def _model(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name)  # "auto", as the page asks: random init offline, bundled for lite0


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(pages.COMPARE.path).run()
    assert not at.exception, at.exception
    return at


def _columns(at: AppTest) -> list[dict]:
    """Per model column: header, chosen tap line, grid caption, predictions, badge."""
    out = []
    for col in at.columns:
        heads = [h.value for h in col.subheader]
        if not heads:
            continue
        md = [m.value for m in col.markdown]
        charts = [json.loads(c.proto.spec) for c in col.get("plotly_chart")]
        out.append({
            "model": heads[0],
            "badge": next(m for m in md if "-badge[" in m),
            "tap": next(m for m in md if "depth" in m),
            "grids": [c for i in col.image for c in i.captions],
            "predictions": list(reversed(charts[-1]["data"][0]["y"])) if charts else [],
        })
    return out


def _spatial(res) -> list[str]:
    return [n for n, la in res.layers.items() if la.spatial]


def test_nearest_tap_relative_depth():
    names = ["a", "b", "c", "d", "e"]  # depths 0, .25, .5, .75, 1
    assert nearest_tap(names, 0.0) == (0, 0.0)
    assert nearest_tap(names, 1.0) == (4, 1.0)
    assert nearest_tap(names, 0.6) == (2, 0.5)
    assert nearest_tap(names, 0.125) == (0, 0.0)  # a tie goes to the shallower tap
    assert nearest_tap(["only"], 0.7) == (0, 0.0)
    with pytest.raises(ValueError):
        nearest_tap([], 0.5)


def test_default_models_are_trained_and_twin():
    """Offline, Compare opens with weights on this machine: the bundled model, its random-init twin
    and another installed trained model (EfficientNet-Lite1/2 packages, hub cache) when there is one."""
    from dashboard.widgets.models import trained_models, weights_now

    at = _app()
    assert not at.error and not at.warning
    others = trained_models(exclude=["efficientnet_lite0"])
    expected = ["efficientnet_lite0", "efficientnet_lite0@random"] + others[:1]
    assert at.multiselect(key=f"{KEY}_models").value == expected
    cols = _columns(at)
    assert [c["model"] for c in cols] == ["efficientnet_lite0", "efficientnet_lite0 (random init)"] + others[:1]
    assert "weights: package" in cols[0]["badge"]
    assert "weights: random init" in cols[1]["badge"]
    for c in cols[2:]:  # never two random networks by default
        assert "weights: random init" not in c["badge"] and weights_now(c["model"]) in ("package", "hub-cache")
    cat = load_sample("cat")
    for c, entry in zip(cols, expected):
        name, _, rnd = entry.partition("@")
        lm = _model(name) if not rnd else load_model(name, "random")
        res = extract(lm, cat)
        names = _spatial(res)
        i, rel = nearest_tap(names, 0.5)
        assert c["tap"].startswith(f"**{names[i]}**"), c
        assert f"depth {rel:.2f} (tap {i + 1} of {len(names)})" in c["tap"]
        _, chans = channel_grid(res.layers[names[i]].output, top=16, order="mean")
        assert c["grids"] == [f"top 16 channels by mean: {', '.join(map(str, chans))}"]
        assert c["predictions"] == [f"{p.label} ({p.index})" for p in res.predictions]
    # trained and untrained lite0 disagree about the cat
    assert cols[0]["predictions"] != cols[1]["predictions"]
    depth_chart = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert [t["name"] for t in depth_chart["data"]] == [c["model"] for c in cols]


def test_pickers_mark_trained_and_random_models():
    """The options say which models have trained weights now (as `vizcore models` does)."""
    at = _app()
    ms = at.multiselect(key=f"{KEY}_models")
    opts = dict(zip(ms.proto.options, ms.proto.options))
    assert "✓ efficientnet_lite0" in opts
    assert "⚄ efficientnet_lite0" in opts  # its random-init twin
    assert "○ vgg_c" in opts  # no published weights at all
    at.switch_page(pages.ACTIVATIONS.path).run()
    box = at.selectbox(key="activations_model")
    assert "✓ efficientnet_lite0" in box.options
    assert "○ vgg_c" in box.options
    assert box.value == "efficientnet_lite0"
    # Where the chosen model's weights come from, under the (short) option text.
    assert any(c.value == "efficientnet_lite0: ✓ trained (bundled)" for c in at.sidebar.caption)
    at.selectbox(key="activations_model").set_value("vgg_c").run()
    assert any(c.value == "vgg_c: ○ random init only" for c in at.sidebar.caption)


def test_depth_slider_moves_every_model():
    at = _app()
    at.multiselect(key=f"{KEY}_models").set_value(["efficientnet_lite0", "resnet18", "alexnet"]).run()
    at.slider(key=f"{KEY}_depth").set_value(0.0).run()
    assert [c["tap"].split("**")[1] for c in _columns(at)] == ["stem", "conv1", "conv1"]
    at.slider(key=f"{KEY}_depth").set_value(1.0).run()
    assert [c["tap"].split("**")[1] for c in _columns(at)] == ["head", "layer4.1", "pool5"]
    # Including the non-spatial taps, depth 1 is the logits layer, drawn as a bar chart.
    at.toggle(key=f"{KEY}_maps_only").set_value(False).run()
    cols = _columns(at)
    assert [c["tap"].split("**")[1] for c in cols] == ["logits", "fc", "fc8"]
    assert all(c["grids"] == [] for c in cols)
    assert not at.exception


def test_two_models_and_grid_channels_match_engine():
    at = _app()
    at.multiselect(key=f"{KEY}_models").set_value(["resnet18", "alexnet"])
    at.slider(key=f"{KEY}_top").set_value(8)
    at.slider(key=f"{KEY}_depth").set_value(0.3)
    at.run()
    assert not at.exception and not at.error
    cols = _columns(at)
    assert [c["model"] for c in cols] == ["resnet18", "alexnet"]
    # Each grid shows the engine's top-8 channels of that model's aligned tap.
    for c in cols:
        res = extract(_model(c["model"]), load_sample("cat"))
        names = _spatial(res)
        i, _ = nearest_tap(names, 0.3)
        _, chans = channel_grid(res.layers[names[i]].output, top=8, order="mean", cell=48)
        assert len(chans) == 8
        assert c["grids"] == [f"top 8 channels by mean: {', '.join(map(str, chans))}"]


def test_four_models_and_too_few():
    at = _app()
    at.multiselect(key=f"{KEY}_models").set_value(["efficientnet_lite0", "resnet18", "alexnet", "vgg11"]).run()
    assert not at.exception and not at.error
    assert [c["model"] for c in _columns(at)] == ["efficientnet_lite0", "resnet18", "alexnet", "vgg11"]
    at.multiselect(key=f"{KEY}_models").set_value(["resnet18"]).run()
    assert not at.exception
    assert [w.value for w in at.warning] == ["Choose at least two models in the sidebar to compare them."]
    assert not at.image


def test_upload_goes_through_every_model():
    import io

    at = _app()
    img = load_sample("coffee")
    img.thumbnail((160, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    at.file_uploader(key=f"{KEY}_upload").set_value(("cup.png", buf.getvalue(), "image/png")).run()
    assert not at.exception and not at.error
    from vizcore.data import load_image

    cols = _columns(at)
    lite = extract(_model("efficientnet_lite0"), load_image(buf.getvalue()), layers=["stem"])
    assert cols[0]["predictions"] == [f"{p.label} ({p.index})" for p in lite.predictions]


def test_any_channel_of_a_grid_opens_its_unit_page():
    """Each column's grid offers all of its channels; the link names the chosen one."""
    from urllib.parse import parse_qs

    at = _app()
    picker = next(s for s in at.selectbox if s.key.startswith(f"{KEY}_unit_"))
    assert len(picker.options) > 1
    second = picker.options[1]
    picker.set_value(int(second.split()[-1])).run()
    assert not at.exception, at.exception
    links = [(p.proto.page, parse_qs(p.proto.query_string)) for p in at.get("page_link")]
    unit_links = [q for page, q in links if page == "unit"]
    assert any(q["channel"] == [second.split()[-1]] and q["layer"] for q in unit_links), unit_links
