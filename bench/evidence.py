"""Cost of each evidence method, relative to one bare forward pass in the same run.

For each model, one 224 px photograph (preprocessed once) goes through (a) a
plain forward pass without gradients and (b) :func:`vizcore.evidence.evidence`
for each method, in back-to-back pairs alternating which runs first; the ratio
is the median pair ratio. Occlusion (16 px window, stride 8, 32 images per
pass) is compared instead with its own number of forward passes run as plain
batches of the same size. Faithfulness scoring is not included (it is a
separate, batched pass).

Targets on CPU: CAM <= 1.3 forwards; guided backprop and Grad-CAM <= 4;
occlusion <= 1.2 x its plain batches. Deconvolution, integrated gradients
(32 steps) and the channels behind the Grad-CAM map (``evidence_channels``) are reported.
These are measured without the disk cache. The cache itself (:class:`vizcore.evidence.EvidenceJob`):
occlusion and integrated gradients read back from the cache / computed, target < 0.05 (a
second ``vizcore evidence`` on the same image and settings returns from the cache).

Run: ``python bench/evidence.py [--repeats N] [--models a b] [--threads T]``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("VIZCORE_OFFLINE", "1")

TARGETS = {"cam": 1.3, "guided": 4.0, "gradcam": 4.0, "occlusion": 1.2, "occlusion cached": 0.05,
           "ig cached": 0.05}


def bench_model(name: str, weights: str, image, repeats: int, occ_repeats: int) -> list[dict]:
    import torch

    from vizcore.activations import preprocess
    from vizcore.evidence import evidence, evidence_channels
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(name, weights)
    x = preprocess(lm, image)
    with torch.no_grad():
        target = int(lm.model(x).argmax())

    def bare() -> None:
        with lm.lock, torch.no_grad():
            lm.model(x)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def pairs(fn, base, n: int, warm: bool = True) -> tuple[float, float, float]:
        if warm:
            fn(), base()  # warm-up (lazy imports, geometry tracing, allocator)
        tf, tb, rs = [], [], []
        for r in range(n):
            if r % 2:
                a, b = timed(fn), timed(base)
            else:
                b, a = timed(base), timed(fn)
            tf.append(a), tb.append(b), rs.append(a / b)
        return statistics.median(tf), statistics.median(tb), statistics.median(rs)

    rows = []
    for m in ("cam", "gradcam", "guided", "deconv", "ig"):
        t, b, r = pairs(lambda m=m: evidence(lm, x, target, m, cache=False), bare, repeats)
        rows.append({"model": name, "method": m, "seconds": t, "baseline": "1 forward", "baseline_s": b,
                     "ratio": r})
    # The channels behind the Grad-CAM map (the Evidence page's unit links): one forward and one backward.
    t, b, r = pairs(lambda: evidence_channels(lm, x, target), bare, repeats)
    rows.append({"model": name, "method": "channels", "seconds": t, "baseline": "1 forward", "baseline_s": b,
                 "ratio": r})
    # Occlusion against its own forward count in plain batches of the same size.
    window, stride, batch = 16, 8, 32
    n = (math.floor((224 - window) / stride) + 1) ** 2
    xb = x.expand(batch, -1, -1, -1).contiguous()

    def plain_batches() -> None:
        with lm.lock, torch.no_grad():
            lm.model(x)  # captum's one unperturbed pass
            for i in range(0, n, batch):
                lm.model(xb[: min(batch, n - i)])

    occ = lambda: evidence(lm, x, target, "occlusion", window=window, stride=stride, batch=batch, cache=False)  # noqa: E731
    t, b, r = pairs(occ, plain_batches, occ_repeats, warm=False)  # warmed up above
    rows.append({"model": name, "method": "occlusion", "seconds": t,
                 "baseline": f"{n + 1} images in batches of {batch}", "baseline_s": b, "ratio": r})
    # The disk cache: computed once (and written), then read back, in a cache of this run's own.
    import tempfile

    from vizcore import cache

    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("VIZCORE_CACHE")
        os.environ["VIZCORE_CACHE"] = tmp
        try:
            for m, kw in (("occlusion", {"window": window, "stride": stride, "batch": batch}), ("ig", {})):
                computed = timed(lambda: evidence(lm, x, target, m, **kw))
                again = statistics.median(timed(lambda: evidence(lm, x, target, m, **kw)) for _ in range(repeats))
                assert cache.entries(["evidence"]), "nothing was cached"
                rows.append({"model": name, "method": f"{m} cached", "seconds": again, "baseline": "computed",
                             "baseline_s": computed, "ratio": again / computed})
        finally:
            if old is None:
                os.environ.pop("VIZCORE_CACHE", None)
            else:
                os.environ["VIZCORE_CACHE"] = old
    for row in rows:
        row["weights"] = lm.weights.source
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--occlusion-repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    args = ap.parse_args(argv)

    from vizcore import apply_speed_settings

    apply_speed_settings()  # as the CLI and the dashboard run; both sides of each ratio alike
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from vizcore.data import load_sample

    image = load_sample("cat")
    print(f"image: cat (224 px crop); torch threads: {torch.get_num_threads()}; repeats: {args.repeats} "
          f"(median of pair ratios), occlusion {args.occlusion_repeats}")
    rows = []
    for m in args.models:
        rows += bench_model(m, "auto" if m == "efficientnet_lite0" else "random", image, args.repeats,
                            args.occlusion_repeats)
    print(f"{'model':<20} {'weights':<8} {'method':<10} {'seconds':>8} {'baseline':<32} {'base s':>8} "
          f"{'ratio':>6} {'target':>7}")
    ok = True
    for r in rows:
        tgt = TARGETS.get(r["method"])
        flag = "" if tgt is None else ("ok" if r["ratio"] <= tgt else "ABOVE")
        ok &= tgt is None or r["ratio"] <= tgt
        print(f"{r['model']:<20} {r['weights']:<8} {r['method']:<10} {r['seconds']:>8.3f} {r['baseline']:<32} "
              f"{r['baseline_s']:>8.3f} {r['ratio']:>6.2f} {('<= ' + str(tgt)) if tgt else 'report':>7} {flag}")
    print("all targets met" if ok else "SOME RATIOS ABOVE TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
