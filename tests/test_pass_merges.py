"""The merges of the dataset passes are exact, associative and order-free (fast, no Ray).

A backend may split a dataset into any batches and merge their partial states in any
grouping; these tests merge real partial states in every grouping and order and compare
with one pass, bit for bit. Also: every cache key identifies weights by content, so a
checkpoint overwritten in place is never mistaken for the old one (issue 8).
"""
from __future__ import annotations

import itertools
import json
import random
import warnings

import pytest
import torch

from vizcore.data.datasets import ImageDataset, ImageItem
from vizcore.passes import NoImagesError, PassRun, batches_of


def _fold(p, parts):
    state = p.empty()
    for part in parts:
        state = p.merge(state, part)
    return state


def _groupings(p, parts):
    """Every order of the parts, folded left, and a right fold: all must agree."""
    for perm in itertools.permutations(parts):
        yield _fold(p, perm)
    right = p.empty()
    for part in reversed(parts):
        right = p.merge(part, right)
    yield right


@pytest.fixture(scope="module")
def eight(imagenet_samples):
    files = sorted(imagenet_samples.glob("*.jpg"))[:8]
    return ImageDataset("eight", [ImageItem(str(f)) for f in files])


def _parts(p, ds, batch_size=2):
    """The partial state of each batch, as any backend computes it."""
    run = PassRun(p, ds, batch_size=batch_size, workers=0)
    out = []
    for b in batches_of(range(len(ds)), batch_size):
        r = PassRun(p, ds, batch_size=batch_size, workers=0, indices=b)
        r.step()
        out.append(r.state)
    run.step()
    return run, out


def test_mining_merge_is_exact_in_any_grouping(lite0, eight):
    from vizcore.patches import MiningPass

    p = MiningPass(lite0, eight, ["stem", "blocks.1.0"], k=3, cache=False)
    whole, parts = _parts(p, eight)
    want = json.dumps(p.finish(whole.state, whole.info).to_json())
    for state in _groupings(p, parts):
        assert json.dumps(p.finish(state, whole.info).to_json()) == want


def test_mining_merge_breaks_ties_by_index_like_a_full_sort():
    from vizcore.patches import _NO_IMAGE, _merge_topk, _topk

    g = torch.Generator().manual_seed(0)
    k, c = 4, 5
    values = torch.randint(0, 3, (c, 12), generator=g).float()  # many exact ties
    index = torch.arange(12).expand(c, 12)
    pos = torch.randint(0, 50, (c, 12), generator=g)
    chunks = [(values[:, s:s + 3], index[:, s:s + 3], pos[:, s:s + 3]) for s in range(0, 12, 3)]
    states = [(*_topk(v, i, p, k), (7, 7)) for v, i, p in chunks]
    for order in (states, states[::-1], random.Random(1).sample(states, len(states))):
        merged = order[0]
        for s in order[1:]:
            merged = _merge_topk(merged, s, k)
        for ch in range(c):  # brute force: sort all 12 by (value desc, index asc)
            best = sorted(range(12), key=lambda j: (-values[ch, j].item(), j))[:k]
            assert merged[1][ch].tolist() == best
            assert merged[2][ch].tolist() == [pos[ch, j].item() for j in best]
    few = _topk(values[:, :2], index[:, :2], pos[:, :2], k)  # fewer than k: empty slots at the end
    assert few[1][0, 2:].tolist() == [_NO_IMAGE] * 2 and torch.isinf(few[0][0, 2:]).all()


def test_features_merge_is_exact_in_any_grouping(lite0, eight):
    from vizcore.features import FeaturesPass, Pooling

    p = FeaturesPass(lite0, [lite0.resolve("blocks.1.0"), lite0.resolve("blocks.2.0")], Pooling(target=512))
    whole, parts = _parts(p, eight)
    idx, rows, grids, _ = p.finish(whole.state, whole.info)
    assert idx.tolist() == list(range(8))
    for state in _groupings(p, parts):
        i2, r2, g2, _ = p.finish(state, whole.info)
        assert torch.equal(i2, idx) and g2 == grids
        assert all(torch.equal(r2[k], rows[k]) for k in rows)


