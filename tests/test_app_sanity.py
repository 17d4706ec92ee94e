"""AppTest of the Evidence page's "Sanity checks" view: bundled EfficientNet-Lite0 on the session's photo;
Run, Stop, Resume, then the curves drawn are the engine's scores, and a new session reads the cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.data import load_sample
from vizcore.evidence.sanity import OUT_OF_SCOPE, sanity_check

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "evidence"


def _sanity_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("app_pages/evidence.py").run()
    at.radio(key=f"{KEY}_view").set_value("sanity").run()
    assert not at.exception, at.exception
    at.pills(key=f"{KEY}_sanity_methods").set_value(["cam", "guided"]).run()
    return at


def _until_done(at: AppTest, n: int = 60) -> AppTest:
    for _ in range(n):
        if _complete(at):
            break
        at.run()
    return at


def _complete(at: AppTest) -> bool:
    return not [b for b in at.button if b.key in (f"{KEY}_sanity_start", f"{KEY}_sanity_stop")]


@pytest.mark.slow
def test_sanity_view_runs_stops_resumes_and_draws_the_engines_curves(lite0):
    at = _sanity_page()
    assert any(OUT_OF_SCOPE in c.value for c in at.caption)
    start = at.button(key=f"{KEY}_sanity_start")
    assert start.label == "Run sanity check"
    start.click().run()
    assert not at.exception, at.exception
    at.button(key=f"{KEY}_sanity_stop").click().run()
    assert at.warning and "Stopped after" in at.warning[0].value
    assert at.button(key=f"{KEY}_sanity_start").label == "Resume"
    at.button(key=f"{KEY}_sanity_start").click().run()
    _until_done(at)
    assert _complete(at) and not at.exception and not at.error
    target = at.selectbox(key=f"{KEY}_top5").value
    r = sanity_check(lite0, load_sample("cat"), int(target), ["cam", "guided"])  # the page's run, from the cache
    assert r.complete and r.target["index"] == target
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    lines = {(t["name"], t["xaxis"]): t["y"] for t in spec["data"] if t.get("mode") == "lines+markers"}
    for m in ("cam", "guided"):
        got = lines[(m, "x")]
        want = r.scores[m]["spearman"]
        assert len(got) == len(want) and all(abs(a - b) < 1e-9 for a, b in zip(got, want) if b == b)
    assert lines[("cam", "x")][0] == 1.0
    assert any(m.value.startswith("**Random-class test**") and r.random_class["class"]["label"] in m.value
               for m in at.markdown)
    fresh = _sanity_page()  # a new session: the cached result without pressing anything
    assert _complete(fresh) and fresh.get("plotly_chart")


@pytest.mark.slow
def test_concept_relevance_below_the_channels_shows_the_engines_shares(lite0):
    from vizcore.activations import predict
    from vizcore.relevance import channel_relevance

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("app_pages/evidence.py").run()
    assert not at.exception, at.exception
    at.toggle(key=f"{KEY}_crp").set_value(True).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    cat = load_sample("cat")
    top = predict(lite0, [cat], topk=1)[0][0].index
    want = channel_relevance(lite0, cat, top, k=6).to_json()
    shown = [m.value for m in at.markdown if m.value.startswith("relevance share")]
    assert shown == [f"relevance share **{c['share']:.1%}**" for c in want["channels"]]
    assert any(f"channels of **{want['layer']}**" in c.value and "conditional heatmap" in c.value for c in at.caption)
