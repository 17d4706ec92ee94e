"""AppTests of the unit page (opened by its address), the session's one image across pages,
and the pages' own addresses."""
from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import pages
from vizcore.activations import extract
from vizcore.data import load_sample

from tests.colours import assert_page_colorscales_monotone

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PAGE = pages.UNIT.path
ADDRESS = {"model": "efficientnet_lite0", "weights": "auto", "layer": "blocks.4.0", "channel": "12"}


def _unit(params: dict[str, str], at: AppTest | None = None) -> AppTest:
    at = at or AppTest.from_file(APP, default_timeout=300)
    at.query_params.clear()
    at.query_params.update(params)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _links(at: AppTest) -> list[tuple[str, dict]]:
    return [(p.proto.page, {k: v[0] for k, v in parse_qs(p.proto.query_string).items()})
            for p in at.get("page_link")]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _until_done(at: AppTest, key: str, *, start: bool = False, runs: int = 40) -> AppTest:
    """Press a section's start button (``start``) and rerun while its job runs (one step per run)."""
    if start:
        at.button(key=f"{key}_start").click().run()
    for _ in range(runs):
        assert not at.exception, at.exception
        if not [b for b in at.button if b.key == f"{key}_stop"]:
            break
        at.run()
    assert not [b for b in at.button if b.key == f"{key}_stop"], f"{key} did not finish"
    return at


def _overlay_peak(at: AppTest) -> tuple[float, tuple[int, int]]:
    """Max and argmax of the heatmap trace of the 'on your image' figure."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    heat = next(t for t in spec["data"] if t["type"] == "heatmap")
    z = heat["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        import base64

        shape = tuple(int(s) for s in str(z["shape"]).split(","))
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).reshape(shape)
    z = np.asarray(z, dtype=float)
    return float(z.max()), z.shape


def test_opens_by_its_address_and_shows_the_unit(lite0):
    at = _unit(ADDRESS)
    assert not at.error
    assert [t.value for t in at.title] == ["efficientnet_lite0 · blocks.4.0 · channel 12"]
    assert at.selectbox(key="unit_layer").value == "blocks.4.0"
    assert at.number_input(key="unit_channel").value == 12
    # The activation on the session image (the cat) is the engine's, upsampled over the 224 px crop.
    m = extract(lite0, load_sample("cat"), layers=["blocks.4.0"]).layers["blocks.4.0"].output[12]
    top, shape = _overlay_peak(at)
    assert shape == (224, 224)
    assert assert_page_colorscales_monotone(at) == 1  # the activation colour bar: dark to light, no theme pink
    assert top == pytest.approx(float(m.max()), rel=0.05)
    assert any(f"peaks at {float(m.max()):.3g}" in md.value for md in at.markdown)
    assert any("unit?model=efficientnet_lite0&weights=auto&layer=blocks.4.0&channel=12" in c.value
               for c in at.caption)


def test_sections_on_demand_and_driver_links_target_other_units(lite0):
    at = _unit(ADDRESS)
    n_images = len(at.image)
    _until_done(at, "unit_rf", start=True)
    assert not at.exception and not at.error
    assert len(at.image) == n_images + 1
    assert any("theoretical field: **211 px**" in md.value for md in at.markdown)
    _until_done(at, "unit_cs", start=True)
    assert not at.exception and not at.error
    assert any("d logit / d mean activation" in c.value for c in at.caption)
    assert any(md.value.startswith("**Supports**") for md in at.markdown)
    _until_done(at, "unit_dr", start=True)
    assert not at.exception and not at.error
    assert any("gradient x activation of blocks.3.2" in c.value for c in at.caption)
    drivers = [(page, q) for page, q in _links(at) if q.get("layer") == "blocks.3.2"]
    assert len(drivers) == 8
    for page, q in drivers:
        assert page == "unit" and q["model"] == "efficientnet_lite0" and q["weights"] == "auto"
        assert 0 <= int(q["channel"]) < 80
    # Feature visualisation, small and quick.
    at.select_slider(key="unit_fv_steps").set_value(16)
    at.select_slider(key="unit_fv_size").set_value(64)
    at.toggle(key="unit_show_fv").set_value(True).run()
    _until_done(at, "unit_fv")  # a job: it starts by itself, with progress and Stop
    assert not at.exception and not at.error
    from vizcore.featureviz import render

    (r,) = render(lite0, "blocks.4.0", [12], steps=16, size=64)
    assert any(i.captions and i.captions[0] == f"objective {r.objective_start:.3g} → {r.objective_final:.3g}"
               for i in at.image)
    # Following a driver's address opens that unit (same session: the toggles stay on).
    _, q = drivers[0]
    at = _unit(q, at)
    assert [t.value for t in at.title] == [f"efficientnet_lite0 · blocks.3.2 · channel {q['channel']}"]
    assert not at.error
    # A bare /unit (from the navigation) comes back to the last unit of the session.
    at = _unit({}, at)
    assert [t.value for t in at.title] == [f"efficientnet_lite0 · blocks.3.2 · channel {q['channel']}"]


def test_weight_drivers_and_dataset_top_images(lite0):
    at = _unit({**ADDRESS, "layer": "head", "channel": "7", "dataset": "samples"})
    assert not at.error
    _until_done(at, "unit_mine", start=True)  # a job with progress and Stop
    _until_done(at, "unit_crops")  # the crops start by themselves once mined
    assert not at.exception and not at.error
    crops = [i for i in at.image if i.captions and i.captions[0].startswith("#")]
    assert len(crops) == 9
    # The head sees the whole image: each crop is where the channel's map reaches half its maximum,
    # square (equal heights) and captioned on one line (rank · activation · file).
    assert any("Crop: activation ≥ half its max" in c.value for c in at.caption)
    assert all(len(i.captions[0]) <= 32 and i.captions[0].count(" · ") == 2 for i in crops)
    _until_done(at, "unit_dr", start=True)
    assert not at.exception and not at.error
    assert any("weight magnitude" in c.value and "conv_head" in c.value for c in at.caption)
    assert any("top patch in samples" in c.value for c in at.caption)
    links = [q for _, q in _links(at) if q.get("layer") == "blocks.6.0"]
    import torch

    mags = lite0.model.conv_head.weight[7].detach().abs().sum(dim=(1, 2))
    best = torch.argsort(mags, descending=True)[:8].tolist()
    assert [int(q["channel"]) for q in links] == [best[i] for c in range(4) for i in range(c, 8, 4)]  # 4 columns
    assert all(q["dataset"] == "builtin" for q in links)  # the short name of the built-in photos
    # the mined top images are cached on disk: a new session shows them without pressing anything
    fresh = _unit({**ADDRESS, "layer": "head", "channel": "7", "dataset": "samples"})
    assert not fresh.error and not [b for b in fresh.button if b.key == "unit_mine_start"]
    _until_done(fresh, "unit_crops")
    assert len([i for i in fresh.image if i.captions and i.captions[0].startswith("#")]) == 9


def test_a_unit_reopened_in_a_new_session_reads_its_analyses_from_the_cache(lite0):
    """Receptive field, class support and drivers are engine jobs cached on disk: a new session on
    the same address shows them without pressing anything, equal to the engine's own results."""
    from vizcore.unit import class_support, drivers, effective_rf

    params = {**ADDRESS, "layer": "blocks.5.0", "channel": "30"}
    at = _unit(params)
    for key in ("unit_rf", "unit_cs", "unit_dr"):
        _until_done(at, key, start=True)
    assert not at.error
    fresh = _unit(params)  # a new session
    assert not fresh.error
    assert not [b for b in fresh.button if b.key in ("unit_rf_start", "unit_cs_start", "unit_dr_start")]
    cat = load_sample("cat")
    erf = effective_rf(lite0, "blocks.5.0", 30, cat)
    b = erf.box
    assert any(f"**{b[2] - b[0]}×{b[3] - b[1]} px**" in md.value for md in fresh.markdown)
    cs = class_support(lite0, "blocks.5.0", 30, [cat])
    assert any(md.value.startswith("**Supports**") and f"1. {cs.top[0].label} (" in md.value for md in fresh.markdown)
    dr = drivers(lite0, "blocks.5.0", 30, [cat])
    assert any(md.value.startswith(f"**{dr.drivers[0].label}** · {dr.drivers[0].value:.3g}") for md in fresh.markdown)


