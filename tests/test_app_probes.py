"""AppTest of the Linear probes page: a run on a small labelled folder, chart, table, CSV export."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = "app_pages/probes.py"


def test_probes_page_runs_and_exports(lite0, small_folder):
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "folder"
    at.session_state["probes_folder"] = str(small_folder)
    at.session_state["probes_max_layers"] = 3
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Linear probes"
    assert any("13 images" in m.value for m in at.markdown)
    at.button(key="probes_run").click().run()
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

    # Stop clears a pending run and says so
    at.button(key="probes_stop").click().run()
    assert not at.exception and any("Stopped" in m.value for m in at.warning)


def test_probes_page_explains_unusable_labels():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(PAGE)
    at.session_state["probes_source"] = "samples"  # one image per class: nothing to split
    at.session_state["probes_max_layers"] = 2
    at.run()
    at.button(key="probes_run").click().run()
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
    at.button(key="probes_run").click().run()
    assert not at.exception, at.exception
    df = at.dataframe[0].value
    assert sorted(set(df["label"])) == ["shape", "texture"] and len(df) == 4
    assert "grouped by exemplar" in at.success[0].value
