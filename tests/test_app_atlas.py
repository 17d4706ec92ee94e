"""AppTest of the Activation atlas page on EfficientNet-Lite0 and 16 ImageNet samples: the atlas the page
draws is the engine's (cells, counts in the hover text), the session image's positions are drawn, and a
dataset too small for the grid gets one line."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "atlas"


def test_atlas_page_draws_the_engines_atlas(imagenet_samples, lite0):
    from vizcore.atlas import AtlasJob
    from vizcore.data import open_dataset
    from vizcore.jobs import RunOptions, cached

    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("app_pages/atlas.py").run()
    assert not at.exception, at.exception
    at.radio(key=f"{KEY}_ds_source").set_value("imagenet-samples")
    at.number_input(key=f"{KEY}_n").set_value(16)
    at.selectbox(key=f"{KEY}_layer").set_value("blocks.3.0")
    at.number_input(key=f"{KEY}_per_image").set_value(8)
    at.number_input(key=f"{KEY}_grid").set_value(20).run()
    assert at.error and "too few for a 20×20 grid" in at.error[0].value  # 128 vectors
    at.number_input(key=f"{KEY}_grid").set_value(3)
    at.number_input(key=f"{KEY}_steps").set_value(2).run()
    assert not at.exception, at.exception
    [b for b in at.button if b.label == "Make the atlas"][0].click().run()
    for _ in range(80):
        if at.success or at.error:
            break
        at.run()
        assert not at.exception, at.exception
    assert at.success and not at.error, [e.value for e in at.error]
    full = open_dataset(f"imagenet-samples:{imagenet_samples}")
    ds = full.subset(range(16), name=f"{full.name}[:16]")
    opts = RunOptions(batch_size=16, workers=0)
    a = cached(AtlasJob(lite0, ds, "blocks.3.0", 3, per_image=8, icon_steps=2, icon_size=64, options=opts), opts)
    assert a is not None
    assert at.success[0].value.startswith(f"{len(a.cells)} of 9 cells drawn from 128 vectors")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    hover = spec["data"][1]["hovertext"]
    assert [int(h.split("<br>")[1].split()[0]) for h in hover] == [c["count"] for c in a.cells]
    assert sum(int(h.split()[0]) for h in spec["data"][2]["hovertext"]) == 14 * 14  # every position placed
