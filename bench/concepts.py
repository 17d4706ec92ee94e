"""Cost of concepts and atlases, each against the work it builds on.

1. Factorisation: the time of :func:`vizcore.concepts.factorise` (k concepts) on the vectors of one
   tap, against the feature pass that sampled them (:class:`vizcore.concepts.VectorJob`, local engine).
2. Atlas icons: icons per second of :class:`vizcore.concepts.DirectionIconsJob` (cosine-weighted
   direction objective, one :func:`vizcore.featureviz.render` call per batch) against a plain
   feature-visualisation batch of the same size (the ``channel`` objective on as many channels), same
   steps and size, in alternating pairs; the ratio is the median pair ratio. Target: within 1.2x.

Run: ``python bench/concepts.py [--images N] [--layer L] [--k K] [--icons B] [--steps S] [--size P]
[--repeats R] [--threads T]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("VIZCORE_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--layers", nargs="+", default=["blocks.3.0", "head"])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--per-image", type=int, default=16)
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from vizcore.concepts import DirectionIconsJob, VectorJob, factorise
    from vizcore.data import open_dataset
    from vizcore.data.imagenet_samples import find_samples
    from vizcore.featureviz import render
    from vizcore.jobs import RunOptions, run
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model("efficientnet_lite0")
    root = find_samples(candidates=(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                 "imagenet-samples"),))
    ds = open_dataset(f"imagenet-samples:{root}").subset(range(args.images))
    opts = RunOptions(batch_size=16, workers=0, cache=False)
    print(f"torch threads {torch.get_num_threads()}; {args.images} ImageNet samples, {args.per_image} positions each")
    print("\n| tap | vectors | feature pass (s) | factorise k=%d (s) | method | ratio |" % args.k)
    print("|---|---:|---:|---:|---|---:|")
    for layer in args.layers:
        t0 = time.perf_counter()
        s = run(VectorJob(lm, ds, layer, per_image=args.per_image), opts)
        t_pass = time.perf_counter() - t0
        t0 = time.perf_counter()
        f = factorise(s.vectors, args.k, seed=0)
        t_fac = time.perf_counter() - t0
        print(f"| {layer} | {len(s.vectors):,}×{s.channels} | {t_pass:.2f} | {t_fac:.2f} | {f.method} | "
              f"{t_fac / t_pass:.2f} |")

    layer = args.layers[0]
    s = run(VectorJob(lm, ds, layer, per_image=args.per_image), opts)
    dirs = np.ascontiguousarray(s.vectors[: args.icons])
    chans = list(range(min(args.icons, s.channels)))
    ratios, icon_rates, plain_rates = [], [], []
    for r in range(args.repeats):
        order = ("icons", "plain") if r % 2 == 0 else ("plain", "icons")
        t = {}
        for which in order:
            t0 = time.perf_counter()
            if which == "icons":
                run(DirectionIconsJob(lm, layer, dirs, steps=args.steps, size=args.size, batch_size=args.icons), opts)
            else:
                render(lm, layer, chans, steps=args.steps, size=args.size)
            t[which] = time.perf_counter() - t0
        ratios.append(t["icons"] / t["plain"])
        icon_rates.append(len(dirs) / t["icons"])
        plain_rates.append(len(chans) / t["plain"])
    med = statistics.median(ratios)
    print(f"\nAtlas icons at {layer}: {len(dirs)} per batch, {args.steps} steps, {args.size} px")
    print("| icons/s (direction·cos) | images/s (plain featviz batch) | time ratio | target |")
    print("|---:|---:|---:|---|")
    print(f"| {statistics.median(icon_rates):.2f} | {statistics.median(plain_rates):.2f} | {med:.2f} | "
          f"<= 1.2 {'✓' if med <= 1.2 else '✗'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
