"""AppTest of the Similarity page: CKA heatmap with progress, cache, highlight and links."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = "app_pages/similarity.py"
KEY = "similarity"
LAYERS = ["stem", "blocks.1.0", "blocks.4.0", "pool"]


@pytest.fixture
def eight(imagenet_samples, tmp_path) -> Path:
    folder = tmp_path / "eight"
    folder.mkdir()
    for p in sorted(imagenet_samples.glob("*.jpg"))[7::90][:8]:
        (folder / p.name).symlink_to(p)
    return folder


def _open(folder: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state[f"{KEY}_source"] = "folder"
    at.session_state[f"{KEY}_folder"] = str(folder)
    at.session_state[f"{KEY}_layers_efficientnet_lite0"] = LAYERS
    at.session_state[f"{KEY}_batch"] = 4
    at.run()
    assert not at.exception, at.exception
    return at


def _array(v) -> np.ndarray:
    """A plotly JSON array: nested lists, or {"dtype", "bdata", "shape"} as plotly >= 6 writes numbers."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.array(v, dtype=float)


def _heatmap(at: AppTest) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "heatmap" in c.proto.spec)


def test_similarity_page_computes_caches_highlights_and_links(lite0, eight, monkeypatch, tmp_path):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))  # cold cache
    at = _open(eight)
    assert at.title[0].value == "Similarity"
    assert at.radio(key=f"{KEY}_against").value == "random"  # default: A against its random twin
    at.button(key=f"{KEY}_start").click().run()
    assert not at.exception, at.exception
    ok = at.success[0].value
    assert "CKA of 4 x 4 taps on 8 images in 2 batches of 4 (computed now)" in ok, ok

    # the heatmap is the engine's matrix, taps in network order on both axes, exact hover values
    from vizcore.data import open_dataset
    from vizcore.features import random_twin
    from vizcore.similarity import cka

    ref = cka(lite0, random_twin(lite0), open_dataset(str(eight)), layers=LAYERS, batch_size=4, workers=0,
              cache=False)
    fig = _heatmap(at)
    hm = fig["data"][0]
    assert hm["x"] == LAYERS and hm["y"] == LAYERS
    np.testing.assert_allclose(_array(hm["z"]), ref.matrix, atol=1e-12)
    assert "%{z:.6f}" in hm["hovertemplate"]
    assert fig["layout"]["yaxis"]["autorange"] == "reversed"

    # highlight a row (and the matching column): two outlines, a summary line, links
    at.selectbox(key=f"{KEY}_focus").set_value("blocks.1.0").run()
    assert not at.exception, at.exception
    shapes = _heatmap(at)["layout"]["shapes"]
    assert len(shapes) == 2 and shapes[0]["y0"] == 0.5 and shapes[1]["x0"] == 0.5
    assert any("**blocks.1.0** of A is most like" in m.value for m in at.markdown)
    # the buttons open the channel chosen for the unit link (default: the most active on the image)
    (ch_in,) = [n for n in at.number_input if n.key.startswith(f"{KEY}_unit_A_")]
    ch_in.set_value(5).run()
    at.button(key=f"{KEY}_to_dsx").click().run()
    assert at.session_state["channel_target"] == {"model": "efficientnet_lite0", "layer": "blocks.1.0",
                                                  "channel": 5}
    # the Activations button opens that page on the highlighted tap: first, expanded, on that channel
    at.switch_page(PAGE).run()
    at.selectbox(key=f"{KEY}_focus").set_value("blocks.1.0").run()
    (ch_in,) = [n for n in at.number_input if n.key.startswith(f"{KEY}_unit_A_")]
    ch_in.set_value(6).run()
    at.button(key=f"{KEY}_to_act").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Activations"
    tap_labels = [e.label for e in at.expander if e.label.startswith("**")]
    assert tap_labels[0].startswith("**blocks.1.0**")
    assert at.number_input(key="activations_ch_efficientnet_lite0_blocks.1.0").value == 6

    # a new session is served from the disk cache, without pressing anything
    at2 = _open(eight)
    assert "from the cache" in at2.success[0].value
    np.testing.assert_allclose(_array(_heatmap(at2)["data"][0]["z"]), ref.matrix, atol=1e-12)


