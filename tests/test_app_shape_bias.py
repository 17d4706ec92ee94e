"""AppTest of the Texture vs shape page: real models on a small real subset of the stimuli.

The page must show what the engine computes: the same numbers in the table, the
per-category fractions in the Geirhos plot, the published values apart from the
measured ones, and each model's decision under the example stimuli.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore import cueconflict as cc
from vizcore.models import load_model

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "shape_bias"
PAGE = "app_pages/shape_bias.py"


@pytest.fixture
def few_stimuli(tmp_path, cue_conflict_root) -> Path:
    """One cue-conflict image per shape class (the first with a conflict), one silhouette, one edge drawing."""
    root = tmp_path / "few"
    for sub in ("style-transfer-preprocessed-512", "filled-silhouettes", "edges"):
        for d in sorted((cue_conflict_root / sub).iterdir()):
            files = sorted(d.iterdir())
            if sub.startswith("style"):
                files = [f for f in files if f.stem.split("-")[1].rstrip("0123456789") != d.name]
            (root / sub / d.name).mkdir(parents=True)
            shutil.copy(files[0], root / sub / d.name / files[0].name)
    return root


def _model(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name)  # "auto", as the page asks: bundled for lite0, random init offline otherwise


def _run_to_end(at: AppTest, max_steps: int = 40) -> AppTest:
    """Press Run (or Resume), then one step per script run until the results show."""
    at.button(key=f"{KEY}_start").click().run()
    for _ in range(max_steps):
        assert not at.exception, at.exception
        if (at.dataframe and not at.get("progress")) or at.error:  # every model scored, or a failure
            return at
        at.run()
    raise AssertionError("scoring did not finish")


def _app(stimuli: Path, models: list[str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    at.text_input(key=f"{KEY}_stimuli").set_value(str(stimuli))
    at.multiselect(key=f"{KEY}_models").set_value(models)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_scores_several_models_and_shows_what_the_engine_computes(few_stimuli):
    at = _app(few_stimuli, ["efficientnet_lite0", "mobilenet_v3_small"])
    # nothing computed yet: one Run button, the work left, no results
    assert any("2 model(s) to score" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    _run_to_end(at)
    assert not at.exception, at.exception

    # badges: bundled weights for lite0, random init (offline fallback) for mobilenet_v3_small
    md = [m.value for m in at.markdown]
    assert any("weights: package" in m for m in md) and any("random init" in m for m in md)

    # the engine's numbers (from the disk cache the page just wrote)
    expected = {n: cc.shape_bias(_model(n), few_stimuli) for n in ("efficientnet_lite0", "mobilenet_v3_small")}
    assert all(r.cached for r in expected.values())
    table = at.dataframe[0].value
    assert list(table["model"]) == ["efficientnet_lite0", "mobilenet_v3_small"]
    for _, row in table.iterrows():
        r = expected[row["model"]]
        assert row["images"] == r.n == 16
        assert row["shape hits"] == r.shape_hits and row["texture hits"] == r.texture_hits
        assert row["shape accuracy"] == pytest.approx(r.shape_accuracy)
        assert row["silhouettes accuracy"] == pytest.approx(r.silhouettes.accuracy)
        assert row["edges accuracy"] == pytest.approx(r.edges.accuracy)

    # the Geirhos plot: per model the per-category fractions, dashed lines at the overall bias,
    # the published values in their own rows with their sources
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = {t.get("name", ""): t for t in spec["data"]}
    lite = next(t for n, t in traces.items() if n.startswith("efficientnet_lite0"))
    pc = expected["efficientnet_lite0"].per_category
    assert dict(zip(lite["y"], lite["x"])) == pytest.approx({c: v for c, v in pc.items() if v is not None})
    refs = next(t for n, t in traces.items() if n.startswith("published"))
    assert refs["x"] == [ref.shape_bias for ref in cc.REFERENCES]
    assert [t.strip() for t in refs["text"]] == [ref.source for ref in cc.REFERENCES]
    assert all(y.endswith("†") for y in refs["y"])  # reference rows are apart from the categories
    assert not set(refs["y"]) & set(cc.CATEGORIES)
    lines = [s for s in spec["layout"]["shapes"] if s["type"] == "line"]
    biases = sorted(r.shape_bias for r in expected.values() if r.shape_bias is not None)
    assert sorted(s["x0"] for s in lines) == pytest.approx(biases)

    # example stimuli with both models' decisions
    captions = [c for img in at.image for c in img.captions]
    assert len(captions) == 8
    first = expected["efficientnet_lite0"]
    by_name = {Path(d.file).name: d for d in first.decisions}
    for cap in captions:
        assert cap.startswith("shape: ") and " / texture: " in cap and "efficientnet_lite0 says " in cap
        assert "mobilenet_v3_small says " in cap
    # one caption checked against the engine's decision
    d0 = next(d for d in first.decisions if f"shape: {d.shape} / texture: {d.texture} → efficientnet_lite0 says "
              f"{d.decision}" in " ".join(captions))
    assert Path(d0.file).name in by_name

    # filter the examples by the first model's decision: every caption then shows a texture decision
    at.selectbox(key=f"{KEY}_ex_outcome").set_value("texture").run()
    caps = [c for img in at.image for c in img.captions]
    assert len(caps) == min(8, first.texture_hits)
    assert all("efficientnet_lite0 says" in c and "(texture)" in c.split("·")[0] for c in caps)


def test_partial_job_resumes_and_head_errors_are_shown(few_stimuli):
    lm = _model("efficientnet_lite0")
    from vizcore.jobs import ChainJob, JobRun, RunOptions

    chain = ChainJob({"efficientnet_lite0": cc.ShapeBiasJob.of(lm, few_stimuli, reuse=False)})
    options = RunOptions(batch_size=8, workers=0)
    job = JobRun(chain, options)
    job.step(8)  # one batch, as a stopped run of the page leaves it
    at = _app(few_stimuli, ["efficientnet_lite0"])
    at.select_slider(key=f"{KEY}_batch").set_value(8)
    ident = (chain.kind, chain.key(), options)
    at.session_state[f"{KEY}_jobrun"] = (ident, job)
    at.run()
    assert any("partly done" in i.value and f"{job.total - 8} images left" in i.value for i in at.info)
    assert at.button(key=f"{KEY}_start").label == "Resume"
    _run_to_end(at)
    assert not at.exception, at.exception
    assert job.complete and at.dataframe[0].value["images"][0] == 16
    assert not at.session_state[f"{KEY}_job_ctl"]["running"]

    # a model without a 1000-class ImageNet head: a clear message, no crash
    at.text_input(key=f"{KEY}_timm").set_value("timm/fastvit_mci0").run()
    assert not at.exception, at.exception
    assert any("no 1000-class ImageNet head" in e.value for e in at.error)


@pytest.mark.slow
def test_running_estimate_with_interval_and_time_left(cue_conflict_root, tmp_path):
    """While scoring, the page shows done/total, img/s, the time left and the shape bias so far with its
    95 % Wilson interval, computed from the decisions on the images scored so far."""
    import re

    import torch

    from vizcore.data import cue_conflict_dataset, load_image
    from vizcore.probes import wilson_interval

    root = tmp_path / "four"  # the first four conflict images of each shape class: 64 images
    for d in sorted((cue_conflict_root / "style-transfer-preprocessed-512").iterdir()):
        files = [f for f in sorted(d.iterdir()) if f.stem.split("-")[1].rstrip("0123456789") != d.name][:4]
        (root / "style-transfer-preprocessed-512" / d.name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / "style-transfer-preprocessed-512" / d.name / f.name)
    at = _app(root, ["efficientnet_lite0"])
    at.select_slider(key=f"{KEY}_batch").set_value(4).run()
    at.button(key=f"{KEY}_start").click().run()  # one step: 4 batches of 4 images
    assert not at.exception, at.exception
    (bar,) = [p.proto.text for p in at.get("progress")]
    assert re.fullmatch(r"Scoring 1 model\(s\) on the stimuli: 16/64 images · [0-9.]+ (img/s|s/img) · "
                        r"about \d+ (s|min) left", bar), bar
    assert not at.dataframe  # not finished

    lm = _model("efficientnet_lite0")
    first = cue_conflict_dataset(root).items[:16]
    with torch.no_grad():
        tf = cc.stimulus_transform(lm.spec)  # the stimuli protocol: fed as they are, no crop
        logits = lm.model(torch.stack([tf(load_image(it.path)) for it in first]))
    decisions = cc.decide(logits)
    s_hits = sum(d == it.labels["shape"] for d, it in zip(decisions, first))
    t_hits = sum(d == it.labels["texture"] for d, it in zip(decisions, first))
    lines = [m.value for m in at.markdown if "so far" in m.value]
    if s_hits + t_hits:
        lo, hi = wilson_interval(s_hits, s_hits + t_hits)
        assert lines == [f"**efficientnet_lite0** so far: shape bias **{s_hits / (s_hits + t_hits):.3f}** "
                         f"(95 % interval {lo:.3f} to {hi:.3f}) from {s_hits + t_hits} shape-or-texture "
                         "decisions among 16 of 64 cue-conflict images."]
    else:
        assert lines == []
    at.run()  # the next step: the estimate moves on
    assert "32/64 images" in at.get("progress")[0].proto.text
    assert any("among 32 of 64 cue-conflict images" in m.value for m in at.markdown)
