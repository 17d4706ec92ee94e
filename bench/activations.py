"""Cost of extracting every tap's activations, relative to a bare forward pass.

For each model, the same images go through (a) preprocessing + a plain forward
pass without gradients and (b) :func:`vizcore.activations.extract` with every
curated tap (hooks, per-channel statistics, predictions). The two are
interleaved, repeated, and the medians compared. Target: ratio <= 1.3 on CPU.

Run: ``python bench/activations.py [--repeats N] [--models a b]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("VIZCORE_OFFLINE", "1")


def bench_model(name: str, weights: str, images, repeats: int) -> dict:
    import torch

    from vizcore.activations import extract, preprocess
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(name, weights)

    def bare(im) -> None:
        with lm.lock, torch.no_grad():
            lm.model(preprocess(lm, im))

    def taps(im) -> None:
        extract(lm, im, None, topk=5)

    def timed(fn, im) -> float:
        t0 = time.perf_counter()
        fn(im)
        return time.perf_counter() - t0

    for im in images:  # warm-up (allocator, lazy imports)
        bare(im), taps(im)
    tb, te, pairs = [], [], []
    for r in range(repeats):
        for im in images:
            # Back-to-back pairs, alternating which goes first, so that load from
            # other processes hits both sides alike; the ratio is the median pair ratio.
            if r % 2:
                e, b = timed(taps, im), timed(bare, im)
            else:
                b, e = timed(bare, im), timed(taps, im)
            tb.append(b)
            te.append(e)
            pairs.append(e / b)
    return {"model": name, "weights": lm.weights.source, "taps": len(lm.taps()),
            "bare_ms": statistics.median(tb) * 1e3, "extract_ms": statistics.median(te) * 1e3,
            "ratio": statistics.median(pairs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--target", type=float, default=1.3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    ap.add_argument("--keep-denormals", action="store_true",
                    help="do not flush denormal floats to zero (they slow some CPUs down many times)")
    ap.add_argument("--no-thp", action="store_true",
                    help="do not back large tensors with transparent huge pages")
    args = ap.parse_args(argv)

    # Keeping every tap's output alive means fresh memory in each pass; with 4 KiB pages
    # each first touch is a page fault (costly in a VM). PyTorch's allocator can ask
    # for transparent huge pages for tensors of 2 MiB and more (read at first allocation).
    if not args.no_thp:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    import torch

    # Both sides of the ratio run with the same setting. EfficientNet-Lite produces
    # denormal activations, which slow x86 arithmetic (about 1.3x here) unless flushed.
    ftz = not args.keep_denormals and torch.set_flush_denormal(True)

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from vizcore.data import load_sample, sample_names

    names = [n for n in ("cat", "coffee", "astronaut", "rocket") if n in sample_names()]
    images = [load_sample(n) for n in names]
    print(f"images: {', '.join(names)}; torch threads: {torch.get_num_threads()}; "
          f"repeats: {args.repeats} (median); denormals flushed: {bool(ftz)}; "
          f"huge pages: {os.environ.get('THP_MEM_ALLOC_ENABLE') == '1'}")
    rows = [bench_model(m, "random" if m != "efficientnet_lite0" else "auto", images, args.repeats)
            for m in args.models]
    print(f"{'model':<20} {'weights':<8} {'taps':>4} {'forward ms':>11} {'all taps ms':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['model']:<20} {r['weights']:<8} {r['taps']:>4} {r['bare_ms']:>11.1f} "
              f"{r['extract_ms']:>12.1f} {r['ratio']:>6.2f}")
    worst = max(r["ratio"] for r in rows)
    ok = worst <= args.target
    print("ratio = median over (image, repeat) pairs of extract() with every tap / bare forward")
    print(f"worst ratio {worst:.2f} (target <= {args.target}): {'ok' if ok else 'ABOVE TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
