"""``vizcore predict``: top-k ImageNet classes for one or more images, one model load."""
from __future__ import annotations

import argparse

ORDER = 30


def register(sub) -> None:
    from vizcore.commands._util import add_model_args

    p = sub.add_parser("predict", help="classify images",
                       description="Top-k predictions for each image. Every image is read before the "
                                   "model loads; an unreadable one stops the command with its name.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    add_model_args(p)
    p.add_argument("--topk", type=int, default=5, help="number of classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"file","model","weights","predictions"}')
    p.set_defaults(func=run)


def read_images(paths):
    """Decode every path or raise ImageLoadError naming the first bad one."""
    from vizcore.data import ImageLoadError, load_image

    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageLoadError as e:
            raise ImageLoadError(f"cannot read {path}: {e}") from None
    return images


def run(args) -> int:
    from vizcore.activations import predict
    from vizcore.commands._util import load_model_cli, write_json

    if args.topk < 1:
        raise ValueError("--topk must be at least 1")
    images = read_images(args.images)
    lm = load_model_cli(args)
    preds = predict(lm, images, topk=args.topk, batch_size=max(1, args.batch_size))
    rows = [{"file": f, "model": lm.name, "weights": lm.weights.source,
             "predictions": [p.to_json() for p in ps]} for f, ps in zip(args.images, preds)]
    if args.json:
        write_json(rows)
        return 0
    for r in rows:
        print(r["file"])
        if not r["predictions"]:
            print("  (this model has no classification head)")
        for p in r["predictions"]:
            print(f"  {p['prob']:7.2%}  {p['index']:4d}  {p['label']}")
    return 0
