"""``vizcore concepts``: the concepts of a layer over a dataset (NMF / semi-NMF of its spatial vectors)."""
from __future__ import annotations

ORDER = 62


def register(sub) -> None:
    from vizcore.commands._util import add_vector_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "concepts", help="factor a layer's activations over a dataset into k concepts",
        description="Sample the spatial activation vectors of LAYER over DATA, factor them into k concepts "
                    "(A ≈ U W, U >= 0: NMF where the tap is non-negative, semi-NMF where not), then find each "
                    "concept's top dataset crops in a second pass. Writes OUT/concepts.json (W, the error for "
                    "each k, top channels, crops), OUT/concept_<i>_crops.png and, with --image, each concept's "
                    "heatmap and importance for a class on that image (OUT/image_concepts.png).")
    add_vector_args(p)
    p.add_argument("--k", type=int, default=8, help="concepts (default 8)")
    p.add_argument("--method", default="auto", choices=("auto", "nmf", "semi-nmf"),
                   help="auto: NMF when the tap is non-negative, else semi-NMF")
    p.add_argument("--crops", type=int, default=8, help="top dataset crops per concept (default 8; 0: none)")
    p.add_argument("--image", default=None, metavar="FILE", help="also: heatmaps and class importance on this image")
    p.add_argument("--target", default=None, help="class index or label for --image (default: the top class)")
    p.add_argument("--featviz-steps", type=int, default=0, metavar="N",
                   help="also render each concept's direction by feature visualisation, N steps (default: no)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_run_flags(p, batch_size=16)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from vizcore.commands._util import load_model_cli, per_image, write_json
    from vizcore.concepts import ConceptCropsJob, ConceptsJob, DirectionIconsJob, concept_importance, concept_maps
    from vizcore.data import load_image, open_dataset
    from vizcore.jobs import RunOptions
    from vizcore.jobs import run as run_job

    n_positions = per_image(args)
    ds = open_dataset(args.data)
    lm = load_model_cli(args)
    opts = RunOptions.from_args(args)
    job = ConceptsJob(lm, ds, args.layer, args.k, per_image=n_positions, seed=args.seed,
                      method=args.method, options=opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c = run_job(job, opts, progress=True)
    index = {"dataset": ds.to_json() if hasattr(ds, "to_json") else ds.name, **c.to_json()}
    print(f"{c.k} concepts of {c.layer} ({c.method}) from {c.n_vectors} vectors of {c.n_images} images: "
          f"relative error {c.rel_error:.3f}, explained variance {c.explained_variance:.3f}", file=sys.stderr)
    if args.crops > 0:
        from vizcore.render import channel_montage

        crops = run_job(ConceptCropsJob(lm, ds, c, args.crops), opts, progress=True)
        index["crops"] = [[h.to_json() for h in hits] for hits in crops.layers[c.layer]]
        for i in range(c.k):
            channel_montage(crops, c.layer, i, cell=96).save(out / f"concept_{i}_crops.png")
    if args.featviz_steps > 0:
        icons = run_job(DirectionIconsJob(lm, c.layer, c.W, steps=args.featviz_steps, seed=args.seed), opts,
                        progress=True)
        for i, im in enumerate(icons.images):
            im.save(out / f"concept_{i}_featviz.png")
        index["featviz"] = icons.to_json()
    if args.image:
        from vizcore.render import overlay_grid

        img = load_image(args.image)
        m = concept_maps(lm, c, img)
        overlay_grid(lm, c.layer, m.maps, m.image, list(range(c.k)), cell=160).save(out / "image_concepts.png")
        imp = concept_importance(lm, c, img, args.target)
        index["image"] = {"file": str(args.image), "rel_error": m.rel_error, "importance": imp.to_json()}
    write_json(index, out / "concepts.json")
    print(f"wrote {out / 'concepts.json'}", file=sys.stderr)
    return 0
