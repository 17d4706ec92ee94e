"""A real browser against a real server: ``streamlit run dashboard/app.py`` driven by
headless Chromium (Debian's ``chromium``, through Playwright's Python package).

It opens the Activations page, uploads a photograph through the file input, and
waits for that image's channel grid and predictions to appear. The newcomer's
walk visits every page with one uploaded photo; with ``VIZCORE_SCREENSHOT=1`` it saves a screenshot
of each page to ``assets/screenshots/`` for the README's gallery.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import need

ROOT = Path(__file__).resolve().parents[1]
MAX_SCREENSHOT_BYTES = 500_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def server(dashboard_server):
    """The dashboard served by a real ``streamlit run`` (conftest ``dashboard_server``): its base url."""
    return dashboard_server


@pytest.fixture
def browser(chromium_path):
    """Debian's headless Chromium through Playwright's Python package; closed in ``finally``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - requirements include it
        need(False, "the playwright Python package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def _small_png(path: Path) -> Path:
    """The coffee photograph, shrunk, as the file a user uploads."""
    from vizcore.data import load_sample

    img = load_sample("coffee")
    img.thumbnail((320, 320))
    img.save(path, format="PNG")
    return path


def test_upload_shows_grid_and_predictions(server, browser, tmp_path, lite0):
    from vizcore.activations import extract
    from vizcore.data import load_image

    upload = _small_png(tmp_path / "my_coffee.png")
    # What the page must show: the engine's own top-1 for this very file.
    expected = extract(lite0, load_image(upload), layers=["stem"]).predictions[0]

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(f"{server}/activations")  # the page answers at its own address
    # The default sample renders first.
    page.get_by_text("the 224px crop the network sees").first.wait_for()
    page.locator('input[type="file"]').first.set_input_files(str(upload))
    page.get_by_text("my_coffee.png: the 224px crop the network sees").wait_for()

    # The first layer's expander is open and shows a decoded channel grid.
    grid = page.locator('[data-testid="stExpander"] img').first
    grid.wait_for(state="visible")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle())
    width = grid.evaluate("img => img.naturalWidth")
    assert width >= 4 * 64, f"grid image is only {width} px wide"
    assert page.get_by_text("channels by mean").first.is_visible()

    # The predictions chart names the engine's top-1 class for the uploaded file.
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(state="visible")
    page.wait_for_function(
        "([el, label]) => el.textContent.includes(label)",
        arg=[chart.element_handle(), f"{expected.label} ({expected.index})"])
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlert"]').filter(has_text="Could not use").count() == 0


