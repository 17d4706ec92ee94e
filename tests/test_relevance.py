"""Concept relevance (zennit-crp 0.6.0) on the bundled EfficientNet-Lite0 and real photographs: the
conditional heatmaps of all channels of a tap add up to the unconditional LRP map; RelMax ranks the
images of a dataset per channel by relevance, a channel cut off from the head has no relevance and never
appears there while it still appears in the activation ranking; halves merge to the whole."""
from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vizcore.activations import preprocess
from vizcore.data import image_folder, load_sample, sample_path
from vizcore.relevance import RelMaxJob, RelMaxPass, channel_relevance, conditional_heatmaps

PHOTOS = ("cat", "coffee", "astronaut", "rocket", "motorcycle", "horse", "brick", "grass")


def _variant(lm, fn):
    """A private LoadedModel whose module is a modified copy (the shared one is untouched)."""
    model = copy.deepcopy(lm.model)
    fn(model)
    return dataclasses.replace(lm, model=model.eval(), lock=threading.RLock())


@pytest.mark.slow
def test_conditional_heatmaps_of_all_channels_add_up_to_the_unconditional_map(lite0):
    # float64: the epsilon rule divides by sums near zero, and in float32 that rounding alone is ~1e-3
    lm64 = _variant(lite0, lambda m: m.double())
    x = F.interpolate(preprocess(lite0, load_sample("cat")), size=(96, 96), mode="bilinear").double()
    cr = channel_relevance(lm64, x, 285, "blocks.0.0", k=3)
    assert cr.layer == "blocks.0.0" and cr.relevance.shape == (16,)
    cond = conditional_heatmaps(lm64, x, 285, "blocks.0.0", range(16))
    np.testing.assert_allclose(cond.sum(0), cr.heatmap, atol=1e-5)
    assert np.abs(cr.heatmap).max() > 1e-2  # not a trivial zero map
    for c in cr.channels:  # each shown channel's heatmap is its conditional map, its share its part
        np.testing.assert_allclose(cr.conditional[c], cond[c], atol=1e-6)
    assert sum(cr.share(c) for c in range(16)) == pytest.approx(1.0)
    assert cr.channels == sorted(range(16), key=lambda c: -cr.relevance[c])[:3]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("photos")
    for n in PHOTOS:
        p = sample_path(n)
        shutil.copy(p, root / f"{n}{p.suffix}")
    return image_folder(root)


def _states(p: RelMaxPass, ds, idx, batch=4):
    from vizcore.passes import decode_batch

    tf = p.transform()
    state = p.empty()
    for s in range(0, len(idx), batch):
        chunk = idx[s:s + batch]
        x, ok, bad = decode_batch(tf, [(i, ds.items[i].path) for i in chunk])
        assert not bad
        state = p.merge(state, p.step(x, ok))
    return state


@pytest.mark.slow
def test_relmax_zeroed_channel_has_no_relevance_and_halves_merge_to_the_whole(lite0, photos):
    from vizcore.jobs import RunOptions, run

    whole = run(RelMaxJob(lite0, photos, "head", k=3), RunOptions(batch_size=4, workers=0, cache=False))
    assert whole.n_images == len(PHOTOS) and whole.rel_values.shape == (1280, 3)
    # the channel most active on some image, cut off from the classifier
    c = int(np.argmax(whole.act_values[:, 0]))
    assert whole.activation_ranked(c) and whole.relevance_ranked(c)
    cut = _variant(lite0, lambda m: m.classifier.weight.data[:, c].zero_())
    res = run(RelMaxJob(cut, photos, "head", k=3), RunOptions(batch_size=4, workers=0, cache=False))
    assert np.all(res.rel_values[c][res.rel_images[c] >= 0] == 0)  # exactly no relevance
    assert res.relevance_ranked(c) == []
    assert [i for i, _ in res.activation_ranked(c)] == [i for i, _ in whole.activation_ranked(c)]
    # other channels still have their relevance-ranked images
    assert sum(bool(res.relevance_ranked(ch)) for ch in range(1280)) > 100
    # two halves merged = the whole, exactly (same batches)
    p = RelMaxPass(lite0, "head", k=3)
    idx = list(range(len(PHOTOS)))
    a, b = _states(p, photos, idx[:4]), _states(p, photos, idx[4:])
    merged, full = p.merge(a, b), _states(p, photos, idx)
    for key in ("rel", "act"):
        assert torch.equal(merged[key][1], full[key][1]) and torch.equal(merged[key][0], full[key][0])
    assert torch.equal(torch.from_numpy(whole.rel_images), full["rel"][1])
    assert p.merge(b, a)["rel"][1].equal(merged["rel"][1])  # order-free
