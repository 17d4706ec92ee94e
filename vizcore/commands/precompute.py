"""``vizcore precompute``: every unit of some taps of a network, computed once into the cache."""
from __future__ import annotations

ORDER = 95


def add_plan_args(p) -> None:
    """The arguments that name a precompute (shared with ``vizcore export-site``)."""
    from vizcore.commands._util import add_model_args
    from vizcore.precompute import PrecomputeSettings

    d = PrecomputeSettings()
    add_model_args(p)
    p.add_argument("--data", required=True, metavar="DATA",
                   help="image folder, .txt list, samples, imagenet-samples, cifar10, stl10 or cue-conflict:ROOT")
    p.add_argument("--layers", nargs="+", required=True, metavar="LAYER",
                   help="tap names (see `vizcore layers --model NAME`), or `all` for every tap with channel maps")
    p.add_argument("--featviz-steps", type=int, default=d.featviz_steps, metavar="N",
                   help=f"optimisation steps per feature visualisation (default {d.featviz_steps})")
    p.add_argument("--featviz-size", type=int, default=d.featviz_size, metavar="PX",
                   help=f"feature visualisation side in pixels (default {d.featviz_size})")
    p.add_argument("--featviz-batch", type=int, default=d.featviz_batch, metavar="N",
                   help=f"channels optimised together, one job each (default {d.featviz_batch})")
    p.add_argument("--k", type=int, default=d.k, help=f"top dataset images per channel (default {d.k})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the feature visualisations (default 0)")


def open_plan(args):
    """The model, dataset and :class:`vizcore.precompute.Plan` of parsed arguments."""
    from vizcore.commands._util import load_model_cli
    from vizcore.data import open_dataset
    from vizcore.precompute import PrecomputeSettings, plan

    settings = PrecomputeSettings(featviz_steps=args.featviz_steps, featviz_size=args.featviz_size,
                                  featviz_batch=args.featviz_batch, seed=args.seed, k=args.k)
    ds = open_dataset(args.data)
    lm = load_model_cli(args)
    return plan(lm, ds, args.layers, settings)


def register(sub) -> None:
    from vizcore.jobs import add_run_flags
    from vizcore.precompute import PARTS

    p = sub.add_parser(
        "precompute", help="precompute every unit of some taps (featviz, top images, classes, drivers)",
        description="For every channel of every chosen tap: its feature visualisation, its top-k dataset "
                    "images (one mining pass), the classes it supports and the units that drive it, into the "
                    "ordinary results cache, where the dashboard's unit and Model atlas pages and "
                    "`vizcore export-site` find them. Interrupted, it resumes: rerunning the same command "
                    "computes only what is missing. --engine ray sends the feature-visualisation batches to "
                    "Ray actors (one per GPU) and mines with Ray Data.")
    add_plan_args(p)
    p.add_argument("--estimate", action="store_true", help="print the plan and its disk estimate, compute nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), metavar="PART",
                   help="what to compute (default all: " + ", ".join(f"'{x}'" for x in PARTS) + ")")
    add_run_flags(p, batch_size=32)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import time

    from tqdm.auto import tqdm

    from vizcore.commands._util import write_json
    from vizcore.jobs import RunOptions
    from vizcore.precompute import PARTS, precompute, status

    pl = open_plan(args)
    est = pl.estimate_bytes()
    print(f"{pl.lm.name}: {len(pl.layers)} tap(s), {pl.n_units:,} channels; about "
          f"{est['per channel'] / 1024:,.1f} KB of cache per channel, {est['total'] / 2**20:,.1f} MB in all",
          file=sys.stderr)
    if args.estimate:
        write_json({**pl.to_json(), "estimate_bytes": est,
                    "status": [status(pl, n).to_json() for n in pl.layers]})
        return 0
    bars: dict[str, tqdm] = {}
    t0 = time.perf_counter()

    def progress(part: str, done: int, total: int) -> None:
        bar = bars.get(part)
        if bar is None:
            bar = bars[part] = tqdm(total=total, desc=part, unit="ch", file=sys.stderr, position=PARTS.index(part))
        bar.update(done - bar.n)

    try:
        report = precompute(pl, RunOptions.from_args(args), progress=progress, parts=args.parts)
    finally:
        for bar in bars.values():
            bar.close()
    for part, r in report.parts.items():
        print(f"{part}: {r['jobs']} job(s), {r['from_cache']} from the cache, {r['seconds']:.1f} s", file=sys.stderr)
    print(f"precomputed {pl.n_units:,} channels in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.json:
        write_json(report.to_json())
    return 0
