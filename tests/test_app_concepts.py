"""AppTest of the Concepts page on EfficientNet-Lite0 and 16 ImageNet samples: the neuron groups and
their unit links are the engine's for the session image; the concepts job runs with Stop and Resume
and shows the engine's error per k; the importance shown adds up to the logit at the head."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "concepts"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page("app_pages/concepts.py").run()
    assert not at.exception, at.exception
    return at


def _finish(at: AppTest, limit: int = 60) -> AppTest:
    for _ in range(limit):
        if at.success or at.error:
            break
        at.run()
        assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_concepts_page_groups_concepts_importance(imagenet_samples, lite0, tmp_path, monkeypatch):
    from vizcore.concepts import ConceptsJob, neuron_groups
    from vizcore.data import load_sample, open_dataset
    from vizcore.jobs import RunOptions, cached

    at = _app()
    # neuron groups at two taps, from the session image (the built-in cat)
    at.selectbox(key=f"{KEY}_g_left").set_value("blocks.3.0")
    at.selectbox(key=f"{KEY}_g_right").set_value("head")
    at.slider(key=f"{KEY}_g_k").set_value(3).run()
    assert not at.exception, at.exception
    cat = load_sample("cat")
    want = neuron_groups(lite0, cat, "head", 3)
    md = " ".join(m.value for m in at.markdown)
    assert f"top channels {', '.join(map(str, want.top_channels[0]))}" in md
    links = [p for p in at.get("page_link")]
    assert any(f"head · {want.top_channels[0][0]}" == p.proto.label for p in links)

    # concepts over 16 images, k=3 at the head
    at.radio(key=f"{KEY}_ds_source").set_value("imagenet-samples")
    at.number_input(key=f"{KEY}_n").set_value(16)
    at.selectbox(key=f"{KEY}_layer").set_value("head")
    at.number_input(key=f"{KEY}_k").set_value(3)
    at.number_input(key=f"{KEY}_per_image").set_value(4).run()
    assert not at.exception, at.exception
    start = [b for b in at.button if b.label == "Find concepts"]
    assert start
    start[0].click().run()
    at.button(key=f"{KEY}_run_stop").click().run()
    assert at.warning and "Stopped after" in at.warning[0].value
    [b for b in at.button if b.label == "Resume"][0].click().run()
    _finish(at)
    assert at.success, [m.value for m in at.markdown]
    full = open_dataset(f"imagenet-samples:{imagenet_samples}")
    ds = full.subset(range(16), name=f"{full.name}[:16]")
    opts = RunOptions(batch_size=16, workers=0)
    res = cached(ConceptsJob(lite0, ds, "head", 3, per_image=4, options=opts), opts)
    assert res is not None  # the page's result is in the cache
    df = at.dataframe[0].value
    assert list(df["k"]) == [2, 3]
    assert np.allclose(df["rel_error"], [r["rel_error"] for r in res.sweep])
    cap = " ".join(c.value for c in at.caption)
    assert "logit share" in cap
    sh, rest = cap.split("logit share: shares ")[1].split(" + residual ")
    resid, rest = rest.split(" + bias ")
    bias, rest = rest.split(" = logit ")
    assert abs(float(sh) + float(resid) + float(bias) - float(rest.split(".")[0] + "." + rest.split(".")[1][:3])) < 2e-3
