"""``vizcore export-site``: a precomputed network as a static website (HTML, CSS and images)."""
from __future__ import annotations

ORDER = 96


def register(sub) -> None:
    from vizcore.commands.precompute import add_plan_args

    p = sub.add_parser(
        "export-site", help="write a precomputed network as a static site (no server, no JavaScript)",
        description="Reads the results of `vizcore precompute` (same arguments) from the cache and writes "
                    "DIR/index.html, a page per layer with its grid of channels and a page per unit with its "
                    "feature visualisation, top images with their maps, supported classes and drivers. Plain "
                    "HTML with relative links: open it from the file system or put it on any static host. "
                    "Units that were not precomputed are listed as missing; nothing is computed.")
    add_plan_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from tqdm.auto import tqdm

    from vizcore.commands.precompute import open_plan
    from vizcore.site import export_site

    pl = open_plan(args)
    with tqdm(total=pl.n_units, desc="pages", unit="unit", file=sys.stderr) as bar:
        site = export_site(pl, Path(args.out), dataset_arg=args.data,
                           progress=lambda d, t: bar.update(d - bar.n))
    print(f"wrote {site.index} ({site.units} unit pages, {site.missing} missing parts)", file=sys.stderr)
    return 0
