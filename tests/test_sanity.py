"""Sanity checks for evidence maps (Adebayo et al. 2018): model-parameter randomisation on a copy of the
bundled EfficientNet-Lite0 with real weights, on a real photograph. The randomised layers are exactly the
ones named, the shared model is never touched, step 0 and the edge control score exactly 1, CAM with a
randomised classifier is the CAM computed by hand from the new classifier, one seed gives one result."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vizcore.activations import preprocess
from vizcore.data import load_sample
from vizcore.evidence import evidence, to_input
from vizcore.evidence.sanity import (
    MEASURES, SanityJob, edge_map, randomised, sanity_check, similarity, units,
)
from vizcore.jobs import JobRun, RunOptions, cached

NOCACHE = RunOptions(cache=False)


@pytest.fixture(scope="module")
def cat(lite0):
    return preprocess(lite0, load_sample("cat"))


def _params(model) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {pn: p.detach().clone() for pn, p in m.named_parameters(recurse=False)}
            for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


def test_similarity_measures_are_the_libraries_and_identical_maps_score_one():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 64)).astype(np.float32)
    b = a + rng.normal(scale=0.5, size=a.shape).astype(np.float32)
    assert similarity(a, a.copy()) == {m: 1.0 for m in MEASURES}
    s = similarity(a, b)
    assert s["spearman"] == pytest.approx(spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic, abs=1e-9)
    ua, ub = np.abs(a) / np.abs(a).max(), np.abs(b) / np.abs(b).max()
    assert s["ssim"] == pytest.approx(structural_similarity(ua, ub, data_range=1.0, win_size=7), abs=1e-6)
    assert 0 < s["hog"] < 1 and similarity(a, -a)["spearman"] == pytest.approx(1.0)  # absolute values
    assert math.isnan(similarity(a, np.zeros_like(a))["spearman"])  # no rank order in a constant map
    with pytest.raises(ValueError, match="shapes"):
        similarity(a, a[:10])


def test_units_cover_every_parameterised_module_once_in_forward_order(lite0):
    mods = [n for n, m in lite0.model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    for g in ("modules", "layers", "blocks"):
        us = units(lite0, g)
        flat = [n for u in us for n in u.modules]
        assert sorted(flat) == sorted(mods), g
        assert flat[0] == "conv_stem" and flat[-1] == "classifier"
    blocks = units(lite0, "blocks")
    assert [u.name for u in blocks][:2] == ["stem", "blocks.0.0"] and blocks[-1].name == "logits"
    with pytest.raises(ValueError, match="granularity"):
        units(lite0, "bogus")


@pytest.mark.parametrize("k", [1, 2, 7])
def test_after_step_k_exactly_the_last_k_modules_differ_and_the_shared_model_is_untouched(lite0, k):
    before = _params(lite0.model)
    us = units(lite0, "modules")
    top = us[::-1][:k]
    c = randomised(lite0, top, seed=3)
    after = _params(c.model)
    changed = {n for u in top for n in u.modules}
    for n, ps in before.items():
        for pn, p in ps.items():
            if n in changed:
                assert not torch.equal(p, after[n][pn]), (n, pn)
            else:
                assert torch.equal(p, after[n][pn]), (n, pn)
    for n, ps in _params(lite0.model).items():  # the shared model: bit-equal to before
        assert all(torch.equal(p, before[n][pn]) for pn, p in ps.items()), n


def test_cascading_run_scores_one_at_step_0_control_one_always_and_leaves_the_model_alone(lite0, cat):
    before = _params(lite0.model)
    r = sanity_check(lite0, cat, None, ["cam", "guided"], granularity="modules", max_steps=3, options=NOCACHE)
    assert r.complete and r.methods == ("cam", "guided") and len(r.steps) == 4
    us = units(lite0, "modules")[::-1]
    assert r.steps == [[]] + [list(u.modules) for u in us[:3]]
    for m in r.methods:
        for key in MEASURES:
            assert r.scores[m][key][0] == 1.0 and len(r.scores[m][key]) == 4
    assert r.control == {key: [1.0] * 4 for key in MEASURES}
    assert r.scores["cam"]["spearman"][1] < 0.9  # a random classifier changes the class map
    # the edge similarity is the measure between the method's map and the Sobel map of the crop
    e = edge_map(r.image)
    assert r.edges["guided"]["ssim"][0] == pytest.approx(similarity(e, r.maps["guided"][0])["ssim"], abs=1e-9)
    assert r.random_class["class"]["index"] != r.target["index"]
    assert set(r.random_class["scores"]) == {"cam", "guided"}
    for n, ps in _params(lite0.model).items():
        assert all(torch.equal(p, before[n][pn]) for pn, p in ps.items()), n


def test_cam_with_only_the_classifier_randomised_is_the_cam_of_the_new_classifier(lite0, cat):
    r = sanity_check(lite0, cat, None, ["cam"], granularity="modules", max_steps=1, keep=2, options=NOCACHE)
    t = r.target["index"]
    clf = units(lite0, "modules")[-1]
    assert clf.modules == ("classifier",)
    new = randomised(lite0, [clf], seed=0).model.classifier
    assert not torch.equal(new.weight, lite0.model.classifier.weight)
    with torch.no_grad():
        feats = lite0.model.forward_features(cat)[0]  # untouched features of the trained model
        hand = torch.einsum("c,chw->hw", new.weight[t], feats) + new.bias[t]
    ev = evidence(lite0, cat, t, "cam")
    np.testing.assert_allclose(r.maps["cam"][1], to_input(hand, ev.geometry, (224, 224)), atol=1e-4)
    np.testing.assert_allclose(r.maps["cam"][0], ev.map, atol=1e-6)
    assert r.scores["cam"]["spearman"][1] == pytest.approx(
        similarity(ev.map, r.maps["cam"][1])["spearman"], abs=1e-6)


def test_same_seed_same_scores_other_seed_other_scores_and_independent_mode(lite0, cat):
    kw = dict(granularity="blocks", max_steps=2, options=NOCACHE)
    a = sanity_check(lite0, cat, None, ["cam"], seed=5, **kw)
    b = sanity_check(lite0, cat, None, ["cam"], seed=5, **kw)
    c = sanity_check(lite0, cat, None, ["cam"], seed=6, **kw)
    ja, jb = a.to_json(), b.to_json()
    ja.pop("seconds_per_map"), jb.pop("seconds_per_map")
    assert ja == jb and ja["scores"]["cam"]["spearman"][1] < 1
    assert a.scores["cam"]["spearman"][1:] != c.scores["cam"]["spearman"][1:]
    ind = sanity_check(lite0, cat, None, ["cam"], seed=5, mode="independent", keep=3, **kw)
    assert ind.scores["cam"]["spearman"][:2] == a.scores["cam"]["spearman"][:2]  # step 1: the same unit
    # independent step 2 has only the second unit from the top random: its map is that copy's map
    second = units(lite0, "blocks")[::-1][1]
    only = evidence(randomised(lite0, [second], seed=5), cat, ind.target["index"], "cam").map
    np.testing.assert_allclose(ind.maps["cam"][2], only, atol=1e-5)
    assert ind.scores["cam"]["spearman"][2] != a.scores["cam"]["spearman"][2]


def test_sanity_job_is_cached_stops_resumes_and_json_has_no_nan(lite0, cat):
    job = SanityJob(lite0, cat, None, ["cam"], granularity="blocks", max_steps=2)
    assert cached(job) is None
    run = JobRun(job)
    run.step(1)
    assert not run.complete and run.partial() is not None and not run.partial().complete
    while not run.step(1):
        pass
    hit = cached(SanityJob(lite0, cat, None, ["cam"], granularity="blocks", max_steps=2))
    assert hit is not None and hit.to_json() == run.result.to_json()
    assert hit.maps["cam"].keys() == run.result.maps["cam"].keys()
    j = run.result.to_json()
    assert "data randomisation" in j["out_of_scope"]
    with pytest.raises(ValueError, match="mode"):
        SanityJob(lite0, cat, None, ["cam"], mode="bogus")
    with pytest.raises(Exception, match="Did you mean"):
        SanityJob(lite0, cat, None, ["gradcan"])


@pytest.mark.slow
def test_cli_sanity_writes_scores_per_step_and_figures_equal_to_the_engine(tmp_path, lite0):
    import json

    from PIL import Image

    from tests.test_cli import assert_one_line_error, vizcore
    from vizcore.data import sample_path

    out = tmp_path / "san"
    vizcore("evidence", sample_path("cat"), "--sanity", "--methods", "cam", "guided", "--mode", "cascading",
            "--max-steps", "2", "--seed", "1", "--out", out)
    index = json.loads((out / "sanity.json").read_text())
    r = index["results"]["cascading"]
    assert [s["unit"] for s in r["steps"]] == ["none", "logits", "head"]
    assert r["scores"]["cam"]["spearman"][0] == 1.0 and r["control"]["ssim"] == [1.0, 1.0, 1.0]
    assert "data randomisation" in index["out_of_scope"]
    engine = sanity_check(lite0, load_sample("cat"), None, ["cam", "guided"], max_steps=2, seed=1,
                          options=NOCACHE).to_json()
    assert r["scores"] == engine["scores"] and r["random_class"] == engine["random_class"]
    for f in ("sanity.png", "sanity_maps_cascading.png"):
        assert Image.open(out / f).size[0] > 300
    assert_one_line_error(vizcore("evidence", sample_path("cat"), "--sanity", "--max-steps", "0", ok=False),
                          "--max-steps")
    assert_one_line_error(vizcore("evidence", sample_path("cat"), "--sanity", "--methods", "gradcan", ok=False),
                          "gradcam")


@pytest.mark.slow
def test_dataset_version_averages_the_per_image_checks_with_intervals(lite0, tmp_path):
    import shutil

    from vizcore.data import image_folder, load_image, sample_path
    from vizcore.evidence.sanity import DatasetSanityJob
    from vizcore.jobs import run

    for n in ("cat", "coffee", "astronaut", "rocket"):
        shutil.copy(sample_path(n), tmp_path / sample_path(n).name)
    ds = image_folder(tmp_path)
    job = DatasetSanityJob(lite0, ds, n=3, methods=["cam"], max_steps=2, seed=2)
    assert job.indices == [0, 2, 3]
    r = run(job, RunOptions(batch_size=2, workers=0))
    assert r.n_images == 3 and r.names == ["none", "logits", "head"]
    per = [sanity_check(lite0, preprocess(lite0, load_image(ds.items[i].path)), None, ["cam"], max_steps=2,
                        seed=2 + i, options=NOCACHE) for i in job.indices]
    for s in range(3):
        vals = [p.scores["cam"]["spearman"][s] for p in per]
        assert r.mean["cam"]["spearman"][s] == pytest.approx(np.mean(vals), abs=1e-9)
        if s > 0:
            assert r.low["cam"]["spearman"][s] < r.mean["cam"]["spearman"][s] < r.high["cam"]["spearman"][s]
    assert r.mean["cam"]["ssim"][0] == 1.0
    hit = cached(DatasetSanityJob(lite0, ds, n=3, methods=["cam"], max_steps=2, seed=2))
    assert hit is not None and hit.to_json() == r.to_json()


@pytest.mark.slow
def test_cli_dataset_version_writes_means_and_intervals(tmp_path):
    import json
    import shutil

    from tests.test_cli import assert_one_line_error, vizcore
    from vizcore.data import sample_path

    data = tmp_path / "photos"
    data.mkdir()
    for n in ("cat", "coffee"):
        shutil.copy(sample_path(n), data / sample_path(n).name)
    out = tmp_path / "out"
    vizcore("evidence", data, "--sanity", "--images", "2", "--methods", "cam", "--mode", "cascading",
            "--max-steps", "1", "--out", out)
    r = json.loads((out / "sanity_dataset.json").read_text())["results"]["cascading"]
    assert r["n_images"] == 2 and r["steps"] == ["none", "logits"] and r["mean"]["cam"]["spearman"][0] == 1.0
    assert r["low"]["cam"]["spearman"][1] <= r["mean"]["cam"]["spearman"][1] <= r["high"]["cam"]["spearman"][1]
    assert (out / "sanity_dataset_cascading.png").stat().st_size > 1000
    assert_one_line_error(vizcore("evidence", data, "--sanity", "--images", "0", ok=False), "--images")


def test_lrp_and_every_method_see_the_randomised_weights_not_a_stale_copy(lite0, cat):
    r = sanity_check(lite0, cat, None, ["lrp"], granularity="blocks", max_steps=2, keep=3, options=NOCACHE)
    assert r.scores["lrp"]["spearman"][0] == 1.0 and r.scores["lrp"]["spearman"][2] < 0.99
    top2 = units(lite0, "blocks")[::-1][:2]
    want = evidence(randomised(lite0, top2, seed=0), cat, r.target["index"], "lrp").map
    np.testing.assert_allclose(r.maps["lrp"][2], want, atol=1e-5)
