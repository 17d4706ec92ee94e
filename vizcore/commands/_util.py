"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


DATA_HELP = "image folder, .txt list of files, samples, imagenet-samples, cifar10, stl10 or cue-conflict:ROOT"


def add_data_arg(p, *, labelled: bool = False) -> None:
    """The DATA positional every dataset command takes (:func:`vizcore.data.open_dataset` specs)."""
    p.add_argument("data", metavar="DATA", help=("labelled " if labelled else "") + DATA_HELP)


def add_vector_args(p) -> None:
    """DATA, model, ``--layer``, ``--per-image`` and ``--seed``: the commands that sample a layer's spatial
    activation vectors over a dataset (concepts, atlas)."""
    add_data_arg(p)
    add_model_args(p)
    p.add_argument("--layer", required=True, help="tap name or module path with a spatial map (see `vizcore layers`)")
    p.add_argument("--per-image", type=int, default=16, metavar="N",
                   help="positions sampled per image (seeded; default 16; 0: every position)")
    p.add_argument("--seed", type=int, default=0)


def per_image(args) -> int | None:
    """``--per-image`` as the engine takes it: ``None`` for every position; a clear error below 0."""
    if args.per_image < 0:
        raise ValueError("--per-image must be 0 (every position) or more")
    return args.per_image or None


def add_model_args(p, *, default: str | None = "efficientnet_lite0") -> None:
    p.add_argument("--model", default=default, required=default is None,
                   help="registered model name (see `vizcore models`) or timm/<name>")
    p.add_argument("--weights", default="auto",
                   help="auto (package, hub cache, download, random), random, or a checkpoint path")


def load_model_cli(args, task: str | None = "classification"):
    """Load the model named by ``--model/--weights`` (a model of ``task``: a detector given to a
    classification command is one clear error; ``None`` takes any model, for the commands that need
    taps only, which a detector's backbone has) and report the weight source on stderr."""
    from vizcore.models import load_model, require_task

    if task is not None:
        require_task(args.model, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning is printed below, once
        lm = load_model(args.model, args.weights)
    msg = f"{lm.name}: weights from {lm.weights.label()}"
    print(msg if not lm.weights.warning else f"warning: {lm.weights.warning}", file=sys.stderr)
    return lm


def write_json(obj, path: str | Path | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout."""
    text = json.dumps(obj, indent=2, default=str)
    if path is None:
        sys.stdout.write(text + "\n")
        return
    from vizcore.cache import atomic_write_text

    atomic_write_text(Path(path), text + "\n")