def test_shape_bias_merge_is_exact_and_the_protocol_is_recorded(lite0, cue_conflict_root):
    from vizcore.cueconflict import STIMULUS_SIZE, ShapeBiasPass, stimulus_protocol

    p = ShapeBiasPass(lite0, cue_conflict_root, use_cache=False)
    picks = list(range(0, 1200, 150))
    whole = PassRun(p, p.dataset, batch_size=2, workers=0, indices=picks)
    whole.step()
    parts = []
    for b in batches_of(picks, 2):
        r = PassRun(p, p.dataset, batch_size=2, workers=0, indices=b)
        r.step()
        parts.append(r.state)
    for state in _groupings(p, parts):
        assert state == whole.state
    res = whole.result()
    assert res.protocol == stimulus_protocol(lite0.spec) and res.to_json()["protocol"]["crop"] is False
    assert res.protocol["input_size"] == STIMULUS_SIZE and res.protocol["resize"] is False
    # the stimuli reach the network as they are: no resize to 256, no centre crop
    from vizcore.data import load_image

    x = p.transform()(load_image(p.dataset.items[0].path))
    assert tuple(x.shape) == (3, 224, 224)
    raw = torch.as_tensor(list(load_image(p.dataset.items[0].path).getdata()), dtype=torch.float32)
    mean, std = torch.tensor(lite0.spec.preprocess.mean), torch.tensor(lite0.spec.preprocess.std)
    assert torch.allclose(x.permute(1, 2, 0).reshape(-1, 3), (raw / 255 - mean) / std, atol=1e-5)


def test_mining_unreadable_folder_says_no_image_could_be_read(lite0, tmp_path):
    from vizcore.patches import mine_top_patches

    for i in range(4):
        (tmp_path / f"junk{i}.png").write_bytes(b"not a png")
    with pytest.raises(NoImagesError, match=r"no image of .* could be read \(4 unreadable\): .*junk0\.png"):
        mine_top_patches(lite0, str(tmp_path), ["stem"], batch_size=2, workers=0)


def test_overwritten_weights_file_is_not_served_from_the_cache(tmp_path):
    """Mine and pool with a checkpoint, overwrite it in place with other weights, run again:
    the results equal a fresh run on the new weights (keys identify weights by content)."""
    from vizcore.features import extract_features, random_twin
    from vizcore.models import load_model
    from vizcore.patches import mine_top_patches

    ckpt = tmp_path / "net.pt"
    torch.save(random_twin("resnet18", 1).model.state_dict(), ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = load_model("resnet18", str(ckpt))
    m1 = mine_top_patches(first, "samples", ["layer1"], k=2, batch_size=5, workers=0)
    f1 = extract_features(first, _samples(), ["layer1"], pool=64, batch_size=5, workers=0)
    torch.save(random_twin("resnet18", 2).model.state_dict(), ckpt)  # same path, other weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = load_model("resnet18", str(ckpt))
    assert second is not first  # the process cache noticed the new file
    m2 = mine_top_patches(second, "samples", ["layer1"], k=2, batch_size=5, workers=0)
    f2 = extract_features(second, _samples(), ["layer1"], pool=64, batch_size=5, workers=0)
    assert not m2.cached and not f2.from_cache
    fresh = random_twin("resnet18", 2)
    assert m2.to_json() | {"weights": 0} == mine_top_patches(
        fresh, "samples", ["layer1"], k=2, batch_size=5, workers=0, cache=False).to_json() | {"weights": 0}
    assert m2.to_json() != m1.to_json()
    ref = extract_features(fresh, _samples(), ["layer1"], pool=64, batch_size=5, workers=0, cache=False)
    assert torch.equal(torch.as_tensor(f2.layers["layer1"]), torch.as_tensor(ref.layers["layer1"]))
    assert not torch.equal(torch.as_tensor(f1.layers["layer1"]), torch.as_tensor(f2.layers["layer1"]))


def _samples():
    from vizcore.data import open_dataset

    return open_dataset("samples")


def test_run_options_reject_an_unknown_engine(lite0, eight):
    from vizcore.patches import mine_top_patches

    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        mine_top_patches(lite0, eight, ["stem"], cache=False, engine="spark")


@pytest.mark.slow
def test_cli_mine_unreadable_folder_is_one_clear_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(5):
        (junk / f"bad{i}.jpg").write_bytes(b"\x00" * 10)
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-m", "vizcore", "mine", str(junk), "--layers", "stem", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=root, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("vizcore mine: error: no image of junk could be read (5 unreadable): ")
    assert "bad0.jpg" in last and "(and 2 more)" in last and "Traceback" not in p.stderr
