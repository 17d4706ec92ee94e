"""Top-activating patches: streaming top-k == brute force, merging, geometry, cache, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizcore.cache import cache_root
from vizcore.data import ImageDataset, iter_batches, open_dataset
from vizcore.tap import forward_until, tap

ROOT = Path(__file__).resolve().parents[1]


def _random(name: str):
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, "random")


def brute_force(lm, ds: ImageDataset, layers, k: int, batch_size: int) -> dict:
    """Every full map kept, then one global sort per channel: (value desc, index asc)."""
    paths = [lm.resolve(n) for n in layers]
    maps = {p: [] for p in paths}
    order: list[int] = []
    for x, idx in iter_batches(ds, lm.transform(), batch_size=batch_size, workers=0):
        with torch.inference_mode(), tap(lm.model, paths, stop=True, lock=lm.lock) as store:
            forward_until(lm.model, x)
            for p in paths:
                maps[p].append(store[p].clone())
        order += idx
    index = np.asarray(order)
    out = {}
    for name, p in zip(layers, paths):
        m = torch.cat(maps[p]).float().numpy()
        if m.ndim == 2:
            m = m[:, :, None, None]
        n, c, h, w = m.shape
        flat = m.reshape(n, c, h * w)
        vals, pos = flat.max(axis=2), flat.argmax(axis=2)  # numpy: first maximum
        chans = []
        for ch in range(c):
            top = np.lexsort((index, -vals[:, ch]))[:k]
            chans.append([(float(vals[j, ch]), int(index[j]), int(pos[j, ch] // w), int(pos[j, ch] % w))
                          for j in top])
        out[name] = chans
    return out


def as_tuples(res, layer):
    return [[(h.value, h.index, h.y, h.x) for h in hits] for hits in res.layers[layer]]


def patch_entries() -> set[str]:
    d = cache_root() / "patches"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("model,layers,positions", [
    pytest.param("efficientnet_lite0", ["blocks.1.0", "blocks.3.0"], "max-with-indices", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite0", ["blocks.1.0", "blocks.3.0"], "argmax-of-entrants", marks=pytest.mark.slow),
    ("resnet18", ["layer1.1", "fc"], "argmax-of-entrants"),
])
def test_streaming_topk_equals_brute_force(model, layers, positions, small_folder, lite0, monkeypatch):
    import vizcore.patches
    from vizcore.patches import mine_top_patches
    from vizcore.summary import layer_geometry, rf_box

    # both ways of finding the maxima's positions must give the same (exact) answer
    monkeypatch.setattr(vizcore.patches, "MAX_WITH_INDICES_ABOVE", -1.0 if positions == "max-with-indices" else 2.0)

    lm = lite0 if model == "efficientnet_lite0" else _random(model)
    ds = open_dataset(small_folder)
    assert len(ds) == 13
    res = mine_top_patches(lm, ds, layers, k=4, batch_size=5, workers=0, cache=False)
    want = brute_force(lm, ds, layers, k=4, batch_size=5)
    assert res.complete and not res.cached and res.n_images == 13
    for layer in layers:
        assert as_tuples(res, layer) == want[layer]
        assert len(res.layers[layer]) == len(want[layer]) > 0
    # files and boxes follow from index and position
    conv = layers[0]
    geom = layer_geometry(lm, conv)
    for hits in res.layers[conv]:
        for h in hits:
            assert h.file == ds.items[h.index].path
            assert h.box == rf_box(geom, h.y, h.x, lm.spec.input_size)
    if layers[1] == "fc":  # a vector layer: the box is the whole input
        assert all(h.box == (0, 0, 224, 224) and (h.y, h.x) == (0, 0) for hs in res.layers["fc"] for h in hs)


@pytest.mark.slow
def test_merged_halves_equal_whole(small_folder, lite0):
    from vizcore.patches import mine_top_patches

    ds = open_dataset(small_folder)
    layers = ["blocks.2.0", "stem"]
    whole = mine_top_patches(lite0, ds, layers, k=3, batch_size=4, workers=0, cache=False)
    a = mine_top_patches(lite0, ds, layers, k=3, batch_size=4, workers=0, cache=False, indices=range(0, 6))
    b = mine_top_patches(lite0, ds, layers, k=3, batch_size=4, workers=0, cache=False, indices=range(6, 13))
    assert (a.n_images, b.n_images) == (6, 7)
    for merged in (a.merge(b), b.merge(a)):
        assert merged.n_images == 13
        assert merged.to_json() == whole.to_json()
        assert [as_tuples(merged, n) for n in layers] == [as_tuples(whole, n) for n in layers]
    # each half really holds only its own images
    assert all(h.index < 6 for hs in a.layers["stem"] for h in hs)
    other = mine_top_patches(lite0, ds, layers, k=2, batch_size=4, workers=0, cache=False, indices=range(3))
    with pytest.raises(ValueError, match="k"):
        a.merge(other)


# ------------------------------------------------------------------- geometry
def test_alexnet_conv1_patches_are_11px(lite0):
    from vizcore.patches import mine_top_patches
    from vizcore.render import patch_image
    from vizcore.summary import layer_geometry

    lm = _random("alexnet")
    g = layer_geometry(lm, "conv1")
    assert (g.rf, g.jump) == (11, 4)
    ds = open_dataset("samples").subset(range(4))
    res = mine_top_patches(lm, ds, ["conv1"], k=2, batch_size=4, workers=0, cache=False)
    interior = 0
    for c, hits in enumerate(res.layers["conv1"]):
        for r, h in enumerate(hits):
            x0, y0, x1, y1 = h.box
            centre = g.start + g.jump * np.array([h.x, h.y])
            assert abs((x0 + x1 - 1) / 2 - centre[0]) <= 0.5 or x0 == 0 or x1 == 224
            if 0 < x0 and x1 < 224 and 0 < y0 and y1 < 224:
                interior += 1
                assert (x1 - x0, y1 - y0) == (11, 11)
                assert patch_image(res, "conv1", c, r).size == (11, 11)
    assert interior > 0


def test_vgg16_block5_patches_are_212px_before_clipping():
    """The issue's 212 px is the receptive field at the end of VGG-16's block 5 (pool5);
    conv5_3 itself (at its ReLU) sees 196 px (3x3 convs add 2 * jump each)."""
    from vizcore.patches import mine_top_patches
    from vizcore.render import patch_image
    from vizcore.summary import layer_geometry

    lm = _random("vgg16")
    geoms = {"conv5_3": layer_geometry(lm, "conv5_3"), "pool5": layer_geometry(lm, "pool5")}
    assert (geoms["conv5_3"].rf, geoms["conv5_3"].jump) == (196, 16)
    assert (geoms["pool5"].rf, geoms["pool5"].jump) == (212, 32)
    ds = open_dataset("samples").subset(range(2))
    res = mine_top_patches(lm, ds, ["conv5_3", "pool5"], k=2, batch_size=2, workers=0, cache=False)
    assert len(res.layers["conv5_3"]) == len(res.layers["pool5"]) == 512
    for layer, g in geoms.items():
        for c in range(0, 512, 37):
            for r, h in enumerate(res.layers[layer][c]):
                lo = np.floor(g.start + g.jump * np.array([h.x, h.y]) - (g.rf - 1) / 2 + 0.5).astype(int)
                x0, y0 = np.clip(lo, 0, 224)
                x1, y1 = np.clip(lo + g.rf, 0, 224)
                assert h.box == (x0, y0, x1, y1)
                assert patch_image(res, layer, c, r).size == (x1 - x0, y1 - y0)


def test_heatmap_peaks_inside_the_hit_box(lite0):
    from vizcore.patches import activation_map, mine_top_patches
    from vizcore.render import channel_montage, heatmap_overlay, upsample_map

    ds = open_dataset("samples").subset(range(5))
    res = mine_top_patches(lite0, ds, ["blocks.3.0"], k=2, batch_size=5, workers=0, cache=False)
    for c in (0, 7, 33):
        h = res.layers["blocks.3.0"][c][0]
        m = activation_map(lite0, "blocks.3.0", c, h.file)
        assert float(m.max()) == pytest.approx(h.value, rel=1e-4, abs=1e-4)
        assert tuple(divmod(int(m.argmax()), m.shape[1])) == (h.y, h.x)
        up = upsample_map(lite0, "blocks.3.0", m, 224)
        py, px = np.unravel_index(int(up.argmax()), up.shape)
        x0, y0, x1, y1 = h.box
        assert x0 <= px < x1 and y0 <= py < y1
        ov = heatmap_overlay(lite0, res, "blocks.3.0", c, 0)
        assert ov.size == (224, 224) and ov.mode == "RGB"
    # the crop is the network's own input, denormalised
    from vizcore.data import load_image
    from vizcore.render import patch_image

    h = res.layers["blocks.3.0"][0][0]
    x = lite0.transform()(load_image(h.file))
    pre = lite0.spec.preprocess
    rgb = (x * torch.tensor(pre.std)[:, None, None] + torch.tensor(pre.mean)[:, None, None]) * 255
    x0, y0, x1, y1 = h.box
    want = rgb[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()
    got = np.asarray(patch_image(res, "blocks.3.0", 0, 0), dtype=np.float32)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1.0
    strip = channel_montage(res, "blocks.3.0", 0, cell=40)
    assert strip.size[1] == 40 + 4 and strip.size[0] == 2 * 42 + 2


# ---------------------------------------------------------------------- cache
def test_cache_reuse_runs_no_forward(small_folder, lite0, monkeypatch):
    import vizcore.patches as patches

    calls = []
    real = patches.forward_until
    monkeypatch.setattr(patches, "forward_until", lambda m, x: calls.append(len(x)) or real(m, x))
    ds = open_dataset(small_folder)
    first = patches.mine_top_patches(lite0, ds, ["blocks.0.0", "blocks.1.1"], k=3, batch_size=8, workers=0)
    assert first.complete and not first.cached and sum(calls) == 13
    calls.clear()
    second = patches.mine_top_patches(lite0, ds, ["blocks.0.0", "blocks.1.1"], k=3, batch_size=8, workers=0)
    assert calls == [] and second.cached
    assert second.to_json() == first.to_json()
    # a layer added later is mined alone; the cached one is reused as is
    third = patches.mine_top_patches(lite0, ds, ["blocks.0.0", "blocks.2.0"], k=3, batch_size=8, workers=0)
    assert sum(calls) == 13 and not third.cached
    assert third.to_json()["layers"]["blocks.0.0"] == first.to_json()["layers"]["blocks.0.0"]
    # a different k is a different entry
    calls.clear()
    patches.mine_top_patches(lite0, ds, ["blocks.0.0"], k=2, batch_size=8, workers=0)
    assert sum(calls) == 13


def test_interrupted_run_leaves_no_entry(small_folder, lite0):
    from vizcore.patches import mine_top_patches

    ds = open_dataset(small_folder)
    before = patch_entries()

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mine_top_patches(lite0, ds, ["blocks.4.0"], k=3, batch_size=4, workers=0, progress=interrupt)
    assert patch_entries() == before  # nothing written, not even a temporary file

    from vizcore.jobs import Stopped

    seen = []
    with pytest.raises(Stopped) as stop:  # the one stop rule: Stopped carries the partial result
        mine_top_patches(lite0, ds, ["blocks.4.0"], k=3, batch_size=4, workers=0,
                         progress=lambda d, t: seen.append(d), should_stop=lambda: len(seen) >= 2)
    part = stop.value.partial
    assert not part.complete and not part.cached and part.n_images == 8
    assert patch_entries() == before
    assert all(h.index < 8 for hs in part.layers["blocks.4.0"] for h in hs)

    full = mine_top_patches(lite0, ds, ["blocks.4.0"], k=3, batch_size=4, workers=0)
    assert full.complete and full.n_images == 13
    new = patch_entries() - before
    assert len(new) == 1 and all(n.endswith(".pt") for n in new)
    again = mine_top_patches(lite0, ds, ["blocks.4.0"], k=3, batch_size=4, workers=0)
    assert again.cached and again.to_json() == full.to_json()


def test_resumable_job_equals_one_pass(small_folder, lite0):
    from vizcore.passes import PassRun
    from vizcore.patches import MiningPass, mine_top_patches

    ds = open_dataset(small_folder)
    run = PassRun(MiningPass(lite0, ds, ["blocks.1.0"], k=3, cache=False), ds, batch_size=3, workers=0)
    steps = 0
    while not run.step(2):
        steps += 1
        assert not run.result().complete
    assert steps == 2 and run.pos == 13
    whole = mine_top_patches(lite0, ds, ["blocks.1.0"], k=3, batch_size=3, workers=0, cache=False)
    assert run.result().to_json() == whole.to_json()


def test_unreadable_files_are_skipped_and_reported(small_folder, lite0, tmp_path):
    from vizcore.patches import MiningResult, mine_top_patches

    (small_folder / "bird" / "broken.jpg").write_bytes(b"not an image at all")
    (small_folder / "car" / "empty.png").write_bytes(b"")
    ds = open_dataset(small_folder)
    assert len(ds) == 15
    res = mine_top_patches(lite0, ds, ["stem"], k=3, batch_size=4, workers=1, cache=False)
    assert res.n_images == 13
    assert sorted(Path(s["file"]).name for s in res.skipped) == ["broken.jpg", "empty.png"]
    assert all(s["error"] for s in res.skipped)
    files = {h.file for hs in res.layers["stem"] for h in hs}
    assert not any(f.endswith(("broken.jpg", "empty.png")) for f in files)
    # save / load round trip
    back = MiningResult.load(res.save(tmp_path / "mined.pt"))
    assert back.to_json() == res.to_json() and back.layers == res.layers


# ------------------------------------------------------------------------ CLI
def _cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "vizcore", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.mark.slow
def test_cli_mine_contract(small_folder, tmp_path):
    out = tmp_path / "out"
    r = _cli("mine", str(small_folder), "--model", "efficientnet_lite0", "--layers", "stem", "blocks.1.0",
             "--k", "3", "--batch-size", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr and "weights from package" in r.stderr  # progress bar and weight source
    index = json.loads((out / "index.json").read_text())
    assert set(index) == {"model", "weights", "dataset", "n_images", "skipped", "layers"}
    assert index["model"] == "efficientnet_lite0" and index["n_images"] == 13 and index["skipped"] == []
    assert index["weights"]["source"] == "package"
    assert list(index["layers"]) == ["stem", "blocks.1.0"]
    stem = index["layers"]["stem"]
    assert len(stem) == 32 and [c["channel"] for c in stem] == list(range(32))
    for ch in stem + index["layers"]["blocks.1.0"]:
        hits = ch["hits"]
        assert len(hits) == 3
        assert [h["value"] for h in hits] == sorted((h["value"] for h in hits), reverse=True)
        for h in hits:
            assert set(h) == {"file", "value", "y", "x", "box"}
            x0, y0, x1, y1 = h["box"]
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224 and Path(h["file"]).is_file()
    for layer, n in (("stem", 32), ("blocks.1.0", 24)):
        png = out / f"montage_{layer}.png"
        with Image.open(png) as im:
            w, h = im.size
        assert h == n * 66 + 2  # one row per channel: 64 px patches, 2 px gaps
        assert w > 3 * 64

    bad = _cli("mine", str(small_folder), "--model", "efficientnet_lite0", "--layers", "blocks.9.9",
               "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) <= 2 and "unknown layer" in bad.stderr
    missing = _cli("mine", str(tmp_path / "nope"), "--layers", "stem", "--out", str(tmp_path / "bad"))
    assert missing.returncode == 2 and "no such dataset" in missing.stderr
