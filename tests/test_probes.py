"""Linear probes on real images with the bundled EfficientNet-Lite0 and its random twin."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from vizcore.features import Pooling, extract_features
from vizcore.jobs import Stopped
from vizcore.probes import fit_probes, holdout_split, make_classifier, probe_features
from vizcore.stats import wilson_interval

LAYERS = ["stem", "blocks.2.0", "blocks.4.0", "head", "pool", "logits"]


@pytest.fixture(scope="module")
def probed(lite0, coarse_imagenet):
    return fit_probes(lite0, coarse_imagenet, layers=LAYERS, compare_random=True, folds=4, seed=0)


@pytest.mark.slow  # the module-wide `probed` fixture: 2 networks x 6 layers x 4 folds
def test_deepest_layer_beats_random_twin_and_first_layer(probed):
    deep, first = probed.layers[-1], probed.layers[0]
    rdeep = probed.random.layers[-1]
    assert deep.name == "logits" and first.name == "stem"
    assert probed.n_test == 80 and len(probed.classes) == 4
    # A trained network separates dogs/birds/reptiles/insects at the top, not at the first layer...
    assert deep.accuracy >= 0.75, deep
    assert deep.accuracy > first.accuracy + 0.25, (deep, first)
    assert deep.ci_low > first.ci_high
    # ...and a random network of the same architecture does not.
    assert deep.accuracy > rdeep.accuracy + 0.25, (deep, rdeep)
    assert deep.ci_low > rdeep.ci_high
    assert probed.random.weights.source == "random" and probed.random.weights.detail == "seed 0"
    # the trained network improves with depth overall; its random twin stays near its first layer
    assert max(lp.accuracy for lp in probed.layers[3:]) > max(lp.accuracy for lp in probed.layers[:2])


@pytest.mark.slow  # the module-wide `probed` fixture: 2 networks x 6 layers x 4 folds
def test_confidence_interval_is_wilson_of_the_pooled_test_predictions(probed):
    n = probed.n_test
    for lp in probed.layers + probed.random.layers:
        correct = round(lp.accuracy * n)
        assert correct == pytest.approx(lp.accuracy * n, abs=1e-6)  # a count over the pooled folds
        assert (lp.ci_low, lp.ci_high) == pytest.approx(wilson_interval(correct, n))
        assert len(lp.fold_accuracies) == 4
        assert lp.accuracy == pytest.approx(np.mean(lp.fold_accuracies), abs=0.02)


@pytest.mark.slow  # the module-wide `probed` fixture: 2 networks x 6 layers x 4 folds
def test_result_json_contract(probed):
    d = json.loads(json.dumps(probed.to_json()))
    for key in ("model", "weights", "label", "n_train", "n_test", "layers"):
        assert key in d
    assert [lp["name"] for lp in d["layers"]] == LAYERS
    assert set(d["layers"][0]) >= {"name", "accuracy", "ci_low", "ci_high", "n_features"}
    assert d["random_init"]["weights"]["source"] == "random"
    assert [lp["name"] for lp in d["random_init"]["layers"]] == LAYERS
    again = type(probed).from_json(d)
    assert again.layers == probed.layers and again.random.layers == probed.random.layers


@pytest.mark.slow
def test_probe_agrees_with_direct_sklearn_fit(lite0, coarse_imagenet):
    feats = extract_features(lite0, coarse_imagenet, ["blocks.4.0", "pool"])
    labels = feats.labels(coarse_imagenet)
    mine = probe_features(feats, labels, test_size=0.25, seed=3, fit_device="sklearn")
    y = np.array(labels)
    tr, te = holdout_split(y, 0.25, 3)
    assert len(te) == mine["n_test"] == 20
    for lp in mine["layers"]:
        x = feats.layers[lp.name]
        clf = make_classifier().fit(x[tr], y[tr])  # StandardScaler + LogisticRegression on all features
        direct = float((clf.predict(x[te]) == y[te]).mean())
        assert abs(direct - lp.accuracy) <= 1 / 20 + 1e-9, (lp.name, direct, lp.accuracy)


@pytest.mark.slow
def test_torch_linear_layer_agrees_with_sklearn(lite0, coarse_imagenet):
    feats = extract_features(lite0, coarse_imagenet, ["pool"])
    labels = feats.labels(coarse_imagenet)
    a = probe_features(feats, labels, seed=1, fit_device="sklearn")["layers"][0]
    b = probe_features(feats, labels, seed=1, fit_device="cpu")["layers"][0]
    assert abs(a.accuracy - b.accuracy) <= 1 / 20 + 1e-9


@pytest.mark.slow
def test_features_pooled_to_comparable_sizes_and_cached(lite0, coarse_imagenet):
    from vizcore.features import features_cache_dir

    feats = extract_features(lite0, coarse_imagenet, LAYERS)
    assert list(feats.layers) == LAYERS and len(feats) == 80
    for name in ("stem", "blocks.2.0", "blocks.4.0", "head"):
        n = feats.layers[name].shape[1]
        assert 0.75 * 9600 <= n <= 1.25 * 9600, (name, n)
        assert feats.grids[name] > 1
    assert feats.layers["stem"].shape[1] == 32 * 17 * 17
    assert feats.layers["pool"].shape[1] == 1280 and feats.layers["logits"].shape[1] == 1000
    again = extract_features(lite0, coarse_imagenet, ["head", "stem"])  # any order, any subset
    assert again.from_cache and list(again.layers) == ["stem", "head"]
    np.testing.assert_array_equal(again.layers["head"], feats.layers["head"])
    # a fixed grid is another cache entry; pooled values are the mean of each cell
    g1 = extract_features(lite0, coarse_imagenet.subset(range(4)), ["blocks.6.0"], pool=Pooling(grid=1))
    full = extract_features(lite0, coarse_imagenet.subset(range(4)), ["blocks.6.0"], pool=Pooling(grid=7))
    assert g1.layers["blocks.6.0"].shape == (4, 320)
    np.testing.assert_allclose(g1.layers["blocks.6.0"],
                               full.layers["blocks.6.0"].reshape(4, 320, 49).mean(-1), rtol=1e-4, atol=1e-5)
    assert len(list(features_cache_dir().glob("*.pt"))) >= len(LAYERS)


def test_stopped_extraction_leaves_no_cache_entry(lite0, coarse_imagenet):
    from vizcore.features import features_cache_dir

    before = set(features_cache_dir().glob("*.pt")) if features_cache_dir().exists() else set()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Stopped):
        extract_features(lite0, coarse_imagenet, ["blocks.1.0"], batch_size=8, should_stop=stop)
    after = set(features_cache_dir().glob("*.pt")) if features_cache_dir().exists() else set()
    assert after == before


def test_random_twin_is_seeded_and_leaves_rng_alone(lite0):
    from vizcore.models import build, load_model

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, c = load_model("efficientnet_lite0", "random:0"), load_model("efficientnet_lite0", "random:1")
    b = build(lite0.spec, seed=0)  # a fresh build with the same seed: the same weights
    assert torch.equal(torch.get_rng_state(), state)
    pa = next(a.model.parameters())
    assert torch.equal(pa, next(b.parameters()))
    assert not torch.equal(pa, next(c.model.parameters()))
    assert not torch.equal(pa, next(lite0.model.parameters()))


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0 and hi == pytest.approx(0.1611, abs=1e-3)
    lo, hi = wilson_interval(50, 100)
    assert lo + hi == pytest.approx(1.0) and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 100), rel=0.03)


@pytest.mark.slow
def test_shape_and_texture_labels_of_the_same_stimuli(lite0, cue_conflict_root):
    from vizcore.data import open_dataset

    ds = open_dataset(f"cue-conflict:{cue_conflict_root}")
    # 4 shape classes x 4 texture classes, every combination, 2 images each
    keep = {"airplane", "bear", "bicycle", "bird"}
    idx = [i for i, it in enumerate(ds.items)
           if it.labels["shape"] in keep and it.labels["texture"] in {"car", "cat", "clock", "elephant"}]
    sub = ds.subset(idx)
    shape = fit_probes(lite0, sub, layers=["blocks.2.0", "pool"], label="shape", folds=3)
    texture = fit_probes(lite0, sub, layers=["blocks.2.0", "pool"], label="texture", folds=3)
    assert shape.classes == ("airplane", "bear", "bicycle", "bird")
    assert texture.classes == ("car", "cat", "clock", "elephant")
    assert shape.n_test == texture.n_test == len(sub)
    assert "grouped by exemplar" in shape.split and "grouped by exemplar" in texture.split
    # texture is linearly decodable from these stimuli well above chance (0.25)
    assert max(lp.accuracy for lp in texture.layers) > 0.5


def test_cue_conflict_splits_keep_exemplars_apart(cue_conflict_root):
    from vizcore.data import open_dataset
    from vizcore.probes import exemplar_groups, kfold_splits

    ds = open_dataset(f"cue-conflict:{cue_conflict_root}")
    for kind in ("shape", "texture"):
        groups = np.array(exemplar_groups(ds, kind))
        y = np.array(ds.labels(kind))
        assert all(g.rstrip("0123456789") == lab for g, lab in zip(groups, y))
        tr, te = holdout_split(y, 0.25, 0, groups)
        assert not set(groups[tr]) & set(groups[te])
        assert set(y[te]) == set(y) and 0.15 < len(te) / len(y) < 0.4
        for tr, te in kfold_splits(y, 3, 0, groups):
            assert not set(groups[tr]) & set(groups[te])
    assert len(set(exemplar_groups(ds, "texture"))) == 48 and len(set(exemplar_groups(ds, "shape"))) == 160
    assert exemplar_groups(ds.subset(range(3)), "shape") is not None


def test_no_groups_for_ordinary_folders(small_folder):
    from vizcore.data import open_dataset
    from vizcore.probes import exemplar_groups

    assert exemplar_groups(open_dataset(str(small_folder)), "class") is None


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "vizcore", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cli_probe_json(small_folder):
    r = _cli("probe", str(small_folder), "--layers", "stem", "pool", "--random-init", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["model"] == "efficientnet_lite0" and d["label"] == "class"
    assert d["weights"]["source"] == "package"
    assert d["n_train"] + d["n_test"] == 13 and d["n_test"] >= 3
    assert [lp["name"] for lp in d["layers"]] == ["stem", "pool"]
    for lp in d["layers"] + d["random_init"]["layers"]:
        correct = round(lp["accuracy"] * d["n_test"])
        assert [lp["ci_low"], lp["ci_high"]] == pytest.approx(list(wilson_interval(correct, d["n_test"])))
        assert lp["n_features"] > 0
    table = _cli("probe", str(small_folder), "--layers", "stem", "pool")
    assert table.returncode == 0 and "pool" in table.stdout and "accuracy" in table.stdout


@pytest.mark.slow
def test_cli_probe_errors(small_folder):
    r = _cli("probe", str(small_folder), "--layers", "blocks.9.9")
    assert r.returncode == 2 and "unknown layer" in r.stderr and "Traceback" not in r.stderr
    r = _cli("probe", str(small_folder), "--label", "texture")
    assert r.returncode == 2 and "texture" in r.stderr and len(r.stderr.strip().splitlines()) <= 2


# ------------------------------------------------- cache: weights by content, stopping leaves nothing
@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("VIZCORE_CACHE", str(root))
    return root


def _entries(root, kind):
    d = root / kind
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []  # not the kind marker


def _save_random(path, seed: int) -> None:
    from vizcore.models import build, get_spec

    torch.save(build(get_spec("mobilenet_v3_small"), seed=seed).state_dict(), path)


@pytest.mark.slow
def test_probe_cache_follows_the_weights_content(own_cache, small_folder, tmp_path):
    """A checkpoint overwritten in place is a new result; the same weights under another path
    are the same result."""
    import shutil

    from vizcore.data import open_dataset
    from vizcore.models import load_model

    ds = open_dataset(str(small_folder))
    ckpt = tmp_path / "w.pth"
    _save_random(ckpt, 1)
    first = fit_probes(load_model("mobilenet_v3_small", str(ckpt)), ds, layers=["head"], seed=0, pool=Pooling(grid=1))
    assert len(_entries(own_cache, "probes")) == 1
    _save_random(ckpt, 2)  # overwritten in place: same path, other weights
    lm2 = load_model("mobilenet_v3_small", str(ckpt))
    assert not torch.equal(next(lm2.model.parameters()), next(load_model("mobilenet_v3_small", "random:1").model.parameters()))
    second = fit_probes(lm2, ds, layers=["head"], seed=0, pool=Pooling(grid=1))
    assert len(_entries(own_cache, "probes")) == 2  # a miss, not the stale result of the old file
    assert second.layers[0].n_features == first.layers[0].n_features
    copy = tmp_path / "elsewhere.pth"
    shutil.copy(ckpt, copy)
    third = fit_probes(load_model("mobilenet_v3_small", str(copy)), ds, layers=["head"], seed=0, pool=Pooling(grid=1))
    assert len(_entries(own_cache, "probes")) == 2  # same content: the cached result
    assert third.layers == second.layers


@pytest.mark.parametrize("stage", ["features", pytest.param("fit", marks=pytest.mark.slow)])
def test_stopping_a_probe_while_it_runs_caches_nothing_half_done(own_cache, small_folder, stage):
    """Stopped in the middle of the feature pass, or after the first layer's fit: ``Stopped`` is
    raised and no probe result (nor partial features) is written; the same run unstopped writes them."""
    from vizcore.data import open_dataset
    from vizcore.models import load_model

    ds = open_dataset(str(small_folder))
    lm = load_model("mobilenet_v3_small", "random:0")
    layers = ["features.3", "features.9", "head"]
    seen: list[tuple[str, int, int]] = []

    def progress(s, done, total):
        seen.append((s, done, total))

    def stop():
        started = [x for x in seen if x[0] == stage]
        return bool(started) and started[-1][1] >= (4 if stage == "features" else 1)

    with pytest.raises(Stopped):
        fit_probes(lm, ds, layers=layers, batch_size=4, workers=0, pool=Pooling(grid=1), progress=progress,
                   should_stop=stop)
    assert any(x[0] == stage for x in seen), "the probe was not running when stopped"
    assert _entries(own_cache, "probes") == []
    features_after_stop = _entries(own_cache, "features")
    if stage == "features":
        assert features_after_stop == []  # nothing of the interrupted pass
        assert [x[1] for x in seen if x[0] == "features"][-1] < len(ds)
    else:
        assert len(features_after_stop) == len(layers)  # complete features: valid entries
        assert [x for x in seen if x[0] == "fit"][-1][1] < len(layers)
    res = fit_probes(lm, ds, layers=layers, batch_size=4, workers=0, pool=Pooling(grid=1))
    assert [lp.name for lp in res.layers] == layers
    assert len(_entries(own_cache, "probes")) == 1  # the complete run is cached


def test_probe_fits_job_fits_one_layer_per_tick_and_equals_fit_probes(lite0, small_folder, tmp_path, monkeypatch):
    """The Linear probes page's job: one fit per tick (the partial result grows by one probe), the
    same numbers as fit_probes of all the layers, and the whole result cached for a new run."""
    from vizcore.data import open_dataset
    from vizcore.jobs import JobRun, RunOptions
    from vizcore.probes import ProbeFitsJob, fit_probes

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(str(small_folder))
    layers = ["stem", "logits"]
    opts = RunOptions(workers=0, batch_size=16)
    run = JobRun(ProbeFitsJob(lite0, ds, layers, ["class"], units_per_fit=5, options=opts), opts)
    assert not run.complete and run.total == 10
    run.step(1)
    assert len(run.partial()) == 1 and not run.complete
    run.step()
    assert run.complete and len(run.result) == 2
    ref = fit_probes(lite0, ds, layers=layers, options=opts)
    assert [r.layers[0].accuracy for r in run.result] == [lp.accuracy for lp in ref.layers]
    again = JobRun(ProbeFitsJob(lite0, ds, layers, ["class"], units_per_fit=5, options=opts), opts)
    assert again.from_cache and [r.to_json() for r in again.result] == [r.to_json() for r in run.result]
