"""Throughput of mining top-k patches against a bare forward pass, and montage writing against mining.

1. For resnet50 (random init) and efficientnet_lite0 at 224 px, measures images per
   second of mining ALL taps (one forward with the reducing hooks and the
   top-k merges) and of a bare ``model(x)``, on the same pre-decoded tensors in
   the same run (decoding is left out of both, so the ratio isolates what mining
   adds to the forward). Target: ratio >= 0.85.
2. What ``vizcore mine ... --layers all`` does end to end for efficientnet_lite0 on
   ``--montage-images`` ImageNet photos: the mining (decoding included, no cache), then
   writing every layer's montage PNG with :func:`vizcore.render.write_montages`, and,
   as the baseline in the same run, the way it was written before (one
   :func:`~vizcore.render.layer_montage` per layer, Pillow's default PNG settings,
   one file after the other). Reports montage time / mining time for both.
   Target: write_montages / mining <= 0.2.

    python bench/mining.py [--images 64] [--batch-size 32] [--repeats 3] [--models resnet50 efficientnet_lite0]
                           [--montage-images 200] [--montage-workers N] [--no-baseline] [--skip-throughput]
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


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished children (loader workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_montages(n: int, workers: int | None, baseline: bool) -> dict:
    """Mining all taps of efficientnet_lite0 over ``n`` photos, then its montages, timed.

    Wall seconds, and CPU seconds too: on a shared machine the wall clock mostly measures
    the other processes, while CPU time is what this work costs.
    """
    import tempfile

    from vizcore.cache import atomic_write_bytes
    from vizcore.data import open_dataset
    from vizcore.models import load_model
    from vizcore.patches import mine_top_patches
    from vizcore.render import layer_montage, montage_name, png_bytes, write_montages

    lm = load_model("efficientnet_lite0")
    ds = open_dataset(str(DATA))
    ds = ds.subset(range(min(n, len(ds))))
    t, c = time.perf_counter(), _cpu()
    res = mine_top_patches(lm, ds, None, k=9, cache=False)
    row = {"images": len(ds), "layers": len(res.layers),
           "patches": sum(len(h) for chans in res.layers.values() for h in chans),
           "mining_s": time.perf_counter() - t, "mining_cpu": _cpu() - c}
    with tempfile.TemporaryDirectory() as tmp:
        if baseline:
            t, c = time.perf_counter(), _cpu()
            size = 0
            for layer in res.layers:  # the pre-render.py loop of `vizcore mine`
                data = png_bytes(layer_montage(res, layer))
                atomic_write_bytes(Path(tmp) / "old" / montage_name(layer), data)
                size += len(data)
            row.update(baseline_s=time.perf_counter() - t, baseline_cpu=_cpu() - c, baseline_mb=size / 1e6)
            from vizcore import render

            render._input_image.cache_clear()  # the new way starts cold too
        t, c = time.perf_counter(), _cpu()
        paths = write_montages(res, Path(tmp) / "new", workers=workers)
        row.update(montage_s=time.perf_counter() - t, montage_cpu=_cpu() - c,
                   montage_mb=sum(p.stat().st_size for p in paths) / 1e6)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--montage-images", type=int, default=200, help="photos for the montage benchmark (0: skip)")
    ap.add_argument("--montage-workers", type=int, default=None, help="threads of write_montages (default: its own)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old per-layer montage loop")
    ap.add_argument("--skip-throughput", action="store_true", help="only the montage benchmark")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (set VIZCORE_SHARED_DATA)")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; inputs pre-decoded tensors (decoding excluded "
          f"from both), batch {args.batch_size}, median of {args.repeats}")
    if not args.skip_throughput:
        rows = [bench(m, args.images, args.batch_size, args.repeats) for m in args.models]
        print(f"{'model':<20}{'weights':<9}{'taps':>5}{'images':>7}{'forward img/s':>15}{'mining img/s':>14}"
              f"{'ratio':>7}  target >= 0.85")
        for r in rows:
            ok = "ok" if r["ratio"] >= 0.85 else "BELOW"
            print(f"{r['model']:<20}{r['weights']:<9}{r['taps']:>5}{r['images']:>7}{r['forward_ips']:>15.1f}"
                  f"{r['mining_ips']:>14.1f}{r['ratio']:>7.2f}  {ok}")
    if args.montage_images > 0:
        r = bench_montages(args.montage_images, args.montage_workers, not args.no_baseline)
        ratio, cpu_ratio = r["montage_s"] / r["mining_s"], r["montage_cpu"] / r["mining_cpu"]
        print(f"\nefficientnet_lite0, all {r['layers']} taps, {r['images']} photos, k=9 ({r['patches']} patches): "
              f"mining (decoding included, no cache) {r['mining_s']:.1f} s wall, {r['mining_cpu']:.1f} s CPU")
        print(f"{'montages':<34}{'wall s':>8}{'CPU s':>8}{'MB':>7}{'/ mining (wall)':>17}{'/ mining (CPU)':>16}")
        if "baseline_s" in r:
            print(f"{'per-layer loop, default PNG (old)':<34}{r['baseline_s']:>8.1f}{r['baseline_cpu']:>8.1f}"
                  f"{r['baseline_mb']:>7.1f}{r['baseline_s'] / r['mining_s']:>17.2f}"
                  f"{r['baseline_cpu'] / r['mining_cpu']:>16.2f}")
        print(f"{'write_montages':<34}{r['montage_s']:>8.1f}{r['montage_cpu']:>8.1f}{r['montage_mb']:>7.1f}"
              f"{ratio:>17.2f}{cpu_ratio:>16.2f}  target <= 0.2 (wall): {'ok' if ratio <= 0.2 else 'ABOVE'}")
        if "baseline_s" in r:
            print(f"montage writing {r['baseline_s'] / r['montage_s']:.1f}x faster (wall), "
                  f"{r['baseline_cpu'] / r['montage_cpu']:.1f}x less CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
