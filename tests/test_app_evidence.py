"""AppTest of the Evidence page: bundled EfficientNet-Lite0 on a real photograph; what the page
shows must be what the engine computes. BagNet and FCN views on random-init networks (offline)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.activations import predict, preprocess
from vizcore.data import load_sample
from vizcore.evidence import evidence, faithfulness, random_map

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "evidence"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("app_pages/evidence.py").run()
    assert not at.exception, at.exception
    return at


def _curve_names(at: AppTest) -> list[str]:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return list(dict.fromkeys(t["name"] for t in spec["data"]))


@pytest.mark.slow
def test_default_page_shows_cam_and_gradcam_with_the_engines_scores(lite0):
    at = _app()
    assert [t.value for t in at.title] == ["Evidence"] and not at.error
    cat = load_sample("cat")
    top = predict(lite0, [cat], topk=1)[0][0].index
    x = preprocess(lite0, cat)
    captions = [c for im in at.image for c in im.captions]
    texts = [m.value for m in at.markdown]
    for m in ("cam", "gradcam"):
        assert any(c.startswith(f"{m} · raw 7×7") for c in captions), captions
        ev = evidence(lite0, x, top, m)
        f = faithfulness(lite0, x, ev.map, top, steps=16)
        assert f"deletion **{f.deletion_auc:.3f}** · insertion **{f.insertion_auc:.3f}**" in texts
    rnd = faithfulness(lite0, x, random_map((224, 224), 0), top, steps=16)
    assert any(f"deletion **{rnd.deletion_auc:.3f}**" in t and "Random map" in t for t in texts)
    assert _curve_names(at) == ["cam", "gradcam", "random"]
    # another class from the top-5 gives other maps and scores
    at.selectbox(key=f"{KEY}_top5").set_value(predict(lite0, [cat], topk=5)[0][3].index).run()
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown if "deletion **" in m.value] != [t for t in texts if "deletion **" in t]


@pytest.mark.slow
def test_slow_methods_wait_for_run_then_show_and_guided_reports_its_caveat():
    at = _app()
    at.select_slider(key=f"{KEY}_window").set_value(64)
    at.select_slider(key=f"{KEY}_stride").set_value(32)
    at.pills(key=f"{KEY}_methods").set_value(["guided", "occlusion"]).run()
    assert not at.exception, at.exception
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("guided") for c in captions) and not any(c.startswith("occlusion") for c in captions)
    assert any("plain input gradient" in c.value for c in at.caption)
    at.button(key=f"{KEY}_start").click().run()  # the job widget: one stage (the occlusion map) per run
    assert not at.exception, at.exception
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("occlusion · raw 224×224") for c in captions), captions  # shown while it runs
    assert [b.key for b in at.button if b.key == f"{KEY}_stop"]  # and it can be stopped
    for _ in range(5):
        if not [b for b in at.button if b.key == f"{KEY}_stop"]:
            break
        at.run()
    assert not at.exception, at.exception
    assert _curve_names(at) == ["guided", "occlusion", "random"]


def test_bad_upload_is_an_error_message_not_an_exception():
    at = _app()
    at.file_uploader(key=f"{KEY}_upload").set_value(("broken.png", b"\x89PNG not really", "image/png")).run()
    assert not at.exception, at.exception
    assert any("broken.png" in e.value for e in at.error)


@pytest.mark.slow
def test_bagnet_view_shows_two_classes_and_top_patches():
    at = _app()
    at.radio(key=f"{KEY}_view").set_value("bagnet").run()
    assert not at.exception, at.exception
    assert any("random weights" in wv.value for wv in at.warning)  # offline: no published weights
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("predicted:") and "27×27 patches of 9 px" in c for c in captions), captions
    assert any(c.startswith("second:") for c in captions)
    assert sum(1 for c in captions if c.replace(".", "").lstrip("-").isdigit()) == 16  # 2 x 8 patch crops


@pytest.mark.slow
def test_fcn_view_maps_the_whole_image_and_says_weights_are_random():
    at = _app()
    at.radio(key=f"{KEY}_view").set_value("fcn").run()
    assert not at.exception, at.exception
    assert any("random weights" in wv.value for wv in at.warning)
    cap = next(c for im in at.image for c in im.captions if "score map" in c)
    h, w_ = (int(v) for v in cap.split(" · ")[1].split(" ")[0].split("×"))
    assert h > 1 and w_ > 1


def test_channels_behind_cam_and_gradcam_link_to_their_unit_pages(lite0):
    from tests.test_app_unit import _links, _unit
    from vizcore.evidence import evidence_channels

    at = _app()
    assert any(s.value == "Channels behind this map" for s in at.subheader)
    cat = load_sample("cat")
    top = predict(lite0, [cat], topk=1)[0][0].index
    ec = evidence_channels(lite0, preprocess(lite0, cat), top, k=6)
    links = [(page, q) for page, q in _links(at) if page == "unit"]
    want = [c.channel for c in ec.top + ec.bottom]
    assert [int(q["channel"]) for _, q in links] == want
    assert all(q == {"model": "efficientnet_lite0", "weights": "auto", "layer": "head", "channel": q["channel"]}
               for _, q in links)
    assert any(f"share **{ec.top[0].share:+.3g}**" == m.value for m in at.markdown)
    assert any("class activation map and the Grad-CAM map" in c.value for c in at.caption)
    # the link's address opens that channel on the unit page
    at = _unit(links[0][1], at)
    assert [t.value for t in at.title] == [f"efficientnet_lite0 · head · channel {want[0]}"]
    assert not at.error


def test_channels_of_a_container_layer_link_to_its_last_tap():
    from tests.test_app_unit import _links

    at = _app()
    at.session_state[f"{KEY}_model"] = "resnet18"
    at.session_state[f"{KEY}_weights"] = "random"
    at.pills(key=f"{KEY}_methods").set_value(["gradcam"]).run()
    assert not at.exception, at.exception
    links = [q for page, q in _links(at) if page == "unit"]
    assert links and all((q["model"], q["weights"], q["layer"]) == ("resnet18", "random", "layer4.1") for q in links)
    assert any("Grad-CAM map of" in c.value and "layer4 is computed at its last tap, layer4.1" in c.value
               for c in at.caption)
