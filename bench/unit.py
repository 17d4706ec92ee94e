"""Cost of the unit page's gradient analyses, relative to a bare forward pass of the same images.

For EfficientNet-Lite0 (real weights) and one photo at a time: (a) a plain forward pass without
gradients; (b) :func:`vizcore.unit.effective_rf` at ``blocks.5.0`` (forward to the layer, one
backward to the input, the smallest 90 % box); (c) :func:`vizcore.unit.class_support` at
``blocks.5.0`` (a full forward and the three backward passes of the Jacobian-vector product
that serves all 1,000 classes at once); (d) :func:`vizcore.unit.drivers` by gradient x activation
at ``blocks.4.0``. Interleaved back to back, medians of the per-pair ratios. Expected: each a
small multiple of a forward pass (a backward costs about two forwards), so one unit page
section is a fraction of a second on a CPU.

Run: ``python bench/unit.py [--repeats N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("VIZCORE_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from vizcore import unit as U
    from vizcore.activations import preprocess
    from vizcore.data import load_sample, sample_names
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model("efficientnet_lite0")
    images = [load_sample(n) for n in sample_names()[:3]]

    def bare(im) -> None:
        with lm.lock, torch.no_grad():
            lm.model(preprocess(lm, im))

    tasks = {
        "effective_rf blocks.5.0": lambda im: U.effective_rf(lm, "blocks.5.0", 30, im),
        "class_support blocks.5.0 (1000 classes)": lambda im: U.class_support(lm, "blocks.5.0", 30, [im]),
        "drivers blocks.4.0 (grad x act)": lambda im: U.drivers(lm, "blocks.4.0", 12, [im]),
    }

    def timed(fn, im) -> float:
        t0 = time.perf_counter()
        fn(im)
        return time.perf_counter() - t0

    for im in images:  # warm-up: allocator, lazy imports, the receptive-field trace
        bare(im)
        for fn in tasks.values():
            fn(im)
    print(f"{'analysis':<42} {'bare ms':>8} {'task ms':>8} {'ratio':>6}")
    for name, fn in tasks.items():
        tb, tt, pairs = [], [], []
        for r in range(args.repeats):
            for im in images:
                if r % 2:
                    t, b = timed(fn, im), timed(bare, im)
                else:
                    b, t = timed(bare, im), timed(fn, im)
                tb.append(b)
                tt.append(t)
                pairs.append(t / b)
        print(f"{name:<42} {statistics.median(tb) * 1e3:8.1f} {statistics.median(tt) * 1e3:8.1f} "
              f"{statistics.median(pairs):6.2f}")


if __name__ == "__main__":
    main()
