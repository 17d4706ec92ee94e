"""Architecture explorer: the lecture's facts, receptive fields checked against gradients, CLI contract."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vizcore.models import Tap, UnknownLayerError, UnknownModelError, get_spec, list_models
from vizcore.summary import (
    GOOGLENET_TABLE1,
    Geometry,
    inception_table,
    layer_geometry,
    rf_box,
    summarize,
    summarize_module,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ lecture facts
@pytest.mark.parametrize("name, millions", [("vgg11", 133), ("vgg13", 133), ("vgg16", 138),
                                            ("vgg19", 144), ("vgg_c", 134)])
def test_vgg_parameter_counts(name, millions):
    s = summarize(name)
    assert round(s.total_params / 1e6) == millions
    # the rows (taps, each counting the network since the previous tap) add up to the total
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.macs for r in s.rows) == s.total_macs


def test_vgg16_exact_counts_and_geometry():
    s = summarize("vgg16")
    assert s.total_params == 138_357_544  # torchvision's published count
    assert s.row("conv1_1").params == 3 * 3 * 3 * 64 + 64
    assert s.row("conv1_1").macs == 224 * 224 * 64 * 27
    assert s.row("fc6").params == 512 * 7 * 7 * 4096 + 4096
    assert s.row("conv5_3").output_shape == (512, 14, 14)
    # 13 3x3 convs and 4 2x2 pools: conv5_3 sees 196 px, pool5 212 px with jump 32
    assert (s.row("conv5_3").rf, s.row("conv5_3").jump) == (196, 16)
    assert (s.row("pool5").rf, s.row("pool5").jump) == (212, 32)
    assert layer_geometry("vgg16", "pool5") == Geometry(212, 32, 15.5)


def test_alexnet_conv1_and_resnet50_layer4():
    assert layer_geometry("alexnet", "conv1").rf == 11
    assert layer_geometry("alexnet", "conv1").jump == 4
    g = layer_geometry("resnet50", "layer4")
    assert g.jump == 32
    assert layer_geometry("resnet50", "layer4.2") == g
    assert summarize("resnet50").row("layer4.2").output_shape == (2048, 7, 7)


def test_bagnet_receptive_fields_are_capped():
    for name, rf in (("bagnet9", 9), ("bagnet17", 17), ("bagnet33", 33)):
        assert layer_geometry(name, "layer4.2").rf == rf


def test_stacked_3x3_convs_see_5x5_and_7x7():
    def stack(n):
        return nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(n)])

    assert summarize_module(stack(1), 32).rows[-1].rf == 3
    assert summarize_module(stack(2), 32).rows[-1].rf == 5
    assert summarize_module(stack(3), 32).rows[-1].rf == 7
    # and the parameter trade-off the lecture draws: 2 x 3x3 costs less than one 5x5
    c = 64
    two = summarize_module(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False),
                                         nn.Conv2d(c, c, 3, padding=1, bias=False)), 16, in_channels=c)
    five = summarize_module(nn.Conv2d(c, c, 5, padding=2, bias=False), 16, in_channels=c)
    assert two.rows[-1].rf == five.rows[-1].rf == 5
    assert (two.total_params, five.total_params) == (18 * c * c, 25 * c * c)


def test_bottleneck_macs_5x5_versus_1x1_reduction():
    direct = summarize_module(nn.Conv2d(192, 32, 5, padding=2), 28, in_channels=192)
    assert direct.rows[0].output_shape == (32, 28, 28)
    assert direct.total_macs == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    reduced = summarize_module(nn.Sequential(nn.Conv2d(192, 16, 1), nn.Conv2d(16, 32, 5, padding=2)), 28,
                               in_channels=192)
    assert reduced.total_macs == 12_443_648
    assert round(direct.total_macs / 1e6, 1) == 120.4 and round(reduced.total_macs / 1e6, 1) == 12.4
    assert [r.macs for r in reduced.rows] == [28 * 28 * 16 * 192, 28 * 28 * 32 * 25 * 16]


def test_googlenet_inception_table_against_the_paper():
    paper = inception_table(variant="paper")
    tv = inception_table(variant="torchvision")
    assert [r.block for r in paper] == list(GOOGLENET_TABLE1)
    for p, t in zip(paper, tv):
        # the paper's layout (5x5 convs) reproduces Table 1's ops column...
        tol = 0.06 if p.block == "inception5a" else 0.015  # Table 1 lists 54M; the widths give 51M
        assert abs(p.macs - p.paper_ops) / p.paper_ops < tol, p
        # ...and its params column within the table's own inconsistencies (4c: 463K vs 509K)
        assert abs(p.conv_weights - p.paper_params) / p.paper_params < 0.11, p
        # torchvision's "5x5" branch is a 3x3: fewer weights and ops, same output
        assert t.output_shape == p.output_shape
        assert t.macs < p.macs and t.conv_weights < p.conv_weights
        assert t.params > t.conv_weights  # BatchNorm parameters
    first = paper[0]
    assert first.output_shape == (256, 28, 28)
    assert first.conv_weights == 192 * 64 + 192 * 96 + 96 * 9 * 128 + 192 * 16 + 16 * 25 * 32 + 192 * 32
    assert round(first.macs / 1e6) == 128
    # the per-block rows of the registered model's summary are the blocks' own counts
    s = summarize("googlenet")
    for t in tv:
        assert s.row(t.block).macs == t.macs
        assert s.row(t.block).params == t.params
        assert s.row(t.block).output_shape == t.output_shape


# ------------------------------------------------------------ receptive fields
class Branchy(nn.Module):
    """Strides, dilation, TF-style 'same' padding by F.pad, a residual add and a concat."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)  # padded by F.pad (0, 1, 0, 1) first
        self.pool = nn.AvgPool2d(2)
        self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 2, 1)
        self.short = nn.Conv2d(6, 6, 1, stride=2)
        self.main = nn.Conv2d(6, 6, 5, stride=2, padding=2)
        # Inception-v3 style factorised 3x3: (3, 1) then (1, 3)
        self.head = nn.Sequential(nn.Conv2d(6, 3, (3, 1), padding=(1, 0)), nn.Conv2d(3, 3, (1, 3), padding=(0, 1)))

    def forward(self, x):
        x = self.conv1(x)
        x = self.conv2(F.pad(x, (0, 1, 0, 1)))
        x = self.pool(x)
        x = torch.cat([self.a(x), self.b(x)], 1)
        x = self.main(x) + self.short(x)
        return self.head(x)