@pytest.mark.parametrize("params,words", [
    ({**ADDRESS, "layer": "blocks.40"}, ("blocks.40", "closest")),
    ({**ADDRESS, "channel": "112"}, ("112", "0-111")),
    ({**ADDRESS, "channel": "twelve"}, ("twelve", "channels")),
    ({**ADDRESS, "model": "not_a_model"}, ("not_a_model",)),
])
def test_bad_address_gives_one_error(lite0, params, words):
    at = _unit(params)
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert all(wd.lower() in errors[0].lower() for wd in words), errors
    assert not at.title  # nothing else of the page
    # Choosing a unit in the sidebar recovers.
    at.number_input(key="unit_channel").set_value(3).run()
    assert not at.exception and not at.error
    assert at.title[0].value.endswith("channel 3")


def test_session_image_is_carried_across_pages(lite0):
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(pages.ACTIVATIONS.path).run()
    photo = load_sample("coffee")
    photo.thumbnail((200, 200))
    at.file_uploader(key="activations_upload").set_value(("cup.png", _png(photo), "image/png")).run()
    assert not at.exception and not at.error
    assert at.image[0].captions[0].startswith("cup.png: the 224px crop")
    # Compare: the same image, without uploading again.
    at.switch_page(pages.COMPARE.path).run()
    assert not at.exception and not at.error
    assert any("**cup.png** (your upload)" in c.value for c in at.caption)
    # The unit page: the overlay is the channel's map on the uploaded photo.
    at = _unit(ADDRESS, at)
    assert any("**cup.png** (your upload)" in c.value for c in at.caption)
    m = extract(lite0, photo, layers=["blocks.4.0"]).layers["blocks.4.0"].output[12]
    assert any(md.value.startswith(f"**cup.png**: channel 12 peaks at {float(m.max()):.3g}") for md in at.markdown)
    # Replacing it on one page replaces it everywhere.
    at.selectbox(key="unit_sample").set_value("astronaut").run()
    at.switch_page(pages.ACTIVATIONS.path).run()
    assert not at.exception
    assert at.image[0].captions[0].startswith("astronaut: the 224px crop")
    assert at.selectbox(key="activations_sample").value == "astronaut"


