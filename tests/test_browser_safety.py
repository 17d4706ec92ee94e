"""A link must not attack its reader, checked in a real browser (headless Chromium against a real
``streamlit run``): markdown or HTML carried by an address is shown as text, never as a link or an
image, and no page makes the visitor's browser ask a host other than the dashboard's own."""
from __future__ import annotations

import urllib.parse

import pytest

from dashboard.widgets.text import JOINER
from test_browser import WALK, browser, server  # noqa: F401 - the fixtures, shared

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAP = "127.0.0.1:9"  # nothing listens there; a request to it is what an attacker's link would cause
INJECTED = [
    "[Click here to sign in again](http://127.0.0.1:9/phish)",
    "![x](http://127.0.0.1:9/track.png)",
    '<img src="http://127.0.0.1:9/html.png">',
    "<a href='http://127.0.0.1:9/a'>sign in</a>",
    "http://127.0.0.1:9/bare",
]


def _watch(page) -> list[str]:
    """Every URL the page's browser requests, in order (images, scripts, fonts, XHR, websockets)."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.on("websocket", lambda ws: seen.append(ws.url))
    return seen


def _settled(page) -> None:
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    page.wait_for_load_state("networkidle")


@pytest.mark.parametrize("value", INJECTED)
def test_unit_address_markup_is_shown_as_text(server, browser, value):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(180_000)
    requests = _watch(page)
    query = urllib.parse.urlencode({"model": "efficientnet_lite0", "weights": "auto", "layer": value,
                                    "channel": "0"})
    page.goto(f"{server}/unit?{query}")
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="The address names layer").first
    alert.wait_for()
    _settled(page)
    shown = alert.inner_text().replace(JOINER, "")  # the invisible joiner that stops autolinks
    assert value in shown, f"the address's text is not shown literally: {shown!r}"
    links = page.locator(f'a[href*="{TRAP}"]').evaluate_all("els => els.map(e => e.outerHTML)")
    assert not links, f"the address made a link: {links}"
    images = page.locator(f'img[src*="{TRAP}"]').evaluate_all("els => els.map(e => e.outerHTML)")
    assert not images, f"the address made an image: {images}"
    assert not [u for u in requests if TRAP in u], f"the browser was made to ask {TRAP}: {requests}"


def test_no_page_asks_another_host(server, browser):  # noqa: F811
    """Every page, loaded by its address: all requests go to the dashboard's own host (no font or
    icon server: an offline server would wait for it, and a third party would learn of each visit)."""
    own = urllib.parse.urlparse(server).netloc
    paths = ["/"] + [f"/{label.lower().replace(' ', '_')}" for label, _t, _p in WALK if label != "Overview"]
    paths = [p.replace("/linear_probes", "/probes").replace("/texture_vs_shape", "/shape_bias")
              .replace("/feature_visualisation", "/feature_viz") for p in paths]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(240_000)
    requests = _watch(page)
    for path in paths:
        page.goto(f"{server}{path}")
        page.locator("h1").first.wait_for()
        _settled(page)
    hosts = {urllib.parse.urlparse(u).netloc for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {own}, f"pages asked other hosts: {[u for u in requests if own not in u][:10]}"
    context.close()


def test_upload_file_name_markup_is_shown_as_text(server, browser, tmp_path):  # noqa: F811
    """An upload named like markup (a file name cannot hold "/", but ``http:host`` is a URL to a
    browser): the caption shows the name literally, and nothing links to or loads from that host."""
    from test_browser import _small_png

    name = "![x](http:127.0.0.1:9) [sign in](http:127.0.0.1:9) <img src=http:127.0.0.1:9>.png"
    upload = _small_png(tmp_path / name)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(180_000)
    requests = _watch(page)
    page.goto(f"{server}/activations")
    page.get_by_text("the 224px crop the network sees").first.wait_for()
    page.locator('input[type="file"]').first.set_input_files(str(upload))
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Image of this session").first
    page.wait_for_function("([el, t]) => el.textContent.replaceAll('\\u2060', '').includes(t)",
                           arg=[caption.element_handle(), name])
    _settled(page)
    links = page.locator(f'a[href*="{TRAP}"]').evaluate_all("els => els.map(e => e.outerHTML)")
    images = page.locator(f'img[src*="{TRAP}"]').evaluate_all("els => els.map(e => e.outerHTML)")
    assert not links and not images, (links, images)
    assert not [u for u in requests if TRAP in u], f"the browser was made to ask {TRAP}"