def _gradient_box(model, size, layer_out, y, x):
    """Bounding box (x0, y0, x1, y1) of the input pixels whose gradient is nonzero."""
    inp = torch.rand(1, 2, size, size, requires_grad=True)
    out = layer_out(model, inp)
    out[0, :, y, x].sum().backward()
    nz = inp.grad.abs().sum(dim=(0, 1)).nonzero()
    (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    return x0, y0, x1 + 1, y1 + 1


@pytest.mark.parametrize("layer", ["conv2", "pool", "a", "main", "head"])
def test_receptive_field_matches_input_gradient(layer):
    torch.manual_seed(0)
    model = Branchy()
    with torch.no_grad():  # positive weights: no cancellations, every path shows in the gradient
        for p in model.parameters():
            p.uniform_(0.1, 1.0)
    size = 96
    names = ["conv2", "pool", "a", "main", "head"]
    s = summarize_module(model, size, in_channels=2, taps=[Tap(n, n) for n in names], layers="taps")
    assert [r.name for r in s.rows] == names
    row = s.row(layer)
    captured = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        def layer_out(m, inp):
            m(inp)
            return captured["out"]

        h, w = row.output_shape[1:]
        for y, x in ((h // 2, w // 2), (h // 2 + 1, w // 2 - 1)):
            got = _gradient_box(model, size, layer_out, y, x)
            assert got == rf_box(Geometry(row.rf, row.jump, row.start), y, x, size), (layer, y, x)
            # the centre unit's field lies inside the image here, so its box has the full rf
            assert got[2] - got[0] == row.rf
    finally:
        handle.remove()


@pytest.mark.slow
def test_bagnet_receptive_field_matches_input_gradient():
    """A real registered architecture: BagNet-9's layer4 units see exactly 9x9 pixels."""
    from vizcore.models import build

    torch.manual_seed(0)
    model = build(get_spec("bagnet9")).requires_grad_(False)  # only the input gradient is needed
    with torch.no_grad():  # positive convs, identity BatchNorm (eval): every ReLU passes, no cancellation
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    size = 64
    geom = layer_geometry("bagnet9", "layer4.2", size)
    assert (geom.rf, geom.jump) == (9, 8)
    shape = summarize("bagnet9", size).row("layer4.2").output_shape
    captured = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        def layer_out(m, inp):
            m(inp.expand(1, 3, size, size))
            return captured["out"]

        for y, x in ((3, 3), (shape[1] - 1, 2), (0, 0)):
            inp = torch.rand(1, 1, size, size, requires_grad=True)
            layer_out(model, inp)[0, :, y, x].sum().backward()
            nz = inp.grad[0, 0].nonzero()
            (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
            assert (x0, y0, x1 + 1, y1 + 1) == rf_box(geom, y, x, size)
    finally:
        handle.remove()


def test_layer_geometry_of_a_loaded_model(resnet18_random):
    assert layer_geometry(resnet18_random, "layer4") == layer_geometry("resnet18", "layer4")
    assert summarize(resnet18_random).total_params == sum(p.numel() for p in resnet18_random.model.parameters())


def test_rf_box_clips_and_is_half_open():
    g = Geometry(rf=11, jump=4, start=3.0)  # AlexNet conv1
    assert rf_box(g, 0, 0, 224) == (0, 0, 9, 9)      # centre 3, spans -2..8, clipped
    assert rf_box(g, 1, 2, 224) == (6, 2, 17, 13)
    assert rf_box(g, 54, 54, 224) == (214, 214, 224, 224)
    assert rf_box(Geometry(404, 224, 111.5), 0, 0, 224) == (0, 0, 224, 224)


def test_layer_geometry_accepts_taps_paths_specs_and_sizes():
    assert layer_geometry("vgg16", "conv5_3") == layer_geometry(get_spec("vgg16"), "features.29")
    assert layer_geometry("vgg16", "conv5_3", 448).rf == 196  # the field does not depend on the input size
    small = summarize("resnet18", 112)
    assert small.input_size == 112 and small.row("layer4.1").output_shape == (512, 4, 4)
    assert small.total_params == summarize("resnet18").total_params


def test_unknown_layer_and_model_errors():
    with pytest.raises(UnknownLayerError, match="conv5_3"):
        layer_geometry("vgg16", "conv5_33")
    with pytest.raises(UnknownModelError):
        summarize("no_such_net")
    with pytest.raises(ValueError, match="input size"):
        summarize("vgg16", 0)
    with pytest.raises(UnknownLayerError):
        summarize("vgg16").row("nope")


@pytest.mark.slow
def test_every_registered_model_summarises_at_its_input_size():
    for name in list_models():
        spec = get_spec(name)
        s = summarize(name)
        assert s.input_size == spec.input_size
        assert s.rows, name
        assert s.device == "meta", name  # fast path: nothing allocated
        assert s.total_params > 1e6 and s.total_macs > 1e7, name
        assert sum(r.params for r in s.rows) <= s.total_params
        spatial = [r for r in s.rows if len(r.output_shape) == 3 and r.output_shape[1] > 1]
        assert spatial and all(r.rf >= 1 and r.jump >= 1 for r in spatial), name
        rfs = [r.rf for r in spatial]
        assert rfs == sorted(rfs), name  # fields only grow along the taps
        js = s.to_json()
        assert {"name", "module", "kind", "output_shape", "params", "macs", "rf", "jump", "start"} <= set(js["layers"][0])


def test_all_layers_mode_lists_leaf_modules():
    s = summarize("resnet18", layers="all")
    names = [r.name for r in s.rows]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"] and names[-1] == "fc"
    assert s.row("conv1").kind == "Conv2d" and s.row("conv1").params == 64 * 3 * 49
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.macs for r in s.rows) == s.total_macs
    with pytest.raises(ValueError):
        summarize("resnet18", layers="some")


def test_timm_models():
    # ConvNeXt: channels-last permutes and Linear layers inside the blocks
    s = summarize("timm/convnext_atto")
    assert s.total_params == sum(p.numel() for p in __import__("timm").create_model(
        "convnext_atto", pretrained=False).parameters())
    stages = [r for r in s.rows if r.name.startswith("stages.")]
    assert [r.jump for r in stages] == [4, 8, 16, 32]
    # 4x4/4 stem and two blocks of 7x7 depthwise convs; then a 2x2/2 downsample and two more blocks
    assert (stages[0].rf, stages[1].rf) == (4 + 2 * 6 * 4, 4 + 2 * 6 * 4 + 4 + 2 * 6 * 8)
    # EfficientNet-Lite is timm's tf_ variant: 'same' padding through F.pad (0 left, 1 right)
    g = layer_geometry("efficientnet_lite0", "stem")
    assert (g.rf, g.jump, g.start) == (3, 2, 1.0)


# ------------------------------------------------------------------------- CLI
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "vizcore", "summary", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.slow
def test_cli_json_contract():
    p = _cli("--model", "vgg16", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["total_params"] == 138_357_544
    assert data["total_macs"] == summarize("vgg16").total_macs
    assert {"name", "output_shape", "params", "macs", "rf", "jump"} <= set(data["layers"][0])
    pool5 = next(r for r in data["layers"] if r["name"] == "pool5")
    assert (pool5["output_shape"], pool5["rf"], pool5["jump"]) == ([512, 7, 7], 212, 32)
    p = _cli("--model", "resnet18", "--input-size", "160", "--all", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["input_size"] == 160 and data["layers"][0]["name"] == "conv1"
    assert data["layers"][0]["output_shape"] == [64, 80, 80]


@pytest.mark.slow
def test_cli_table_and_errors():
    p = _cli("--model", "googlenet")
    assert p.returncode == 0, p.stderr
    assert "inception4e" in p.stdout and "total: 6,624,904 parameters" in p.stdout
    for args in (("--model", "not_a_model"), ("--model", "alexnet", "--input-size", "20"),
                 ("--model", "vgg16", "--input-size", "-3")):
        p = _cli(*args)
        assert p.returncode != 0
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert lines[0].startswith("vizcore summary: error:")
