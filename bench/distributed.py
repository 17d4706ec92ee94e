"""Mining on Ray (``--engine ray``, a local Ray) against the local engine, in the same run.

EfficientNet-Lite0 mines every tap (k=9) over the 1,000 images of ../shared/data/imagenet-samples,
once with ``engine="local"`` (this process, DataLoader decoding) and once with ``engine="ray"``
(Ray Data, an actor pool on a local Ray with this machine's CPUs). Reported:

- Ray start-up, separately: ``ray.init`` and the actor pool's start (actors up, model loaded,
  first batch back);
- images/s of both engines, whole runs and steady state (first to last batch back; the ratio
  of the latter is the target, ray >= 0.75 x local, start-up excluded). The local engine runs
  before and after Ray and its mean is the baseline, since other processes' load drifts;
- a scaling model for ``W`` workers from measured figures: per-image cost of one worker
  thread ``c`` (decode + forward + top-k), Ray's per-block overhead ``o`` (the steady Ray time
  not explained by ``c``), the driver's merge cost per block ``m``:
  ``T(W) = startup + N c / W + (N / B) o / W + (N / B) m``; the driver's merge caps throughput
  at ``B / m`` images/s.

Both results are checked to be identical (index.json byte for byte).

    python bench/distributed.py [--images 1000] [--batch-size 32] [--cpus 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "imagenet-samples"


def _timed_mine(lm, ds, taps, batch: int, engine: str) -> tuple[object, dict]:
    from vizcore.patches import mine_top_patches

    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    res = mine_top_patches(lm, ds, taps, k=9, batch_size=batch, cache=False, engine=engine,
                           progress=lambda d, t: stamps.append((time.perf_counter(), d)))
    t1 = time.perf_counter()
    (tf, df), (tl, dl) = stamps[0], stamps[-1]
    return res, {"total_s": t1 - t0, "first_batch_s": tf - t0, "ips": len(ds) / (t1 - t0),
                 "steady_ips": (dl - df) / (tl - tf) if tl > tf else float("nan")}


def _unit_costs(lm, ds, taps, batch: int, n_batches: int = 4) -> dict:
    """Per-image cost of one single-threaded worker, and the driver's merge cost per block."""
    import torch

    from vizcore.passes import batches_of, decode_batch
    from vizcore.patches import MiningPass

    p = MiningPass(lm, ds, taps, k=9, cache=False)
    tf = p.transform()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bs = batches_of(range(len(ds)), batch)[:n_batches]
        x, ok, _ = decode_batch(tf, [(i, ds.items[i].path) for i in bs[0]])
        p.step(x, ok)  # warm-up
        t = time.perf_counter()
        states = []
        for b in bs:
            x, ok, _ = decode_batch(tf, [(i, ds.items[i].path) for i in b])
            states.append(p.step(x, ok))
        c = (time.perf_counter() - t) / sum(len(b) for b in bs)
    finally:
        torch.set_num_threads(threads)
    merges = []
    for _ in range(3):
        state = p.empty()
        t = time.perf_counter()
        for s in states:
            state = p.merge(state, s)
        merges.append((time.perf_counter() - t) / len(states))
    return {"c": c, "m": statistics.median(merges)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (set VIZCORE_SHARED_DATA)")
        return 0
    import torch

    from vizcore.data import image_folder
    from vizcore.distributed import init_ray, plan_actors, shutdown_ray
    from vizcore.models import load_model

    lm = load_model("efficientnet_lite0")
    ds = image_folder(DATA)
    ds = ds.subset(range(min(args.images, len(ds))), name=f"imagenet-samples-{args.images}")
    taps = [t.name for t in lm.taps()]
    n, b = len(ds), args.batch_size
    print(f"efficientnet_lite0, all {len(taps)} taps, k=9, {n} images, batch {b}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (CPUs are shared with other work)")

    # local, ray, local: the load of other processes drifts; the two local runs bracket Ray's
    local, lt1 = _timed_mine(lm, ds, taps, b, "local")
    t = time.perf_counter()
    info = init_ray(num_cpus=args.cpus)
    init_s = time.perf_counter() - t
    try:
        plan = plan_actors(info.cpus, info.gpus, -(-n // b))
        on_ray, rt = _timed_mine(lm, ds, taps, b, "ray")
    finally:
        shutdown_ray()
    local2, lt2 = _timed_mine(lm, ds, taps, b, "local")
    lt = {k: (lt1[k] + lt2[k]) / 2 for k in lt1}
    same = json.dumps(local.to_json()) == json.dumps(on_ray.to_json()) == json.dumps(local2.to_json())
    unit = _unit_costs(lm, ds, taps, b)

    w = plan["size"]
    blocks = -(-n // b)
    steady_s = n / rt["steady_ips"]
    o = max(0.0, (steady_s * w - n * unit["c"]) / blocks)
    ratio = rt["steady_ips"] / lt["steady_ips"]
    print(f"\n{'engine':<8}{'total s':>9}{'img/s':>8}{'to 1st batch s':>16}{'steady img/s':>14}")
    for name, row in (("local 1", lt1), ("local 2", lt2), ("local", lt)):
        print(f"{name:<8}{row['total_s']:>9.1f}{row['ips']:>8.1f}{row['first_batch_s']:>16.1f}"
              f"{row['steady_ips']:>14.1f}")
    print(f"{'ray':<8}{rt['total_s']:>9.1f}{rt['ips']:>8.1f}{rt['first_batch_s']:>16.1f}{rt['steady_ips']:>14.1f}")
    print(f"Ray start-up: ray.init {init_s:.1f} s; actor pool ({w} actors x {plan.get('num_cpus')} CPU, "
          f"{plan['threads']} threads; decoding in tasks) to first batch {rt['first_batch_s']:.1f} s")
    print(f"steady ray / local = {ratio:.2f}  target >= 0.75  {'ok' if ratio >= 0.75 else 'BELOW'}; "
          f"results identical: {same}")
    print(f"\nscaling model (measured): c = {unit['c'] * 1e3:.1f} ms per image per worker thread, "
          f"o = {o * 1e3:.0f} ms Ray overhead per block of {b}, m = {unit['m'] * 1e3:.1f} ms driver merge per block")
    print("T(W) = startup + N c / W + (N / B) o / W + (N / B) m; predicted images/s without start-up:")
    for workers in (1, 2, 4, 8, 16, 32, 64):
        per_img = unit["c"] / workers + o / b / workers + unit["m"] / b
        print(f"  W={workers:<3} {1 / per_img:8.1f}")
    print(f"  driver merge ceiling: {b / unit['m']:.0f} images/s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
