"""Seconds per feature-visualisation step against the floor: a bare forward+backward to the layer.

The floor is what any gradient-ascent step must pay: a forward pass that stops at
the target layer (nothing above it matters) and the backward pass to the input,
at the same batch size and image size. A render step adds the parameterisation
(inverse FFT, colour matrix, sigmoid), the robustness transforms, normalisation
and the Adam update. Target: render step <= 1.25 x floor.

Run: ``python bench/featureviz.py [--model efficientnet_lite0] [--layer blocks.4.0]
[--steps 8] [--warmup 3] [--threads 1]``. Timings are medians over steps, with the floor and
the render measured alternately so background load hits both alike. Both wall
time and process CPU time (all threads) are measured; on a CPU shared with other
jobs wall time mostly measures the queue for cores, so the verdict there uses CPU
time; on a GPU it uses wall time (with synchronisation).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def floor_step_times(lm, layer: str, batch: int, size: int, n: int, warmup: int) -> list[tuple[float, float]]:
    """Forward to ``layer`` (stopping there) and backward to the input, ``n`` timed repeats."""
    from vizcore.featureviz import unit_objective
    from vizcore.tap import forward_until, tap

    path = lm.resolve(layer)
    obj = unit_objective("channel", layer, list(range(batch)))
    x = torch.rand(batch, 3, size, size, device=lm.device, requires_grad=True)
    times = []
    for i in range(warmup + n):
        _sync(lm.device)
        w0, c0 = _clocks()
        x.grad = None
        with tap(lm.model, [path], stop=True, detach=False, lock=lm.lock) as store:
            forward_until(lm.model, x)
            acts = {layer: store[path]}
        (-obj(acts).sum()).backward()
        _sync(lm.device)
        w1, c1 = _clocks()
        if i >= warmup:
            times.append((w1 - w0, c1 - c0))
    return times


def render_step_times(lm, layer: str, batch: int, size: int, n: int, warmup: int) -> list[tuple[float, float]]:
    """Per-step wall time of :func:`vizcore.featureviz.render` (from its progress callback)."""
    from vizcore.featureviz import render

    stamps: list[tuple[float, float]] = []

    def progress(step, total, values):  # values are already on the host: no extra sync
        stamps.append(_clocks())

    render(lm, layer, list(range(batch)), steps=warmup + n + 1, size=size, progress=progress)
    diffs = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]
    return diffs[warmup:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default="blocks.4.0", help="a middle layer by default")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating floor/render rounds")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default). 1 by default: with several threads on a "
                         "busy machine, OpenMP spin-waiting inflates CPU time and wall time alike")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(args.model)
    print(f"{lm.name} ({lm.weights.source}) layer {args.layer} on {lm.device}, "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    use_wall = lm.device.type == "cuda"
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for batch in [int(b) for b in args.batches.split(",")]:
            floor, step = [], []
            for _ in range(args.rounds):
                floor += floor_step_times(lm, args.layer, batch, size, args.steps, args.warmup)
                step += render_step_times(lm, args.layer, batch, size, args.steps, args.warmup)
            fw, fc = (statistics.median(t[k] for t in floor) for k in (0, 1))
            sw, sc = (statistics.median(t[k] for t in step) for k in (0, 1))
            rows.append((size, batch, fw, sw, sw / fw, fc, sc, sc / fc))
            print(f"  {size}px x{batch}: floor {fw:.4f}s wall {fc:.4f}s cpu; "
                  f"step {sw:.4f}s wall {sc:.4f}s cpu", file=sys.stderr)

    print(f"\nfeature visualisation step vs floor: {lm.name} @ {args.layer}, {lm.device}, "
          f"{torch.get_num_threads()} threads (target ratio <= 1.25, judged on "
          f"{'wall' if use_wall else 'CPU'} time)")
    print(f"{'size':>5} {'batch':>5} | {'floor wall':>10} {'step wall':>10} {'ratio':>6} | "
          f"{'floor cpu':>10} {'step cpu':>10} {'ratio':>6} | {'img-steps/s':>11}")
    for size, batch, fw, sw, rw, fc, sc, rc in rows:
        print(f"{size:>5} {batch:>5} | {fw:>10.4f} {sw:>10.4f} {rw:>6.2f} | {fc:>10.4f} {sc:>10.4f} {rc:>6.2f} | "
              f"{batch / sw:>11.2f}")
    ok = all((r[4] if use_wall else r[7]) <= 1.25 for r in rows)
    print("target met" if ok else "target NOT met for some settings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
