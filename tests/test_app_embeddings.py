"""AppTest of the Embeddings page: early and late maps side by side with quality numbers."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = "app_pages/embeddings.py"


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
    at.button(key="embeddings_run").click().run()
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
