"""``vizcore export-site`` in a real browser: a site exported from a small precompute, opened from
``file://`` in headless Chromium; click to a layer and a unit, every image loads, a walker
follows every link and finds none broken and none leaving the site, and a file name with
markup in it shows as text.
"""
from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from vizcore import precompute as P
from vizcore.jobs import RunOptions

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAYERS = ["stem", "blocks.0.0"]
ODD = "a<b>odd name.png"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag in ("img", "link") and (a.get("src") or a.get("href")):
            self.srcs.append(a.get("src") or a["href"])


def _walk(index: Path) -> tuple[set[Path], list[str]]:
    """Every page reachable from ``index`` by links, and every problem: a link or picture that is
    missing, absolute or outside the site."""
    root = index.parent.resolve()
    seen, todo, bad = set(), [index.resolve()], []
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        parser = _Links()
        parser.feed(page.read_text())
        for ref in parser.hrefs + parser.srcs:
            u = urlsplit(ref)
            if u.scheme or u.netloc or ref.startswith("/"):
                bad.append(f"{page.relative_to(root)}: {ref} leaves the site")
                continue
            target = (page.parent / unquote(u.path)).resolve()
            if not target.is_relative_to(root):
                bad.append(f"{page.relative_to(root)}: {ref} leaves the site")
            elif not target.is_file():
                bad.append(f"{page.relative_to(root)}: {ref} is broken")
            elif ref in parser.hrefs and target.suffix == ".html":
                todo.append(target)
    return seen, bad


@pytest.fixture
def site(lite0, tmp_path, monkeypatch):
    """A site exported from a precompute of two taps over two photos, one with markup in its name."""
    from vizcore.data import open_dataset, sample_path
    from vizcore.site import export_site

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_path("cat"), photos / ODD)
    shutil.copy(sample_path("coffee"), photos / "coffee.png")
    ds = open_dataset(str(photos))
    p = P.plan(lite0, ds, LAYERS, P.PrecomputeSettings(featviz_steps=4, featviz_size=32, featviz_batch=16, k=2))
    P.precompute(p, RunOptions(workers=0), parts=("top images", "feature visualisation", "drivers"))
    s = export_site(p, tmp_path / "site", dataset_arg=str(photos))
    assert s.units == 48
    assert s.missing == 48  # class support of every unit was not precomputed, and says so
    return s, p


def test_site_opens_from_file_and_every_link_resolves(site, browser):
    s, p = site
    pages, bad = _walk(s.index)
    assert bad == []
    assert len(pages) == 1 + 2 + 48  # index, two layer pages, every unit (reached by links only)

    page = browser.new_page()
    try:
        page.goto(s.index.resolve().as_uri())
        assert "efficientnet_lite0" in page.title()
        page.get_by_role("link", name="blocks.0.0", exact=True).click()
        page.wait_for_load_state()
        assert page.url.endswith("blocks.0.0/index.html")
        tiles = page.locator("a.tile")
        assert tiles.count() == 16
        _all_images_load(page, at_least=32)  # a featviz and a top patch per tile
        page.get_by_role("link", name="channel 3", exact=True).click()
        page.wait_for_load_state()
        assert page.url.endswith("blocks.0.0/3.html")
        assert page.get_by_role("heading", name="Feature visualisation").is_visible()
        assert page.get_by_role("heading", name="What drives it").is_visible()
        _all_images_load(page, at_least=1 + 2 * 2)  # featviz, and a patch and a map per top image
        # a driver links to its unit on the stem's pages
        page.locator("ol a").first.click()
        page.wait_for_load_state()
        assert "/stem/" in page.url and page.url.endswith(".html")
        # the file name with markup shows literally, and is no element
        page.goto((s.index.parent / "efficientnet_lite0" / "auto" / "stem" / "0.html").resolve().as_uri())
        assert ODD in page.locator("body").inner_text()
        assert page.locator("figcaption b").count() == 0
    finally:
        page.close()


def _all_images_load(page, at_least: int) -> None:
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) >= at_least
    assert all(w > 0 for w in widths), widths


@pytest.fixture
def browser(chromium_path):
    """Debian's headless Chromium through Playwright (as tests/test_browser.py); closed in ``finally``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()
