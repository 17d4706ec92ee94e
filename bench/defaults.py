"""How long the long-job pages take with their default settings, against one plain pass.

Each page's default job is run as the page runs it (same engine calls, same settings, a cold
cache) and timed; the baseline, measured in the same run on the same images, is the least any
pass over them costs: decoding each image once and one bare forward of the bundled model
(EfficientNet-Lite0). The ratio says what a page adds to that pass (more layers kept, probe fits,
t-SNE); seconds on an idle 2-core CPU are about ``ratio x baseline seconds there``. Target: each
default job about a minute on a 2-core CPU.

    python bench/defaults.py [--jobs mining probes embeddings shape_bias] [--sample 160]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _subset(ds, n: int):
    """The pages' evenly spaced subset (every class kept)."""
    if not n or n >= len(ds):
        return ds
    return ds.subset(sorted({round(i * len(ds) / n) for i in range(n)}), name=f"{ds.name} ({n} of {len(ds)})")


def baseline(lm, ds) -> float:
    """Seconds to decode every image once and run one bare forward (batch 16, this thread)."""
    import torch

    from vizcore.data import iter_batches

    t = time.perf_counter()
    for x, _ in iter_batches(ds, lm.transform(), batch_size=16, workers=0):
        with torch.inference_mode():
            lm.model(x)
    return time.perf_counter() - t


def job_mining(lm):
    """Dataset examples: blocks.4.1 and every earlier tap, k = 9, the 1,000 ImageNet sample images."""
    from vizcore.data import open_dataset
    from vizcore.jobs import JobRun, RunOptions
    from vizcore.patches import MiningJob

    ds = open_dataset(f"imagenet-samples:{DATA / 'imagenet-samples'}")
    taps = [t.name for t in lm.taps()]
    layers = taps[: taps.index("blocks.4.1") + 1]

    def run():  # as the page runs it: the pass advanced a few batches at a time, then its result
        job = JobRun(MiningJob(lm, ds, layers, k=9), RunOptions(batch_size=16, workers=0))
        while not job.step(64):
            pass
    return ds, run


def job_probes(lm):
    """Linear probes: five curated taps, 480 cue-conflict stimuli, shape label, held-out split."""
    from vizcore.data import open_dataset
    from vizcore.features import extract_features
    from vizcore.probes import fit_probes

    ds = _subset(open_dataset(f"cue-conflict:{DATA / 'cue-conflict'}"), 480)
    taps = [t.name for t in lm.taps()]
    step = (len(taps) - 1) / 4
    layers = list(dict.fromkeys(taps[round(i * step)] for i in range(5)))

    def run():
        extract_features(lm, ds, layers, workers=0, batch_size=16)
        for layer in layers:
            fit_probes(lm, ds, layers=[layer], label="shape", test_size=0.25, seed=0, workers=0, batch_size=16)
    return ds, run


def job_embeddings(lm):
    """Embeddings: stem and pool, 600 cue-conflict stimuli, t-SNE of each."""
    from vizcore.data import open_dataset
    from vizcore.embed import embed
    from vizcore.features import extract_features

    ds = _subset(open_dataset(f"cue-conflict:{DATA / 'cue-conflict'}"), 600)

    def run():
        extract_features(lm, ds, ["stem", "pool"], workers=0, batch_size=16)
        for layer in ("stem", "pool"):
            embed(lm, ds, layer, method="tsne", label="shape", seed=0, workers=0, batch_size=16)
    return ds, run


def job_shape_bias(lm):
    """Texture vs shape: 1,200 cue-conflict stimuli plus 160 silhouettes and 160 edge drawings."""
    from vizcore import cueconflict as cc
    from vizcore.jobs import JobRun, RunOptions

    root = DATA / "cue-conflict"

    def run():  # as the page runs it: four batches per step of the progress widget
        job = JobRun(cc.ShapeBiasJob.of(lm, root, reuse=False), RunOptions(batch_size=16, workers=0, cache=False))
        while not job.step(64):
            pass
    return cc.ShapeBiasPass(lm, root, use_cache=False).dataset, run


JOBS = {"mining": job_mining, "probes": job_probes, "embeddings": job_embeddings, "shape_bias": job_shape_bias}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    ap.add_argument("--sample", type=int, default=160, help="images of the baseline measured before and after")
    args = ap.parse_args()
    os.environ["VIZCORE_CACHE"] = tempfile.mkdtemp(prefix="vizcore-bench-")  # cold cache
    from vizcore import apply_speed_settings
    from vizcore.models import load_model

    apply_speed_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model("efficientnet_lite0")
    print(f"{'job':<12} {'images':>6} {'job s':>8} {'baseline s':>10} {'ratio':>6}")
    for name in args.jobs:
        ds, run = JOBS[name](lm)
        # The baseline is measured on a sample just before and just after the job and scaled to all its
        # images, so a change in the machine's load during a long job moves both figures alike.
        sample = _subset(ds, min(len(ds), args.sample))
        before = baseline(lm, sample)
        t = time.perf_counter()
        run()
        secs = time.perf_counter() - t
        base = (before + baseline(lm, sample)) / 2 * len(ds) / len(sample)
        print(f"{name:<12} {len(ds):>6} {secs:>8.1f} {base:>10.1f} {secs / base:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