def test_evidence_page_shows_overlays_scores_and_curves(server, browser):
    """The Evidence page in a real browser: CAM and Grad-CAM overlays with their scores and the curves."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(300_000)
    page.goto(f"{server}/evidence")
    page.get_by_text("cam · raw 7×7").first.wait_for()
    page.get_by_text("gradcam · raw 7×7").first.wait_for()
    page.get_by_text("Random map").first.wait_for()
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(state="visible")
    page.wait_for_function("el => el.textContent.includes('Deletion')", arg=chart.element_handle())
    overlay = page.locator('[data-testid="stImage"] img').nth(1)
    page.wait_for_function("img => img.complete && img.naturalWidth == 224", arg=overlay.element_handle())
    assert page.locator('[data-testid="stException"]').count() == 0


# The newcomer's walk: (navigation label, page title, what proves the page uses the session photo).
WALK = [
    ("Overview", "What CNN layers learn", "photo"),
    ("Activations", "Activations", "prediction"),
    ("Compare", "Compare architectures", "photo"),
    ("Architectures", "Architectures", None),
    ("Evidence", "Evidence", "photo"),
    ("Regions and pixels", "Regions and pixels", "photo"),
    ("Unit", "· channel", "photo"),
    ("Dataset examples", "Dataset examples", None),
    ("Feature visualisation", "Feature visualisation", None),
    ("Linear probes", "Linear probes", None),
    ("Embeddings", "Embeddings", None),
    ("Texture vs shape", "Texture vs shape", None),
    ("Similarity", "Similarity", None),  # the neighbours of the photo are on the Activations page
    ("Model atlas", "Model atlas", None),
    ("Concepts", "Concepts", None),
    ("Activation atlas", "Activation atlas", None),
]
SCREENSHOTS = ROOT / "assets" / "screenshots"
MAIN_HAS = "t => (document.querySelector('[data-testid=\"stMain\"]') || document.body).textContent.includes(t)"


def _save_page_screenshot(page, name: str) -> Path:
    """A viewport screenshot of the current page, palette-quantised to stay small."""
    import io

    from PIL import Image

    page.wait_for_timeout(1000)
    img = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    for colours in (256, 128, 64):
        buf = io.BytesIO()
        img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() < MAX_SCREENSHOT_BYTES:
            break
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / f"{name}.png"
    out.write_bytes(buf.getvalue())
    return out


def test_newcomer_walk_every_page_with_one_photo(server, browser, tmp_path, lite0):
    """Upload a photo once, visit every page through the navigation (one browser session), and check
    that each page renders without an exception and, where it uses an image, uses that photo. Then
    open a unit page by its address in a fresh browser context. ``VIZCORE_SCREENSHOT=1`` saves a
    screenshot of every page to ``assets/screenshots/`` (the README's gallery)."""
    from vizcore.activations import extract
    from vizcore.data import load_image

    upload = _small_png(tmp_path / "my_coffee.png")
    top1 = extract(lite0, load_image(upload), layers=["stem"]).predictions[0]
    shots = os.environ.get("VIZCORE_SCREENSHOT")

    def no_exception(page, where: str) -> None:
        assert page.locator('[data-testid="stException"]').count() == 0, f"an exception reached {where}"

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(240_000)
    page.goto(f"{server}/activations")
    page.get_by_text("the 224px crop the network sees").first.wait_for()
    page.locator('input[type="file"]').first.set_input_files(str(upload))
    page.get_by_text("my_coffee.png: the 224px crop the network sees").wait_for()
    for label, title, proof in WALK:
        page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()
        page.locator("h1").filter(has_text=title).first.wait_for()
        if proof == "photo":  # the page's image is the upload, not the built-in cat
            page.wait_for_function(MAIN_HAS, arg="Image of this session: my_coffee.png")
        elif proof == "prediction":  # the page shows the engine's top-1 for the upload
            page.wait_for_function(MAIN_HAS, arg=top1.label)
        if label == "Evidence":  # its default maps and their faithfulness scores are computed
            page.get_by_text("cam · raw 7×7").first.wait_for()
        if label == "Activations":  # the photo's nearest images among the 10 built-in ones, at three taps
            page.get_by_text("Built-in sample photographs (10)").first.click()
            page.get_by_role("button", name="Find neighbours").click()
            page.get_by_text("query: my_coffee.png").nth(2).wait_for()  # one row per tap, drawn in turn
            assert page.get_by_text("query: my_coffee.png").count() == 3
        # the page's script has finished (the running indicator is gone)
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
        page.wait_for_load_state("networkidle")
        no_exception(page, label)
        if shots:
            _save_page_screenshot(page, label.lower().replace(" ", "_"))

    # A unit page by its address, in a browser that never saw this session.
    fresh = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    fresh.set_default_timeout(240_000)
    fresh.goto(f"{server}/unit?model=efficientnet_lite0&weights=auto&layer=blocks.4.0&channel=12")
    fresh.locator("h1").filter(has_text="efficientnet_lite0 · blocks.4.0 · channel 12").first.wait_for()
    fresh.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    fresh.wait_for_load_state("networkidle")
    no_exception(fresh, "the unit page opened by its address")
    if shots:
        _save_page_screenshot(fresh, "unit_by_address")


_CUT_OFF = """() => [...document.querySelectorAll(
    '[data-testid="stSidebar"] input[role="combobox"], [data-testid="stSidebar"] [data-testid="stMultiSelect"] span')]
    .filter(e => e.clientWidth > 0 && (e.value || e.textContent).trim())
    .map(e => [(e.value || e.textContent).trim(), e.scrollWidth, e.clientWidth])"""


def test_sidebar_model_labels_are_not_cut_off(server, browser):
    """Every model picker's text in the sidebar fits its box or chip (Chromium's own layout: an
    input or chip whose text is wider than it is cut off with an ellipsis)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for path, text in (("activations", "efficientnet_lite0"), ("compare", "efficientnet_lite0"),
                       ("probes", "efficientnet_lite0"), ("unit", "efficientnet_lite0")):
        page.goto(f"{server}/{path}")
        page.wait_for_function(f"() => ({_CUT_OFF})().some(([t]) => t.includes({text!r}))", timeout=180_000)
        shown = page.evaluate(_CUT_OFF)
        assert any(text in t for t, _, _ in shown), (path, shown)
        cut = [(t, sw, cw) for t, sw, cw in shown if sw > cw + 1]
        assert not cut, (path, cut)
    page.close()


def test_a_bad_upload_after_a_good_one_keeps_it_in_the_browser(server, browser, tmp_path):
    """Good PNG, then an SVG into the same uploader: one error, the PNG stays the session's image,
    and the built-in box says the upload is in use (not "cat")."""
    good = _small_png(tmp_path / "my_coffee.png")
    bad = tmp_path / "drawing.svg"
    bad.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>')
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(f"{server}/activations")
    page.get_by_text("the 224px crop the network sees").first.wait_for()
    upload = page.locator('input[type="file"]').first
    upload.set_input_files(str(good))
    page.get_by_text("my_coffee.png: the 224px crop the network sees").wait_for()
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Built-in image").locator("input")
    page.wait_for_function("el => el.value === '' && el.placeholder.includes('my_coffee.png')",
                           arg=box.element_handle())
    upload.set_input_files(str(bad))
    page.locator('[data-testid="stAlert"]').filter(has_text="Could not use drawing.svg").wait_for()
    page.wait_for_timeout(2000)  # any rerun the frontend sends back has come and gone
    assert page.get_by_text("Keeping my_coffee.png").count() == 1
    assert page.get_by_text("my_coffee.png: the 224px crop the network sees").count() == 1
    assert page.get_by_text("cat: the 224px crop the network sees").count() == 0
    assert box.evaluate("el => el.value") == ""
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()
