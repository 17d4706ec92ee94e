"""Cost of the sanity checks and of LRP, and the similarity curves of the README.

(a) Seconds per randomisation step relative to one map: for each method, one cascading check of
``--steps`` blocks (cache off; every step re-initialises one block of the copy and recomputes the
map) against one :func:`vizcore.evidence.evidence` call on the trained model; the ratio is per step
(including step 0 and the random-class map). Target: <= 1.5 (a step is one map plus the similarity
measures and a few parameter copies).
(b) LRP seconds relative to one Grad-CAM: back-to-back pairs, alternating order; median ratio.
(c) ``--curves DIR``: the full cascading check (blocks) of every method on the sample photos, as
``sanity_curves.json`` and one figure per photo (``sanity_<photo>.png``).

Run: ``python bench/sanity.py [--repeats N] [--steps S] [--curves DIR] [--threads T]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("VIZCORE_OFFLINE", "1")

METHODS = ("cam", "gradcam", "guided", "deconv", "lrp")
PHOTOS = ("cat", "coffee", "astronaut")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--curves", default=None, metavar="DIR")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from vizcore.activations import preprocess
    from vizcore.data import load_sample
    from vizcore.evidence import evidence
    from vizcore.evidence.sanity import sanity_check, sanity_figure
    from vizcore.jobs import RunOptions
    from vizcore.models import load_model

    lm = load_model("efficientnet_lite0")
    x = preprocess(lm, load_sample("cat"))
    target = int(lm.model(x).argmax())
    off = RunOptions(cache=False)
    rows = []
    for m in METHODS:
        evidence(lm, x, target, m)  # warm-up
        one = statistics.median(_time(lambda: evidence(lm, x, target, m)) for _ in range(args.repeats))
        t = _time(lambda: sanity_check(lm, x, target, [m], max_steps=args.steps, options=off))
        per_step = t / (args.steps + 2)
        rows.append({"method": m, "one_map_s": round(one, 4), "per_step_s": round(per_step, 4),
                     "ratio": round(per_step / one, 2)})
        print(f"{m:<8} one map {one:.3f} s · per randomisation step {per_step:.3f} s · {per_step / one:.2f} maps",
              flush=True)
    ratios = []
    for i in range(args.repeats):
        a, b = (("lrp", "gradcam") if i % 2 == 0 else ("gradcam", "lrp"))
        ta = _time(lambda: evidence(lm, x, target, a))
        tb = _time(lambda: evidence(lm, x, target, b))
        t_lrp, t_gc = (ta, tb) if a == "lrp" else (tb, ta)
        ratios.append(t_lrp / t_gc)
    lrp_ratio = statistics.median(ratios)
    print(f"LRP / Grad-CAM: {lrp_ratio:.2f} (median of {args.repeats} pairs)")
    out = {"model": lm.name, "threads": torch.get_num_threads(), "steps": rows, "lrp_over_gradcam": round(lrp_ratio, 2)}
    if args.curves:
        from pathlib import Path

        d = Path(args.curves)
        d.mkdir(parents=True, exist_ok=True)
        curves = {}
        for photo in PHOTOS:
            r = sanity_check(lm, load_sample(photo), None, list(METHODS), options=off)
            curves[photo] = r.to_json()
            sanity_figure([r]).savefig(d / f"sanity_{photo}.png", dpi=90)
            last = {m: r.scores[m]["spearman"][-1] for m in r.methods}
            print(f"{photo} ({r.target['label']}): Spearman after all {len(r.steps) - 1} blocks: "
                  + ", ".join(f"{m} {v:+.2f}" for m, v in last.items()), flush=True)
        (d / "sanity_curves.json").write_text(json.dumps(curves, indent=1))
        out["curves"] = str(d / "sanity_curves.json")
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
