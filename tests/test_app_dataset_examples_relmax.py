"""AppTest of the Dataset examples page's RelMax section: in the channel detail, the images ranked by
relevance for the model's prediction beside those ranked by activation, run as a job, equal to
:class:`vizcore.relevance.RelMaxJob` run from Python."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboard import pages

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def test_channel_detail_ranks_by_relevance_beside_activation(lite0, tmp_path, monkeypatch):
    from vizcore.data import open_dataset
    from vizcore.jobs import RunOptions, run
    from vizcore.relevance import RelMaxJob

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path))  # a cold cache: the page computes it
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.session_state["dataset_examples_source"] = "samples"
    at.session_state["dataset_examples_layer"] = "blocks.1.0"
    at.session_state["dataset_examples_earlier"] = False
    at.session_state["dataset_examples_heat"] = False
    at.switch_page(pages.DATASET_EXAMPLES.path).run()
    at.button(key="dataset_examples_start").click().run()
    assert not at.exception, at.exception
    at.number_input(key="dataset_examples_channel").set_value(3).run()
    assert not [b for b in at.button if b.key == "dataset_examples_relmax_start"]  # off until the toggle
    at.toggle(key="dataset_examples_relmax").set_value(True).run()
    assert [b.label for b in at.button if b.key == "dataset_examples_relmax_start"] == ["Rank by relevance"]
    at.button(key="dataset_examples_relmax_start").click().run()
    for _ in range(20):
        if not [b for b in at.button if b.key in ("dataset_examples_relmax_start", "dataset_examples_relmax_stop")]:
            break
        at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
    ds = open_dataset("samples")
    res = run(RelMaxJob(lite0, ds, "blocks.1.0", k=9), RunOptions(batch_size=16, workers=0, cache=False))
    assert res.relevance_ranked(3) and res.activation_ranked(3)
    want = [[f"{Path(ds.items[i].path).name} · {v:.3g}" for i, v in rows]
            for rows in (res.relevance_ranked(3), res.activation_ranked(3))]
    shown = [list(im.captions) for im in at.image if im.captions and all(" · " in c for c in im.captions)]
    assert shown[-2:] == want
    assert [m.value for m in at.markdown if m.value.startswith("**By ")] == [
        "**By relevance for the model's prediction**", "**By activation**"]
