"""``vizcore similarity``: linear CKA between every tap of two models (or one and its random twin)."""
from __future__ import annotations

ORDER = 95


def register(sub) -> None:
    from vizcore.commands._util import add_data_arg
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "similarity", help="linear CKA between every tap of model A and every tap of model B",
        description="One pass over DATA computes the minibatch linear CKA (unbiased HSIC; Nguyen et al. "
                    "2021) between every chosen tap of A and of B. B is A itself (one model given), A's "
                    "seeded random-init twin (--random-init), or a second model. Each model gets its own "
                    "preprocessing of the same images. Writes OUT/cka.csv (rows: taps of A; columns: taps "
                    "of B), OUT/cka.json and OUT/cka.png.")
    add_data_arg(p)
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="model A, and optionally model B (registered names or timm/<name>)")
    p.add_argument("--weights", default="auto", help="weights of A: auto, random or a checkpoint path")
    p.add_argument("--weights-b", default=None,
                   help="weights of B (default: the same as --weights when B is another model)")
    p.add_argument("--random-init", action="store_true", help="B is A's seeded random-init twin")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="taps of A (default: every tap); also of B when B has the same architecture")
    p.add_argument("--layers-b", nargs="+", default=None, metavar="LAYER",
                   help="taps of B (default: --layers for the same architecture, else every tap)")
    p.add_argument("--mode", choices=("pool", "flatten"), default="pool",
                   help="pool: average-pool each map to about --pool-target features first (default; "
                        "bounded memory); flatten: whole maps")
    p.add_argument("--pool-target", type=int, default=9600, help="features per tap in pool mode (default 9600)")
    add_run_flags(p, batch_size=32)  # a batch of at least 4 (the unbiased HSIC); a shorter last one is dropped
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def heatmap_png(res, path) -> None:
    """The CKA matrix as a heatmap (rows: taps of A, top to bottom; columns: taps of B)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vizcore.cache import atomic_write_bytes

    ta, tb = len(res.layers_a), len(res.layers_b)
    fig, ax = plt.subplots(figsize=(2.5 + 0.32 * tb, 2.0 + 0.3 * ta), dpi=110)
    im = ax.imshow(res.matrix, vmin=0, vmax=1, cmap="magma", interpolation="nearest")
    ax.set_xticks(range(tb), res.layers_b, rotation=90, fontsize=7)
    ax.set_yticks(range(ta), res.layers_a, fontsize=7)
    (ma, wa), (mb, wb) = zip(res.models, res.weights)
    ax.set_ylabel(f"A: {ma} ({wa})", fontsize=8)
    ax.set_xlabel(f"B: {mb} ({wb})", fontsize=8)
    ax.set_title(f"linear CKA, {res.n_images} images ({res.settings['mode']})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run(args) -> int:
    import sys
    import warnings
    from pathlib import Path

    from vizcore.data import open_dataset
    from vizcore.jobs import RunOptions
    from vizcore.models import load_model
    from vizcore.similarity import cka, write_outputs

    if len(args.models) > 2:
        raise ValueError("--models takes one or two models")
    if args.random_init and len(args.models) == 2:
        raise ValueError("--random-init compares one model with its random-init twin: give one model")
    if args.batch_size < 4:
        raise ValueError(f"batch size must be at least 4 (the unbiased HSIC needs n >= 4), got {args.batch_size}")
    ds = open_dataset(args.data)
    name_b = args.models[-1]
    weights_b = "random" if args.random_init else (args.weights_b or args.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the weight source is printed below, once per model
        a = load_model(args.models[0], args.weights)
        b = load_model(name_b, weights_b) if (len(args.models) == 2 or args.random_init) else a
    for lm in ([a] if b is a else [a, b]):
        print(lm.weights.warning and f"warning: {lm.weights.warning}" or f"{lm.name}: weights from "
              f"{lm.weights.label()}", file=sys.stderr)
    res = cka(a, b, ds, layers=args.layers, layers_b=args.layers_b, mode=args.mode,
              pool_target=args.pool_target, options=RunOptions.from_args(args), progress=True)
    out = Path(args.out)
    paths = write_outputs(res, out)
    heatmap_png(res, out / "cka.png")
    note = f", {res.dropped} images of a short last batch dropped" if res.dropped else ""
    skipped = f", {len(res.skipped)} unreadable" if res.skipped else ""
    cached = " (from cache)" if res.from_cache else ""
    print(f"CKA {len(res.layers_a)} x {len(res.layers_b)} taps on {res.n_images} images in {res.batches} "
          f"batches{note}{skipped}{cached}")
    print(f"wrote {paths['csv']}, {paths['json']} and {out / 'cka.png'}")
    return 0
