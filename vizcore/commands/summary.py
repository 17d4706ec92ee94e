"""``vizcore summary``: per-layer output shape, parameters, MACs, receptive field and jump."""
from __future__ import annotations

ORDER = 60


def register(sub) -> None:
    p = sub.add_parser("summary", help="per-layer parameters, MACs, receptive field and jump",
                       description="Trace one forward pass of an architecture (no weights: built on "
                                   "PyTorch's meta device) and print, per layer tap, the output shape, "
                                   "parameters and multiply-accumulates since the previous tap, the "
                                   "receptive field and the jump (effective stride) in input pixels.")
    p.add_argument("--model", required=True, help="registered model name or timm/<name>")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--all", action="store_true", help="one row per leaf module instead of per tap")
    p.add_argument("--json", action="store_true",
                   help='print JSON: {"layers": [{name, output_shape, params, macs, rf, jump, ...}], '
                        '"total_params", "total_macs"}')
    p.set_defaults(func=run)


def _human(n: int) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return str(n)


def format_table(summary) -> str:
    """The summary as an aligned text table with totals."""
    head = ("name", "kind", "output shape", "params", "MACs", "RF", "jump", "start")
    rows = [(r.name, r.kind, "x".join(map(str, r.output_shape)) or "-", _human(r.params), _human(r.macs),
             str(r.rf), str(r.jump), f"{r.start:g}") for r in summary.rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 6, 7}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"{summary.model} at {summary.input_size}x{summary.input_size} "
           f"({'every leaf module' if summary.layers == 'all' else 'taps; params and MACs since the previous tap'})",
           line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(f"total: {summary.total_params:,} parameters ({_human(summary.total_params)}), "
               f"{summary.total_macs:,} MACs ({_human(summary.total_macs)}) per image")
    return "\n".join(out)


def run(args) -> int:
    from vizcore.commands._util import write_json
    from vizcore.summary import summarize

    if args.input_size is not None and args.input_size < 1:
        raise ValueError("--input-size must be a positive number of pixels")
    s = summarize(args.model, args.input_size, layers="all" if args.all else "taps")
    if args.json:
        write_json(s.to_json())
    else:
        print(format_table(s))
    return 0
