"""vizcore.render: montages written in one go equal the per-layer drawing; one home for drawing."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vizcore import render as R
from vizcore.data import open_dataset


@pytest.fixture(scope="module")
def mined(lite0):
    from vizcore.patches import mine_top_patches

    ds = open_dataset("samples").subset(range(6))
    # a map layer with small receptive fields, a deeper one, and a vector layer (whole-image boxes)
    return mine_top_patches(lite0, ds, ["blocks.1.0", "blocks.4.0", "pool"], k=3, batch_size=6, workers=0,
                            cache=False)


def test_write_montages_equals_layer_montage(mined, tmp_path, monkeypatch):
    decoded = []
    real = R._decode_input
    monkeypatch.setattr(R, "_decode_input", lambda f, p: decoded.append(f) or real(f, p))
    seen = []
    paths = R.write_montages(mined, tmp_path, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert [p.name for p in paths] == ["montage_blocks.1.0.png", "montage_blocks.4.0.png", "montage_pool.png"]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    # every input decoded once for all three layers
    files = {h.file for chans in mined.layers.values() for hits in chans for h in hits}
    assert sorted(decoded) == sorted(files)
    for layer, path in zip(mined.layers, paths):
        with Image.open(path) as im:
            got = np.asarray(im.convert("RGB"))
        want = np.asarray(R.layer_montage(mined, layer))
        assert got.shape == want.shape and np.array_equal(got, want), layer
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind
    # a serial run (one worker) draws the same pixels
    one = R.write_montages(mined, tmp_path / "serial", ["pool"], workers=1)
    with Image.open(one[0]) as a, Image.open(paths[2]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_montage_tiles_are_the_fitted_crops(mined):
    """Row c of a layer montage holds channel c's crops, best first, each fitted to its cell."""
    layer, c, cell, pad = "blocks.4.0", 5, 40, 2
    img = np.asarray(R.layer_montage(mined, layer, [c], cell=cell))
    label_w = 8 * len(str(c)) + 6
    for r in range(mined.k):
        want = np.asarray(R.fit(R.patch_image(mined, layer, c, r), cell))
        x = label_w + pad + r * (cell + pad)
        assert np.array_equal(img[pad:pad + cell, x:x + cell], want)


def test_fast_png_is_lossless(mined):
    img = R.layer_montage(mined, "blocks.1.0")
    fast, default = R.png_bytes(img, fast=True), R.png_bytes(img)
    for data in (fast, default):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(img))


def test_drawing_has_one_home():
    """Crops, montages, heat maps, grids, colour maps and overlays are defined in vizcore.render only:
    the modules they came from neither define nor forward them, and nothing else defines them."""
    import ast
    from pathlib import Path

    from vizcore import activations, patches

    drawing = {"input_image", "patch_image", "upsample_map", "heatmap_overlay", "fit", "channel_montage",
               "layer_montage", "channel_grid", "colorize", "overlay", "lut"}
    assert all(callable(getattr(R, n)) for n in drawing)
    for mod in (patches, activations):
        for n in drawing | {"_upsample", "_fit", "_lut"}:
            assert not hasattr(mod, n), f"{mod.__name__}.{n}"
        assert "__getattr__" not in vars(mod)
    root = Path(R.__file__).resolve().parent
    defined = {}
    for f in root.rglob("*.py"):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name in drawing:
                defined.setdefault(node.name, []).append(str(f.relative_to(root)))
    assert defined == {n: ["render.py"] for n in drawing}
    lut = R.lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable


def test_heat_overlay_colour_maps_rise_monotonically_in_lightness():
    import inspect

    from tests.colours import is_monotone, lightness

    # the overlay's default and every colour map the engine draws with
    defaults = {p.default for f in (R.overlay, R.channel_grid, R.colorize)
                for p in inspect.signature(f).parameters.values() if p.name == "cmap"}
    assert R.HEAT_CMAP in defaults
    for name in defaults | {R.HEAT_CMAP}:
        assert is_monotone(lightness(R.lut(name))), name
    assert not is_monotone(lightness(R.lut("jet")))  # the check does catch a rainbow
