"""HighwayNet (vizcore.models.highway): the gated skip, its two ablations, registration,
checkpoints, the architecture explorer's trace, and CKA between the three."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import pages
from vizcore.models.highway import HighwayBlock, HighwayNet

NAMES = ("highwaynet18", "highwaynet18_plain", "highwaynet18_noskip")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def _load(name: str, weights: str = "random"):
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, weights, device="cpu")


def test_gated_block_computes_the_highway_formula():
    torch.manual_seed(0)
    blk = HighwayBlock(8, 16, stride=2, skip="gated").eval()
    x = torch.randn(3, 8, 10, 10)
    h = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(x)))))
    s = blk.downsample(x)
    t = torch.sigmoid(blk.gate(x))
    torch.testing.assert_close(blk(x), torch.relu(h * t + s * (1 - t)))
    assert float(blk.gate.bias.detach().mean()) == -1.0  # starts biased towards carrying the input


def test_gate_closed_carries_the_input_and_gate_open_is_the_plain_stack():
    torch.manual_seed(1)
    blk = HighwayBlock(8, 8, skip="gated").eval()
    none = HighwayBlock(8, 8, skip="none").eval()
    none.load_state_dict({k: v for k, v in blk.state_dict().items() if not k.startswith("gate.")})
    x = torch.relu(torch.randn(2, 8, 6, 6))  # a block's input comes out of a ReLU
    with torch.no_grad():
        blk.gate.weight.zero_()
        blk.gate.bias.fill_(-50.0)  # T = 0: y = relu(x) = x
        torch.testing.assert_close(blk(x), x)
        blk.gate.bias.fill_(50.0)  # T = 1: y = relu(H(x)), the block without a skip
        torch.testing.assert_close(blk(x), none(x))


def test_plain_variant_has_exactly_resnet18s_layout_and_the_explorer_traces_all_three():
    from vizcore.summary import summarize

    ref = summarize("resnet18")
    plain = summarize("highwaynet18_plain")
    assert [(r.name, r.output_shape, r.params, r.macs, r.rf, r.jump) for r in plain.rows] == \
        [(r.name, r.output_shape, r.params, r.macs, r.rf, r.jump) for r in ref.rows]
    assert plain.total_params == ref.total_params == 11_689_512
    gated, noskip = summarize("highwaynet18"), summarize("highwaynet18_noskip")
    assert [r.name for r in gated.rows] == [r.name for r in noskip.rows] == [r.name for r in ref.rows]
    assert [r.rf for r in gated.rows] == [r.rf for r in ref.rows]  # gates (1x1) do not widen the field
    # gates add in x out 1x1 weights (+ bias) per block; no skips drop the 3 projection shortcuts
    gate_params = sum(cin * cout + cout for cin, cout in [(64, 64)] * 2 + [(64, 128), (128, 128), (128, 256),
                                                            (256, 256), (256, 512), (512, 512)])
    assert gated.total_params == ref.total_params + gate_params
    assert noskip.total_params < ref.total_params


def test_registered_random_init_and_user_checkpoint(tmp_path):
    from vizcore.models import WeightsError, get_spec, list_models

    assert set(NAMES) <= set(list_models("highway*"))
    lm = _load("highwaynet18")
    assert lm.weights.source == "random" and get_spec("highwaynet18").family == "highway"
    assert [t.name for t in lm.taps()][:3] == ["conv1", "pool1", "layer1.0"]
    assert sum(p.numel() for p in lm.model.parameters()) == 12_215_720
    # a trained checkpoint (here: the random weights, perturbed) loads with --weights PATH
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in lm.model.state_dict().items()}
    ckpt = tmp_path / "highway.pt"
    torch.save({"state_dict": state}, ckpt)
    mine = _load("highwaynet18", str(ckpt))
    assert mine.weights.source == "file"
    torch.testing.assert_close(mine.model.layer3[0].gate.weight, state["layer3.0.gate.weight"])
    # the plain network's checkpoint does not fit the gated one: one clear message
    torch.save(_load("highwaynet18_plain").model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="missing keys: layer1.0.gate.weight"):
        _load("highwaynet18", str(tmp_path / "plain.pt"))


@pytest.mark.slow
def test_cka_at_init_gated_skips_resemble_plain_skips_more_than_no_skips(imagenet_samples):
    """At initialisation the gates (bias -1, T about 0.27) mostly carry each block's input, as a
    residual block does: the gated network's blocks resemble the plain-skip network's far more than
    the no-skip network's do. All three stems see the same images through random filters (CKA > 0.9)."""
    from vizcore.data.datasets import ImageDataset, ImageItem
    from vizcore.similarity import cka

    ds = ImageDataset("sixteen", [ImageItem(str(p)) for p in sorted(imagenet_samples.glob("*.jpg"))[3::60][:16]])
    gated, plain, noskip = _load("highwaynet18"), _load("highwaynet18_plain"), _load("highwaynet18_noskip")
    layers = ["conv1", "layer1.1", "layer2.1", "layer3.1"]
    g = cka(gated, plain, ds, layers=layers, batch_size=8, workers=0, cache=False).diagonal()
    n = cka(noskip, plain, ds, layers=layers, batch_size=8, workers=0, cache=False).diagonal()
    print("gated vs plain", g, "\nno skip vs plain", n)
    assert g["conv1"] > 0.9 and n["conv1"] > 0.9
    for t in layers[1:]:
        assert g[t] > n[t] + 0.05, (t, g[t], n[t])


def test_architecture_explorer_lists_and_tables_highwaynet():
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(pages.ARCHITECTURES.path).run()
    at.multiselect(key="architectures_models").set_value(["highwaynet18", "highwaynet18_noskip"]).run()
    assert not at.exception, at.exception
    at.selectbox(key="architectures_table_model").set_value("highwaynet18").run()
    df = next(d.value for d in at.dataframe if "rf" in d.value.columns)
    assert list(df["name"])[-2:] == ["avgpool", "fc"]
    # the page shows readable units; the engine's exact count behind them
    assert next(m.value for m in at.metric if m.label == "Parameters") == "12.2 M"
    from vizcore.summary import summarize

    assert summarize("highwaynet18").total_params == 12_215_720
    assert np.isfinite(df["rf"].astype(float)).all()
