"""AppTest of the Linear probes page: a run on a small labelled folder, chart, table, CSV export;
the run (a chain of jobs on the job widget) goes step by step (one ``at.run()`` per step), so the curve growing layer by layer and the
time left are seen before the run ends."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import pages

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = pages.PROBES.path


def _run_to_end(at: AppTest, max_steps: int = 60) -> AppTest:
    """Press Run probes, then advance one step per script run until the results (or an error) show."""
    at.button(key="probes_start").click().run()
    for _ in range(max_steps):
        assert not at.exception, at.exception
        if at.success or at.error:
            return at
        at.run()
    raise AssertionError("the probe run did not finish")


def test_probes_page_runs_and_exports(lite0, small_folder):
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "folder"
    at.session_state["probes_folder"] = str(small_folder)
    at.session_state["probes_max_layers"] = 3
    at.session_state["probes_random"] = True
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Linear probes"
    assert any("13 images" in m.value for m in at.markdown)
    _run_to_end(at)
    assert not at.exception, at.exception
    assert at.success and "Probed 2 network(s)" in at.success[0].value
    df = at.dataframe[0].value
    assert len(df) == 6 and set(df["weights"]) == {"package", "random"}
    assert list(df[df["weights"] == "package"]["layer"]) == ["stem", "blocks.4.1", "logits"]
    # the figures are the engine's, on the same split, intervals included
    from vizcore.probes import fit_probes

    ref = fit_probes(lite0, str(small_folder), layers=["stem", "blocks.4.1", "logits"])
    pre = df[df["weights"] == "package"]
    assert list(pre["accuracy"]) == [lp.accuracy for lp in ref.layers]
    assert list(pre["ci_low"]) == pytest.approx([lp.ci_low for lp in ref.layers])
    assert list(pre["ci_high"]) == pytest.approx([lp.ci_high for lp in ref.layers])
    assert at.get("plotly_chart")
    assert at.get("download_button")
    # a new session with the same settings shows the cached run at once, without pressing anything
    again = AppTest.from_file(APP, default_timeout=600)
    again.run()
    again.switch_page(PAGE)
    for k in ("probes_source", "probes_folder", "probes_max_layers", "probes_random"):
        again.session_state[k] = at.session_state[k]
    again.run()
    assert not again.exception, again.exception
    assert again.success and again.dataframe[0].value.equals(df)



def test_probes_page_explains_unusable_labels():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "samples"  # one image per class: nothing to split
    at.session_state["probes_max_layers"] = 2
    at.run()
    _run_to_end(at)
    assert not at.exception, at.exception
    assert at.error and "at least 2 classes" in at.error[0].value


def test_probes_page_shape_and_texture_of_cue_conflict(lite0, cue_conflict_root, tmp_path):
    import shutil

    # a small stimuli root: 4 shape classes x 4 texture classes
    src = cue_conflict_root / "style-transfer-preprocessed-512"
    shapes, textures = ("bear", "bird", "cat", "clock"), ("car", "dog", "elephant", "knife")
    for shape in shapes:
        (tmp_path / "style-transfer-preprocessed-512" / shape).mkdir(parents=True)
        for f in sorted((src / shape).glob("*.png")):
            if f.stem.split("-")[1].rstrip("0123456789") in textures:
                shutil.copy(f, tmp_path / "style-transfer-preprocessed-512" / shape / f.name)
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "cue-conflict"
    at.session_state["probes_cc"] = str(tmp_path)
    at.session_state["probes_label"] = "shape + texture"
    at.session_state["probes_max_layers"] = 2
    at.session_state["probes_random"] = False
    at.run()
    assert not at.exception, at.exception
    _run_to_end(at)
    assert not at.exception, at.exception
    df = at.dataframe[0].value
    assert sorted(set(df["label"])) == ["shape", "texture"] and len(df) == 4
    assert "grouped by exemplar" in at.success[0].value


@pytest.mark.slow
def test_defaults_and_curve_grows_layer_by_layer(lite0, small_folder):
    """Defaults: five curated taps, no random twin (opt-in). A run shows the time left, and the curve
    has one more layer after each step; Stop keeps the probes done, Resume goes on."""
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "folder"
    at.session_state["probes_folder"] = str(small_folder)
    at.run()
    assert not at.exception, at.exception
    assert at.toggle(key="probes_random").value is False
    assert at.number_input(key="probes_max_layers").value == 5
    assert "then 5 probes" in at.info[0].value and not at.get("progress")
    at.button(key="probes_start").click().run()  # step 1: the feature pass and the first probe
    assert not at.exception, at.exception
    seen = []
    for step in range(1, 6):
        if step > 1:
            at.run()  # one probe per step
        assert not at.exception, at.exception
        if at.success:
            break
        chart = json.loads(at.get("plotly_chart")[0].proto.spec)
        seen.append(len(chart["data"][0]["x"]))
        text = at.get("progress")[0].proto.text
        assert re.fullmatch(r"Linear probes: [\d,]+/173 images · ([0-9.]+ (img/s|s/img) · about \d+ (s|min) left"
                            r"|measuring speed…)", text), text  # 13 images + 5 probes of 32 each
        if step == 2:
            at.button(key="probes_stop").click().run()
            assert "Stopped after" in at.warning[0].value
            assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["x"]) == 2  # kept
            at.button(key="probes_start").click()  # Resume: the next at.run() goes on
    while not at.success and not at.exception:
        at.run()
    assert seen[:4] == [1, 2, 3, 4]  # fewer layers than requested while running, one more each step
    assert at.success and "Probed 1 network(s)" in at.success[0].value
    df = at.dataframe[0].value
    assert len(df) == 5 and set(df["weights"]) == {"package"}
