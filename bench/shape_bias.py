"""Seconds to score the 1,200 cue-conflict stimuli, against a bare forward pass.

(a) *bare*: the same 1,200 images, decoded and preprocessed beforehand (not timed),
go through the model in batches without gradients; nothing else.
(b) *score*: :func:`vizcore.cueconflict.shape_bias` from the files on disk: decoding
and preprocessing in DataLoader worker processes (overlapping the forward passes),
the forward passes, the 16-category decisions and the counting. No result cache.

The two are interleaved and repeated; medians are compared. Target: score / bare <= 1.2.
Wall time and CPU time (this process and its decoding workers) are both reported:
on a CPU shared with other jobs wall time mostly measures the queue for cores.

Run: ``python bench/shape_bias.py [--stimuli DIR] [--workers 0 1] [--repeats 2] [--limit N]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VIZCORE_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIZCORE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w0, _cpu() - c0


def _limited(src: Path, limit: int, tmp: Path) -> Path:
    """A cue-conflict folder with the first ``limit`` conflict images (symlinks), in class order."""
    from vizcore.data import cue_conflict_dataset

    ds = cue_conflict_dataset(src)
    for path in ds.paths[:limit]:
        p = Path(path)
        (tmp / p.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp / p.parent.name / p.name).symlink_to(p)
    return tmp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stimuli", default=os.environ.get("VIZCORE_STIMULI") or str(SHARED / "cue-conflict"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images (quick check)")
    args = ap.parse_args()

    import torch

    from vizcore import cueconflict as cc
    from vizcore.data import cue_conflict_dataset, load_image, stimuli
    from vizcore.models import load_model

    lm = load_model(args.model)
    root = stimuli.locate_stimuli(args.stimuli, download=False)
    cue = root / stimuli.SUBSET_FOLDERS["cue-conflict"]
    cue = cue if cue.is_dir() else root
    with tempfile.TemporaryDirectory() as tmp:
        if args.limit:
            cue = _limited(cue, args.limit, Path(tmp))
        ds = cue_conflict_dataset(cue)
        tf = lm.transform()
        xs = torch.stack([tf(load_image(p)) for p in ds.paths])  # decoded once, not timed
        n = len(ds)
        bs = args.batch_size

        def bare() -> None:
            with torch.inference_mode():
                for i in range(0, n, bs):
                    lm.model(xs[i:i + bs])

        def score(workers: int):
            return lambda: cc.shape_bias(lm, cue, batch_size=bs, workers=workers, use_cache=False)

        bare()  # warm-up
        times: dict[str, list[tuple[float, float]]] = {"bare": []}
        for w in args.workers:
            times[f"score w={w}"] = []
        for _ in range(args.repeats):
            times["bare"].append(_timed(bare))
            for w in args.workers:
                times[f"score w={w}"].append(_timed(score(w)))

    threads = torch.get_num_threads()
    print(f"\n{args.model} on {n} cue-conflict images, batch {bs}, torch threads {threads}, "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, {args.repeats} repeat(s), medians")
    wall_b = statistics.median(t[0] for t in times["bare"])
    cpu_b = statistics.median(t[1] for t in times["bare"])
    print(f"{'run':<12} {'wall s':>8} {'img/s':>7} {'wall ratio':>10} {'CPU s':>8} {'CPU ratio':>9}")
    best_wall = best_cpu = float("inf")
    for name, ts in times.items():
        wall = statistics.median(t[0] for t in ts)
        cpu = statistics.median(t[1] for t in ts)
        print(f"{name:<12} {wall:8.2f} {n / wall:7.1f} {wall / wall_b:10.2f} {cpu:8.2f} {cpu / cpu_b:9.2f}")
        if name != "bare":
            best_wall, best_cpu = min(best_wall, wall / wall_b), min(best_cpu, cpu / cpu_b)
    loaded = os.getloadavg()[0] > (os.cpu_count() or 1)
    verdict = best_cpu if loaded else best_wall
    print(f"target: score / bare <= 1.2; best wall ratio {best_wall:.2f}, best CPU ratio {best_cpu:.2f}; "
          f"verdict on {'CPU time (the machine is busy)' if loaded else 'wall time'}: "
          f"{'met' if verdict <= 1.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
