"""Feature visualisation: objectives (exact, on a hand-set network), parameterisations,
transforms, batching semantics, early stop, reproducibility, diversity, and the CLI."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from vizcore.featureviz import objectives as O
from vizcore.featureviz import param as P
from vizcore.featureviz import transforms as T
from vizcore.featureviz import best_dataset_value, render, unit_objective
from vizcore.tap import forward_until, tap

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------- a hand-set network
def tiny_net() -> nn.Module:
    """conv1x1 3->2: ch0 = R + G + B, ch1 = R - B; then ReLU."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0]]).view(2, 3, 1, 1))
    return nn.Sequential(conv, nn.ReLU()).eval()


def tiny_acts() -> dict[str, torch.Tensor]:
    # batch of 2 images, 2x2 pixels each
    x = torch.tensor([
        [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
        [[[0.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],
    ])
    net = tiny_net()
    with torch.no_grad(), tap(net, ["0"], stop=True) as store:
        forward_until(net, x)
        return {"c": store["0"].clone()}
    # item 0: ch0 = [[2,3],[4,5]] (mean 3.5), ch1 = [[0,1],[2,3]] (mean 1.5)
    # item 1: ch0 = [[1,1],[1,3]] (mean 1.5), ch1 = [[0,0],[0,2]] (mean 0.5)


def test_objectives_exact_values():
    acts = tiny_acts()
    assert O.channel("c", 0)(acts).tolist() == [3.5, 1.5]
    assert O.channel("c", 1)(acts).tolist() == [1.5, 0.5]
    assert O.channel("c", [1, 0])(acts).tolist() == [1.5, 1.5]  # one channel per item
    assert O.neuron("c", 0, 1, 1)(acts).tolist() == [5.0, 3.0]
    assert O.neuron("c", 1)(acts).tolist() == [3.0, 2.0]  # centre of a 2x2 map is (1, 1)
    # DeepDream: mean of squares over channels and positions
    assert O.layer("c")(acts).tolist() == [(4 + 9 + 16 + 25 + 0 + 1 + 4 + 9) / 8, (1 + 1 + 1 + 9 + 0 + 0 + 0 + 4) / 8]
    assert O.direction("c", [1.0, -2.0])(acts).tolist() == [3.5 - 3.0, 1.5 - 1.0]


def test_objective_algebra_exact():
    acts = tiny_acts()
    a, b = O.channel("c", 0), O.channel("c", 1)
    assert (a + b)(acts).tolist() == [5.0, 2.0]
    assert (a - b)(acts).tolist() == [2.0, 1.0]
    assert (2 * a)(acts).tolist() == [7.0, 3.0]
    assert (a * 0.5)(acts).tolist() == [1.75, 0.75]
    assert (a / 2)(acts).tolist() == [1.75, 0.75]
    assert (-a)(acts).tolist() == [-3.5, -1.5]
    assert (a + 1)(acts).tolist() == [4.5, 2.5]
    assert (1 - a)(acts).tolist() == [-2.5, -0.5]
    assert sum([a, b, a])(acts).tolist() == [8.5, 3.5]
    assert (a - 0.5 * b).layers == ("c",)
    assert "channel c:0" in repr(a - b)


def test_parse_objectives():
    acts = tiny_acts()
    assert O.parse("c:1")(acts).tolist() == [1.5, 0.5]
    assert O.parse("-c:0")(acts).tolist() == [-3.5, -1.5]
    assert O.parse("neuron:c:0:0:1")(acts).tolist() == [3.0, 1.0]
    assert O.parse("layer:c")(acts).tolist() == O.layer("c")(acts).tolist()
    assert O.parse("c:0 - 0.5*c:1")(acts).tolist() == [2.75, 1.25]
    assert O.parse("c:0 + c:1 - c:1")(acts).tolist() == [3.5, 1.5]
    layered = O.parse("blocks.4.0:12")
    assert layered.layers == ("blocks.4.0",)
    for bad in ("blocks.4.0", "", "neuron:c:1:2", "c:x"):
        with pytest.raises(ValueError):
            O.parse(bad)


def test_diversity_term_exact():
    # two items with identical activation patterns have cosine similarity 1 -> diversity -1;
    # orthogonal Gram matrices give 0.
    a = torch.zeros(3, 2, 1, 2)
    a[0, 0] = 1.0
    a[1, 0] = 2.0  # same pattern as item 0, scaled
    a[2, 1] = 1.0  # orthogonal
    d = O.diversity("c")({"c": a})
    assert torch.allclose(d, torch.tensor([-0.5, -0.5, 0.0]))
    grouped = O.diversity("c", groups=[7, 7, 9])({"c": a})
    assert torch.allclose(grouped, torch.tensor([-1.0, -1.0, 0.0]))


# ------------------------------------------------------------------ parameterisations
def test_colour_matrix_matches_imagenet_statistics(imagenet_samples):
    files = sorted(imagenet_samples.glob("*.jpg"))[::5]
    assert len(files) >= 150
    m = P.colour_sqrt_cov(files)
    assert np.abs(m - P.COLOUR_SQRT_COV).max() < 0.06
    assert np.isclose(np.linalg.norm(P.COLOUR_SQRT_COV, axis=0).max(), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", ["fft", "pixel"])
def test_param_shapes_range_and_seeding(name):
    params, make = P.make_param(name, 32, [(0, 0), (1, 0)], seed=3)
    img = make()
    assert img.shape == (2, 3, 32, 32)
    assert float(img.detach().min()) >= 0 and float(img.detach().max()) <= 1
    assert all(p.requires_grad for p in params)
    # an item starts from the same noise alone or in a batch; keys differ -> noise differs
    _, alone = P.make_param(name, 32, [(1, 0)], seed=3)
    assert torch.equal(alone()[0], img[1])
    assert not torch.equal(img[0], img[1])
    with pytest.raises(ValueError):
        P.make_param("nope", 32, [0])


def test_fft_param_is_low_frequency_weighted():
    w = P.spectrum_scale(64)
    assert w.shape == (64, 33)
    assert w[0, 1] == w[1, 0] and w[0, 1] > w[0, 10] > w[32, 32]


# ------------------------------------------------------------------------- transforms
def test_transform_shapes_and_fill():
    rng = random.Random(0)
    x = torch.rand(2, 3, 40, 40)
    assert T.pad(5)(x, rng).shape == (2, 3, 50, 50)
    assert float(T.pad(5)(x, rng)[0, 0, 0, 0]) == 0.5
    assert T.jitter(4)(x, rng).shape == (2, 3, 36, 36)
    assert T.random_scale([0.5])(x, rng).shape == (2, 3, 20, 20)
    assert T.random_rotate([10])(x, rng).shape == (2, 3, 40, 40)
    assert torch.equal(T.random_rotate([0])(x, rng), x)
    assert T.standard()(x, rng).shape == (2, 3, 40, 40)  # constant size: kernels are reused
    assert T.light()(x, rng).shape == (2, 3, 40, 40)
    chain = T.compose(T.pad(6), T.jitter(4), T.random_scale([1.1]), T.random_rotate([5]))
    assert chain(x, rng).shape == (2, 3, 53, 53)
    assert T.lucent_chain()(x, rng).shape[-1] in range(46, 56)
    assert "pad(6)" in repr(chain)
    # no-op affine is the identity (sampling at pixel centres)
    ident = T.random_affine()(x, rng)
    assert torch.allclose(ident, x, atol=1e-5)
    # a strong zoom-out shows grey around the image
    out = T.random_affine(scales=[0.5])(x, rng)
    assert torch.allclose(out[..., 0, 0], torch.full((2, 3), 0.5))
    # the same random draw for every batch item
    y = torch.stack([x[0], x[0]])
    z = T.standard()(y, random.Random(1))
    assert torch.equal(z[0], z[1])
    with pytest.raises(ValueError):
        T.get_transforms("bogus")


# -------------------------------------------------------------------- render on models
@pytest.fixture(scope="module")
def small_lite0(lite0):
    return lite0


def _noise_value(lm, layer, channels, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(channels), 3, size, size, generator=g)
    pre = lm.spec.preprocess
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    path = lm.resolve(layer)
    with torch.no_grad(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        return unit_objective("channel", layer, channels)({layer: store[path]}).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_lite0_objective_rises_and_beats_noise(lite0, param):
    chans = [3, 11]
    res = render(lite0, "blocks.3.0", chans, param=param, steps=20, size=64, seed=0)
    assert [r.channel for r in res] == chans
    noise = _noise_value(lite0, "blocks.3.0", chans, 64)
    for r, n in zip(res, noise):
        assert r.objective_final > r.objective_start
        assert r.objective_final > n
        assert r.image.size == (64, 64) and r.image.mode == "RGB"
        assert r.steps_run == 20 and r.param == param
        js = r.to_json()
        for k in ("model", "weights", "layer", "channel", "objective", "param", "transforms", "steps", "lr",
                  "size", "seed", "objective_start", "objective_final"):
            assert k in js
        assert js["weights"]["source"] == "package"
        json.dumps(js)


def _seeded_random(name: str, seed: int = 0):
    """A random-init torchvision model, the same in every run (seeded initialisation)."""
    from vizcore.features import random_twin

    return random_twin(name, seed)


@pytest.mark.parametrize("name,layer", [("resnet18", "layer2.0.bn2"), ("alexnet", "features.6")])
@pytest.mark.slow
def test_random_torchvision_objective_rises_and_beats_noise(name, layer):
    # pre-ReLU layers: after a ReLU a random network has dead channels, whose gradient is zero
    lm = _seeded_random(name)
    chans = [0, 5, 17]
    res = render(lm, layer, chans, steps=24, lr=0.1, size=64)
    noise = _noise_value(lm, layer, chans, 64)
    for r, n in zip(res, noise):
        assert r.objective_final > r.objective_start and r.objective_final > n, (r.channel, n)
        assert r.weights["source"] == "random"


def test_fixture_random_resnet18_renders(resnet18_random):
    res = render(resnet18_random, "layer2.0.bn2", [3], steps=8, lr=0.1, size=48)
    assert res[0].objective_final > res[0].objective_start
    assert res[0].module == "layer2.0.bn2"


@pytest.mark.parametrize("steps", [0, -5])
def test_no_optimisation_steps_is_refused(resnet18_random, steps):
    with pytest.raises(ValueError, match=rf"steps must be a whole number of at least 1, not {steps}: with no "
                                         "optimisation step the image is the random start"):
        render(resnet18_random, "layer2.0.bn2", [3], steps=steps, size=48)


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_cli_refuses_no_steps_before_loading_anything(tmp_path, capsys, steps):
    from vizcore.cli import main

    out = tmp_path / "x"
    code = main(["featviz", "--layer", "blocks.2.0", "--steps", steps, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"vizcore featviz: error: --steps must be at least 1, not {steps}")
    assert not out.exists()


@pytest.mark.slow
def test_negative_neuron_and_layer_objectives(lite0):
    neg = render(lite0, "blocks.2.0", [4], objective="-channel", steps=8, size=64)[0]
    assert neg.objective_final > neg.objective_start  # the negative rises: the channel falls
    nrn = render(lite0, "blocks.2.0", [4], objective="neuron", steps=8, size=64)[0]
    assert nrn.objective_final > nrn.objective_start
    dd = render(lite0, "blocks.2.0", None, objective="layer", steps=8, size=64, n_per_channel=2)
    assert [r.channel for r in dd] == [None, None]
    assert all(r.objective_final > r.objective_start for r in dd)


@pytest.mark.slow
def test_custom_and_parsed_objectives_render(lite0):
    from vizcore.featureviz import direction

    vec = torch.zeros(40)
    vec[[2, 5]] = torch.tensor([1.0, -1.0])  # "channel 2 more than channel 5"
    res = render(lite0, "blocks.2.0", None, objective=direction("blocks.2.0", vec), steps=8, size=48)
    assert len(res) == 1 and res[0].channel is None and res[0].objective.startswith("direction")
    assert res[0].objective_final > res[0].objective_start
    combo = render(lite0, "blocks.2.0", None, objective="blocks.2.0:2 - blocks.2.0:5", steps=8, size=48)[0]
    assert combo.objective == "blocks.2.0:2 - blocks.2.0:5"
    # the parsed difference and the direction are the same objective: same start value
    assert combo.objective_start == pytest.approx(res[0].objective_start, rel=1e-4, abs=1e-5)


def test_batch_items_have_independent_gradients(lite0):
    """Each item's gradient comes only from its own channel: equal to the item optimised alone."""
    layer, chans, size = "blocks.3.0", [2, 9, 30], 48
    path = lite0.resolve(layer)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(len(chans), 3, size, size, generator=g)

    def grads(x, channels, item=None):
        x = x.clone().requires_grad_(True)
        with tap(lite0.model, [path], stop=True, detach=False, lock=lite0.lock) as store:
            forward_until(lite0.model, x)
            values = unit_objective("channel", layer, channels)({layer: store[path]})
            (values.sum() if item is None else values[item]).backward()
        return x.grad

    # one item's value depends on that item's image only: exactly zero gradient elsewhere
    for i in range(len(chans)):
        g_i = grads(base, chans, item=i)
        assert g_i[i].abs().sum() > 0
        assert all(torch.count_nonzero(g_i[j]) == 0 for j in range(len(chans)) if j != i)

    # the summed batch objective gives each item the gradient it gets when optimised alone
    batch = grads(base, chans)
    for i, c in enumerate(chans):
        alone = grads(base[i:i + 1], [c])[0]
        assert (batch[i] - alone).abs().max() <= 1e-4 * alone.abs().max()


def test_batch_render_matches_one_at_a_time(lite0):
    both = render(lite0, "blocks.3.0", [2, 9], steps=4, size=48, seed=1)
    alone = render(lite0, "blocks.3.0", [9], steps=4, size=48, seed=1)[0]
    a = np.asarray(both[1].image, dtype=float)
    b = np.asarray(alone.image, dtype=float)
    assert np.abs(a - b).mean() < 1.0  # same image up to float rounding (0-255 scale)
    assert abs(both[1].objective_final - alone.objective_final) < 1e-2 * max(1.0, abs(alone.objective_final))


def test_forward_stops_at_target_layer(lite0):
    calls = {"later": 0, "target": 0}

    def count(name):
        def reduce(_path, t):
            calls[name] += 1
            return None
        return reduce

    before = [p.clone() for p in list(lite0.model.parameters())[:5]]
    with tap(lite0.model, ["blocks.5.0"], reduce=count("later"), lock=lite0.lock):
        with tap(lite0.model, ["blocks.3.0"], reduce=count("target"), lock=lite0.lock):
            render(lite0, "blocks.3.0", [1], steps=3, size=48)
    assert calls["later"] == 0
    assert calls["target"] == 3 + 2  # start, three steps, final
    assert all(torch.equal(a, b) for a, b in zip(before, list(lite0.model.parameters())[:5]))
    assert not any(p.requires_grad for p in lite0.model.parameters())


def test_reproducible_under_seed(lite0):
    a = render(lite0, "blocks.2.0", [1], steps=5, size=48, seed=7)[0]
    b = render(lite0, "blocks.2.0", [1], steps=5, size=48, seed=7)[0]
    c = render(lite0, "blocks.2.0", [1], steps=5, size=48, seed=8)[0]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.objective_final == b.objective_final
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def _gram_cos(lm, layer, images):
    from torchvision.transforms.functional import to_tensor

    x = torch.stack([to_tensor(im) for im in images])
    pre = lm.spec.preprocess
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    path = lm.resolve(layer)
    with torch.no_grad(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        g = torch.nn.functional.normalize(O.gram(store[path]).flatten(1), dim=1)
    return float(g[0] @ g[1])


@pytest.mark.slow
def test_diversity_gives_different_images(lite0):
    kw = dict(steps=12, size=48, seed=0, n_per_channel=2)
    plain = render(lite0, "blocks.2.0", [5], **kw)
    diverse = render(lite0, "blocks.2.0", [5], diversity=20.0, **kw)
    assert [r.copy for r in diverse] == [0, 1]
    a, b = (np.asarray(r.image, dtype=float) for r in diverse)
    assert np.abs(a - b).mean() > 5
    assert _gram_cos(lite0, "blocks.2.0", [r.image for r in diverse]) < _gram_cos(
        lite0, "blocks.2.0", [r.image for r in plain])


def test_progress_and_stop(lite0):
    from vizcore.jobs import Stopped

    seen = []
    with pytest.raises(Stopped) as stop:  # the one stop rule: Stopped carries the images so far
        render(lite0, "blocks.2.0", [0, 1], steps=50, size=48,
               progress=lambda s, n, v: seen.append((s, n, len(v))), should_stop=lambda: len(seen) >= 3)
    assert seen == [(1, 50, 2), (2, 50, 2), (3, 50, 2)]
    res = stop.value.partial
    assert res[0].steps_run == 3 and res[0].steps == 50 and res[0].image.size == (48, 48)


def test_featviz_job_ticks_stops_resumes_and_caches_per_batch(lite0, monkeypatch, tmp_path):
    """A FeatVizJob renders one batch: a tick per step, the images so far as its partial result,
    resumed to the same images as one run, cached per batch; featviz_jobs splits a layer."""
    from vizcore.featureviz import FeatVizJob, featviz_jobs, render_batch
    from vizcore.jobs import JobRun, RunOptions, cached, run

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    kw = dict(steps=6, size=48, seed=2)
    jobs = featviz_jobs(lite0, "blocks.1.0", range(5), batch=2, **kw)
    assert [j.channels for j in jobs] == [[0, 1], [2, 3], [4]]
    r = JobRun(jobs[0], RunOptions())
    r.step(2)
    assert (r.done, r.total) == (2, 6) and [p.steps_run for p in r.partial()] == [2, 2]
    assert cached(jobs[0], RunOptions()) is None
    r.step()
    whole = render(lite0, "blocks.1.0", [0, 1], **kw)
    assert [np.asarray(a.image).tolist() for a in r.result] == [np.asarray(b.image).tolist() for b in whole]
    hit = cached(FeatVizJob(lite0, "blocks.1.0", [0, 1], **kw), RunOptions())
    assert [np.asarray(a.image).tolist() for a in hit] == [np.asarray(b.image).tolist() for b in whole]
    last = run(jobs[2], RunOptions())
    assert [x.channel for x in last] == [4]
    ticks = list(render_batch(lite0, "blocks.1.0", [4], **{**kw, "steps": 2}))
    assert [(t.done, t.total) for t in ticks] == [(0, 2), (1, 2), (2, 2)]  # set up, then one per step


def test_bad_channel_and_layer(lite0):
    from vizcore.models import UnknownLayerError

    with pytest.raises(ValueError, match="has 40 channels"):
        render(lite0, "blocks.2.0", [40], steps=1, size=32)
    with pytest.raises(UnknownLayerError):
        render(lite0, "blocks.99", [0], steps=1, size=32)


def test_best_dataset_value_is_max_over_images(lite0):
    from PIL import Image

    from vizcore.data import samples_dataset
    from vizcore.models import Preprocess

    ds = samples_dataset()
    best = best_dataset_value(lite0, "blocks.2.0", [0, 7], size=64)
    pre = lite0.spec.preprocess
    tf = Preprocess(resize=round(64 * pre.resize / pre.crop), crop=64, mean=pre.mean, std=pre.std).transform()
    vals = []
    path = lite0.resolve("blocks.2.0")
    for item in ds.items:
        x = tf(Image.open(item.path).convert("RGB"))[None]
        with torch.no_grad(), tap(lite0.model, [path], stop=True) as store:
            forward_until(lite0.model, x)
            vals.append(store[path][0, [0, 7]].mean((-2, -1)))
    expected = torch.stack(vals).max(0).values
    assert torch.allclose(torch.tensor(best), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- CLI
def test_parse_channels():
    from vizcore.featureviz import ChannelSpecError, parse_channels

    assert parse_channels("0-3") == [0, 1, 2, 3]
    assert parse_channels("5,2,2,7-8") == [5, 2, 7, 8]
    assert parse_channels(" 3 , 1-2 ,") == [3, 1, 2]
    for bad, why in [("", "bad channel list"), (" , ", "bad channel list"), ("4-2", "empty channel range"),
                     ("a", "bad channel list"), ("1-b", "bad channel list"), ("-3", "bad channel list"),
                     ("2,-1", "bad channel list")]:
        with pytest.raises(ChannelSpecError, match=why):
            parse_channels(bad)
    assert issubclass(ChannelSpecError, ValueError)


def test_render_cached_optimises_once(lite0, monkeypatch):
    """The second identical request comes from disk, pixel for pixel, without optimising again."""
    import vizcore.featureviz.cached as fc
    from vizcore.cache import entry_path

    calls = []
    real = fc.render

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fc, "render", counting)
    kw = dict(steps=3, size=32, seed=5, transforms="none")
    first, cached1 = fc.render_cached(lite0, "blocks.1.0", [2, 0], **kw)
    second, cached2 = fc.render_cached(lite0, "blocks.1.0", [2, 0], **kw)
    assert (cached1, cached2, len(calls)) == (False, True, 1)
    assert [r.to_json() for r in second] == [r.to_json() for r in first]
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert entry_path(fc.CACHE_KIND, fc.render_key(lite0, "blocks.1.0", [2, 0], **kw)).is_file()
    # any setting that changes the images is part of the key: another seed optimises again
    _, cached3 = fc.render_cached(lite0, "blocks.1.0", [2, 0], **{**kw, "seed": 6})
    assert (cached3, len(calls)) == (False, 2)
    # a stopped run raises the one Stopped (nothing done before the first step) and is not cached
    from vizcore.jobs import Stopped

    with pytest.raises(Stopped) as stop:
        fc.render_cached(lite0, "blocks.1.0", [1], **kw, should_stop=lambda: True)
    assert stop.value.partial is None
    assert not entry_path(fc.CACHE_KIND, fc.render_key(lite0, "blocks.1.0", [1], **kw)).exists()
    _, again = fc.render_cached(lite0, "blocks.1.0", [1], **kw)
    assert again is False and len(calls) == 4


@pytest.mark.slow
def test_cli_contract(tmp_path, small_folder):
    out = tmp_path / "fv"
    cmd = [sys.executable, "-m", "vizcore", "featviz", "--model", "efficientnet_lite0", "--layer", "blocks.3.0",
           "--channels", "0-1", "--steps", "16", "--size", "64", "--data", str(small_folder), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert "weights from package" in proc.stderr and "step" in proc.stderr  # provenance + tqdm bar
    index = json.loads((out / "index.json").read_text())
    assert index["model"] == "efficientnet_lite0" and index["layer"] == "blocks.3.0"
    assert index["dataset"] == str(small_folder)
    s = index["settings"]
    assert (s["steps"], s["size"], s["param"], s["seed"], s["lr"]) == (16, 64, "fft", 0, 0.05)
    assert [e["channel"] for e in index["channels"]] == [0, 1]
    for e in index["channels"]:
        assert (out / e["file"]).is_file()
        assert e["objective_final"] > e["objective_start"]
        assert e["beats_dataset"] == (e["objective_final"] > e["best_dataset_value"])
        assert e["beats_dataset"], e  # 16 steps already beat every photo of the folder on these channels
    assert index["all_beat_dataset"] is True


@pytest.mark.slow
def test_cli_errors(tmp_path):
    cmd = [sys.executable, "-m", "vizcore", "featviz", "--layer", "blocks.2.0", "--channels", "99",
           "--steps", "1", "--size", "32", "--out", str(tmp_path / "x")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "has 40 channels" in proc.stderr and "Traceback" not in proc.stderr
