"""``vizcore activations``: one channel-grid PNG per layer plus ``index.json``."""
from __future__ import annotations

import re

ORDER = 40


def register(sub) -> None:
    from vizcore.commands._util import add_model_args

    p = sub.add_parser("activations", help="save channel grids of every layer for one image",
                       description="Run IMAGE through the model once and write, into --out, one PNG "
                                   "grid of the top channels per layer, the network's input crop, and "
                                   "index.json (layers, shapes, per-channel statistics, predictions, "
                                   "weight source).")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_args(p)
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="tap names or module paths (default: every tap; see `vizcore layers`)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--top", type=int, default=16, help="channels per grid (default 16; 0 = all)")
    p.add_argument("--order", choices=("mean", "max", "index"), default="mean",
                   help="pick channels by mean or max activation, or by index")
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale per grid instead of one per channel")
    p.add_argument("--cell", type=int, default=64, help="cell size in pixels (default 64)")
    p.add_argument("--topk", type=int, default=5, help="predictions to record (default 5)")
    p.add_argument("--gradcam", action="store_true",
                   help="also write a Grad-CAM overlay per spatial layer for the top prediction")
    p.set_defaults(func=run)


def _file_name(i: int, name: str) -> str:
    return f"{i:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.png"


def check_layers(model: str, names) -> None:
    """Fail on unknown layer names before any weights load (model built on the meta device)."""
    import torch

    from vizcore.models import build, get_spec, resolve_layer

    spec = get_spec(model)
    try:
        with torch.device("meta"):
            net = build(spec)
    except Exception:  # noqa: BLE001 - no meta build: names are checked after loading
        return
    for name in names:
        resolve_layer(spec, net, name)


def run(args) -> int:
    from pathlib import Path

    from vizcore.activations import extract
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.commands.predict import read_images
    from vizcore.render import channel_grid

    if args.top < 0 or args.cell < 4:
        raise ValueError("--top must be >= 0 and --cell >= 4")
    image = read_images([args.image])[0]
    if args.layers:
        check_layers(args.model, args.layers)  # unknown names fail before any work, with close matches
    lm = load_model_cli(args, task=None)  # taps only: a detector's or segmenter's backbone too
    res = extract(lm, image, args.layers, topk=max(0, args.topk))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res.image.save(out / "input.png")
    layers = []
    for i, (name, act) in enumerate(res.layers.items()):
        grid, chans = channel_grid(act.output, top=args.top, order=args.order,
                                   shared_scale=args.shared_scale, cell=args.cell)
        fname = _file_name(i, name)
        grid.save(out / fname)
        entry = act.to_json()
        entry.update(file=fname, channels_shown=chans)
        layers.append(entry)
    if args.gradcam:
        from vizcore.activations import gradcam
        from vizcore.render import overlay

        target = res.predictions[0].index if res.predictions else None
        heats = gradcam(lm, image, [e["name"] for e in layers], target=target)
        for i, entry in enumerate(layers):
            if entry["name"] in heats:
                fname = "gradcam_" + _file_name(i, entry["name"])
                overlay(res.image, heats[entry["name"]]).save(out / fname)
                entry["gradcam"] = fname
    index = {"model": lm.name, "image": args.image, "weights": lm.weights.to_json(),
             "input_size": list(res.input.shape[1:]), "input": "input.png",
             "grid": {"top": args.top, "order": args.order, "shared_scale": args.shared_scale,
                      "cell": args.cell},
             "predictions": [p.to_json() for p in res.predictions],
             "gradcam_target": (res.predictions[0].index if args.gradcam and res.predictions else None),
             "layers": layers}
    write_json(index, out / "index.json")
    print(f"wrote {len(layers)} layer grids and index.json to {out}")
    return 0
