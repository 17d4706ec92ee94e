"""Benchmark: t-SNE seconds, openTSNE (vizcore's backend) against scikit-learn's TSNE.

Synthetic clustered data of a realistic dimension (256-D, 20 Gaussian clusters)
at 5,000 and 20,000 points; both run the same number of iterations (750) and
perplexity (30) on the same 256-D input. openTSNE runs with vizcore's large-set
settings (``vizcore.embed.FFT_SETTINGS``: FFT interpolation, Annoy neighbours);
a third row times vizcore's whole t-SNE path (``vizcore.embed.project``: PCA to
50 dimensions, then openTSNE, Barnes-Hut below 5,000 points). Quality of every
map: trustworthiness (2,000-point subsample) and 10-NN label accuracy.
Target: openTSNE at least 4x faster than scikit-learn at 20,000 points.

    python bench/embed.py [--sizes 5000 20000] [--dim 256] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--iters", type=int, default=750, help="total iterations for both (250 exaggerated)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="threads for both (default: all cores)")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import openTSNE
    from sklearn.datasets import make_blobs
    from sklearn.manifold import TSNE

    from vizcore.embed import FFT_SETTINGS, embedding_quality, project

    jobs = args.jobs
    results = []
    print(f"{jobs} CPU threads; {args.dim}-D, 20 clusters, perplexity 30, {args.iters} iterations")
    for n in args.sizes:
        x, y = make_blobs(n_samples=n, n_features=args.dim, centers=20, cluster_std=6.0, random_state=0)
        x = x.astype(np.float32)
        labels = [str(v) for v in y]
        row = {"n": n}
        t = time.perf_counter()
        ours = openTSNE.TSNE(perplexity=30, n_jobs=jobs, random_state=0, neighbors="annoy", initialization="pca",
                             early_exaggeration_iter=250, n_iter=args.iters - 250, **FFT_SETTINGS).fit(x)
        row["opentsne_s"] = time.perf_counter() - t
        q = embedding_quality(x, np.asarray(ours), labels)
        row["opentsne_trust"], row["opentsne_knn"] = q.trustworthiness, q.knn_accuracy
        print(f"n={n:>6} openTSNE (FFT, annoy, {jobs} threads): {row['opentsne_s']:7.1f} s  "
              f"trust {q.trustworthiness:.3f}  kNN {q.knn_accuracy:.3f}", flush=True)
        t = time.perf_counter()
        path, backend = project(x, "tsne", seed=0, n_jobs=jobs)
        row["vizcore_s"] = time.perf_counter() - t
        q = embedding_quality(x, path, labels)
        row["vizcore_trust"], row["vizcore_knn"] = q.trustworthiness, q.knn_accuracy
        print(f"n={n:>6} vizcore.embed.project (PCA-50 + {backend}): {row['vizcore_s']:5.1f} s  "
              f"trust {q.trustworthiness:.3f}  kNN {q.knn_accuracy:.3f}", flush=True)
        if not args.skip_sklearn:
            t = time.perf_counter()
            theirs = TSNE(perplexity=30, init="pca", random_state=0, max_iter=args.iters, n_jobs=jobs,
                          learning_rate="auto").fit_transform(x)
            row["sklearn_s"] = time.perf_counter() - t
            q = embedding_quality(x, theirs, labels)
            row["sklearn_trust"], row["sklearn_knn"] = q.trustworthiness, q.knn_accuracy
            row["speedup"] = row["sklearn_s"] / row["opentsne_s"]
            row["speedup_vizcore"] = row["sklearn_s"] / row["vizcore_s"]
            print(f"n={n:>6} sklearn TSNE (Barnes-Hut):          {row['sklearn_s']:7.1f} s  "
                  f"trust {q.trustworthiness:.3f}  kNN {q.knn_accuracy:.3f}  -> openTSNE {row['speedup']:.1f}x, "
                  f"vizcore path {row['speedup_vizcore']:.1f}x faster", flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
