"""2-D maps: determinism, quality numbers, real features, CLI contract."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from vizcore.embed import embed, embedding_quality, project


@pytest.fixture(scope="module")
def blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=400, n_features=64, centers=4, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), [f"c{v}" for v in y]


@pytest.mark.parametrize("method", [pytest.param("tsne", marks=pytest.mark.slow), "pca",
                                    pytest.param("umap", marks=pytest.mark.slow)])
def test_deterministic_under_seed(blobs, method):
    x, _ = blobs
    a, backend = project(x, method, seed=7)
    b, _ = project(x, method, seed=7)
    assert a.shape == (400, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert backend in {"opentsne", "sklearn-pca", "umap-learn", "cuml"}
    if method == "tsne":
        c, _ = project(x, method, seed=8)
        assert not np.allclose(a, c)


def test_quality_high_on_separable_data_and_chance_on_random_labels(blobs):
    x, y = blobs
    coords, _ = project(x, "tsne", seed=0)
    q = embedding_quality(x, coords, y)
    assert q.knn_accuracy >= 0.97 and q.trustworthiness > 0.9
    rng = np.random.default_rng(0)
    shuffled = list(rng.permutation(y))
    q2 = embedding_quality(x, coords, shuffled)
    assert q2.knn_accuracy < 0.45  # 4 classes: chance is 0.25
    # a map that ignores the data keeps neither labels nor neighbourhoods
    noise = rng.normal(size=(400, 2))
    q3 = embedding_quality(x, noise, y)
    assert q3.knn_accuracy < 0.45 and q3.trustworthiness < q.trustworthiness - 0.2
    assert embedding_quality(x, coords, None).knn_accuracy is None


def test_trustworthiness_subsamples_large_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    q = embedding_quality(x, x[:, :2], ["a", "b"] * 1500, max_trust=500)
    assert q.trust_n == 500 and 0 <= q.trustworthiness <= 1


@pytest.mark.slow
def test_real_features_deep_layer_separates_classes(lite0, coarse_imagenet):
    deep = embed(lite0, coarse_imagenet, "pool", method="tsne", seed=0)
    early = embed(lite0, coarse_imagenet, "stem", method="tsne", seed=0)
    assert len(deep) == 80 and deep.coords.shape == (80, 2)
    assert deep.quality.knn_accuracy > early.quality.knn_accuracy + 0.2
    assert deep.quality.knn_accuracy >= 0.7
    again = embed(lite0, coarse_imagenet, "pool", method="tsne", seed=0)  # disk cache
    np.testing.assert_array_equal(again.coords, deep.coords)
    fresh = embed(lite0, coarse_imagenet, "pool", method="tsne", seed=0, cache=False)
    np.testing.assert_array_equal(fresh.coords, deep.coords)
    assert deep.rows()[0]["file"] == coarse_imagenet.items[0].path


@pytest.mark.slow
def test_cli_embed_writes_csv_and_json(small_folder, tmp_path):
    out = tmp_path / "maps" / "pool.csv"
    r = subprocess.run([sys.executable, "-m", "vizcore", "embed", str(small_folder), "--layer", "pool",
                        "--method", "pca", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "k-NN label accuracy" in r.stdout and "trustworthiness" in r.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 13 and list(rows[0]) == ["file", "label", "x", "y"]
    assert {row["label"] for row in rows} == {"bird", "car", "dog"}
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["layer"] == "pool" and info["method"] == "pca" and info["n"] == 13
    assert 0 <= info["quality"]["trustworthiness"] <= 1 and 0 <= info["quality"]["knn_accuracy"] <= 1
    bad = subprocess.run([sys.executable, "-m", "vizcore", "embed", str(small_folder), "--layer", "nope",
                          "--out", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown layer" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_embed_cache_follows_the_weights_content(small_folder, tmp_path, monkeypatch):
    """The map of an overwritten checkpoint is computed anew, not read from the old file's entry."""
    import torch

    from vizcore.data import open_dataset
    from vizcore.features import Pooling
    from vizcore.models import build, get_spec, load_model

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(str(small_folder))
    ckpt = tmp_path / "w.pth"
    torch.save(build(get_spec("mobilenet_v3_small"), seed=1).state_dict(), ckpt)
    a = embed(load_model("mobilenet_v3_small", str(ckpt)), ds, "head", method="pca", workers=0, pool=Pooling(grid=1))
    torch.save(build(get_spec("mobilenet_v3_small"), seed=2).state_dict(), ckpt)
    b = embed(load_model("mobilenet_v3_small", str(ckpt)), ds, "head", method="pca", workers=0, pool=Pooling(grid=1))
    assert len([p for p in (tmp_path / "cache" / "embed").iterdir() if not p.name.startswith(".")]) == 2
    assert not np.allclose(a.coords, b.coords)
    fresh = embed(load_model("mobilenet_v3_small", "random:2"), ds, "head", method="pca", workers=0, pool=Pooling(grid=1), cache=False)
    np.testing.assert_allclose(b.coords, fresh.coords, rtol=1e-5, atol=1e-5)


def test_embed_maps_job_makes_one_map_per_tick_and_reads_them_back(lite0, small_folder, tmp_path, monkeypatch):
    """The Embeddings page's job: one map per tick, the maps of embed(), and cached maps at once."""
    from vizcore.data import open_dataset
    from vizcore.embed import EmbedMapsJob
    from vizcore.jobs import JobRun, RunOptions

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(str(small_folder))
    opts = RunOptions(workers=0, batch_size=16)
    job = EmbedMapsJob(lite0, ds, ["stem", "pool"], method="pca", units_per_map=4, options=opts)
    assert job.load() is None
    run = JobRun(job, opts)
    run.step(1)
    assert [m.layer for m in run.partial()] == ["stem"] and not run.complete
    run.step()
    ref = embed(lite0, ds, "pool", method="pca", options=opts)
    np.testing.assert_allclose(run.result[1].coords, ref.coords)
    again = JobRun(EmbedMapsJob(lite0, ds, ["stem", "pool"], method="pca", units_per_map=4, options=opts), opts)
    assert again.from_cache and [m.layer for m in again.result] == ["stem", "pool"]
    np.testing.assert_allclose(again.result[0].coords, run.result[0].coords)
