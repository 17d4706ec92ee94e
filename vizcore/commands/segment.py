"""``vizcore segment``: per-pixel classes by a fully convolutional network (FCN, DeepLabv3)."""
from __future__ import annotations

ORDER = 48


def register(sub) -> None:
    from vizcore.commands._util import add_model_args

    p = sub.add_parser("segment", help="per-pixel VOC classes by FCN or DeepLabv3",
                       description="Writes segmentation.json (classes by area), mask.png (the classes over "
                                   "the image) and native.png (the top score map at the network's own "
                                   "resolution) to --out. COCO/VOC weights download when online, else random "
                                   "init with a warning.")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_args(p, default="fcn_resnet50")
    p.add_argument("--size", type=int, default=None, help="short side of the input (default 520)")
    p.add_argument("--out", default=None, help="output folder (created if missing)")
    p.add_argument("--json", action="store_true", help="print segmentation.json to stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from vizcore.cache import atomic_write_bytes
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.commands.predict import read_images
    from vizcore.regions.segment import segment
    from vizcore.render import label_overlay, png_bytes

    (image,) = read_images([args.image])
    lm = load_model_cli(args, task="segmentation")
    r = segment(lm, image, size=args.size)
    doc = dict(r.to_json(), image=str(args.image))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "mask.png", png_bytes(label_overlay(image, r.mask)))
        native = r.native.argmax(0)
        atomic_write_bytes(out / "native.png", png_bytes(label_overlay(
            image.resize((native.shape[1], native.shape[0]), Image.BILINEAR), native.astype(np.int64), alpha=0.6)))
        write_json(doc, out / "segmentation.json")
    if args.json:
        write_json(doc)
    else:
        for c in doc["classes"]:
            print(f"  {c['fraction']:7.2%}  {c['label']}")
    return 0
