"""``vizcore embed``: a 2-D map (t-SNE, PCA or UMAP) of a dataset at one layer."""
from __future__ import annotations

ORDER = 90


def register(sub) -> None:
    from vizcore.commands._util import add_data_arg, add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "embed", help="2-D map of a dataset's pooled features at one layer, with quality numbers",
        description="Project the pooled features of LAYER for every image of DATA to 2-D and write "
                    "FILE.csv (file,label,x,y) and FILE.json beside it with the k-NN label accuracy "
                    "in the map and its trustworthiness (also printed).")
    add_data_arg(p)
    add_model_args(p)
    p.add_argument("--layer", required=True, help="tap name or module path (see `vizcore layers`)")
    p.add_argument("--method", default="tsne", choices=("tsne", "pca", "umap"))
    p.add_argument("--label", default="class", choices=("class", "shape", "texture"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--neighbors", type=int, default=15, help="UMAP n_neighbors (default 15)")
    p.add_argument("--pool-target", type=int, default=9600, help="features per layer aimed at (default 9600)")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write (JSON goes beside it)")
    add_run_flags(p, batch_size=32)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.data import open_dataset
    from vizcore.embed import embed
    from vizcore.jobs import RunOptions

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ValueError("--out must name a .csv file")
    ds = open_dataset(args.data)
    lm = load_model_cli(args)
    lm.resolve(args.layer)  # a bad layer name fails before any work, with close matches
    e = embed(lm, ds, args.layer, method=args.method, label=args.label, seed=args.seed,
              perplexity=args.perplexity, n_neighbors=args.neighbors, pool=args.pool_target,
              options=RunOptions.from_args(args), progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    e.write_csv(out)
    info = e.to_json()
    info["csv"] = str(out)
    write_json(info, out.with_suffix(".json"))
    q = e.quality
    knn = "n/a (fewer than 2 labelled classes)" if q.knn_accuracy is None else f"{q.knn_accuracy:.3f}"
    print(f"{e.model} {e.layer} {e.method} ({e.backend}): {len(e)} points, {e.n_features} features")
    print(f"k-NN label accuracy in 2-D (k={q.knn_k}): {knn}")
    print(f"trustworthiness (k={q.trust_k}, n={q.trust_n}): {q.trustworthiness:.3f}")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
