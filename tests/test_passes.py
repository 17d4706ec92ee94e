"""The dataset-pass protocol (vizcore.passes): local backend, progress, stop, resume, exact merge."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch

from vizcore.data.datasets import ImageDataset, ImageItem
from vizcore.jobs import RunOptions, Stopped, pass_job, run
from vizcore.passes import DatasetPass, ModelRef, NoImagesError, PassRun


def run_pass(p, dataset, *, batch_size, workers, progress=False, should_stop=None):
    """A pass to the end through the job layer (the one way passes run), nothing cached."""
    return run(pass_job(p, dataset), RunOptions(batch_size=batch_size, workers=workers), progress=progress,
               should_stop=should_stop)


class MeanLogits(DatasetPass):
    """Per-image mean of the logits, keyed by dataset index (a tiny but real analysis)."""

    kind = "mean-logits"

    def __init__(self, lm):
        super().__init__({"net": lm})

    def transform(self):
        return self.model("net").transform()

    def empty(self):
        return {}

    def step(self, x, indices):
        lm = self.model("net")
        with torch.inference_mode(), lm.lock:
            out = lm.model(x.to(lm.device)).float().mean(dim=1)
        return dict(zip(indices, out.tolist()))

    def merge(self, a, b):
        return {**a, **b}

    def finish(self, state, info):
        return {"values": dict(sorted(state.items())), "n": info.n_images, "skipped": list(info.skipped),
                "complete": info.complete}


@pytest.fixture(scope="module")
def tiny_net():
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("resnet18", "random")


@pytest.fixture
def photos(imagenet_samples, tmp_path):
    files = sorted(imagenet_samples.glob("*.jpg"))[:10]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    items = [ImageItem(str(p)) for p in files[:5]] + [ImageItem(str(bad))] + [ImageItem(str(p)) for p in files[5:]]
    return ImageDataset("photos", items)


@pytest.mark.slow
def test_local_run_matches_parts_merged_and_reports_skips(tiny_net, photos):
    p = MeanLogits(tiny_net)
    seen = []
    whole = run_pass(p, photos, batch_size=4, workers=0, progress=lambda d, t: seen.append((d, t)))
    assert whole["n"] == 10 and len(whole["skipped"]) == 1 and "broken.jpg" in whole["skipped"][0]["file"]
    assert seen[-1] == (11, 11) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # two disjoint parts split at a batch boundary (the same batches, so the same float
    # arithmetic), merged, give exactly the whole
    a = PassRun(p, photos, batch_size=4, workers=0, indices=range(0, 8))
    b = PassRun(p, photos, batch_size=4, workers=0, indices=range(8, 11))
    a.step(), b.step()
    merged = p.finish(p.merge(a.state, b.state), a.info)
    assert merged["values"] == whole["values"]


def test_stop_then_resume_gives_the_same_result(tiny_net, photos):
    p = MeanLogits(tiny_net)
    run = PassRun(p, photos, batch_size=4, workers=0)
    calls = iter([False, True])
    assert run.step(None, should_stop=lambda: next(calls)) is False
    assert run.pos == 4 and run.result()["complete"] is False and run.eta() is not None
    assert run.step() is True
    assert run.result()["values"] == run_pass(p, photos, batch_size=4, workers=0)["values"]
    with pytest.raises(Stopped):
        run_pass(p, photos, batch_size=4, workers=0, should_stop=lambda: True)


def test_pass_pickles_without_its_model_and_reloads_the_same_weights(tiny_net):
    p = MeanLogits(tiny_net)
    blob = pickle.dumps(p)
    assert len(blob) < 10_000  # the model does not travel
    q = pickle.loads(blob)
    assert q.refs["net"] == ModelRef("resnet18", "random:0")
    from vizcore.identity import weights_identity

    assert weights_identity(q.model("net")) == weights_identity(tiny_net)


def test_random_init_is_seeded_and_reproducible():
    from vizcore.features import random_twin
    from vizcore.identity import weights_identity
    from vizcore.models import build, get_spec

    spec = get_spec("alexnet")
    a, b = build(spec), build(spec)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = build(spec, seed=1)
    assert not torch.equal(next(iter(a.state_dict().values())), next(iter(c.state_dict().values())))
    assert weights_identity(random_twin("alexnet", 1)) != weights_identity(random_twin("alexnet", 0))


def test_no_readable_image_says_so_with_reasons(tiny_net, tmp_path):
    files = []
    for i in range(3):
        f = tmp_path / f"bad{i}.png"
        f.write_bytes(b"garbage")
        files.append(ImageItem(str(f)))
    with pytest.raises(NoImagesError, match=r"no image of junk could be read \(3 unreadable\).*bad0\.png"):
        run_pass(MeanLogits(tiny_net), ImageDataset("junk", files), batch_size=2, workers=0)
