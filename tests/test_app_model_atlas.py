"""AppTest of the Model atlas page on a small precompute made here (lite0 blocks.0.0 over the
built-in samples: featviz 4 steps at 32 px, top-1 images)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vizcore import precompute as pc
from vizcore.jobs import RunOptions

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PAGE = "app_pages/model_atlas.py"
LAYER = "blocks.0.0"
SETTINGS = pc.PrecomputeSettings(featviz_steps=4, featviz_size=32, featviz_batch=16, k=1)


@pytest.fixture(scope="module")
def precomputed(lite0):
    from vizcore.data import open_dataset

    p = pc.plan(lite0, open_dataset("samples"), [LAYER], SETTINGS)
    pc.precompute(p, RunOptions(workers=0), parts=("top images", "feature visualisation"))
    return p


def _open(layer: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    for key, v in (("atlas_steps", 4), ("atlas_size", 32), ("atlas_batch", 16), ("atlas_k", 1)):
        at.number_input(key=key).set_value(v)
    at.selectbox(key="atlas_layer").set_value(layer)
    at.run()
    assert not at.exception, at.exception
    return at


def _tiles(at: AppTest) -> list[int]:
    """The channels of the unit links, in grid order."""
    out = []
    for link in at.get("page_link"):
        q = {k: v[0] for k, v in parse_qs(link.proto.query_string).items()}
        if link.proto.page.endswith("unit.py") or q.get("layer"):
            assert q["model"] == "efficientnet_lite0" and q["layer"] == LAYER and q["dataset"] == "samples"
            out.append(int(q["channel"]))
    return out


def test_grid_of_a_precomputed_layer_links_every_unit(precomputed, lite0):
    at = _open(LAYER)
    assert not at.error
    assert _tiles(at) == list(range(16))
    captions = [c for el in at.get("image") for c in el.captions]
    assert captions.count("featviz") == 16 and captions.count("top patch") == 16  # both, per channel
    assert not [c for c in at.caption if "not precomputed" in c.value]

    # by activation on the session image: the order of the channels' mean activations
    from vizcore import model_atlas as atlas
    from vizcore.data import load_sample

    at.radio(key="atlas_order").set_value("activation").run()
    assert not at.exception, at.exception
    means = atlas.channel_means(lite0, load_sample(at.session_state["session_image"]["name"]), LAYER)
    order = _tiles(at)
    assert sorted(order) == list(range(16))
    vals = means[order]
    assert np.all(np.diff(vals) <= 1e-4), vals  # largest first (up to float noise of another path)

    # by class dependence: a class is chosen, the grid is reordered and still complete
    at.radio(key="atlas_order").set_value("class").run()
    assert not at.exception, at.exception
    at.selectbox(key="atlas_class").set_value(281).run()
    assert not at.exception, at.exception
    order = _tiles(at)
    assert sorted(order) == list(range(16))
    dep = atlas.class_dependence(lite0, load_sample(at.session_state["session_image"]["name"]), LAYER, 281)
    assert np.all(np.diff(dep[order]) <= 1e-4 * max(1.0, float(np.abs(dep).max()))), dep[order]


def test_a_layer_not_precomputed_shows_the_command(precomputed):
    at = _open("blocks.1.0")
    assert not at.exception
    (code,) = at.code
    assert code.value == ("python -m vizcore precompute --model efficientnet_lite0 --data samples --layers blocks.1.0 "
                          "--featviz-steps 4 --featviz-size 32 --k 1")
    assert _tiles(at) == []


def test_unit_page_shows_a_precomputed_featviz_without_a_button(lite0):
    from vizcore.featureviz.cached import featviz_jobs
    from vizcore.jobs import run

    (job,) = featviz_jobs(lite0, "blocks.4.0", range(16), batch=16, steps=16, size=64, seed=0)
    results = run(job, RunOptions(workers=0))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"model": "efficientnet_lite0", "weights": "auto", "layer": "blocks.4.0", "channel": "12"})
    at.switch_page("app_pages/unit.py").run()
    assert not at.exception, at.exception
    at.select_slider(key="unit_fv_steps").set_value(16)
    at.select_slider(key="unit_fv_size").set_value(64).run()
    assert not at.exception, at.exception
    (cap,) = [c for el in at.get("image") for c in el.captions if c.startswith("precomputed")]
    assert f"{results[12].objective_start:.3g} → {results[12].objective_final:.3g}" in cap
    assert not [t for t in at.toggle if t.key == "unit_show_fv"]  # no button to press


def test_a_bad_dataset_is_one_clear_line(tmp_path):
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(PAGE).run()
    at.text_input(key="atlas_dataset").set_value(str(tmp_path / "no-such-folder")).run()
    assert not at.exception, at.exception
    (err,) = [e.value for e in at.error]
    assert "no-such-folder" in err and "Traceback" not in err and "\n" not in err.strip()
    assert _tiles(at) == []
