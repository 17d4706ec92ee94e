"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


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
