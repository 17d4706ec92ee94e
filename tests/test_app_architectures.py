"""AppTest of the Architectures page: the per-layer table and the charts show what
:func:`vizcore.summary.summarize` computes for the chosen networks."""
from __future__ import annotations

import base64
import json

from pathlib import Path

import numpy as np

from streamlit.testing.v1 import AppTest

from dashboard import pages
from vizcore.summary import summarize

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "architectures"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(pages.ARCHITECTURES.path).run()
    assert not at.exception, at.exception
    return at


def _frame(at: AppTest, column: str):
    """The dataframe that has ``column`` (per-layer table: "rf"; totals: "MACs (G)"; GoogLeNet: "block")."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _values(v) -> list:
    """A plotly JSON array: a list, or {"dtype", "bdata"} (base64) as plotly >= 6 writes numbers."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def _table(at: AppTest):
    return _frame(at, "rf")


def _si(x: float) -> str:
    """The page's units, written out independently: three or four significant digits and k, M, G."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.2f} {unit}" if x / scale < 10 else f"{x / scale:.1f} {unit}"
    return str(int(x))


def test_page_renders_table_and_charts_for_two_models():
    at = _app()
    at.multiselect(key=f"{KEY}_models").set_value(["vgg16", "resnet18"]).run()
    assert not at.exception, at.exception
    assert not at.error

    at.selectbox(key=f"{KEY}_table_model").set_value("vgg16").run()
    df = _table(at)
    ref = summarize("vgg16")
    assert list(df["name"]) == [r.name for r in ref.rows]
    pool5 = df[df["name"] == "pool5"].iloc[0]
    assert (pool5["rf"], pool5["jump"], pool5["output_shape"]) == (212, 32, "512x7x7")
    assert ref.total_params == 138_357_544
    # readable units: every row's count in k / M / G
    assert list(df["params"]) == [_si(r.params) for r in ref.rows]
    assert list(df["macs"]) == [_si(r.macs) for r in ref.rows]
    row = {r["name"]: r for _, r in df.iterrows()}
    assert row["conv1_2"]["macs"] == "1.85 G" and row["fc6"]["params"] == "102.8 M" and row["pool5"]["params"] == "0"
    assert len(df) == len(ref.rows) > 10
    assert [m.value for m in at.metric][:2] == ["138.4 M", "15.5 G"]

    at.selectbox(key=f"{KEY}_table_model").set_value("resnet18").run()
    df = _table(at)
    assert list(df["name"]) == [r.name for r in summarize("resnet18").rows]

    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 3  # parameters, MACs, receptive field against depth
    for fig in charts:
        assert {t["name"] for t in fig["data"]} == {"vgg16", "resnet18"}
        # one clearly distinct colour and marker per network; log axes: a tick per decade, 10 / 100 / 1k
        assert len({t["line"]["color"] for t in fig["data"]}) == 2
        assert len({t["marker"]["symbol"] for t in fig["data"]}) == 2
        assert fig["layout"]["yaxis"]["type"] == "log"
        assert fig["layout"]["yaxis"]["tickformat"] == "~s" and fig["layout"]["yaxis"]["dtick"] == 1
    colours = [t["line"]["color"] for t in charts[0]["data"]]
    assert colours == ["rgb(228,26,28)", "rgb(55,126,184)"]  # red, blue (ColorBrewer Set1)
    params_chart, macs_chart, rf_chart = charts
    vgg = next(t for t in rf_chart["data"] if t["name"] == "vgg16")
    assert _values(vgg["y"]) == [r.rf for r in ref.rows]
    x = _values(vgg["x"])
    assert x[0] == 0 and x[-1] == 1  # relative depth
    res = next(t for t in macs_chart["data"] if t["name"] == "resnet18")
    # log axes (the default) leave out layers without MACs (pools)
    assert _values(res["y"]) == [r.macs for r in summarize("resnet18").rows if r.macs > 0]
    at.toggle(key=f"{KEY}_log").set_value(False).run()
    macs_chart = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert macs_chart["layout"]["yaxis"]["tickformat"] == "~s" and "dtick" not in macs_chart["layout"]["yaxis"]
    res = next(t for t in macs_chart["data"] if t["name"] == "resnet18")
    assert _values(res["y"]) == [r.macs for r in summarize("resnet18").rows]

    # the receptive-field picture: one image, the chosen layer's rf in the caption
    at.selectbox(key=f"{KEY}_rf_layer_resnet18").set_value("layer2.1").run()
    assert not at.exception, at.exception
    assert [c for im in at.image for c in im.captions] == ["resnet18 at 224 px on cat"]  # the session image
    row = summarize("resnet18").row("layer2.1")
    assert any(f"receptive field {row.rf} px, jump {row.jump} px" in c.value for c in at.caption)

    totals = _frame(at, "MACs (G)")
    assert list(totals["model"]) == ["vgg16", "resnet18"]


def test_input_size_all_rows_googlenet_table_and_bad_timm_name():
    at = _app()
    at.multiselect(key=f"{KEY}_models").set_value(["googlenet"]).run()
    # GoogLeNet's inception table beside the paper
    inc = _frame(at, "block")
    assert list(inc["block"])[:2] == ["inception3a", "inception3b"]
    assert inc.iloc[0]["ops (Table 1)"] == "128.0 M"
    assert inc.iloc[0]["MACs (paper layout)"] == "128.0 M"
    # the difference columns: torchvision's 3x3 "5x5" branch costs less than Table 1; the paper layout matches
    from vizcore.summary import inception_table

    tv, paper = inception_table(224, variant="torchvision"), inception_table(224, variant="paper")
    assert list(inc["tv vs Table 1"]) == [f"{100 * (t.macs - p.paper_ops) / p.paper_ops:+.1f} %"
                                          for t, p in zip(tv, paper)]
    assert all(float(v.split()[0]) < 0 for v in inc["tv vs Table 1"])
    assert all(abs(float(v.split()[0])) < 1 for v in inc["paper layout vs Table 1"][:7])
    assert len(inc.columns) == 10

    at.toggle(key=f"{KEY}_own_size").set_value(False).run()
    at.number_input(key=f"{KEY}_size").set_value(160).run()
    at.radio(key=f"{KEY}_rows").set_value("all").run()
    assert not at.exception, at.exception
    df = _table(at)
    ref = summarize("googlenet", 160, layers="all")
    assert list(df["name"]) == [r.name for r in ref.rows]
    assert df.iloc[0]["output_shape"] == "64x80x80"

    at.text_input(key=f"{KEY}_timm").set_value("timm/not_a_real_model_xyz").run()
    assert not at.exception, at.exception
    assert any("not_a_real_model_xyz" in e.value for e in at.error)
    assert len(at.get("plotly_chart")) == 3  # the page keeps working for the valid choice



def test_what_one_unit_sees_draws_on_the_session_image():
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("app_pages/architectures.py").run()
    assert not at.exception

    def picture():
        (pic,) = [i for i in at.image if i.captions and " px on " in i.captions[0]]
        return pic

    cat = picture()
    assert cat.captions[0].endswith("px on cat")
    # Another image chosen on another page is the one drawn here.
    at.switch_page("app_pages/activations.py").run()
    at.selectbox(key="activations_sample").set_value("astronaut").run()
    at.switch_page("app_pages/architectures.py").run()
    assert not at.exception
    astro = picture()
    assert astro.captions[0].endswith("px on astronaut")
    assert astro.value != cat.value  # another picture (media ids are content hashes)
    assert any("The image is the session's (astronaut)" in c.value for c in at.caption)
