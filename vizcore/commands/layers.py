"""``vizcore layers``: a model's curated taps in network order, with output shapes."""
from __future__ import annotations

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layer taps and their output shapes",
                       description="List the model's taps in network order with their output shape "
                                   "(channels, height, width; no batch dimension) at the model's "
                                   "input size. No weights are needed.")
    p.add_argument("--model", required=True, help="registered model name or timm/<name>")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, kind, output_shape}")
    p.set_defaults(func=run)


def run(args) -> int:
    from vizcore.activations import tap_shapes
    from vizcore.commands._util import write_json

    if args.input_size is not None and args.input_size < 1:
        raise ValueError("--input-size must be a positive number of pixels")
    rows = [{"name": t.name, "kind": t.kind, "module": t.module,
             "output_shape": list(shape) if shape is not None else None}
            for t, shape in tap_shapes(args.model, args.input_size)]
    if args.json:
        write_json(rows)
        return 0
    w = max((len(r["name"]) for r in rows), default=4)
    k = max((len(r["kind"]) for r in rows), default=4)
    print(f"{'name':<{w}}  {'kind':<{k}}  output shape   module")
    for r in rows:
        shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"
        print(f"{r['name']:<{w}}  {r['kind']:<{k}}  {shape:<14} {r['module']}")
    return 0
