"""``vizcore evidence``: where each method finds the evidence for one class, with faithfulness scores."""
from __future__ import annotations

import argparse

ORDER = 45
DEFAULT_METHODS = ("cam", "gradcam", "guided", "deconv")


def register(sub) -> None:
    from vizcore.commands._util import add_model_args
    from vizcore.jobs import add_run_flags

    p = sub.add_parser(
        "evidence", help="class-evidence maps of several methods, each with deletion/insertion scores",
        description="For one image and one class, compute each method's evidence map (cam, bagnet, "
                    "occlusion, guided, deconv, ig, gradcam), score it by its deletion and insertion "
                    "curves, and score a random map in the same run as the baseline. Lower deletion "
                    "and higher insertion areas mean a more faithful map. With --out, writes "
                    "index.json, one overlay PNG and one raw .npy map (native resolution) per method. "
                    "With cam or gradcam, also the channels behind the map: each channel's share of the "
                    "Grad-CAM map at its layer (the dashboard's unit pages name them by tap and channel).")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_args(p)
    p.add_argument("--target", default="top1",
                   help="class to explain: an index, a label (case-insensitive) or top1 (default)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                   help=f"methods, in order (default: {' '.join(DEFAULT_METHODS)}; also bagnet, occlusion, ig)")
    p.add_argument("--out", default=None, help="output folder (created if missing)")
    p.add_argument("--json", action="store_true", help="print index.json to stdout")
    g = p.add_argument_group("method settings")
    g.add_argument("--window", type=int, default=16, help="occlusion window in pixels (default 16)")
    g.add_argument("--stride", type=int, default=8, help="occlusion stride in pixels (default 8)")
    g.add_argument("--batch", type=int, default=32, help="occluded images per forward pass (default 32)")
    g.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    g.add_argument("--ig-batch", type=int, default=16, help="integrated-gradients internal batch (default 16)")
    g.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last feature map)")
    g.add_argument("--channels", type=int, default=6, metavar="K",
                   help="with cam or gradcam: the K channels with the largest share of the map, and the "
                        "3 most against the class (default 6; 0: none)")
    g.add_argument("--fcn-size", type=int, default=448,
                   help="AlexNet/VGG cam: the crop is upscaled to this size for the FCN map (default 448)")
    f = p.add_argument_group("faithfulness")
    f.add_argument("--steps", type=int, default=32, help="steps of the deletion/insertion curves (default 32)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random baseline map (default 0)")
    f.add_argument("--random-grid", type=int, default=7,
                   help="side of the random baseline map's lattice (default 7, like a CAM at stride 32)")
    f.add_argument("--curves", action="store_true", help=argparse.SUPPRESS)
    add_run_flags(p, batch_size=None, engine=False, workers=False)  # --no-cache: every map and score is cached
    p.set_defaults(func=run)


def _settings(args) -> dict[str, dict]:
    return {"occlusion": {"window": args.window, "stride": args.stride, "batch": args.batch},
            "ig": {"n_steps": args.ig_steps, "internal_batch_size": args.ig_batch},
            "gradcam": {"layer": args.layer}, "cam": {"fcn_size": args.fcn_size}}


def run(args) -> int:
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm.auto import tqdm

    from vizcore.cache import atomic_write_bytes
    from vizcore.commands._util import load_model_cli, write_json
    from vizcore.commands.predict import read_images
    from vizcore.evidence import evidence_channels, explain, get_method, resolve_target
    from vizcore.jobs import RunOptions
    from vizcore.models import get_spec

    for m in args.methods:
        get_method(m)  # unknown names fail first, with the closest valid ones
    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    image = read_images([args.image])[0]
    if str(args.target).strip().lower() != "top1":
        resolve_target(get_spec(args.model), args.target)  # an unknown class fails before the model loads
    lm = load_model_cli(args)
    if args.random_grid < 1:
        raise ValueError("--random-grid must be at least 1")
    if args.channels < 0:
        raise ValueError("--channels must be at least 0")
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars[stage] = tqdm(total=total, desc=stage, unit="pass", file=sys.stderr, leave=False)
        bars[stage].update(done - bars[stage].n)

    try:
        rep = explain(lm, image, args.target, args.methods, settings=_settings(args), steps=args.steps,
                      seed=args.seed, random_grid=args.random_grid, progress=progress,
                      cache=RunOptions.from_args(args).cache)
    finally:
        for b in bars.values():
            b.close()
    if rep.cached:
        print("maps and scores from the cache", file=sys.stderr)
    index = rep.to_json(curves=args.curves)
    channels = None
    if args.channels and {"cam", "gradcam"} & set(args.methods):
        channels = evidence_channels(lm, image, rep.target.index, args.layer, k=args.channels)
        index["channels"] = channels.to_json()
    out = Path(args.out) if args.out else None
    if out is not None:
        import io

        out.mkdir(parents=True, exist_ok=True)
        rep_crop = next(iter(rep.maps.values())).image if rep.maps else None
        if rep_crop is not None:
            rep_crop.save(out / "input.png")
            index["input"] = "input.png"
    for name, ev in rep.maps.items():
        entry = index["methods"][name]
        entry["overlay"], entry["raw"] = (f"{name}.png", f"{name}.npy") if out is not None else (None, None)
        if out is not None:
            ev.overlay().save(out / entry["overlay"])
            buf = io.BytesIO()
            np.save(buf, ev.raw)
            atomic_write_bytes(out / entry["raw"], buf.getvalue())
    if out is not None:
        write_json(index, out / "index.json")
    if args.json:
        write_json(index)
        return 0
    t = rep.target
    print(f"{lm.name}: evidence for {t.label} ({t.index}), logit {rep.target_logit:.3f}")
    print(f"{'method':<10} {'deletion':>9} {'insertion':>10} {'seconds':>8}")
    for name, entry in index["methods"].items():
        print(f"{name:<10} {entry['deletion_auc']:>9.3f} {entry['insertion_auc']:>10.3f} {entry['seconds']:>8.2f}")
        for c in entry["caveats"]:
            print(f"           note: {c}")
    print(f"{'random':<10} {index['random']['deletion_auc']:>9.3f} {index['random']['insertion_auc']:>10.3f}")
    print("lower deletion and higher insertion = more faithful")
    if channels is not None:
        print(f"channels of {channels.layer} behind the map (share of the Grad-CAM map, all: {channels.total:.4g}"
              + (f"; + bias {channels.bias:.4g} = logit {channels.logit:.4g}" if channels.bias is not None else "")
              + "):")
        print("  for:     " + ", ".join(f"{c.channel} ({c.share:+.3g})" for c in channels.top))
        if channels.bottom:
            print("  against: " + ", ".join(f"{c.channel} ({c.share:+.3g})" for c in channels.bottom))
    if out is not None:
        print(f"wrote {len(rep.maps)} overlays, raw maps and index.json to {out}")
    return 0
