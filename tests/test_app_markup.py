"""A visitor's text is shown as text on the dashboard (AppTest: the markdown the page sends).

Values from an address, an upload's file name or a text box reach errors, titles and captions
escaped by ``dashboard.widgets.plain``: no markdown link or image, no HTML tag, no bare autolink
survives (the real browser's rendering is checked in ``tests/test_browser_safety.py``)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.widgets.text import JOINER, plain
from vizcore.data import load_sample

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
INJECTED = ["[Click here to sign in again](http://127.0.0.1:9/phish)", "![x](http://127.0.0.1:9/track.png)",
            '<img src="http://127.0.0.1:9/html.png">', "http://127.0.0.1:9/bare"]
# Markup that would act in markdown: an unescaped "[" or "<", or a bare autolink.
ACTIVE = re.compile(r"(?<!\\)\[|(?<!\\)<|https?://|www\.")


def _active(markdown: str) -> list[str]:
    return ACTIVE.findall(markdown)


def _unit(params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(params)
    at.switch_page("app_pages/unit.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("value", INJECTED)
def test_plain_keeps_the_text_and_drops_the_markup(value):
    out = plain(value)
    assert not _active(out), out
    unescaped = re.sub(r"\\(.)", r"\1", out).replace(JOINER, "")
    assert unescaped == value


def test_plain_leaves_ordinary_messages_readable():
    for text in ("no such dataset: ./cifar10", "VIZCORE_DATA_ROOTS", "efficientnet_lite0 · blocks.4.0",
                 "unknown layer 'x' for model 'resnet18'."):
        assert plain(text) == text


@pytest.mark.parametrize("value", INJECTED)
def test_unit_address_layer_is_shown_as_text(value, lite0):
    at = _unit({"model": "efficientnet_lite0", "weights": "auto", "layer": value, "channel": "0"})
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "The address names layer" in errors[0], errors
    assert not _active(errors[0]), errors[0]
    assert value in re.sub(r"\\(.)", r"\1", errors[0]).replace(JOINER, "")


def test_unit_address_model_is_an_input_error_in_one_line(lite0):
    at = _unit({"model": "timm/../../etc/passwd", "weights": "auto", "layer": "stem", "channel": "0"})
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert "internal error" not in errors[0] and "VIZCORE_DEBUG" not in errors[0], errors[0]
    assert "bad model name 'timm/../../etc/passwd'" in errors[0]


@pytest.mark.parametrize("page", ["activations", "feature_viz"])
def test_typed_timm_path_is_an_input_error(page):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.session_state[f"{page}_timm"] = "timm/../../etc/passwd"
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "bad model name" in errors[0] and "internal error" not in errors[0], errors


def test_upload_file_name_is_shown_as_text(lite0):
    name = "[sign in](http:127.0.0.1:9) <img src=x>.png"
    buf = io.BytesIO()
    img = load_sample("coffee")
    img.thumbnail((160, 160))
    img.save(buf, format="PNG")
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("app_pages/activations.py").run()
    at.file_uploader(key="activations_upload").set_value((name, buf.getvalue(), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = [c.value for c in at.caption if "Image of this session" in c.value]
    assert shown and not _active(shown[0]), shown
    assert f"**{plain(name)}** (your upload)" in shown[0]
    captions = [c for im in at.image for c in im.captions if "crop the network sees" in c]
    assert captions and all(not _active(c) for c in captions), captions
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not [t for t in texts if "sign in" in t and _active(t)]
