"""``vizcore probe``: layer-wise linear probe accuracy of a model on a labelled dataset."""
from __future__ import annotations

ORDER = 80


def register(sub) -> None:
    from vizcore.commands._util import add_data_arg, add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "probe", help="linear-probe accuracy of every layer on a labelled dataset",
        description="Pool the features of every tap (about 9,600 per layer) in one pass over DATA, fit one "
                    "standardised logistic regression per layer on a seeded stratified split (or k-fold) "
                    "and report test accuracy with a 95%% Wilson interval, in network order.")
    add_data_arg(p, labelled=True)
    add_model_args(p)
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="tap names or module paths (default: every tap)")
    p.add_argument("--label", default="class", choices=("class", "shape", "texture"),
                   help="which label to decode (shape/texture: cue-conflict stimuli)")
    p.add_argument("--random-init", action="store_true",
                   help="also probe the same architecture with seeded random weights (JSON key random_init)")
    p.add_argument("--folds", type=int, default=None, help="stratified k-fold instead of one split")
    p.add_argument("--test-size", type=float, default=0.25, help="held-out fraction (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the random twin")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (default 1.0)")
    p.add_argument("--pool-target", type=int, default=9600, help="features per layer aimed at (default 9600)")
    p.add_argument("--grid", type=int, default=None, help="fixed pooling grid side instead of --pool-target")
    p.add_argument("--fit", default="auto", choices=("auto", "sklearn", "cpu", "cuda"),
                   help="scikit-learn, or a PyTorch linear layer on cpu/cuda (auto: cuda if present)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE")
    add_run_flags(p, batch_size=32)
    p.set_defaults(func=run)


def format_table(res) -> str:
    twin = {lp.name: lp for lp in res.random.layers} if res.random is not None else {}
    head = f"{'layer':<16} {'features':>8} {'accuracy':>9} {'95% CI':>15}"
    if twin:
        head += f"   {'random':>7} {'95% CI':>15}"
    lines = [f"{res.model} ({res.weights.source}), label={res.label}, {res.split}, "
             f"n_train={res.n_train}, n_test={res.n_test}, {len(res.classes)} classes", head]
    for lp in res.layers:
        s = f"{lp.name:<16} {lp.n_features:>8} {lp.accuracy:>9.3f} [{lp.ci_low:.3f}, {lp.ci_high:.3f}]"
        if lp.name in twin:
            r = twin[lp.name]
            s += f"   {r.accuracy:>7.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        lines.append(s)
    return "\n".join(lines)


def run(args) -> int:
    import sys

    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.data import open_dataset
    from vizcore.features import Pooling
    from vizcore.jobs import RunOptions
    from vizcore.probes import fit_probes

    if args.folds is not None and args.folds < 2:
        raise ValueError("--folds must be at least 2")
    if not 0 < args.test_size < 1:
        raise ValueError("--test-size must be between 0 and 1")
    ds = open_dataset(args.data)
    if all(lab is None for lab in ds.labels(args.label)):
        raise ValueError(f"{args.data} has no {args.label!r} labels"
                         + (" (shape/texture labels come with cue-conflict:ROOT)" if args.label != "class" else ""))
    lm = load_model_cli(args)
    for name in args.layers or []:
        lm.resolve(name)  # a bad layer name fails before any work, with close matches
    res = fit_probes(lm, ds, layers=args.layers, label=args.label, compare_random=args.random_init,
                     random_seed=args.seed, test_size=args.test_size, folds=args.folds, seed=args.seed, C=args.C,
                     pool=Pooling(target=args.pool_target, grid=args.grid), fit_device=args.fit,
                     options=RunOptions.from_args(args), progress=True)
    if res.skipped:
        print(f"skipped {len(res.skipped)} unreadable file(s)", file=sys.stderr)
    if args.out:
        write_json(res.to_json(), args.out)
    if args.json:
        write_json(res.to_json())
    else:
        print(format_table(res))
    return 0
