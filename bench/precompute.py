"""What a precompute costs, measured here, and a projection for ResNet-50 on GPUs.

1. Feature visualisation, channels per second: the same featviz batch jobs (EfficientNet-Lite0,
   one tap) run in this process with one torch thread (before and after Ray: mean), and with :func:`vizcore.jobs.run_many`
   on a local Ray with two actors of one thread each. Ray's start-up (ray.init, actors, one model
   load per actor) is measured apart, with a run of one-step jobs; the ratio is per CPU.
   Target: Ray >= 0.8x local per CPU.
2. Mining throughput (images/s): one :class:`vizcore.patches.MiningJob` over the reference images.
3. The whole precompute of EfficientNet-Lite0 at a few taps (every part; class support timed on a
   few channels and scaled, since it is a double-backward per image and channel) and its disk use
   per channel, measured against :meth:`vizcore.precompute.Plan.estimate_bytes`.
4. ResNet-50: seconds per optimisation step of a featviz batch on this CPU at 128 px, and the
   projection of a full precompute on 1, 8 and 64 GPUs under stated assumptions.

Run: ``python bench/precompute.py [--quick] [--json out.json]``. Numbers on a shared 2-core
machine move with the other processes' load; the medians of a few repeats are shown.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("VIZCORE_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Assumed GPU throughput for the projection (see the README): an A100 trains ResNet-50 at about
# 1,400 images/s at 224 px in TF32 (NVIDIA DeepLearningExamples, ResNet-50 v1.5); a featviz step is
# a forward and a backward to the input, about a training step's cost; at 128 px a step has 3.1x
# fewer pixels, of which we keep a conservative 2x: 2,800 image-steps/s per GPU. Mining: 2,000 JPEG
# images/s per GPU (decoding-bound). Class support: a double backward per image, 3 image-steps.
GPU_IMAGE_STEPS_PER_S = 2800.0
GPU_MINING_IMAGES_PER_S = 2000.0
RESNET50_BLOCKS = {"layer1": (3, 256), "layer2": (4, 512), "layer3": (6, 1024), "layer4": (3, 2048)}


def _featviz_jobs(lm, layer, n, steps, size, batch):
    from vizcore.featureviz.cached import featviz_jobs

    return featviz_jobs(lm, layer, range(n), batch=batch, steps=steps, size=size, seed=0)


def featviz_local_vs_ray(lm, layer: str, n: int, steps: int, size: int, batch: int) -> dict:
    import torch

    from vizcore.distributed import init_ray, shutdown_ray
    from vizcore.jobs import RunOptions, run_many

    torch.set_num_threads(1)
    opts = RunOptions(cache=False, workers=0)
    run_many(_featviz_jobs(lm, layer, batch, 2, size, batch), opts)  # warm-up
    def local_run() -> float:
        t0 = time.perf_counter()
        run_many(_featviz_jobs(lm, layer, n, steps, size, batch), opts)
        return time.perf_counter() - t0

    local_before = local_run()

    os.environ["VIZCORE_RAY_ACTORS"] = "2"
    os.environ["VIZCORE_RAY_THREADS"] = "1"
    t0 = time.perf_counter()
    init_ray(num_cpus=2)
    ray_init_s = time.perf_counter() - t0
    ropts = RunOptions(cache=False, engine="ray")
    try:
        t0 = time.perf_counter()  # actors + a model load each + one step: start-up
        run_many(_featviz_jobs(lm, layer, 2 * batch, 1, size, batch), ropts)
        startup_s = time.perf_counter() - t0
        done_at: list[float] = []
        t0 = time.perf_counter()
        run_many(_featviz_jobs(lm, layer, n, steps, size, batch), ropts,
                 on_result=lambda i, r: done_at.append(time.perf_counter()))
        ray_s = time.perf_counter() - t0
    finally:
        shutdown_ray()
    # Local again after Ray, and the mean of both: the load of other processes on a shared machine
    # changes over minutes, and this keeps it from favouring either side.
    local_after = local_run()
    local_s = (local_before + local_after) / 2
    # Steady state: the jobs after each actor's first one, from the second result to the last
    # (the first result of each actor carries its start-up: actor, model load, first step).
    steady = max(done_at[-1] - done_at[1], 1e-9)
    local_rate, ray_rate = n / local_s, (len(done_at) - 2) * batch / steady
    return {"layer": layer, "channels": n, "steps": steps, "size": size, "batch": batch,
            "local_s": local_s, "local_s_before_after": [local_before, local_after], "local_channels_per_s": local_rate, "ray_init_s": ray_init_s,
            "ray_startup_s": startup_s, "ray_s": ray_s, "ray_channels_per_s_steady": ray_rate,
            "ray_channels_per_s_with_startup": n / ray_s, "ratio_per_cpu": (ray_rate / 2) / local_rate}


def mining_throughput(lm, ds, layers) -> dict:
    from vizcore.jobs import RunOptions, run
    from vizcore.patches import MiningJob

    t0 = time.perf_counter()
    res = run(MiningJob(lm, ds, layers, k=9), RunOptions(cache=False, batch_size=16))
    s = time.perf_counter() - t0
    return {"images": res.n_images, "layers": len(layers), "seconds": s, "images_per_s": res.n_images / s}


def lite0_total(lm, ds, layers, steps: int, size: int, batch: int, cs_channels: int) -> dict:
    """Every part of a precompute of ``layers`` (class support timed on a few channels, scaled)."""
    from vizcore import precompute as P
    from vizcore.jobs import RunOptions, cached, run

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VIZCORE_CACHE"] = tmp
        p = P.plan(lm, ds, layers, P.PrecomputeSettings(featviz_steps=steps, featviz_size=size,
                                                          featviz_batch=batch, k=9))
        rep = P.precompute(p, RunOptions(batch_size=16), parts=("top images", "feature visualisation", "drivers"))
        mining = cached(p.mining_job())
        jobs = [j for j in p.unit_jobs(mining, "class support")][:cs_channels]
        t0 = time.perf_counter()
        for j in jobs:
            run(j)
        cs_per = (time.perf_counter() - t0) / max(len(jobs), 1)
        n_cs = len(p.unit_jobs(mining, "class support"))
        disk = {}
        for kind in ("featviz", "unit-drivers", "unit-class-support", "patches"):
            disk[kind] = sum(f.stat().st_size for f in (Path(tmp) / kind).rglob("*") if f.is_file())
        est = p.estimate_bytes()
        measured_per_channel = {
            "feature visualisation": disk["featviz"] / p.n_units,
            "drivers": disk["unit-drivers"] / p.n_units,
            "class support": disk["unit-class-support"] / max(len(jobs), 1),
            "top images": disk["patches"] / p.n_units,
        }
        parts = {k: v["seconds"] for k, v in rep.parts.items()}
        parts["class support (scaled)"] = cs_per * n_cs
        return {"layers": p.channels, "channels": p.n_units, "steps": steps, "size": size, "seconds": parts,
                "total_s": sum(parts.values()), "class_support_s_per_channel": cs_per,
                "disk_per_channel_measured": measured_per_channel,
                "disk_per_channel_estimated": {k: est[k] / p.n_units for k in P.PARTS}}


def resnet50_step_cost(size: int = 128, batch: int = 16, steps: int = 3) -> dict:
    """Seconds per optimisation step of one featviz batch of ResNet-50 (deepest tap: a whole forward)."""
    import torch

    from vizcore.featureviz.render import render_batch
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model("resnet50", "random")
    out = {"threads": torch.get_num_threads(), "size": size, "batch": batch}
    for layer in ("layer2.3", "layer4.2"):
        gen = render_batch(lm, layer, list(range(batch)), steps=steps + 1, size=size, seed=0)
        next(gen)  # set-up tick
        times = []
        try:
            while True:
                t0 = time.perf_counter()
                next(gen)
                times.append(time.perf_counter() - t0)
        except StopIteration:
            pass
        times = sorted(times[1:])  # the first step allocates
        out[layer] = times[len(times) // 2]
    return out


def projection(step: dict, batch: int = 16) -> dict:
    channels = sum(n * c for n, c in RESNET50_BLOCKS.values())
    image_steps = channels * 256  # every channel, 256 steps (the batch shares a forward, not the images)
    cpu_s = channels / batch * 256 * step["layer4.2"]
    cs_image_steps = channels * 9 * 3  # class support: a double backward per top image
    rows = {}
    for g in (1, 8, 64):
        fv = image_steps / (GPU_IMAGE_STEPS_PER_S * g)
        mine = 50_000 / (GPU_MINING_IMAGES_PER_S * min(g, 8))  # decoding-bound beyond one node's CPUs
        cs = 2 * cs_image_steps / (GPU_IMAGE_STEPS_PER_S * g)  # class support and drivers
        rows[g] = {"featviz_s": fv, "mining_s": mine, "class_support_and_drivers_s": cs, "total_s": fv + mine + cs}
    return {"channels": channels, "image_steps": image_steps, "this_cpu_featviz_s": cpu_s, "gpus": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer channels and steps")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vizcore.data import open_dataset
    from vizcore.models import load_model

    lm = load_model("efficientnet_lite0")
    out: dict = {}
    n, steps = (32, 16) if args.quick else (48, 32)
    out["featviz"] = fv = featviz_local_vs_ray(lm, "blocks.3.0", n, steps, 64, 4)
    print(f"featviz {fv['layer']} {n} ch, {steps} steps at 64 px: local {fv['local_channels_per_s']:.2f} ch/s; "
          f"ray 2 actors {fv['ray_channels_per_s_steady']:.2f} ch/s steady (start-up {fv['ray_startup_s']:.1f} s, "
          f"init {fv['ray_init_s']:.1f} s) -> {fv['ratio_per_cpu']:.2f}x per CPU", flush=True)
    samples = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ds = open_dataset(str(samples / "imagenet-samples")) if (samples / "imagenet-samples").is_dir() \
        else open_dataset("samples")
    ds = ds.evenly_spaced(40 if args.quick else 120)
    taps = ["blocks.1.0", "blocks.3.0", "blocks.5.0"]
    out["mining"] = m = mining_throughput(lm, ds, taps)
    print(f"mining {m['images']} images at {m['layers']} taps: {m['images_per_s']:.1f} images/s", flush=True)
    tot_ds = ds.evenly_spaced(20)
    out["lite0_total"] = t = lite0_total(lm, tot_ds, ["blocks.1.0", "blocks.2.0"], 16 if args.quick else 32, 64, 16, 2)
    print(f"lite0 {t['layers']} ({t['channels']} ch), {t['steps']} steps at 64 px over {len(tot_ds)} images: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in t["seconds"].items()) + f"; total {t['total_s']:.0f} s", flush=True)
    print("disk per channel, measured vs estimated (bytes): " + ", ".join(
        f"{k} {t['disk_per_channel_measured'][k]:.0f}/{t['disk_per_channel_estimated'][k]:.0f}"
        for k in t["disk_per_channel_estimated"]), flush=True)
    out["resnet50_step"] = st = resnet50_step_cost()
    print(f"resnet50 featviz batch of {st['batch']} at {st['size']} px, 1 step on {st['threads']} thread(s): "
          f"layer2.3 {st['layer2.3']:.2f} s, layer4.2 {st['layer4.2']:.2f} s", flush=True)
    out["projection"] = pr = projection(st)
    print(f"resnet50 full precompute ({pr['channels']} channels, 256 steps, 128 px, top-9 of 50k): "
          f"this CPU featviz alone {pr['this_cpu_featviz_s'] / 86400:.1f} days; " + "; ".join(
              f"{g} GPU(s) {r['total_s'] / 60:.1f} min" for g, r in pr["gpus"].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
