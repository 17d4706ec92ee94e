"""Concepts of a layer (vizcore.concepts) on EfficientNet-Lite0 and real ImageNet samples: the logit
share below the pooled linear head is exact, U (and W for NMF) are non-negative, a seed fixes W, a
zero concept has importance 0, per-concept top-k crops of two halves merge to those of the whole,
vector sampling merges exactly, the error of each k is reported, and bad input gets one line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vizcore.concepts import (ConceptCropsJob, ConceptError, Concepts, ConceptsJob, VectorJob, concept_importance,
                              concept_maps, factorise, neuron_groups, project)
from vizcore.jobs import RunOptions, Stopped, cached, run

OPTS = RunOptions(batch_size=8, workers=0, cache=False)
EARLY, HEAD = "blocks.2.0", "head"  # early block (signed, 28x28), last feature map below pool + linear head


@pytest.fixture(scope="module")
def ds16(imagenet_samples):
    from vizcore.data import open_dataset

    return open_dataset(str(imagenet_samples)).subset(range(0, 160, 10))


@pytest.fixture(scope="module")
def photo(imagenet_samples):
    return Image.open(imagenet_samples / "n01443537_goldfish.jpg").convert("RGB")


@pytest.fixture(scope="module")
def head_concepts(lite0, ds16):
    return run(ConceptsJob(lite0, ds16, HEAD, 6, per_image=16, options=OPTS), OPTS)


@pytest.fixture(scope="module")
def early_sample(lite0, ds16):
    return run(VectorJob(lite0, ds16, EARLY, per_image=12), OPTS)


def test_logit_shares_below_the_pooled_head_add_up_to_the_logit(lite0, head_concepts, photo):
    imp = concept_importance(lite0, head_concepts, photo, None)
    assert imp.method == "logit share" and imp.bias is not None
    assert abs(imp.shares.sum() + imp.residual + imp.bias - imp.logit) < 1e-4
    # the logit is the model's own
    from vizcore.activations import predict

    assert imp.label == predict(lite0, [photo], topk=1)[0][0].label
    again = concept_importance(lite0, head_concepts, photo, "tench")
    assert again.label == "tench" and abs(again.shares.sum() + again.residual + again.bias - again.logit) < 1e-4


def test_nmf_below_a_relu_is_non_negative_and_reports_the_error_per_k(head_concepts):
    c = head_concepts
    assert c.method == "nmf" and (c.W >= 0).all() and (c.presence >= 0).all()
    assert [r["k"] for r in c.sweep] == [2, 4, 6]
    errs = [r["rel_error"] for r in c.sweep]
    assert all(0 < e < 1 for e in errs) and errs == sorted(errs, reverse=True)
    assert c.sweep[-1]["explained_variance"] == pytest.approx(c.explained_variance)
    assert c.n_vectors == 16 * 16 and c.hw == (7, 7)


def test_semi_nmf_on_a_signed_tap(early_sample):
    A = early_sample.vectors
    assert A.min() < 0  # a block output, no ReLU: semi-NMF
    f = factorise(A, 5, seed=3)
    assert f.method == "semi-nmf" and (f.U >= 0).all() and (f.W < 0).any()
    rel = np.linalg.norm(A - f.U @ f.W) / np.linalg.norm(A)
    assert rel == pytest.approx(f.rel_error, rel=1e-4) and f.rel_error < 1
    g = factorise(A, 5, seed=3)
    assert np.array_equal(f.W, g.W) and np.array_equal(f.U, g.U)  # same seed, same concepts
    with pytest.raises(ConceptError, match="negative"):
        factorise(A, 5, method="nmf")


def test_semi_nmf_recovers_an_exact_low_rank_factorisation():
    rng = np.random.default_rng(0)
    U0 = rng.random((300, 3)) * (rng.random((300, 3)) < 0.5)
    W0 = rng.normal(size=(3, 20))
    f = factorise(U0 @ W0, 3, method="semi-nmf", seed=0, max_iter=2000, tol=1e-9)
    assert f.explained_variance > 0.99 and (f.U >= 0).all()


def test_same_seed_gives_the_same_concepts(lite0, ds16):
    a = run(ConceptsJob(lite0, ds16, HEAD, 4, per_image=8, seed=1, sweep=[4], options=OPTS), OPTS)
    b = run(ConceptsJob(lite0, ds16, HEAD, 4, per_image=8, seed=1, sweep=[4], options=OPTS), OPTS)
    assert np.array_equal(a.W, b.W) and a.digest() == b.digest()


def test_a_concept_zero_everywhere_has_importance_zero(lite0, head_concepts, early_sample, photo):
    from dataclasses import replace

    c = head_concepts
    z = replace(c, k=c.k + 1, W=np.vstack([c.W, np.zeros((1, c.channels), np.float32)]),
                presence=np.append(c.presence, 0))
    imp = concept_importance(lite0, z, photo)
    assert imp.shares[-1] == 0 and abs(imp.shares.sum() + imp.residual + imp.bias - imp.logit) < 1e-4
    f = factorise(early_sample.vectors, 3, seed=0)
    e = Concepts(lite0.name, EARLY, lite0.resolve(EARLY), 4, f.method, 0, (28, 28), 0, 0, f.rel_error,
                 f.explained_variance, [], np.vstack([f.W, np.zeros((1, f.W.shape[1]), np.float32)]),
                 np.zeros(4, np.float32))
    imp = concept_importance(lite0, e, photo)
    assert imp.method == "gradient x concept" and imp.bias is None and imp.shares[-1] == 0
    assert np.isfinite(imp.shares).all() and imp.shares[:3].any()


def test_concept_maps_and_projection(lite0, head_concepts, photo):
    m = concept_maps(lite0, head_concepts, photo)
    assert m.maps.shape == (6, 7, 7) and (m.maps >= 0).all() and m.image.size == (224, 224)
    # the projection of the vectors' own factorisation comes back close to U
    A = np.abs(np.random.default_rng(0).normal(size=(50, 8)))
    f = factorise(A, 3, method="nmf", seed=0, max_iter=1000, tol=1e-8)
    U = project(A, f.W, iters=2000).numpy()
    assert np.linalg.norm(A - U @ f.W) <= np.linalg.norm(A - f.U @ f.W) * 1.01


def test_vector_sampling_of_two_halves_merges_to_the_whole(lite0, ds16, early_sample):
    a = run(VectorJob(lite0, ds16, EARLY, per_image=12, indices=range(8)), OPTS)
    b = run(VectorJob(lite0, ds16, EARLY, per_image=12, indices=range(8, 16)), OPTS)
    assert np.array_equal(np.vstack([a.vectors, b.vectors]), early_sample.vectors)
    assert np.array_equal(np.concatenate([a.position, b.position]), early_sample.position)
    assert early_sample.vectors.shape == (16 * 12, 40)
    assert len(set(early_sample.position[:12])) == 12  # without replacement


def test_top_crops_of_two_halves_merged_equal_the_whole(lite0, ds16, head_concepts):
    whole = run(ConceptCropsJob(lite0, ds16, head_concepts, 3), OPTS)
    a = run(ConceptCropsJob(lite0, ds16, head_concepts, 3, indices=range(8)), OPTS)
    b = run(ConceptCropsJob(lite0, ds16, head_concepts, 3, indices=range(8, 16)), OPTS)
    merged = a.merge(b)
    key = [[(h.index, h.value, h.y, h.x, h.box) for h in hits] for hits in whole.layers[HEAD]]
    assert [[(h.index, h.value, h.y, h.x, h.box) for h in hits] for hits in merged.layers[HEAD]] == key
    assert len(key) == 6 and all(len(r) == 3 for r in key)
    # a hit's value is its concept's maximum over that image's map
    m = concept_maps(lite0, head_concepts, Image.open(ds16.paths[key[0][0][0]]))
    assert m.maps[0].max() == pytest.approx(key[0][0][1], rel=1e-4)
    from vizcore.render import channel_montage

    assert channel_montage(whole, HEAD, 0, cell=32).width >= 3 * 32


def test_the_job_caches_and_a_stopped_run_caches_nothing(lite0, ds16, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    opts = RunOptions(batch_size=4, workers=0)
    job = ConceptsJob(lite0, ds16, HEAD, 3, per_image=4, sweep=[3], options=opts)
    with pytest.raises(Stopped):
        run(job, opts, should_stop=(lambda it=iter(range(100)): next(it) >= 2))
    assert cached(ConceptsJob(lite0, ds16, HEAD, 3, per_image=4, sweep=[3], options=opts), opts) is None
    res = run(ConceptsJob(lite0, ds16, HEAD, 3, per_image=4, sweep=[3], options=opts), opts)
    hit = cached(ConceptsJob(lite0, ds16, HEAD, 3, per_image=4, sweep=[3], options=opts), opts)
    assert hit is not None and np.array_equal(hit.W, res.W) and hit.sweep == res.sweep


def test_neuron_groups_on_one_image(lite0, photo):
    g = neuron_groups(lite0, photo, HEAD, 3)
    assert g.maps.shape == (3, 7, 7) and (g.maps >= 0).all() and (g.W >= 0).all()
    assert list(g.share) == sorted(g.share, reverse=True) and g.share.sum() == pytest.approx(1)
    for w, tops in zip(g.W, g.top_channels):
        assert tops[0] == int(np.argmax(w))
    reg = g.regions()
    assert reg.size == (224, 224)
    # the strongest position of group 0 is tinted towards its colour
    y, x = np.unravel_index(np.argmax(g.maps[0]), g.maps[0].shape)
    assert g.maps[:, y, x].argmax() == 0


def test_bad_input_gets_one_clear_line(lite0, ds16, photo):
    with pytest.raises(ConceptError, match="larger than the 40 channels"):
        ConceptsJob(lite0, ds16, EARLY, 41)
    with pytest.raises(ConceptError, match="no spatial map"):
        ConceptsJob(lite0, ds16, "pool", 4)
    with pytest.raises(ConceptError, match="between 2 and 8"):
        neuron_groups(lite0, photo, HEAD, 9)
    with pytest.raises(ConceptError, match="unknown factorisation"):
        ConceptsJob(lite0, ds16, HEAD, 4, method="pca")


def test_cli_concepts_writes_json_crops_and_the_image_view(lite0, ds16, imagenet_samples, tmp_path, capsys):
    import json
    import os

    from vizcore.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in ds16.paths[:8]:
        os.symlink(p, folder / os.path.basename(p))
    photo = str(imagenet_samples / "n01443537_goldfish.jpg")
    out = tmp_path / "out"
    rc = main(["concepts", str(folder), "--layer", HEAD, "--k", "3", "--per-image", "4", "--crops", "2",
               "--image", photo, "--out", str(out), "--workers", "0", "--no-cache"])
    assert rc == 0
    js = json.loads((out / "concepts.json").read_text())
    assert js["k"] == 3 and js["method"] == "nmf" and len(js["W"]) == 3 and len(js["W"][0]) == 1280
    assert [r["k"] for r in js["sweep"]] == [2, 3] and len(js["crops"]) == 3
    imp = js["image"]["importance"]
    assert imp["method"] == "logit share"
    assert abs(sum(imp["shares"]) + imp["residual"] + imp["bias"] - imp["logit"]) < 1e-4
    assert all((out / f"concept_{i}_crops.png").is_file() for i in range(3)) and (out / "image_concepts.png").is_file()
    capsys.readouterr()
    assert main(["concepts", str(folder), "--layer", EARLY, "--k", "99", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("vizcore concepts: error: k=99 is larger than the 40 channels of blocks.2.0: "
                       "choose k <= 40")
