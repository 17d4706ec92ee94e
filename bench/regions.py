"""R-CNN against Fast R-CNN on the same proposals: seconds per image, their ratio, and label agreement.

For each image, Selective Search (fast mode) gives up to 2,000 proposals once; R-CNN (one full
forward pass per proposal, warped to 224 px with 16 px context) and Fast R-CNN (one forward pass
of the image at short side 256 to ``--layer``, RoIAlign to the tap's 7x7, the rest of the network
per proposal) classify exactly those boxes with the bundled EfficientNet-Lite0. Reported: seconds
per image of each (proposals not included: the same for both), the ratio, and how often the two
give a proposal the same top class, over proposals covering at least half the image and over all.
``--image-size`` sets Fast R-CNN's short side (default the classifier's 256).

Target: Fast R-CNN at least 20x faster at equal proposals.

Run: ``python bench/regions.py [--images N] [--proposals 2000] [--side 600] [--mode fast|quality]
[--layer blocks.6] [--threads T]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("VIZCORE_OFFLINE", "1")

TARGET = 20.0


def images(n: int):
    """ImageNet samples from ../shared/data when present (one per class, spread over the classes), else
    the package's photos."""
    from pathlib import Path

    from vizcore.data import load_image, load_sample, sample_names

    root = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    folder = root / "imagenet-samples"
    if not folder.is_dir():
        folder = Path("/work/shared/data/imagenet-samples")
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        step = max(1, len(files) // n)
        return [(p.name, load_image(p)) for p in files[::step][:n]]
    return [(s, load_sample(s)) for s in sample_names()[:n]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--proposals", type=int, default=2000)
    ap.add_argument("--layer", default="blocks.6")
    ap.add_argument("--pool", default="align", choices=("align", "pool"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=None, help="Fast R-CNN's short side (default 256)")
    ap.add_argument("--side", type=int, default=0,
                    help="resize each image to this short side first (the ImageNet samples are ~256 px, where "
                         "Selective Search finds a few hundred regions; 600 px gives about 2,000)")
    ap.add_argument("--mode", default="fast", choices=("fast", "quality"))
    args = ap.parse_args(argv)

    import torch

    from vizcore.models import load_model
    from vizcore.regions.proposals import selective_search
    from vizcore.regions.rcnn import agreement, detect

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model("efficientnet_lite0")
    rows = []
    for name, img in images(args.images):
        if args.side:
            f = args.side / min(img.size)
            img = img.resize((round(img.size[0] * f), round(img.size[1] * f)))
        props = selective_search(img, mode=args.mode, max_proposals=args.proposals)
        detect(lm, img, props.boxes[:8], method="fast-rcnn", layer=args.layer)  # warm-up
        t0 = time.perf_counter()
        fast = detect(lm, img, props.boxes, method="fast-rcnn", layer=args.layer, pool=args.pool,
                      image_size=args.image_size)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = detect(lm, img, props.boxes, method="rcnn")
        t_slow = time.perf_counter() - t0
        a = agreement(slow, fast)
        row = {"image": name, "size": img.size, "proposals": len(props), "ss_s": props.seconds, "rcnn_s": t_slow,
               "fast_s": t_fast, "ratio": t_slow / t_fast, **a}
        rows.append(row)
        print(f"{name:<40} {img.size[0]}x{img.size[1]} {len(props):5d} proposals (SS {props.seconds:.2f} s): "
              f"R-CNN {t_slow:7.2f} s, Fast R-CNN {t_fast:6.2f} s = {row['ratio']:6.1f}x; same top class "
              f"{a['agree_large']:.0%} of {a['large']} large, {a['agree_all']:.0%} of all", flush=True)
    slow_t = sum(r["rcnn_s"] for r in rows) / len(rows)
    fast_t = sum(r["fast_s"] for r in rows) / len(rows)
    large = sum(r["large"] for r in rows)
    agree = sum(r["agree_large"] * r["large"] for r in rows if r["large"]) / max(large, 1)
    print(f"\nmean per image: R-CNN {slow_t:.2f} s, Fast R-CNN {fast_t:.2f} s, ratio {slow_t / fast_t:.1f}x "
          f"(target >= {TARGET:.0f}x); top-label agreement on {large} large proposals {agree:.0%}")
    return 0 if slow_t / fast_t >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
