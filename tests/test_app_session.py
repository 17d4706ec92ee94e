"""AppTests of what a session carries from page to page: its image (kept through a bad upload, and
shown as in use on the page it was uploaded on) and its dataset (named by a short name, never by a
server path)."""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from vizcore.data import load_sample

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
UNIT = "app_pages/unit.py"
ADDRESS = {"model": "efficientnet_lite0", "weights": "auto", "layer": "blocks.4.0", "channel": "12"}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _truncated_jpeg() -> bytes:
    full = _png(load_sample("astronaut"), format="JPEG")
    return full[: len(full) // 2]


def _links(at: AppTest) -> list[dict]:
    return [{k: v[0] for k, v in parse_qs(p.proto.query_string).items()} for p in at.get("page_link")
            if p.proto.page == "unit"]


@pytest.mark.parametrize("bad_name,bad", [("drawing.svg", SVG), ("cut.jpg", None)])
def test_a_bad_upload_after_a_good_one_keeps_the_good_one(lite0, bad_name, bad):
    bad = _truncated_jpeg() if bad is None else bad
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("app_pages/activations.py").run()
    photo = load_sample("coffee")
    photo.thumbnail((200, 200))
    at.file_uploader(key="activations_upload").set_value(("cup.png", _png(photo), "image/png")).run()
    assert not at.exception and not at.error
    # The built-in box says the upload is in use, in the run that applied it (not "cat").
    box = at.selectbox(key="activations_sample")
    assert box.value is None and "cup.png" in box.proto.placeholder and "upload" in box.proto.placeholder
    at.file_uploader(key="activations_upload").set_value((bad_name, bad, "application/octet-stream")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and bad_name in errors[0] and "Keeping cup.png" in errors[0], errors
    assert at.image[0].captions[0].startswith("cup.png: the 224px crop")
    assert at.selectbox(key="activations_sample").value is None
    # On another page the same: a bad upload there keeps the session's upload too.
    at.query_params.update(ADDRESS)
    at.switch_page(UNIT).run()
    at.file_uploader(key="unit_upload").set_value((bad_name, bad, "application/octet-stream")).run()
    assert not at.exception
    assert any("**cup.png** (your upload)" in c.value for c in at.caption)
    assert any(md.value.startswith("**cup.png**: channel 12") for md in at.markdown)


def test_the_session_dataset_is_carried_to_the_unit_page_and_links(lite0, imagenet_samples, monkeypatch):
    monkeypatch.setenv("VIZCORE_IMAGENET_SAMPLES", str(imagenet_samples))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.session_state["dataset_examples_source"] = "imagenet-samples"
    at.session_state["dataset_examples_layer"] = "blocks.1.0"
    at.switch_page("app_pages/dataset_examples.py").run()
    assert not at.exception and not at.error
    assert "1,000 images of imagenet-samples" in at.info[0].value
    # The unit page, opened from the navigation: the dataset just chosen, by its short name.
    at.query_params.clear()
    at.switch_page(UNIT).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="unit_dataset").value == "imagenet-samples"
    assert at.query_params["dataset"] == ["imagenet-samples"] or at.query_params["dataset"] == "imagenet-samples"
    assert any("Find the top images in imagenet-samples (1000 images)" == b.label for b in at.button)
    shown = " ".join(c.value for c in at.caption)
    assert "dataset=imagenet-samples" in shown and str(imagenet_samples) not in shown
    # Links from Activations keep it.
    at.switch_page("app_pages/activations.py").run()
    assert not at.exception
    links = _links(at)
    assert links and all(q.get("dataset") == "imagenet-samples" for q in links)


@pytest.mark.parametrize("ref,ok", [
    ("imagenet-samples", True),
    ("data/imagenet-samples", True),  # a data root's name (../shared/data) and a path under it
    ("builtin", True),
    ("samples", True),  # the older name of the built-in photographs
    ("/etc", False),
    ("data/../../../etc", False),
])
def test_unit_address_names_datasets_by_short_names_only(lite0, imagenet_samples, ref, ok):
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({**ADDRESS, "dataset": ref})
    at.switch_page(UNIT).run()
    assert not at.exception
    if not ok:
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "dataset" in errors[0], errors
        assert not at.title
        return
    assert not at.error
    want = "builtin" if ref == "samples" else ref
    assert at.selectbox(key="unit_dataset").value == want
    button = next(b.label for b in at.button if b.key == "unit_mine_start")
    assert button.endswith(("(1000 images)", "(10 images)"))
    assert not any(str(imagenet_samples) in c.value for c in at.caption)
