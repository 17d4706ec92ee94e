"""``vizcore neighbours``: the dataset images nearest to a query image at every chosen tap."""
from __future__ import annotations

ORDER = 96


def register(sub) -> None:
    from vizcore.commands._util import add_data_arg, add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "neighbours", help="the k dataset images most similar to a query image at each layer",
        description="Cosine similarity of pooled features (the features cache of probes and embeddings) "
                    "between IMAGE and every image of DATA, at each tap. Early taps group by colour and "
                    "texture, deep ones by meaning. Writes OUT/neighbours.json and OUT/neighbours.png.")
    p.add_argument("image", metavar="IMAGE", help="the query image file")
    add_data_arg(p)
    add_model_args(p)
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="tap names or module paths (default: every tap)")
    p.add_argument("--k", type=int, default=8, help="neighbours per layer (default 8)")
    p.add_argument("--pool-target", type=int, default=9600, help="features per layer aimed at (default 9600)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_run_flags(p, batch_size=32)
    p.set_defaults(func=run)


def neighbours_png(nb, query, path, cell: int = 96) -> None:
    """One row per layer: the query, then its neighbours with their similarity."""
    from PIL import Image, ImageDraw, ImageOps

    from vizcore.cache import atomic_write_bytes
    from vizcore.data import ImageLoadError, load_image

    label_w = 150
    k = max((len(v) for v in nb.layers.values()), default=0)
    rows = list(nb.layers.items())
    sheet = Image.new("RGB", (label_w + (k + 1) * (cell + 4), len(rows) * (cell + 18) + 4), "white")
    draw = ImageDraw.Draw(sheet)

    def thumb(img):
        return ImageOps.fit(img.convert("RGB"), (cell, cell))

    q = thumb(query)
    for r, (layer, hits) in enumerate(rows):
        y = 4 + r * (cell + 18)
        draw.text((4, y + cell // 2 - 6), layer, fill="black")
        sheet.paste(q, (label_w, y))
        draw.text((label_w, y + cell + 2), "query", fill="black")
        for j, h in enumerate(hits):
            try:
                img = thumb(load_image(h.file, max_side=256))
            except ImageLoadError:
                continue
            x = label_w + (j + 1) * (cell + 4)
            sheet.paste(img, (x, y))
            draw.text((x, y + cell + 2), f"{h.similarity:.3f}", fill="black")
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def run(args) -> int:
    from pathlib import Path

    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.data import load_image, open_dataset
    from vizcore.features import extract_features
    from vizcore.jobs import RunOptions
    from vizcore.neighbours import nearest_neighbours
    from vizcore.similarity import order_layers

    if args.k < 1:
        raise ValueError("--k must be at least 1")
    query = load_image(args.image)
    ds = open_dataset(args.data)
    lm = load_model_cli(args)
    names = order_layers(lm, args.layers)
    feats = extract_features(lm, ds, names, pool=args.pool_target, options=RunOptions.from_args(args),
                             progress=True)  # a job: local or Ray, cached; the query is pooled alike
    nb = nearest_neighbours(lm, query, ds, names, k=args.k, query_name=args.image, pool=args.pool_target,
                            features=feats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(nb.to_json(), out / "neighbours.json")
    neighbours_png(nb, query, out / "neighbours.png")
    for layer, hits in nb.layers.items():
        print(f"{layer}: " + ", ".join(f"{Path(h.file).name} ({h.similarity:.3f})" for h in hits[:3]))
    print(f"wrote {out / 'neighbours.json'} and {out / 'neighbours.png'}")
    return 0
