"""``vizcore atlas``: an activation atlas of a layer over a dataset (Carter et al., Distill 2019)."""
from __future__ import annotations

ORDER = 63


def register(sub) -> None:
    from vizcore.commands._util import add_vector_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "atlas", help="activation atlas: a layer's activation vectors laid out in 2-D and drawn cell by cell",
        description="Sample spatial activation vectors of LAYER over DATA, lay them out in 2-D (UMAP, seeded; "
                    "t-SNE as an option), bin the layout into a GRID x GRID grid, average each cell's vectors "
                    "and render each mean as a feature visualisation (cosine-weighted direction objective). "
                    "Cells with fewer than --min-count vectors stay empty. With --target, a class atlas: only "
                    "the vectors with the strongest gradient x activation for that class. Writes OUT/atlas.png "
                    "and OUT/atlas.json (cells, counts, the positions closest to each cell's mean).")
    add_vector_args(p)
    p.add_argument("--grid", type=int, default=20, help="cells per side (default 20)")
    p.add_argument("--min-count", type=int, default=3, help="fewest vectors a drawn cell needs (default 3)")
    p.add_argument("--layout", default="umap", choices=("umap", "tsne"), help="2-D layout (default umap)")
    p.add_argument("--target", default=None, help="class index or label: a class atlas")
    p.add_argument("--keep", type=float, default=0.1,
                   help="class atlas: share of the vectors kept, strongest for the class first (default 0.1)")
    p.add_argument("--icon-steps", type=int, default=64, help="feature visualisation steps per icon (0: no icons)")
    p.add_argument("--icon-size", type=int, default=64, help="icon side in pixels (default 64)")
    p.add_argument("--icon-batch", type=int, default=32, help="icons optimised together (default 32)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_run_flags(p, batch_size=16)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from vizcore.atlas import AtlasJob, atlas_image
    from vizcore.commands._util import load_model_cli, per_image, write_json
    from vizcore.data import open_dataset
    from vizcore.jobs import RunOptions
    from vizcore.jobs import run as run_job

    n_positions = per_image(args)
    ds = open_dataset(args.data)
    lm = load_model_cli(args)
    opts = RunOptions.from_args(args)
    job = AtlasJob(lm, ds, args.layer, args.grid, per_image=n_positions, seed=args.seed,
                   method=args.layout, min_count=args.min_count, target=args.target, keep=args.keep,
                   icon_steps=args.icon_steps, icon_size=args.icon_size, icon_batch=args.icon_batch, options=opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a = run_job(job, opts, progress=True)
    atlas_image(a, cell=args.icon_size).save(out / "atlas.png")
    write_json({"dataset": ds.to_json(), **a.to_json()}, out / "atlas.json")
    print(f"wrote {out / 'atlas.png'}: {len(a.cells)} of {a.grid * a.grid} cells drawn from {len(a.kept):,} vectors",
          file=sys.stderr)
    return 0
