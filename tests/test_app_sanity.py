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


@pytest.mark.slow
def test_unit_page_concept_relevance_and_relmax_beside_the_activation_ranking(lite0, tmp_path, monkeypatch):
    import shutil

    from dashboard.widgets.datasets import data_roots
    from vizcore.data.refs import path_ref

    from vizcore.activations import predict
    from vizcore.data import image_folder, sample_path
    from vizcore.jobs import RunOptions, run
    from vizcore.relevance import RelMaxJob, channel_relevance

    for n in ("cat", "coffee", "astronaut", "rocket"):
        shutil.copy(sample_path(n), tmp_path / sample_path(n).name)
    monkeypatch.setenv("VIZCORE_DATA_ROOTS", str(tmp_path.parent))
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"model": "efficientnet_lite0", "weights": "auto", "layer": "blocks.6.0", "channel": "7",
                            "dataset": path_ref(tmp_path, data_roots())})  # a short name, never a path
    at.switch_page("app_pages/unit.py").run()
    assert not at.exception, at.exception
    at.toggle(key="unit_crp").set_value(True).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    cat = load_sample("cat")
    top = predict(lite0, [cat], topk=1)[0][0]
    cr = channel_relevance(lite0, cat, top.index, "blocks.6.0", k=0)
    assert any(f"carries **{cr.share(7):.2%}** of the relevance of **{top.label}**" in m.value for m in at.markdown)
    at.toggle(key="unit_relmax").set_value(True).run()
    at.button(key="unit_relmax_start").click().run()
    for _ in range(30):
        if not [b for b in at.button if b.key in ("unit_relmax_start", "unit_relmax_stop")]:
            break
        at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
    res = run(RelMaxJob(lite0, image_folder(tmp_path), "blocks.6.0", k=6), RunOptions(batch_size=8, workers=0))
    rows = [im for im in at.image if im.captions and all(" · " in c for c in im.captions)]
    names = [[c.split(" · ")[0] for c in im.captions] for im in rows][-2:]
    ds = image_folder(tmp_path)
    assert res.relevance_ranked(7) and res.activation_ranked(7)
    assert names[0] == [Path(ds.items[i].path).name for i, _ in res.relevance_ranked(7)]
    assert names[1] == [Path(ds.items[i].path).name for i, _ in res.activation_ranked(7)]
