"""``vizcore mine``: top-activating dataset patches of every channel of some layers."""
from __future__ import annotations

ORDER = 60


def register(sub) -> None:
    from vizcore.commands._util import add_data_arg, add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "mine", help="mine the top-k dataset patches of every channel of some layers",
        description="One pass over DATA finds, for every channel of each layer, the k images that "
                    "activate it most and the receptive-field patch at the maximum. Writes "
                    "OUT/index.json and one montage PNG per layer (a row of k patches per channel).")
    add_data_arg(p)
    add_model_args(p)
    p.add_argument("--layers", nargs="+", required=True, metavar="LAYER",
                   help="tap names or module paths (see `vizcore layers --model NAME`), or `all` for every tap")
    p.add_argument("--k", type=int, default=9, help="patches kept per channel (default 9)")
    p.add_argument("--no-montage", action="store_true", help="write index.json only")
    p.add_argument("--cell", type=int, default=None,
                   help="montage patch size in pixels (default 64, smaller for wide layers)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_run_flags(p, batch_size=32)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from tqdm.auto import tqdm

    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.data import open_dataset
    from vizcore.jobs import RunOptions
    from vizcore.patches import mine_top_patches

    if args.k < 1:
        raise ValueError("--k must be at least 1")
    ds = open_dataset(args.data)
    lm = load_model_cli(args, task=None)  # taps only: a detector's or segmenter's backbone too
    layers = None if args.layers == ["all"] else args.layers
    for name in layers or []:
        lm.resolve(name)  # a bad layer name fails before any work, with close matches
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = mine_top_patches(lm, ds, layers, k=args.k, options=RunOptions.from_args(args), progress=True)
    if res.cached:
        print("results from cache", file=sys.stderr)
    if res.skipped:
        print(f"skipped {len(res.skipped)} unreadable file(s):", file=sys.stderr)
        for s in res.skipped:
            print(f"  {s['file']}: {s['error']}", file=sys.stderr)
    if not args.no_montage:
        from vizcore.render import write_montages

        with tqdm(total=len(res.layers), desc="montages", unit="layer", file=sys.stderr) as mbar:
            write_montages(res, out, cell=args.cell, progress=lambda done, total: mbar.update(done - mbar.n))
    write_json(res.to_json(), out / "index.json")
    print(f"wrote {out / 'index.json'} ({res.n_images} images, {len(res.layers)} layer(s))", file=sys.stderr)
    return 0
