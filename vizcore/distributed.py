"""The ``ray`` backend of :mod:`vizcore.passes`: a dataset pass on Ray Data, exactly.

``run_ray`` runs a :class:`~vizcore.passes.DatasetPass` over a dataset on a Ray
cluster (or a local Ray) and returns the merged partial state, as the local
backend does. How it uses Ray Data (https://docs.ray.io/en/latest/data/):

- **Items are batches.** The dataset's index list is cut into the same batches as
  on the local backend (:func:`vizcore.passes.batches_of`: consecutive runs of
  ``batch_size`` indices), and each Ray Data row is one such batch (its indices and
  file paths). A model sees exactly the images it sees locally, in the same groups,
  so its float arithmetic, and hence every result, is the same bit for bit.
- **Decoding and the model run in the workers.** A first ``map_batches`` decodes
  each batch in Ray tasks (the pass's transform, shipped once); a second, with a
  callable class and an actor pool (``compute=ActorPoolStrategy(size=n)``), steps
  it: each actor unpickles the pass once and loads its model once (from its
  :class:`~vizcore.passes.ModelRef`). Decoded batches go from task to actor through
  the object store; only the pickled partial state (and the unreadable files) comes
  back to the driver: no image and no activation map passes through it.
- **The driver merges in batch order** as rows arrive (a row that comes early waits
  in a small buffer), so even a pass whose merge adds floats (similarity sums)
  gives the local result exactly. Progress is reported per row.
- **Resources** (:func:`plan_actors`). With GPUs in the cluster: one actor per GPU
  (``num_gpus=1``). Without: actors of as many torch threads as this process uses
  (float results of some kernels depend on the thread count), one per
  ``threads + 1`` CPUs, each claiming a single logical CPU, so the decoding tasks
  always find a CPU slot (ray-project/ray issue 44687: actors that claim every CPU
  starve the other tasks and the pipeline hangs). A local Ray gets an explicit object store (``VIZCORE_RAY_OBJECT_STORE_MB``,
  default 512 MB; Ray's default is 30 % of memory, while only small partial
  states travel here).
- **Faults and stops.** Ray Data restarts a dead actor and retries its task (its
  actor pools default to ``max_restarts=-1`` and ``max_task_retries=-1``); a retried
  batch gives the same partial state, so a SIGKILLed worker does not change the
  result. ``should_stop`` (checked per row) and Ctrl-C end the Ray job: the
  streaming executor is shut down (its actors are killed), and a Ray that this
  call started or connected to is shut down again (``ray.shutdown``). A Ray that was
  already initialised in this process (the dashboard's, see :func:`init_ray`) is
  left running for the next pass.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vizcore.passes import DatasetPass, PassInfo, Progress, batches_of, decode_batch

if TYPE_CHECKING:
    from vizcore.data.datasets import ImageDataset

DEFAULT_OBJECT_STORE_MB = 512


@dataclass
class RayInfo:
    """The Ray this process uses: where, what it offers, and whether this process started it."""

    address: str
    cpus: float
    gpus: float
    started_here: bool
    seconds: float


_OURS: RayInfo | None = None  # the Ray that init_ray started or connected to in this process


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_mb: int | None = None) -> RayInfo:
    """Connect to a Ray cluster, or start a local Ray sized to this machine; once per process.

    Args:
        address: a cluster address (``auto``, ``ray://host:10001``, ``host:6379``); default
            ``$RAY_ADDRESS``, else a local Ray started with this machine's CPUs.
        num_cpus: CPUs of a local Ray (default: every CPU of the machine).
        object_store_mb: object store of a local Ray (default ``$VIZCORE_RAY_OBJECT_STORE_MB`` or 512).

    Returns:
        A :class:`RayInfo`. When Ray was already initialised in this process, it is reused as is.
    """
    global _OURS
    import ray

    _quiet_ray()
    if ray.is_initialized():
        res = ray.cluster_resources()
        if _OURS is not None:
            return _OURS
        return RayInfo("existing", float(res.get("CPU", 0)), float(res.get("GPU", 0)), False, 0.0)
    t0 = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        mb = int(object_store_mb or os.environ.get("VIZCORE_RAY_OBJECT_STORE_MB") or DEFAULT_OBJECT_STORE_MB)
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=mb * 2**20,
                 runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}}, **kwargs)
    res = ray.cluster_resources()
    _OURS = RayInfo(address or "local", float(res.get("CPU", 0)), float(res.get("GPU", 0)), True,
                    time.perf_counter() - t0)
    return _OURS


def _pythonpath() -> str:
    """The workers of a local Ray import the same ``vizcore`` as this process (a checkout
    on ``PYTHONPATH`` as well as an installed package)."""
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


def shutdown_ray() -> None:
    """Shut down the Ray that :func:`init_ray` started or connected to (no-op otherwise)."""
    global _OURS
    import ray

    if _OURS is not None and ray.is_initialized():
        ray.shutdown()
    _OURS = None


def _quiet_ray() -> None:
    """Ray Data logs every execution at INFO and draws its own bars; we report progress ourselves."""
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def plan_actors(cpus: float, gpus: float, n_batches: int, threads: int | None = None) -> dict[str, Any]:
    """Actor-pool size and per-actor resources for a cluster's CPUs and GPUs.

    GPUs: one actor per GPU (``num_gpus=1``), batch size per GPU as given. CPUs: actors of
    ``threads`` torch threads each (default ``$VIZCORE_RAY_THREADS``, else this process's
    ``torch.get_num_threads()``: float results of some kernels depend on the thread count,
    so the same count as the local engine gives the same bits), one per ``threads + 1``
    CPUs, each claiming one logical CPU, which leaves CPU slots for the decoding tasks
    (ray-project/ray issue 44687). Never more actors than batches.
    """
    import torch

    threads = int(threads or os.environ.get("VIZCORE_RAY_THREADS") or torch.get_num_threads())
    if gpus >= 1:
        n, req = int(gpus), {"num_gpus": 1, "num_cpus": 1}
    else:
        n, req = max(1, int(cpus // (threads + 1))), {"num_cpus": min(1.0, max(0.1, cpus - 1))}
    if os.environ.get("VIZCORE_RAY_ACTORS"):
        n = int(os.environ["VIZCORE_RAY_ACTORS"])
    return {"size": max(1, min(n, n_batches)), "threads": threads, **req}


def _decode_args() -> dict[str, Any]:
    """Resources of a decoding task: one CPU. Given as a function, which also keeps Ray Data
    from fusing decoding into the actors (decoding would then wait for the model, and the
    model for decoding, instead of overlapping as with the local engine's loader)."""
    return {"num_cpus": 1}


def _decode_rows(batch: dict, transform_blob: bytes) -> dict:
    """Ray Data task: decode the images of some batch rows (in the workers, never the driver)."""
    import numpy as np

    transform = pickle.loads(transform_blob)
    out = []
    for files in batch["files"]:
        files = [(int(i), str(p)) for i, p in json.loads(files)]
        try:
            out.append(pickle.dumps(decode_batch(transform, files), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as e:  # noqa: BLE001 - re-raised in the driver with its own type and message
            out.append(pickle.dumps(_picklable(e)))
    return {"b": np.asarray(batch["b"], dtype=np.int64), "x": np.asarray(out, dtype=object)}


class _PassActor:
    """The callable class of ``map_batches``: one pass (and model) per actor, one batch per call.

    Subclassed per run with the pickled pass as a class attribute (``blob``), so the
    actor has no constructor arguments of its own to keep for restarts.
    """

    blob: bytes = b""
    threads: int = 1

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(self.threads)  # Ray sets OMP_NUM_THREADS from num_cpus; torch follows this
        self.failed: bytes = b""
        try:
            self.p: DatasetPass = pickle.loads(self.blob)
            for key in self.p.refs:
                self.p.model(key)  # load the model(s), once per actor
        except Exception as e:  # noqa: BLE001 - reported with the first batch, raised in the driver
            self.failed = pickle.dumps(_picklable(e))

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out: dict[str, list] = {"b": [], "state": [], "n": [], "skipped": [], "error": []}
        for b, blob in zip(batch["b"], batch["x"]):
            state, n, skipped, err = None, 0, [], b""
            try:
                if self.failed:
                    raise pickle.loads(self.failed)
                decoded = pickle.loads(blob)
                if isinstance(decoded, BaseException):
                    raise decoded
                x, ok, skipped = decoded
                state = self.p.step(x, ok) if ok else self.p.empty()
                n = len(ok)
            except Exception as e:  # noqa: BLE001 - re-raised in the driver with its own type and message
                err = pickle.dumps(_picklable(e))
            out["b"].append(int(b))
            out["state"].append(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            out["n"].append(n)
            out["skipped"].append(json.dumps(skipped))
            out["error"].append(err)
        return {"b": np.asarray(out["b"], dtype=np.int64), "n": np.asarray(out["n"], dtype=np.int64),
                "state": np.asarray(out["state"], dtype=object), "skipped": np.asarray(out["skipped"], dtype=object),
                "error": np.asarray(out["error"], dtype=object)}


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - an exception type that does not pickle: keep its message
        return RuntimeError(f"{type(e).__name__}: {e}")


def run_ray(p: DatasetPass, dataset: "ImageDataset", *, batch_size: int = 32, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None, indices: Sequence[int] | None = None,
            address: str | None = None) -> tuple[Any, PassInfo]:
    """Run ``p`` over ``dataset`` on Ray Data; the merged state and what the run saw.

    Args:
        p: the pass (pickled to the workers without its models).
        dataset: the images; their paths must be readable on every worker (a shared path).
        batch_size: images per batch, as on the local backend (per GPU on a GPU cluster).
        progress: ``progress(done, total)`` after each batch that comes back.
        should_stop: polled as batches come back; when true the Ray job ends and
            the Ray job ends and the state reached comes back with ``info.complete`` false.
        indices: run over these dataset indices only.
        address: the cluster (default ``$RAY_ADDRESS``, else a local Ray sized to this machine).

    Returns:
        ``(state, info)``, ``state`` merged in batch order, equal to the local backend's.
    """
    import ray
    import ray.data
    from ray import cloudpickle  # transforms may be closures
    from ray.data import ActorPoolStrategy

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    batches = batches_of(idx, int(batch_size))
    info = PassInfo(dataset, total=len(idx), engine="ray")
    t0 = time.perf_counter()
    already = ray.is_initialized()
    ray_info = init_ray(address)
    started_here = not already
    info.startup_seconds = time.perf_counter() - t0
    state = p.empty()
    t_run = time.perf_counter()
    it = None
    try:
        if not batches:
            info.complete = True
            return state, info
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        plan = plan_actors(ray_info.cpus, ray_info.gpus, len(batches))
        actor_cls = type(f"VizcorePass_{p.kind.replace('-', '_')}", (_PassActor,),
                         {"blob": pickle.dumps(p), "threads": plan["threads"], "__module__": __name__})
        items = [{"b": j, "files": json.dumps([[i, dataset.items[i].path] for i in b])}
                 for j, b in enumerate(batches)]
        req = {k: plan[k] for k in ("num_cpus", "num_gpus") if k in plan}
        with warnings.catch_warnings():
            # ray_remote_args_fn is deprecated for removal in Ray 2.64 (requirements pin 2.60); it is
            # the documented way to keep two map stages apart (no fusion) until then.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = _pipeline(ray, cloudpickle, ActorPoolStrategy, p, items, actor_cls, plan, req)
        pending: dict[int, Any] = {}
        skipped: dict[int, list[dict]] = {}
        nxt, done = 0, 0
        it = iter(ds.iter_rows())
        for row in it:
            if row["error"]:
                raise pickle.loads(row["error"])
            b = int(row["b"])
            if b in pending or b < nxt:
                continue  # a retried batch that came back twice: counted once
            pending[b] = pickle.loads(row["state"])
            skipped[b] = json.loads(row["skipped"])
            info.n_images += int(row["n"])
            done += len(batches[b])
            while nxt in pending:  # merge in batch order: the local backend's left fold, exactly
                state = p.merge(state, pending.pop(nxt))
                info.skipped += skipped.pop(nxt)
                nxt += 1
            info.seconds = time.perf_counter() - t_run
            if progress is not None:
                progress(done, info.total)
            if should_stop is not None and should_stop() and nxt < len(batches):
                for b in sorted(pending):
                    info.skipped += skipped.pop(b)
                info.seconds = time.perf_counter() - t_run
                return _merge_rest(p, state, pending), info  # info.complete stays false: stopped
        if nxt != len(batches):
            raise RuntimeError(f"Ray returned {nxt} of {len(batches)} batches")
        info.complete = True
        info.seconds = time.perf_counter() - t_run
        return state, info
    finally:
        _end(it)
        if started_here:
            shutdown_ray()


def _pipeline(ray, cloudpickle, ActorPoolStrategy, p, items, actor_cls, plan, req):  # noqa: N803
    """Batches as items -> decoding tasks -> the pass's actor pool."""
    return (ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))
            .map_batches(_decode_rows, batch_size=1, batch_format="numpy", ray_remote_args_fn=_decode_args,
                         fn_kwargs={"transform_blob": cloudpickle.dumps(p.transform())})
            .map_batches(actor_cls, batch_size=1, batch_format="numpy",
                         compute=ActorPoolStrategy(size=plan["size"]), **req))


def _merge_rest(p: DatasetPass, state: Any, pending: dict[int, Any]) -> Any:
    for b in sorted(pending):
        state = p.merge(state, pending[b])
    return state


def _end(it) -> None:
    """End a Ray Data execution early: closing its row iterator shuts down the streaming
    executor, which kills the actor pool and cancels the tasks in flight."""
    if it is None:
        return
    close = getattr(it, "close", None)
    try:
        if close is not None:
            close()
    except Exception:  # noqa: BLE001 - best effort; ray.shutdown (when ours) ends everything anyway
        pass


# ------------------------------------------------------------------------------ independent jobs
class _JobActor:
    """A Ray actor that runs pickled jobs (:class:`vizcore.jobs.Job`) one at a time.

    Models are loaded by the jobs through ``load_model``, whose process cache keeps them, so
    each model is loaded once per actor however many jobs use it.
    """

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def run(self, blob: bytes) -> bytes:
        from vizcore.jobs import RunOptions

        job = pickle.loads(blob)
        try:
            s = job.stepper(RunOptions(cache=False, workers=0))
            s.step(None)
            return pickle.dumps(("ok", job.encode(s.result())), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - re-raised in the driver with its own type and message
            return pickle.dumps(("error", _picklable(e)))


def run_jobs_ray(jobs: Sequence[Any], *, address: str | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_result: Callable[[int, Any], None] | None = None, actors: int | None = None) -> bool:
    """Run independent jobs on Ray actors; ``on_result(i, result)`` in the driver as each completes.

    Actors: one per GPU, else one per ``threads + 1`` CPUs (:func:`plan_actors`), at most one
    per job. They are created with unlimited restarts and task retries, so a job whose worker
    or node dies is run again on another (a job is a pure function of its inputs: the retry
    gives the same result). Returns ``True`` when every job completed, ``False`` when
    ``should_stop`` ended the run (the actors are killed; the completed results were reported).
    """
    import ray

    if not jobs:
        return True
    already = ray.is_initialized()
    ray_info = init_ray(address)
    plan = plan_actors(ray_info.cpus, ray_info.gpus, len(jobs))
    n = int(actors or plan["size"])
    req = {k: plan[k] for k in ("num_cpus", "num_gpus") if k in plan}
    cls = ray.remote(max_restarts=-1, max_task_retries=-1, **req)(_JobActor)
    pool = [cls.remote(plan["threads"]) for _ in range(min(n, len(jobs)))]
    blobs = [pickle.dumps(j, protocol=pickle.HIGHEST_PROTOCOL) for j in jobs]
    pending: dict[Any, tuple[int, Any]] = {}
    queue = list(range(len(jobs)))
    try:
        for actor in pool:
            if queue:
                i = queue.pop(0)
                pending[actor.run.remote(blobs[i])] = (i, actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if not ready:
                if should_stop is not None and should_stop():
                    return False
                continue
            ref = ready[0]
            i, actor = pending.pop(ref)
            status, payload = pickle.loads(ray.get(ref))
            if status == "error":
                raise payload
            if on_result is not None:
                on_result(i, jobs[i].decode(payload))
            if should_stop is not None and should_stop() and (queue or pending):
                return False
            if queue:
                j = queue.pop(0)
                pending[actor.run.remote(blobs[j])] = (j, actor)
        return True
    finally:
        for actor in pool:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if not already:
            shutdown_ray()
