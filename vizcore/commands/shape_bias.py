"""``vizcore shape-bias``: texture vs shape on the Geirhos cue-conflict stimuli."""
from __future__ import annotations

ORDER = 100


def register(sub) -> None:
    from vizcore.commands._util import add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "shape-bias", help="texture vs shape: shape bias on the cue-conflict stimuli (Geirhos et al. 2019)",
        description="Score an ImageNet classifier on the 1,200 cue-conflict images (and the silhouettes "
                    "and edge drawings when present): decisions mapped to 16 categories by averaging the "
                    "softmax over each category's ImageNet classes; shape bias = shape hits / "
                    "(shape hits + texture hits).")
    add_model_args(p)
    p.add_argument("--stimuli", default=None, metavar="DIR",
                   help="stimuli root (with style-transfer-preprocessed-512/, filled-silhouettes/, edges/) "
                        "or the cue-conflict folder alone; default: $VIZCORE_STIMULI, then the download "
                        "cache, then a download from rgeirhos/texture-vs-shape")
    p.add_argument("--decisions", action="store_true", help="include every image's decision in the JSON")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON result to FILE")
    add_run_flags(p, batch_size=16)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.jobs import RunOptions
    from vizcore.cueconflict import check_imagenet_head, locate_stimuli, shape_bias, summary_lines
    from vizcore.models import get_spec

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    check_imagenet_head(get_spec(args.model))  # fail before building the model
    root = locate_stimuli(args.stimuli)
    lm = load_model_cli(args)
    result = shape_bias(lm, root, options=RunOptions.from_args(args), progress=True)
    obj = result.to_json(decisions=args.decisions)
    if args.out:
        write_json(obj, args.out)
    if args.json:
        write_json(obj)
    else:
        sys.stdout.write("\n".join(summary_lines(result)) + "\n")
    return 0
