"""AppTest of the Regions and pixels page: what it shows is what the engine computes, on the
bundled EfficientNet-Lite0 and random-init torchvision detectors (offline)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from vizcore.data import load_sample
from vizcore.regions import deconv, roi
from vizcore.regions.proposals import selective_search
from vizcore.regions.rcnn import detect

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "regions"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("app_pages/regions.py").run()
    assert not at.exception, at.exception
    return at


def _arr(v) -> np.ndarray:
    """A plotly array from a figure's JSON (plain list, or base64 ``bdata`` with dtype and shape)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v)


def _metrics(at) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in at.metric]


def test_fast_rcnn_runs_at_once_rcnn_on_run_and_both_match_the_engine(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    at = _app()
    assert [t.value for t in at.title] == ["Regions and pixels"] and not at.error
    at.number_input(key=f"{KEY}_cap").set_value(16).run()
    for _ in range(6):  # Fast R-CNN starts by itself: one batch per run
        at.run()
    assert not at.exception, at.exception
    assert ("Full forward passes", "1") in _metrics(at)
    assert [b.label for b in at.button] == ["Run R-CNN"]
    at.button(key=f"{KEY}_rcnn_start").click().run()
    for _ in range(8):
        at.run()
    assert not at.exception, at.exception
    assert ("Full forward passes", "16") in _metrics(at)
    cat = load_sample("cat")
    boxes = selective_search(cat, max_proposals=16).boxes
    captions = [c for im in at.image for c in im.captions]
    for method in ("rcnn", "fast-rcnn"):
        r = detect(lite0, cat, boxes, method=method, threshold=0.5)
        assert f"{method} · {len(r.detections)} detections" in captions, captions
    (ok,) = [s.value for s in at.success]
    assert "16 full forward passes against 1" in ok and re.search(r"\*\*[\d.]+×\*\* faster", ok)


def test_roi_view_shows_the_engines_misalignment(lite0):
    at = _app()
    at.segmented_control(key=f"{KEY}_view").set_value("roi").run()
    assert not at.exception, at.exception
    cat = load_sample("cat")
    W, H = cat.size
    c, _ = roi.compare_on_image(lite0, cat, (W // 4, H // 5, 3 * W // 4, 4 * H // 5), layer="blocks.6")
    assert ("Largest bin-edge misalignment of RoIPool", f"{c.max_misalignment:.1f} px") in _metrics(at)
    figs = [json.loads(p.proto.spec) for p in at.get("plotly_chart")]
    pool_fig = figs[0]
    assert len(pool_fig["layout"]["shapes"]) == 49  # 7x7 RoIPool bins
    x0 = sorted({s["x0"] for s in pool_fig["layout"]["shapes"]})
    assert np.allclose(x0, sorted(set(c.pool_bins_px()[..., 0].ravel().tolist())))
    samples = figs[1]["data"][1]
    np.testing.assert_allclose(_arr(samples["x"]), c.align_points_px().reshape(-1, 2)[:, 0])


def test_rpn_segmentation_and_deconv_views():
    at = _app()
    at.segmented_control(key=f"{KEY}_view").set_value("rpn").run()
    at.selectbox(key=f"{KEY}_det").set_value("fasterrcnn_mobilenet_v3_large_fpn")
    at.select_slider(key=f"{KEY}_det_side").set_value(256).run()
    assert not at.exception, at.exception
    caps = [c.value for c in at.caption]
    anchors = next(c for c in caps if " anchors = " in c)
    total, terms = anchors.split(" anchors = ")
    parts = [np.prod([int(v) for v in t.split("×")]) for t in terms.split(" (")[0].split(" + ")]
    assert int(total.replace(",", "")) == sum(parts)
    assert any("random init" in (b.proto.label if hasattr(b, "proto") else "") for b in at.get("badge")) or \
        any("random initialisation" in c for c in caps)
    at.segmented_control(key=f"{KEY}_view").set_value("segment").run()
    at.select_slider(key=f"{KEY}_seg_side").set_value(128).run()
    assert not at.exception, at.exception
    assert any(c.startswith("native score map · 16×") for im in at.image for c in im.captions)
    at.segmented_control(key=f"{KEY}_view").set_value("deconv").run()
    at.selectbox(key=f"{KEY}_case").set_value("strides").run()
    assert not at.exception, at.exception
    r = deconv.arithmetic(**deconv.CASES["strides"])
    assert any(r.formulas()["transposed"] in m.value for m in at.markdown)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert np.array_equal(_arr(spec["data"][0]["z"]), deconv.connectivity(**deconv.CASES["strides"]).astype(int))


def test_an_image_too_small_for_proposals_is_one_error_line():
    import io

    from PIL import Image

    from dashboard.widgets.images import SESSION_IMAGE

    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(buf, format="PNG")
    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state[SESSION_IMAGE] = {"kind": "upload", "name": "tiny.png", "data": buf.getvalue(), "digest": "tiny"}
    at.run()
    at.switch_page("app_pages/regions.py").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["the image is too small for region proposals (24x24 px; at least 32 px "
                                           "on each side)"]


def test_a_detector_in_a_unit_page_address_with_a_classifiers_layer_is_one_clear_line():
    # A detector's backbone taps are units (tests/test_app_backbones.py); a layer it lacks is one line.
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"model": "fasterrcnn_mobilenet_v3_large_fpn", "weights": "random",
                            "layer": "blocks.4.0", "channel": "3"})
    at.switch_page("app_pages/unit.py").run()
    assert not at.exception, at.exception
    shown = [e.value for e in at.error]
    assert len(shown) == 1 and "blocks.4.0" in shown[0], shown
    assert at.selectbox(key="unit_model").value == "fasterrcnn_mobilenet_v3_large_fpn"
