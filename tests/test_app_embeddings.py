"""AppTest of the Embeddings page: early and late maps side by side with quality numbers."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import pages

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = pages.EMBEDDINGS.path


def _run_to_end(at: AppTest, press: bool = True, max_steps: int = 10) -> AppTest:
    """Press Compute maps, then one step per script run (features, early map, late map)."""
    if press:
        at.button(key="embeddings_start").click().run()
    for _ in range(max_steps):
        assert not at.exception, at.exception
        if not at.get("progress") and len(at.get("plotly_chart")) == 2:
            return at
        at.run()
    raise AssertionError("the maps did not finish")


def test_embeddings_page_two_layers_with_quality(lite0, small_folder):
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["embeddings_source"] = "folder"
    at.session_state["embeddings_folder"] = str(small_folder)
    at.session_state["embeddings_method"] = "pca"
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Embeddings"
    assert at.selectbox(key="embeddings_early").value == "stem"
    assert at.selectbox(key="embeddings_late").value == "pool"
    _run_to_end(at)
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:2] == ["early: stem", "late: pool"]
    metrics = {}
    for m in at.metric:
        metrics.setdefault(m.label, []).append(m.value)
    knn = [k for k in metrics if k.endswith("-NN accuracy")]
    assert len(metrics["Trustworthiness"]) == 2 and sum(len(metrics[k]) for k in knn) == 2
    # the numbers are the engine's
    from vizcore.embed import embed

    from vizcore.data import open_dataset

    ref = embed(lite0, open_dataset(str(small_folder)), "pool", method="pca")
    assert metrics["Trustworthiness"][1] == f"{ref.quality.trustworthiness:.3f}"
    assert metrics[f"{ref.quality.knn_k}-NN accuracy"][-1] == f"{ref.quality.knn_accuracy:.3f}"
    assert len(at.get("plotly_chart")) == 2
    # picking a point shows its thumbnail
    at.selectbox(key="embeddings_inspect").set_value("zz_cat.png").run()
    assert not at.exception, at.exception
    assert any("zz_cat.png · dog" in c for im in at.image for c in im.captions)


@pytest.mark.slow
def test_cue_conflict_palette_sentence_and_texture_colouring(lite0, cue_conflict_root, tmp_path):
    """16 shape classes get 16 distinct colours (the same in both maps); the sentence under the maps says
    what the numbers mean; one press recolours by texture, with the reason."""
    import json
    import shutil

    root = tmp_path / "cc"  # the first two conflict images of each shape class: 32 stimuli
    for d in sorted((cue_conflict_root / "style-transfer-preprocessed-512").iterdir()):
        files = [f for f in sorted(d.iterdir()) if f.stem.split("-")[1].rstrip("0123456789") != d.name][:2]
        (root / "style-transfer-preprocessed-512" / d.name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / "style-transfer-preprocessed-512" / d.name / f.name)
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(PAGE)
    at.session_state["embeddings_source"] = "cue-conflict"
    at.session_state["embeddings_cc"] = str(root)
    at.session_state["embeddings_method"] = "pca"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="embeddings_label").value == "shape"
    at.button(key="embeddings_start").click().run()  # step 1: the features (32 images: two steps' worth)
    assert at.get("progress")[0].proto.text.startswith("Embeddings: 32/96 images · ")  # a map counts as 32
    at.run()  # step 2: the early map shows before the late one is made
    assert at.get("progress")[0].proto.text.startswith("Embeddings: 64/96 images · ")
    assert "left" in at.get("progress")[0].proto.text
    assert [s.value for s in at.main.subheader] == ["early: stem"] and len(at.get("plotly_chart")) == 1
    _run_to_end(at, press=False)

    def colours(chart) -> dict[str, str]:
        return {t["name"]: t["marker"]["color"] for t in json.loads(chart.proto.spec)["data"]}

    early, late = (colours(c) for c in at.get("plotly_chart"))
    assert len(early) == 16 and len(set(early.values())) == 16  # 16 classes, 16 colours
    assert early == late  # one class, one colour, in both maps
    text = " ".join(m.value for m in at.markdown)
    assert "nearest neighbours" in text and "chance is about 0.06 with 16 classes" in text
    assert "Trustworthiness" in text
    assert any("colour them by **texture**" in i.value for i in at.info)
    at.button(key="embeddings_swap_label").click().run()  # recolour by texture: starts by itself
    _run_to_end(at, press=False)
    assert at.selectbox(key="embeddings_label").value == "texture"
    assert any("Coloured by **texture**" in i.value for i in at.info)
    tex = colours(at.get("plotly_chart")[1])
    from vizcore.data import open_dataset

    assert sorted(tex) == open_dataset(f"cue-conflict:{root}").classes("texture")
    assert len(set(tex.values())) == len(tex)
