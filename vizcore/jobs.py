"""One job layer: every long analysis cached, stopped, resumed and sent to Ray the same way.

After the way Ray Data separates an aggregation's pure parts (``AggregateFnV2``:
``aggregate_block`` / ``combine`` / ``finalize``) from its execution, an analysis here
is written once as *what* it computes, and this module says *how* it runs:

- :class:`RunOptions`: batch size, loader workers, engine, Ray address and cache, the
  options of every long computation; :func:`add_run_flags` adds the same flags to every
  CLI command and :meth:`RunOptions.from_args` reads them back.
- :class:`Job`: a computation bound to its inputs, its cache entry (``kind`` plus
  :meth:`Job.key`, built with :func:`vizcore.identity.result_key`) and a codec
  (:meth:`Job.encode` / :meth:`Job.decode`, to plain data for ``torch.save`` or JSON).
  Two ways to write the work:

  * :class:`PassJob` binds a :class:`vizcore.passes.DatasetPass` (pure ``step`` / ``merge``
    / ``finish``) to a dataset: it runs on the ``local`` engine (a :class:`PassRun` in this
    process) or on ``ray`` (:func:`vizcore.distributed.run_ray`) with equal results;
  * :class:`StepJob` is any other long computation (feature visualisation, occlusion,
    integrated gradients, a unit's analyses): a generator :meth:`StepJob.work` that yields
    :class:`Tick` s (units done, units in all, the partial result) and returns the result.

- Three verbs for every job: :func:`cached` (the cached result, or ``None``), :func:`run`
  (to the end on the chosen engine, then cached), and :class:`JobRun` (for the dashboard:
  a few units at a time, progress and time left, stop, resume, cached once complete).
- One stop rule: a stopped run raises :class:`Stopped`, whose ``partial`` is the partial
  *result* (``None`` before the first unit). Nothing half-done is ever cached.
- Every cache write goes through :mod:`vizcore.cache` (``save_torch`` / ``save_json``), so
  the disk budget and the least-recently-used order hold for every kind of result; no
  pass and no job writes files itself.

Adding an analysis is three things: a pass or a job here, a page that calls
``dashboard.widgets.jobs.run_job``, and a command that calls :func:`run` with
:func:`add_run_flags` (see the README's *Development* section).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generator, Generic, Sequence, TypeVar

from vizcore import cache as _cache
from vizcore.passes import ENGINES, DatasetPass, PassInfo, PassRun, Progress, no_images_error

if TYPE_CHECKING:
    import argparse

    from vizcore.data.datasets import ImageDataset

R = TypeVar("R")

ShouldStop = Callable[[], bool]


class Stopped(RuntimeError):
    """A run was asked to stop (``should_stop()`` returned true, Ctrl-C, Stop in the app).

    ``partial`` is the result reached so far (the analysis' own result type, marked
    incomplete where it has such a field), or ``None`` when nothing was done. Nothing
    half-done is cached.
    """

    def __init__(self, message: str, partial: Any = None):
        super().__init__(message)
        self.partial = partial


# ------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class RunOptions:
    """How a job runs; never part of what it computes (equal results on every engine).

    Attributes:
        batch_size: images per batch (a pass's batches are consecutive dataset indices).
        workers: loader processes for the local engine (``None``: cores - 1, max 4; 0: this thread).
        engine: ``local`` (this process) or ``ray`` (Ray Data; jobs without a Ray form run locally).
        ray_address: the Ray cluster for ``engine="ray"`` (``None``: ``$RAY_ADDRESS``, else a local Ray).
        cache: read and write the on-disk results cache.
    """

    batch_size: int = 32
    workers: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if int(self.batch_size) < 1:
            raise ValueError("batch size must be at least 1")

    def but(self, **changes: Any) -> "RunOptions":
        """A copy with some options changed."""
        return replace(self, **changes)

    @classmethod
    def of(cls, options: "RunOptions | None" = None, **fields: Any) -> "RunOptions":
        """``options`` (default: the defaults) with ``fields`` changed: how every entry point takes its
        options, as one object or as keywords (``cka(..., batch_size=4, engine="ray")``)."""
        options = options or cls()
        return replace(options, **fields) if fields else options

    @classmethod
    def from_args(cls, args: "argparse.Namespace", **overrides: Any) -> "RunOptions":
        """The options of a command line parsed with :func:`add_run_flags`."""
        opts = {
            "batch_size": getattr(args, "batch_size", cls.batch_size),
            "workers": getattr(args, "workers", cls.workers),
            "engine": getattr(args, "engine", cls.engine),
            "ray_address": getattr(args, "ray_address", cls.ray_address),
            "cache": not getattr(args, "no_cache", False),
        }
        opts.update(overrides)
        return cls(**opts)


def add_run_flags(parser: "argparse.ArgumentParser", *, batch_size: int | None = 32, engine: bool = True,
                  workers: bool = True) -> None:
    """``--batch-size``, ``--workers``, ``--no-cache``, ``--engine`` and ``--ray-address``: the same
    flags, with the same meaning, on every command that runs a job (``batch_size=None``, ``engine=False``,
    ``workers=False``: a job over no dataset, which has no use for them)."""
    import os

    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                            help=f"images per batch (default {batch_size})")
    if workers:
        parser.add_argument("--workers", type=int, default=None, metavar="N",
                            help="data-loading processes (default: cores - 1, max 4; 0: in this process)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the results cache")
    if engine:
        parser.add_argument("--engine", default="local", choices=ENGINES,
                            help="local: this process (default); ray: Ray workers, same result (see README, "
                                 "'Running on a cluster')")
        parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None, metavar="ADDR",
                            help="Ray cluster for --engine ray (`auto`, host:port, ray://host:10001); default "
                                 "$RAY_ADDRESS, else a local Ray started with this machine's CPUs")


# ------------------------------------------------------------------------------ jobs
@dataclass(frozen=True)
class Tick:
    """One report of a running job: ``done`` of ``total`` units, and the result so far (or ``None``).

    ``partial`` may be a function of no arguments that makes the result so far, for work whose
    partial result costs something to build (images): it is called only when someone asks."""

    done: int
    total: int
    partial: Any = None


class Job(ABC, Generic[R]):
    """A long computation bound to its inputs, its cache entry and its codec.

    Subclasses set :attr:`kind` (the cache folder), :attr:`unit` (what :class:`Tick` counts)
    and :attr:`codec` (``"torch"``: :meth:`encode` returns tensors, numbers, strings, lists and
    dicts for ``torch.save(weights_only)``; ``"json"``: JSON-serialisable data), and implement
    :meth:`key`, :meth:`encode`, :meth:`decode` and one way of working (see :class:`PassJob`,
    :class:`StepJob`). A job whose result is stored in several entries (one per layer, say)
    overrides :meth:`load` and :meth:`save` and still writes through :mod:`vizcore.cache`.
    """

    kind: ClassVar[str] = "job"
    unit: ClassVar[str] = "images"

    # -- shipping a job to another process (Ray): loaded models travel as ModelRefs and are
    # loaded again where the job lands (``load_model`` keeps one per process, i.e. per actor);
    # a built pass is rebuilt from the job's inputs.
    def __getstate__(self) -> dict:
        from vizcore.models import LoadedModel
        from vizcore.passes import ModelRef

        state = {k: v for k, v in self.__dict__.items() if k not in ("_pass", "_key")}
        for k, v in state.items():
            if isinstance(v, LoadedModel):
                state[k] = _ModelSlot(ModelRef.of(v))
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({k: (v.ref.load() if isinstance(v, _ModelSlot) else v) for k, v in state.items()})
    codec: ClassVar[str] = "torch"

    @abstractmethod
    def key(self) -> str | None:
        """The cache key of the result (``None``: this job is never cached)."""

    def encode(self, result: R) -> Any:
        """The result as plain data for the cache."""
        return result

    def decode(self, data: Any) -> R:
        """The result from the cache's plain data (mark it as coming from the cache if it says so)."""
        return data

    def load(self) -> R | None:
        """The cached result, or ``None`` (a damaged entry is a miss)."""
        key = self.key()
        if key is None:
            return None
        data = _cache.load_json(self.kind, key) if self.codec == "json" else _cache.load_torch(self.kind, key)
        if data is None:
            return None
        try:
            return self.decode(data)
        except Exception:  # noqa: BLE001 - an entry of an older layout is a miss, never a crash
            return None

    def save(self, result: R) -> None:
        """Write a complete result to the cache (through :mod:`vizcore.cache`: budget and LRU hold)."""
        key = self.key()
        if key is None:
            return
        data = self.encode(result)
        if self.codec == "json":
            _cache.save_json(self.kind, key, data)
        else:
            _cache.save_torch(self.kind, key, data)

    def describe(self) -> str:
        """A short label for progress bars (``mining efficientnet_lite0``)."""
        return self.kind

    # -- how it runs; subclasses implement one of these
    def stepper(self, options: RunOptions) -> "Stepper[R]":
        """The local, resumable form of the work."""
        raise NotImplementedError

    def run_ray(self, options: RunOptions, progress: Progress | None, should_stop: ShouldStop | None) -> R:
        """The result computed on Ray (default: the local stepper, for jobs with no Ray form)."""
        return _run_stepper(self.stepper(options), progress, should_stop)


@dataclass(frozen=True)
class _ModelSlot:
    """A loaded model in a pickled job: how to load it again."""

    ref: Any


class Stepper(ABC, Generic[R]):
    """A job's work in this process, advanced a few units at a time; stopping keeps its state."""

    @property
    @abstractmethod
    def done(self) -> int:
        """Units done."""

    @property
    @abstractmethod
    def total(self) -> int:
        """Units in all."""

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    @abstractmethod
    def step(self, max_units: int | None = None, *, progress: Progress | None = None,
             should_stop: ShouldStop | None = None) -> bool:
        """Do about ``max_units`` more units (all that are left when ``None``); return :attr:`complete`.

        ``should_stop`` is asked before each unit, ``progress(done, total)`` after each."""

    @abstractmethod
    def partial(self) -> R | None:
        """The result so far (``None`` before the first unit)."""

    @abstractmethod
    def result(self) -> R:
        """The complete result (only once :attr:`complete`)."""


def _run_stepper(s: Stepper[R], progress: Progress | None, should_stop: ShouldStop | None) -> R:
    s.step(None, progress=progress, should_stop=should_stop)
    if not s.complete:
        raise Stopped(f"stopped after {s.done} of {s.total}", partial=s.partial())
    return s.result()


# ------------------------------------------------------------------------------ dataset passes
class PassJob(Job[R]):
    """A :class:`~vizcore.passes.DatasetPass` over a dataset, as a job.

    Subclasses give :meth:`make_pass` (the pure step/merge/finish) and :meth:`key`; the
    result is ``finish(state, info)``. Override :meth:`complete_result` to post-process a
    finished result (combine it with cached parts, say) and :meth:`check` to refuse a
    result (by default: one where no image could be read).
    """

    require_images: ClassVar[bool] = True

    def __init__(self, dataset: "ImageDataset", indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.indices = None if indices is None else [int(i) for i in indices]

    @abstractmethod
    def make_pass(self) -> DatasetPass:
        """The pass (built once and kept: it holds the loaded models)."""

    @property
    def pass_(self) -> DatasetPass:
        p = self.__dict__.get("_pass")
        if p is None:
            p = self.__dict__["_pass"] = self.make_pass()
        return p

    @property
    def total(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def complete_result(self, result: R) -> R:
        return result

    def check(self, state: Any, info: PassInfo) -> None:
        if self.require_images and info.complete and info.n_images == 0:
            raise no_images_error(self.dataset.name, info.skipped)

    def partial_result(self, state: Any, info: PassInfo) -> R:
        """The result of a run not yet complete (``Stopped.partial``, the page's partial view)."""
        return self.pass_.finish(state, info)

    def finish(self, state: Any, info: PassInfo) -> R:
        self.check(state, info)
        res = self.pass_.finish(state, info)
        return self.complete_result(res) if info.complete else res

    def stepper(self, options: RunOptions) -> "Stepper[R]":
        return _PassStepper(self, PassRun(self.pass_, self.dataset, batch_size=options.batch_size,
                                          workers=options.workers, indices=self.indices))

    def run_ray(self, options: RunOptions, progress: Progress | None, should_stop: ShouldStop | None) -> R:
        from vizcore.distributed import run_ray

        state, info = run_ray(self.pass_, self.dataset, batch_size=options.batch_size, progress=progress,
                              should_stop=should_stop, indices=self.indices, address=options.ray_address)
        if not info.complete:
            raise Stopped(f"stopped after {info.done} of {info.total} images",
                          partial=self.partial_result(state, info) if info.done else None)
        return self.finish(state, info)


class _BarePassJob(PassJob):
    kind = "pass"

    def __init__(self, p: DatasetPass, dataset: "ImageDataset", indices: Sequence[int] | None, require_images: bool):
        super().__init__(dataset, indices)
        self._p, self.require_images = p, require_images

    def make_pass(self) -> DatasetPass:
        return self._p

    def key(self) -> None:
        return None

    def describe(self) -> str:
        return self._p.kind


def pass_job(p: DatasetPass, dataset: "ImageDataset", indices: Sequence[int] | None = None, *,
             require_images: bool = True) -> PassJob:
    """Any pass over a dataset as an uncached job (``run(pass_job(p, ds), options)``: the result of
    ``p.finish`` on every engine, with progress and the one stop rule, nothing cached)."""
    return _BarePassJob(p, dataset, indices, require_images)


class _PassStepper(Stepper[R]):
    def __init__(self, job: PassJob[R], run: PassRun):
        self.job, self.run = job, run

    @property
    def done(self) -> int:
        return self.run.pos

    @property
    def total(self) -> int:
        return self.run.total

    def step(self, max_units: int | None = None, *, progress: Progress | None = None,
             should_stop: ShouldStop | None = None) -> bool:
        batches = None if max_units is None else max(1, -(-int(max_units) // self.run.batch_size))
        return self.run.step(batches, progress=progress, should_stop=should_stop)

    def partial(self) -> R | None:
        if not self.run.pos:
            return None
        self.run.info.complete = self.run.done
        return self.job.partial_result(self.run.state, self.run.info)

    def result(self) -> R:
        if not self.run.done:
            raise RuntimeError(f"{self.job.kind}: not finished ({self.run.pos}/{self.run.total})")
        self.run.info.complete = True
        return self.job.finish(self.run.state, self.run.info)


# ------------------------------------------------------------------------------ other long work
Work = Generator[Tick, None, R]


class StepJob(Job[R]):
    """A long computation that is not a dataset pass, written as a generator.

    :meth:`work` yields a :class:`Tick` after each bounded piece of work (an optimisation
    step, a batch of occluded images, a section of a unit page) and ``return`` s the result.
    The first tick may come before any work, to say the total. The generator is resumed
    where it stopped; stopping never loses what it had done.
    """

    @abstractmethod
    def work(self) -> Work:
        """Yield ticks, return the result."""

    def stepper(self, options: RunOptions) -> "Stepper[R]":
        return _GenStepper(self)


class _GenStepper(Stepper[R]):
    def __init__(self, job: StepJob[R]):
        self.job = job
        self.gen = job.work()
        self._done, self._total, self._partial = 0, 1, None
        self._result: Any = _NOTHING
        self._started = False

    @property
    def done(self) -> int:
        return self._total if self._result is not _NOTHING else min(self._done, self._total - 1)

    @property
    def total(self) -> int:
        return self._total

    def _next(self) -> bool:
        try:
            t = next(self.gen)
        except StopIteration as e:
            self._result = e.value
            return False
        self._done, self._total = int(t.done), max(1, int(t.total))
        if t.partial is not None:
            self._partial = t.partial
        return True

    def step(self, max_units: int | None = None, *, progress: Progress | None = None,
             should_stop: ShouldStop | None = None) -> bool:
        if not self._started:  # the first tick says the total; it costs nothing
            self._started = True
            self._next()
        start = self._done
        while self._result is _NOTHING:
            if should_stop is not None and should_stop():
                break
            if max_units is not None and self._done - start >= max_units:
                break
            if not self._next():
                break
            if progress is not None:
                progress(self.done, self.total)
        if self.complete and progress is not None:
            progress(self.total, self.total)
        return self.complete

    @property
    def complete(self) -> bool:
        return self._result is not _NOTHING

    def partial(self) -> R | None:
        if self.complete:
            return self._result
        return self._partial() if callable(self._partial) else self._partial

    def result(self) -> R:
        if not self.complete:
            raise RuntimeError(f"{self.job.kind}: not finished ({self.done}/{self.total})")
        return self._result


_NOTHING = object()


# ------------------------------------------------------------------------------ several jobs in turn
class ChainJob(Job[dict]):
    """Several jobs run one after the other as one job (several models scored on the same stimuli):
    one progress bar over all their units, one Stop, one Resume. The result is ``{name: result}``;
    each part is cached as it completes (a stop keeps the finished parts cached, since each is
    complete), and the partial result holds the finished parts plus the running one's partial.
    """

    kind = "chain"

    def __init__(self, parts: dict[str, Job]):
        if not parts:
            raise ValueError("a chain needs at least one job")
        self.parts = dict(parts)
        self.unit = next(iter(self.parts.values())).unit

    @property
    def total(self) -> int:
        return sum(int(getattr(j, "total", 1) or 1) for j in self.parts.values())

    def key(self) -> str | None:
        keys = [j.key() for j in self.parts.values()]
        if any(k is None for k in keys):
            return None
        return _cache.cache_key(parts=[[name, type(j).__name__, k] for (name, j), k in zip(self.parts.items(), keys)])

    def describe(self) -> str:
        return f"{len(self.parts)} jobs"

    def load(self) -> dict | None:
        out = {}
        for name, j in self.parts.items():
            if (hit := j.load()) is None:
                return None
            out[name] = hit
        return out

    def save(self, result: dict) -> None:
        pass  # each part is saved as it completes (by the chain's stepper, or by run below)

    def stepper(self, options: RunOptions) -> "Stepper[dict]":
        return _ChainStepper(self, options)

    def run_ray(self, options: RunOptions, progress: Progress | None, should_stop: ShouldStop | None) -> dict:
        out, base = {}, 0
        for name, j in self.parts.items():
            def report(d: int, t: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + d, self.total)
            try:
                out[name] = run(j, options, progress=report, should_stop=should_stop)
            except Stopped as e:
                raise Stopped(str(e), partial={**out, name: e.partial} if e.partial is not None else out or None)
            base += int(getattr(j, "total", 1) or 1)
        return out


class _ChainStepper(Stepper[dict]):
    def __init__(self, job: ChainJob, options: RunOptions):
        self.job, self.options = job, options
        self.results: dict[str, Any] = {}
        for name, j in job.parts.items():
            if (hit := cached(j, options)) is not None:
                self.results[name] = hit
        self.current: tuple[str, Stepper] | None = None

    def _sizes(self) -> dict[str, int]:
        return {n: int(getattr(j, "total", 1) or 1) for n, j in self.job.parts.items()}

    @property
    def done(self) -> int:
        sizes = self._sizes()
        d = sum(sizes[n] for n in self.results)
        if self.current is not None:
            d += min(self.current[1].done, sizes[self.current[0]])
        return d

    @property
    def total(self) -> int:
        return sum(self._sizes().values())

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.job.parts)

    def step(self, max_units: int | None = None, *, progress: Progress | None = None,
             should_stop: ShouldStop | None = None) -> bool:
        budget = max_units
        while not self.complete:
            if should_stop is not None and should_stop():
                break
            if self.current is None:
                name = next(n for n in self.job.parts if n not in self.results)
                self.current = (name, self.job.parts[name].stepper(self.options))
            name, s = self.current
            before, base = s.done, self.done - s.done
            report = None if progress is None else (lambda d, t: progress(base + d, self.total))
            s.step(budget, progress=report, should_stop=should_stop)
            if s.complete:
                res = s.result()
                if self.options.cache:
                    self.job.parts[name].save(res)
                self.results[name], self.current = res, None
            if budget is not None:
                budget -= max(0, s.done - before)
                if budget <= 0:
                    break
        return self.complete

    def partial(self) -> dict | None:
        out = dict(self.results)
        if self.current is not None and (p := self.current[1].partial()) is not None:
            out[self.current[0]] = p
        return out or None

    def result(self) -> dict:
        if not self.complete:
            raise RuntimeError(f"chain: not finished ({self.done}/{self.total})")
        return {n: self.results[n] for n in self.job.parts}


# ------------------------------------------------------------------------------ the three verbs
def cached(job: Job[R], options: RunOptions | None = None) -> R | None:
    """The job's cached result, or ``None`` (always ``None`` with ``cache=False``)."""
    if options is not None and not options.cache:
        return None
    return job.load()


def run(job: Job[R], options: RunOptions | None = None, *, progress: bool | Progress = False,
        should_stop: ShouldStop | None = None) -> R:
    """The job's result: from the cache, or computed to the end on ``options.engine`` and cached.

    Args:
        progress: ``True`` for a tqdm bar on stderr, or ``progress(done, total)``.
        should_stop: polled between units; when it returns true :class:`Stopped` is raised with
            the partial result, and nothing is cached. Ctrl-C leaves nothing cached either.
    """
    options = options or RunOptions()
    if (hit := cached(job, options)) is not None:
        return hit
    bar, report = _progress(job, progress)
    try:
        if options.engine == "ray":
            result = job.run_ray(options, report, should_stop)
        else:
            result = _run_stepper(job.stepper(options), report, should_stop)
    finally:
        if bar is not None:
            bar.close()
    if options.cache:
        job.save(result)
    return result


def _progress(job: Job, progress: bool | Progress) -> tuple[Any, Progress | None]:
    if progress is True:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=getattr(job, "total", None), unit={"images": "img"}.get(job.unit, job.unit),
                   desc=job.describe(), file=sys.stderr)

        def report(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)
        return bar, report
    return None, (progress if callable(progress) else None)


class JobRun(Generic[R]):
    """A job run a few units at a time (the dashboard's form of :func:`run`).

    The cached result, when there is one, is there at once (:attr:`result` without any
    :meth:`step`). Otherwise each :meth:`step` does a bounded amount of work (on ``ray``,
    one call that runs to the end while ``should_stop`` is polled per batch); once
    complete, the result is cached, exactly once. Stopping keeps the state: the next
    :meth:`step` resumes where it left off, and :meth:`partial` shows the result so far.
    """

    def __init__(self, job: Job[R], options: RunOptions | None = None):
        self.job, self.options = job, options or RunOptions()
        self._result: Any = _NOTHING
        self.from_cache = False
        if (hit := cached(job, self.options)) is not None:
            self._result, self.from_cache = hit, True
        self._stepper: Stepper[R] | None = None
        self.seconds = 0.0

    @property
    def stepper(self) -> Stepper[R]:
        if self._stepper is None:
            self._stepper = self.job.stepper(self.options)
        return self._stepper

    @property
    def complete(self) -> bool:
        return self._result is not _NOTHING

    @property
    def done(self) -> int:
        if self._stepper is None:
            return self.total if self.complete else 0
        return self.stepper.total if self.complete else self.stepper.done

    @property
    def total(self) -> int:
        if self._stepper is None:
            n = getattr(self.job, "total", None)
            return int(n) if n else 1
        return self.stepper.total

    def step(self, max_units: int | None = None, *, progress: Progress | None = None,
             should_stop: ShouldStop | None = None) -> bool:
        """Advance; return :attr:`complete`. Raises what the work raises (the state is kept)."""
        if self.complete:
            return True
        t0 = time.perf_counter()
        try:
            if self.options.engine == "ray" and type(self.job).run_ray is not Job.run_ray:
                try:
                    self._finish(self.job.run_ray(self.options, progress, should_stop))
                except Stopped:
                    return False  # a Ray run starts again from the beginning on Resume
            elif self.stepper.step(max_units, progress=progress, should_stop=should_stop):
                self._finish(self.stepper.result())
        finally:
            self.seconds += time.perf_counter() - t0
        return self.complete

    def _finish(self, result: R) -> None:
        self._result = result
        if self.options.cache:
            self.job.save(result)

    def partial(self) -> R | None:
        """The result so far: the complete one, or the stepper's partial result (``None`` before any)."""
        if self.complete:
            return self._result
        return None if self._stepper is None else self.stepper.partial()

    @property
    def result(self) -> R:
        if not self.complete:
            raise RuntimeError(f"{self.job.kind}: not finished ({self.done}/{self.total})")
        return self._result


def sub_run(job: Job[R], options: RunOptions, *, total: int | None = None) -> Work:
    """Run ``job`` as the first part of a :meth:`StepJob.work`: ``result = yield from sub_run(...)``.

    Its progress is re-yielded out of ``total`` (its own total when ``None``), a tick per two
    batches; its cached result comes at once, and it is cached once complete, as in :class:`JobRun`.
    """
    r = JobRun(job, options)
    while not r.step(2 * options.batch_size):
        yield Tick(r.done, r.total if total is None else total)
    return r.result


def shifted(work: Work, base: int, total: int) -> Work:
    """Re-yield a :meth:`StepJob.work` generator's ticks shifted by ``base`` units out of ``total``;
    return its result. Its partial results are dropped: they are not the outer job's."""
    try:
        while True:
            t = next(work)
            yield Tick(base + t.done, total)
    except StopIteration as e:
        return e.value


# ------------------------------------------------------------------------------ many independent jobs
def run_many(jobs: Sequence[Job], options: RunOptions | None = None, *,
             progress: Callable[[int, int], None] | None = None, should_stop: ShouldStop | None = None,
             on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Run independent jobs (e.g. feature visualisations of channel batches); each result is
    cached as soon as it completes, so an interrupted run resumes with only what is missing.

    Jobs already in the cache are not run. ``local`` runs the rest in order in this process;
    ``ray`` sends them to Ray actors (:func:`vizcore.distributed.run_jobs_ray`: one per GPU, or
    one per ``threads + 1`` CPUs; a model is loaded once per actor; a job on a lost worker or
    node is retried elsewhere). A job sent to Ray is pickled: it should hold its models as
    :class:`vizcore.passes.ModelRef` s and load them in its work (``load_model`` keeps them
    once per process). The results are the same on every engine.

    Args:
        progress: ``progress(jobs_done, jobs_total)`` after each job (cached ones count as done).
        should_stop: polled between jobs (and between results on Ray); raises :class:`Stopped`
            whose ``partial`` is the list of results, ``None`` where not done. What completed
            stays cached.
        on_result: ``on_result(i, result)`` as each job completes (cached ones first).

    Returns:
        The results, in the order of ``jobs``.
    """
    options = options or RunOptions()
    out: list[Any] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        hit = cached(job, options)
        if hit is None:
            todo.append(i)
            continue
        out[i] = hit
        if on_result is not None:
            on_result(i, hit)
    n_done = len(jobs) - len(todo)
    if progress is not None:
        progress(n_done, len(jobs))

    def finished(i: int, result: Any) -> None:
        nonlocal n_done
        out[i] = result
        if options.cache:
            jobs[i].save(result)
        n_done += 1
        if on_result is not None:
            on_result(i, result)
        if progress is not None:
            progress(n_done, len(jobs))

    if options.engine == "ray" and todo:
        from vizcore.distributed import run_jobs_ray

        complete = run_jobs_ray([jobs[i] for i in todo], RunOptions(cache=False, workers=0),
                                address=options.ray_address, should_stop=should_stop,
                                on_result=lambda j, r: finished(todo[j], r))
        if not complete:
            raise Stopped(f"stopped after {n_done} of {len(jobs)} jobs", partial=out)
        return out
    for i in todo:
        if should_stop is not None and should_stop():
            raise Stopped(f"stopped after {n_done} of {len(jobs)} jobs", partial=out)
        finished(i, _run_stepper(jobs[i].stepper(options.but(cache=False)), None, should_stop))
    return out
