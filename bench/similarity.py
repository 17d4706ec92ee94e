"""Benchmark: all-tap x all-tap linear CKA against the bare forward passes it needs.

EfficientNet-Lite0 (trained) against its seeded random-init twin, every tap of each (20 x 20),
on 512 ImageNet sample images. The images are decoded once into tensors; on those same tensors
the run times

- the baseline: the two bare forward passes (``no_grad``), batch by batch;
- vizcore's CKA pass (:class:`vizcore.similarity.CKAPass`: ``step`` + ``merge`` per batch, which
  runs both forwards with Gram matrices built in the hooks and the all-pairs HSIC, then
  ``finish``), in ``pool`` mode (the default) and in ``flatten`` mode.

The three are interleaved batch by batch (forwards, then each CKA mode, on the same batch), so
load changes on a shared machine weigh on all of them alike. Target: the default CKA (``pool``)
at most 1.5x the forwards.

    python bench/similarity.py [--images 512] [--batch-size 32] [--threads N] [--data DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=os.environ.get("VIZCORE_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
                    + "/imagenet-samples")
    ap.add_argument("--modes", nargs="+", default=["pool", "flatten"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from vizcore import apply_speed_settings
    from vizcore.data.datasets import ImageDataset, ImageItem, iter_batches
    from vizcore.models import load_model
    from vizcore.passes import PassInfo
    from vizcore.similarity import prepare

    apply_speed_settings()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    files = sorted(Path(args.data).glob("*.jpg"))[: args.images]
    ds = ImageDataset("imagenet-samples", [ImageItem(str(p)) for p in files])
    a = load_model("efficientnet_lite0")
    b = load_model(a.spec.name, "random:0", device=a.device)
    bs = args.batch_size
    print(f"{len(ds)} images, batch {bs}, {torch.get_num_threads()} threads, device {a.device}; "
          f"A {a.name} ({a.weights.label()}), B its random twin", flush=True)

    t = time.perf_counter()
    batches = [(x, idx) for x, idx in iter_batches(ds, a.transform(), batch_size=bs, workers=0)]
    print(f"decoded once: {time.perf_counter() - t:.1f} s", flush=True)

    passes = {mode: prepare(a, b, ds, batch_size=bs, mode=mode)[0] for mode in args.modes}
    states = {mode: p.empty() for mode, p in passes.items()}
    with torch.no_grad():  # warm-up: allocator and kernels
        a.model(batches[0][0]), b.model(batches[0][0])
    fwd = 0.0
    secs = dict.fromkeys(passes, 0.0)
    for i, (x, idx) in enumerate(batches):
        t0 = time.perf_counter()
        with torch.no_grad():
            a.model(x.to(a.device))
            b.model(x.to(b.device))
        fwd += time.perf_counter() - t0
        for mode, p in passes.items():
            t0 = time.perf_counter()
            states[mode] = p.merge(states[mode], p.step(x, idx))
            secs[mode] += time.perf_counter() - t0
        print(f"batch {i + 1}/{len(batches)}: forwards {fwd:.1f} s, "
              + ", ".join(f"{m} {s_:.1f} s" for m, s_ in secs.items()), flush=True)
    rows = {}
    print(f"bare forwards (A + B): {fwd:7.1f} s")
    for mode, p in passes.items():
        t0 = time.perf_counter()
        res = p.finish(states[mode], PassInfo(ds, total=len(ds), n_images=len(ds), complete=True))
        s_ = secs[mode] + time.perf_counter() - t0
        rows[mode] = {"seconds": s_, "ratio": s_ / fwd, "taps": [len(res.layers_a), len(res.layers_b)],
                      "n_images": res.n_images, "stem": res.value("stem", "stem"), "pool": res.value("pool", "pool")}
        print(f"CKA pass, {mode:<7} ({len(res.layers_a)} x {len(res.layers_b)} taps): {s_:7.1f} s = "
              f"{s_ / fwd:.2f}x the forwards" + ("  (target <= 1.5x)" if mode == "pool" else "")
              + f"; CKA(stem) {rows[mode]['stem']:.3f}, CKA(pool) {rows[mode]['pool']:.3f}")
    out = {"images": len(ds), "batch_size": bs, "threads": torch.get_num_threads(), "device": str(a.device),
           "forwards_s": fwd, "modes": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
