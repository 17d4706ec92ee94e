"""Throughput of mining top-k patches against a bare forward pass.

For resnet50 (random init) and efficientnet_lite0 at 224 px, measures images per
second of mining ALL taps (one forward with the reducing hooks and the
top-k merges) and of a bare ``model(x)``, on the same pre-decoded tensors in
the same run (decoding is left out of both, so the ratio isolates what mining
adds to the forward). Target: ratio >= 0.85.

    python bench/mining.py [--images 64] [--batch-size 32] [--repeats 3] [--models resnet50 efficientnet_lite0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "imagenet-samples"


def _decode(lm, n: int) -> torch.Tensor:
    from vizcore.data import iter_batches, open_dataset

    ds = open_dataset(str(DATA))
    ds = ds.subset(range(min(n, len(ds))))
    return torch.cat([x for x, _ in iter_batches(ds, lm.transform(), batch_size=32, workers=0)])


def _time(fn, xs: torch.Tensor, batch: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(xs), batch):
        fn(xs[s:s + batch], list(range(s, min(s + batch, len(xs)))))
    return len(xs) / (time.perf_counter() - t)


def bench(name: str, n: int, batch: int, repeats: int) -> dict:
    from vizcore.models import load_model
    from vizcore.data import open_dataset
    from vizcore.patches import MiningPass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(name, "random" if name.startswith("resnet") else "auto")
    xs = _decode(lm, n).to(lm.device)
    taps = [t.name for t in lm.taps()]

    def bare(x, _idx):
        with torch.inference_mode():
            lm.model(x)

    ds = open_dataset(str(DATA))

    def miner():
        """A fresh mining pass: ``update(x, idx)`` steps one batch and merges it into its state."""
        p = MiningPass(lm, ds, taps, k=9, cache=False)
        state = {"s": p.empty()}

        def update(x, idx):
            state["s"] = p.merge(state["s"], p.step(x, idx))
        return update

    bare(xs[:batch], None)  # warm-up (allocator, oneDNN kernels)
    miner()(xs[:batch], list(range(batch)))
    fwd, mine = [], []
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        fwd.append(_time(bare, xs, batch))
        mine.append(_time(miner(), xs, batch))
    f, m = statistics.median(fwd), statistics.median(mine)
    return {"model": name, "weights": lm.weights.source, "taps": len(taps), "images": len(xs),
            "forward_ips": f, "mining_ips": m, "ratio": m / f}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (set VIZCORE_SHARED_DATA)")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; inputs pre-decoded tensors (decoding excluded "
          f"from both), batch {args.batch_size}, median of {args.repeats}")
    rows = [bench(m, args.images, args.batch_size, args.repeats) for m in args.models]
    print(f"{'model':<20}{'weights':<9}{'taps':>5}{'images':>7}{'forward img/s':>15}{'mining img/s':>14}"
          f"{'ratio':>7}  target >= 0.85")
    for r in rows:
        ok = "ok" if r["ratio"] >= 0.85 else "BELOW"
        print(f"{r['model']:<20}{r['weights']:<9}{r['taps']:>5}{r['images']:>7}{r['forward_ips']:>15.1f}"
              f"{r['mining_ips']:>14.1f}{r['ratio']:>7.2f}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
