"""``vizcore featviz``: feature visualisation of channels by gradient ascent, PNGs plus index.json."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 70


def _channels_arg(text: str) -> list[int]:
    """``--channels``: :func:`~vizcore.featureviz.parse_channels`, its errors in argparse's words."""
    from vizcore.featureviz.channels import parse_channels  # here: the CLI starts without torch

    try:
        return parse_channels(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub) -> None:
    from vizcore.commands._util import add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser("featviz", help="feature visualisation: images that maximise channels of a layer",
                       description="Optimise one image per channel (--batch-size channels per batch, each "
                                   "batch a cached job) and write PNGs plus DIR/index.json with objective "
                                   "values before, after, and the best value over a dataset.")
    add_model_args(p)
    p.add_argument("--layer", required=True, help="tap name or module path (see `vizcore layers`)")
    p.add_argument("--channels", type=_channels_arg, default=[0], help="e.g. 0-15 or 3,7,12 (default 0)")
    p.add_argument("--objective", default="channel", choices=["channel", "neuron", "layer",
                                                               "-channel", "-neuron", "-layer"],
                   help="channel: mean over positions; neuron: centre unit; layer: DeepDream; -X: negative")
    p.add_argument("--param", default="fft", choices=["fft", "pixel"], help="image parameterisation")
    p.add_argument("--steps", type=int, default=256, help="optimisation steps, at least 1 (default 256)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transforms", default="standard", choices=["standard", "lucent", "light", "none"])
    p.add_argument("--diversity", type=float, default=0.0, help="diversity weight (with --n-per-channel > 1)")
    p.add_argument("--n-per-channel", type=int, default=1, help="images per channel")
    p.add_argument("--data", default=None,
                   help="dataset for the best-dataset-value comparison (default: built-in samples)")
    p.add_argument("--out", required=True, help="output directory")
    add_run_flags(p, batch_size=64, engine=False, workers=False)  # channels per batch; --no-cache
    p.set_defaults(func=run)


def run(args) -> int:
    from vizcore import jobs
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.featureviz import FeatVizJob, best_dataset_value, featviz_jobs
    from vizcore.jobs import ChainJob, RunOptions

    if args.steps < 1:  # checked before the model loads: one line, nothing written
        raise ValueError(f"--steps must be at least 1, not {args.steps}: with no optimisation step the "
                         "image would be the random start, not a visualisation")
    lm = load_model_cli(args, task=None)  # taps only: a detector's or segmenter's backbone too
    size = args.size or lm.spec.input_size
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    settings = dict(objective=args.objective, param=args.param, steps=args.steps, lr=args.lr, size=size,
                    seed=args.seed, transforms=args.transforms, diversity=args.diversity,
                    n_per_channel=args.n_per_channel)
    options = RunOptions.from_args(args)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.objective.lstrip("-") == "layer":
        parts = [FeatVizJob(lm, args.layer, None, **settings)]
    else:
        parts = featviz_jobs(lm, args.layer, args.channels, batch=args.batch_size, **settings)
    # One job per batch of channels (each cached on its own), run in turn with one bar of steps.
    done = jobs.run(ChainJob({f"batch {i}": j for i, j in enumerate(parts)}), options, progress=True)
    results = [r for batch in done.values() for r in batch]

    per_layer_objective = args.objective.lstrip("-") == "layer"
    chans = None if per_layer_objective else args.channels
    best = best_dataset_value(lm, args.layer, chans, dataset=args.data, size=size, objective=args.objective)
    best_by_channel = {None: best[0]} if per_layer_objective else dict(zip(args.channels, best))

    entries = []
    for r in results:
        name = (f"{'layer' if r.channel is None else f'channel{r.channel:04d}'}"
                f"{f'_{r.copy}' if args.n_per_channel > 1 else ''}.png")
        r.image.save(out / name)
        b = best_by_channel[r.channel]
        entries.append({
            "channel": r.channel, "copy": r.copy, "file": name,
            "objective_start": r.objective_start, "objective_final": r.objective_final,
            "best_dataset_value": b,
            "beats_start": r.objective_final > r.objective_start,
            "beats_dataset": r.objective_final > b,
            "settings": r.settings(),
        })
    settings = results[0].settings() if results else {}
    index = {"model": lm.name, "weights": lm.weights.to_json(), "layer": args.layer,
             "module": lm.resolve(args.layer), "settings": settings,
             "dataset": args.data or "samples", "channels": entries,
             "all_beat_dataset": all(e["beats_dataset"] for e in entries),
             "all_beat_start": all(e["beats_start"] for e in entries)}
    write_json(index, out / "index.json")
    n_ok = sum(e["beats_dataset"] for e in entries)
    print(f"wrote {len(entries)} images to {out}; {n_ok}/{len(entries)} beat the best dataset value",
          file=sys.stderr)
    return 0
