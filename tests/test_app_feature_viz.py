"""AppTest for the Feature visualisation page: settings, run, results grid, downloads, cross-page target."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import pages

PAGE = pages.FEATURE_VIZ.path
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def _open(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300)
    for k, v in state.items():
        at.session_state[k] = v
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _small_settings(at: AppTest, steps: int = 6, size: int = 64) -> None:
    at.number_input(key="feature_viz_steps").set_value(steps)
    at.select_slider(key="feature_viz_size").set_value(size)
    at.toggle(key="feature_viz_compare").set_value(True)
    at.run()
    assert not at.exception, at.exception


def _run_to_end(at, max_runs: int = 10):
    """Press Run on the job widget, then rerun (each run does a few optimisation steps) until done."""
    at.button(key="feature_viz_start").click().run()
    for _ in range(max_runs):
        assert not at.exception, at.exception
        if "feature_viz_shown" in at.session_state and not [b for b in at.button if b.key == "feature_viz_stop"]:
            return at
        at.run()
    raise AssertionError("the job did not finish")


def test_page_renders_runs_and_offers_downloads():
    at = _open()
    assert at.title[0].value == "Feature visualisation"
    at.selectbox(key="feature_viz_layer").set_value("blocks.3.0")
    at.run()
    at.multiselect(key="feature_viz_channels").set_value([1, 4])
    _small_settings(at)
    _run_to_end(at)
    shown = at.session_state["feature_viz_shown"]
    assert [r["channel"] for r in shown["results"]] == [1, 4]
    assert all(r["steps"] == 6 and r["size"] == 64 for r in shown["results"])
    assert all(r["objective_final"] > r["objective_start"] for r in shown["results"])
    captions = [c for el in at.get("image") for c in el.captions]
    assert any("channel 1:" in c and "photos best" in c for c in captions), captions
    assert any("channel 4:" in c for c in captions), captions
    # one line says what the numbers mean, with the first image's own numbers
    (line,) = [m.value for m in at.markdown if m.value.startswith("**How to read the numbers**")]
    first = captions[0].split(":", 1)[1].split("·")[0].strip()  # "start → final"
    assert f"objective {first}; best photo " in line
    assert "on the starting noise → after" in line and "*photos best*" in line
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels.count("PNG") == 2 and "Settings (JSON)" in labels
    # a new session with the same settings gets them from the disk cache at once (same images, no Run)
    before = shown["png"]
    again = _open()
    again.selectbox(key="feature_viz_layer").set_value("blocks.3.0")
    again.run()
    again.multiselect(key="feature_viz_channels").set_value([1, 4])
    _small_settings(again)
    assert not [b for b in again.button if b.key == "feature_viz_start"]
    assert again.session_state["feature_viz_shown"]["png"] == before


def test_channel_target_preselects_model_layer_channel():
    target = {"model": "efficientnet_lite0", "layer": "blocks.2.1", "channel": 7}
    at = _open(channel_target=target)
    assert at.selectbox(key="feature_viz_model").value == "efficientnet_lite0"
    assert at.selectbox(key="feature_viz_layer").value == "blocks.2.1"
    assert at.multiselect(key="feature_viz_channels").value == [7]
    assert not at.warning and not at.exception
    # the user's later choices are not overridden on the next rerun
    at.multiselect(key="feature_viz_channels").set_value([7, 8])
    at.run()
    assert at.multiselect(key="feature_viz_channels").value == [7, 8]


@pytest.mark.slow
def test_range_mode_and_pixel_param():
    at = _open()
    at.selectbox(key="feature_viz_layer").set_value("blocks.1.0")
    at.radio(key="feature_viz_pick").set_value("range")
    at.run()
    at.text_input(key="feature_viz_range").set_value("2-3")
    at.radio(key="feature_viz_param").set_value("pixel")
    _small_settings(at, steps=4)
    _run_to_end(at)
    shown = at.session_state["feature_viz_shown"]
    assert [r["channel"] for r in shown["results"]] == [2, 3]
    assert shown["results"][0]["param"] == "pixel"
    json.dumps(shown["results"])


def _estimate(at: AppTest) -> tuple[float, int, float]:
    """(estimated seconds, steps, measured seconds per step) from the page's estimate line."""
    import re

    (text,) = [i.value for i in at.info if "on this machine" in i.value]
    m = re.search(r"About (\d+) (s|min|h) on this machine: (\d+) steps × ([0-9.]+) s per step, measured", text)
    assert m, text
    total = float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)]
    return total, int(m.group(3)), float(m.group(4))


def test_time_estimate_comes_from_the_step_time_measured_here(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))  # not yet computed: the page estimates it
    at = _open()
    at.selectbox(key="feature_viz_layer").set_value("blocks.3.0")
    at.run()
    at.multiselect(key="feature_viz_channels").set_value([1, 4])
    _small_settings(at, steps=6, size=64)
    total, steps, per_step = _estimate(at)
    assert steps == 6 and per_step > 0
    assert abs(total - steps * per_step) <= 0.5 + 0.05 * steps * per_step  # "N s" rounds to the second
    # More steps: the same measured step time, times the new count.
    at.number_input(key="feature_viz_steps").set_value(1200).run()
    total2, steps2, per_step2 = _estimate(at)
    assert (steps2, per_step2) == (1200, per_step)
    assert abs(total2 - 1200 * per_step) <= max(30, 0.05 * 1200 * per_step)  # minutes are rounded