def test_every_page_has_its_own_address():
    """The default page is served at '/' only: it must be the overview, so each analysis page's
    url_path (e.g. /activations) is a real address. Every page is named once, in dashboard.pages:
    the navigation is built from it and no other dashboard file names a page file."""
    import re

    defaults = [p for p in pages.PAGES if p.default]
    assert [p.title for p in defaults] == ["Overview"]
    paths = [p.name for p in pages.PAGES if not p.default]
    assert {"activations", "compare", "unit", "dataset_examples", "feature_viz"} <= set(paths)
    assert len(paths) == len(set(paths))
    assert all(p.file.is_file() for p in pages.PAGES)
    assert sorted(f.stem for f in (ROOT / "dashboard" / "app_pages").glob("*.py")) == sorted(p.name for p in pages.PAGES)
    for f in (ROOT / "dashboard").rglob("*.py"):
        if f.name != "pages.py":
            assert not re.search(r"app_pages/\w+\.py", f.read_text()), f"{f} names a page file"
    # The navigation serves exactly these pages, and the overview links every page.
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    linked = {p.proto.page for p in at.get("page_link")}
    assert set(paths) <= linked


# ------------------------------------------------------------- a real server
@pytest.fixture
def served(dashboard_server) -> int:
    """The port of a real ``streamlit run dashboard/app.py`` (conftest ``dashboard_server``)."""
    return int(dashboard_server.rsplit(":", 1)[1])


def _open(port: int, path: str, query: str = "", timeout: float = 180) -> tuple[str | None, bool, bytes]:
    """What a browser opening ``/path?query`` gets, over Streamlit's own websocket protocol:
    (the url path of the page that ran, whether "page not found" was sent, every message's bytes)."""
    import asyncio

    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async def run():
        ran, not_found, blob = None, False, b""
        async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                      max_size=None, origin=f"http://127.0.0.1:{port}") as ws:
            back = BackMsg()
            back.rerun_script.page_name = path
            back.rerun_script.query_string = query
            await ws.send(back.SerializeToString())
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                blob += raw
                kind = msg.WhichOneof("type")
                if kind == "page_not_found":
                    not_found = True
                elif kind == "navigation":
                    urls = {p.page_script_hash: p.url_pathname for p in msg.navigation.app_pages}
                    ran = urls.get(msg.navigation.page_script_hash)
                elif kind == "script_finished":
                    return ran, not_found, blob

    return asyncio.run(run())


@pytest.mark.slow
def test_pages_answer_at_their_own_addresses_on_a_real_server(served):
    ran, not_found, blob = _open(served, "activations")
    assert (ran, not_found) == ("activations", False)
    assert b"Activations" in blob
    ran, not_found, blob = _open(served, "unit", "model=efficientnet_lite0&weights=auto&layer=blocks.4.0&channel=12")
    assert (ran, not_found) == ("unit", False)
    assert "efficientnet_lite0 · blocks.4.0 · channel 12".encode() in blob
    ran, not_found, _ = _open(served, "")
    assert (ran, not_found) == ("", False)  # the overview
    ran, not_found, _ = _open(served, "no_such_page")
    assert not_found  # the check can fail


def test_driver_thumbnails_by_feature_visualisation_are_a_job(lite0, tmp_path, monkeypatch):
    """Without a dataset, the drivers' thumbnails can be feature visualisations: a FeatVizJob that
    starts by itself on the toggle, with progress and Stop, then one thumbnail per driver."""
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path))  # nothing of this unit cached yet
    at = _unit({**ADDRESS, "layer": "blocks.5.0", "channel": "30"})
    _until_done(at, "unit_dr", start=True)
    at.toggle(key="unit_dr_fv").set_value(True).run()
    assert [b for b in at.button if b.key == "unit_dr_fvjob_stop"]  # running, with Stop
    _until_done(at, "unit_dr_fvjob", runs=20)
    assert not at.exception and not at.error
    assert any("feature visualisation, 64 px" in c.value for c in at.caption)
    assert len([i for i in at.image if i.proto.imgs and i.proto.imgs[0].caption == ""]) >= 8
