"""Benchmark: linear probes of EfficientNet-Lite0 on the 1,200 cue-conflict stimuli.

Reports the seconds of the one feature-extraction pass (every tap, pooled to
about 9,600 features per layer, no cache) and the seconds to fit each layer's
probe (standardised logistic regression, seeded stratified split by exemplar:
test images show shape or texture exemplars never seen in training), with the
accuracies for shape and texture labels.

    python bench/probes.py [--stimuli ../shared/data/cue-conflict] [--limit N] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stimuli", default=str(ROOT.parent / "shared" / "data" / "cue-conflict"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--limit", type=int, default=None, help="use every k-th stimulus to get about N (validation)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    import numpy as np
    import torch

    from vizcore.data import open_dataset
    from vizcore.features import extract_features
    from vizcore.models import load_model
    from vizcore.probes import exemplar_groups, probe_features

    ds = open_dataset(f"cue-conflict:{args.stimuli}")
    if args.limit:
        step = max(1, len(ds) // args.limit)
        ds = ds.subset(list(range(0, len(ds), step))[: args.limit])
    lm = load_model(args.model)
    print(f"{lm.name} ({lm.weights.source}), {len(ds)} stimuli, torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    feats = extract_features(lm, ds, cache=False, batch_size=args.batch_size)
    t_extract = time.perf_counter() - t0
    print(f"feature extraction, all {len(feats.layers)} taps in one pass: {t_extract:.1f} s "
          f"({len(ds) / t_extract:.1f} images/s)")
    # split by exemplar: test stimuli show shapes (textures) never seen in training
    groups = {k: [exemplar_groups(ds, k)[int(i)] for i in feats.indices] for k in ("shape", "texture")}
    rows = []
    print(f"{'layer':<12} {'features':>8} {'fit s':>7} {'shape acc':>9} {'texture acc':>11}")
    for name, x in feats.layers.items():
        one = type(feats)(feats.model, feats.weights, {name: x}, feats.grids, feats.indices, feats.files)
        t1 = time.perf_counter()
        shape = probe_features(one, feats.labels(ds, "shape"), groups=groups["shape"],
                               fit_device="sklearn")["layers"][0]
        t_fit = time.perf_counter() - t1
        texture = probe_features(one, feats.labels(ds, "texture"), groups=groups["texture"],
                                 fit_device="sklearn")["layers"][0]
        rows.append({"layer": name, "n_features": int(x.shape[1]), "fit_seconds": round(t_fit, 3),
                     "shape_accuracy": shape.accuracy, "texture_accuracy": texture.accuracy})
        print(f"{name:<12} {x.shape[1]:>8} {t_fit:>7.2f} {shape.accuracy:>9.3f} {texture.accuracy:>11.3f}")
    total_fit = sum(r["fit_seconds"] for r in rows)
    print(f"fitting, all layers (shape label): {total_fit:.1f} s; mean per layer {np.mean([r['fit_seconds'] for r in rows]):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": lm.name, "n": len(ds), "extract_seconds": t_extract,
                                               "fit_seconds_total": total_fit, "layers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