def test_similarity_page_against_itself_links_the_neighbours(lite0, eight, monkeypatch, tmp_path):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    at = _open(eight)
    at.radio(key=f"{KEY}_against").set_value("self").run()
    at.button(key=f"{KEY}_start").click().run()
    assert not at.exception, at.exception
    assert "computed now" in at.success[0].value
    hm = _heatmap(at)["data"][0]  # lite0 against itself: ones on the diagonal
    np.testing.assert_allclose(np.diag(_array(hm["z"])), 1.0, atol=1e-9)

    # the neighbours of the session's image live on the Activations page, linked from here
    (link,) = [p for p in at.get("page_link") if "Nearest dataset images" in p.proto.label]
    assert link.proto.page.endswith("activations")


def test_similarity_page_stop_keeps_nothing(lite0, eight, monkeypatch, tmp_path):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    at = _open(eight)
    # a run that was stopped after its first step: the Stop state shows and nothing is cached
    from vizcore.similarity import load_cached, prepare

    at.session_state[f"{KEY}_batch"] = 8  # more than the images chosen next: lowered, no error
    at.session_state[f"{KEY}_n"] = 6
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key=f"{KEY}_batch").value == 6
    at.session_state[f"{KEY}_n"] = 8
    at.session_state[f"{KEY}_batch"] = 4
    at.run()
    from vizcore.data import open_dataset
    from vizcore.features import random_twin
    from vizcore.jobs import RunOptions, cached
    from vizcore.similarity import CKAJob

    job = CKAJob.of(lite0, random_twin(lite0), open_dataset(str(eight)), layers=LAYERS, batch_size=4)
    # a run of the job widget stopped after its first batch (one step of the page does all 8 images)
    from vizcore.jobs import JobRun

    run = JobRun(job, RunOptions(batch_size=4, workers=0))
    run.step(4)
    ident = (job.kind, job.key(), run.options)
    at.session_state[f"{KEY}_jobrun"] = (ident, run)
    at.session_state[f"{KEY}_job_ctl"] = {"id": ("job", ident), "running": False, "stopped": True, "error": None}
    at.run()
    assert not at.exception, at.exception
    assert "Stopped after 4 of 8 images" in at.warning[0].value
    assert cached(job, RunOptions()) is None
    at.button(key=f"{KEY}_start").click().run()
    for _ in range(5):
        if at.success:
            break
        at.run()
    assert not at.exception, at.exception
    assert "computed now" in at.success[0].value and cached(job, RunOptions()) is not None


def test_highlighted_row_and_column_open_a_unit_of_their_tap(lite0, eight, monkeypatch, tmp_path):
    from tests.test_app_unit import _links, _unit
    from vizcore.activations import extract
    from vizcore.data import load_sample

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    at = _open(eight)
    at.button(key=f"{KEY}_start").click().run()
    assert not at.exception, at.exception
    assert not [q for page, q in _links(at) if page == "unit"]  # nothing highlighted: no unit links
    at.selectbox(key=f"{KEY}_focus").set_value("blocks.1.0").run()  # the column follows: blocks.1.0 of B
    assert not at.exception, at.exception

    # default channel: the one most active (mean over the map) on the session's image
    act = extract(lite0, load_sample("cat"), layers=["blocks.1.0"]).layers["blocks.1.0"].output
    best = int(act.mean(dim=(1, 2)).argmax())
    inputs = {n.label.split(" (")[0]: n for n in at.number_input if n.label.startswith("Channel of")}
    assert set(inputs) == {"Channel of blocks.1.0 in A", "Channel of blocks.1.0 in B"}
    a_in = inputs["Channel of blocks.1.0 in A"]
    assert a_in.value == best and a_in.max == act.shape[0] - 1 == 23
    units = [q for page, q in _links(at) if page == "unit"]
    assert units == [{"model": "efficientnet_lite0", "weights": "auto", "layer": "blocks.1.0", "channel": str(best)},
                     {"model": "efficientnet_lite0", "weights": "random", "layer": "blocks.1.0",
                      "channel": str(inputs["Channel of blocks.1.0 in B"].value)}]

    # another channel of A: its link follows, and its address opens that unit
    a_in.set_value(5).run()
    assert not at.exception, at.exception
    units = [q for page, q in _links(at) if page == "unit"]
    assert units[0]["channel"] == "5" and units[0]["weights"] == "auto"
    b = units[1]
    at = _unit(units[0], at)
    assert [t.value for t in at.title] == ["efficientnet_lite0 · blocks.1.0 · channel 5"] and not at.error
    at = _unit(b, at)  # B's link: the random twin
    assert [t.value for t in at.title] == [f"efficientnet_lite0 · blocks.1.0 · channel {b['channel']}"]
    assert at.radio(key="unit_weights").value == "random" and not at.error
