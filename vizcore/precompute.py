"""Precompute every unit of a network, as OpenAI Microscope did for eight fixed models.

For every channel of every chosen tap: its feature visualisation, its top-k dataset
patches (one mining pass over all taps), the classes it supports and the units that
drive it. Everything is an ordinary job of :mod:`vizcore.jobs` and lands in the ordinary
cache under the ordinary keys, so the unit page, the Model atlas page and
:mod:`vizcore.site` read it without computing.

How it scales. Feature visualisation dominates (hundreds of optimisation steps per
channel). Channels are rendered in fixed batches (channel ``c`` of a tap is always in batch
``c // featviz_batch``, whatever the engine, so the images are byte-identical on every engine
for the same hardware and thread count); each batch is an independent
:class:`vizcore.featureviz.FeatVizJob`, cached as soon as it completes, and on
``engine="ray"`` the batches go to Ray actors (:func:`vizcore.jobs.run_many`: one actor per
GPU, the model loaded once per actor, a batch on a lost node retried elsewhere). Mining is
one dataset pass (Ray Data on ``ray``). Class support and drivers are small per channel and
run in the same way as featviz batches.

Resuming is free: every part asks the cache first, so rerunning the same command after
Ctrl-C, a killed worker or a lost node computes only what is missing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from vizcore.jobs import Job, RunOptions, cached, run, run_many

if TYPE_CHECKING:
    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel
    from vizcore.patches import MiningResult

PARTS = ("top images", "feature visualisation", "class support", "drivers")

#: Disk use of one cached result, per channel (bytes), for the estimate made before a precompute
#: starts; measured by ``bench/precompute.py`` (lite0, 64 channels): an optimised image is high
#: frequency, so its lossless PNG is about its raw RGB size (14.3 KB per channel at 64 px with
#: the entry's JSON); a top-k hit is 75-130 bytes (its path); class support ~1.6 KB and drivers
#: ~1.1 KB of JSON.
PNG_BYTES_PER_PIXEL = 3.0
FEATVIZ_ENTRY_BYTES = 2000
HIT_BYTES = 130
CLASS_SUPPORT_BYTES = 1600
DRIVERS_BYTES = 1200

@dataclass(frozen=True)
class PrecomputeSettings:
    """What a precompute computes (all part of the results' cache keys).

    ``featviz_batch`` channels are optimised together in one job; the default featviz settings
    match the unit page's, so a precomputed channel shows there at once.
    """

    featviz_steps: int = 256
    featviz_size: int = 128
    featviz_batch: int = 16
    seed: int = 0
    k: int = 9

    def __post_init__(self) -> None:
        for name in ("featviz_steps", "featviz_size", "featviz_batch", "k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")

    def featviz(self) -> dict:
        """Keyword arguments of :class:`vizcore.featureviz.FeatVizJob` (render's defaults otherwise)."""
        return {"steps": int(self.featviz_steps), "size": int(self.featviz_size), "seed": int(self.seed)}

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """The units of a precompute: taps and their channel counts, and the jobs that compute them."""

    lm: "LoadedModel"
    dataset: "ImageDataset"
    layers: list[str]
    channels: dict[str, int]
    settings: PrecomputeSettings = field(default_factory=PrecomputeSettings)

    @property
    def n_units(self) -> int:
        return sum(self.channels.values())

    # -- the jobs of each part
    def mining_layers(self) -> list[str]:
        """The chosen taps and, before each, the tap whose units drive it (its top patches are the
        drivers' thumbnails), in network order."""
        from vizcore.unit import previous_tap

        want = set(self.layers)
        for layer in self.layers:
            prev = previous_tap(self.lm, layer)
            if prev is not None:
                want.add(prev[0])
        return [t.name for t in self.lm.taps() if t.name in want]

    def mining_job(self) -> Job:
        from vizcore.patches import MiningJob

        return MiningJob(self.lm, self.dataset, self.mining_layers(), k=self.settings.k)

    def featviz_jobs(self, layer: str | None = None) -> list[Job]:
        """Every featviz batch of ``layer`` (or of every tap), in a fixed order."""
        from vizcore.featureviz.cached import featviz_jobs

        out: list[Job] = []
        for name in ([layer] if layer else self.layers):
            out += featviz_jobs(self.lm, name, range(self.channels[name]), batch=self.settings.featviz_batch,
                                **self.settings.featviz())
        return out

    def featviz_job(self, layer: str, channel: int) -> Job:
        """The featviz batch that holds ``channel`` of ``layer`` (the unit page reads it)."""
        b = self.settings.featviz_batch
        return self.featviz_jobs(layer)[int(channel) // b]

    def unit_jobs(self, mining: "MiningResult", part: str, layer: str | None = None) -> list[Job]:
        """Class support or drivers of every channel of ``layer`` (or of every tap) over its top images.

        The images are the channel's top files, exactly as the unit page passes them, so the
        cache keys are the page's."""
        out: list[Job] = []
        for name in ([layer] if layer else self.layers):
            # (the head's channels are the logits: "the classes it supports" is the class it is)
            out += [j for c in range(self.channels[name]) if (j := self.unit_job(mining, part, name, c)) is not None]
        return out

    def unit_job(self, mining: "MiningResult", part: str, layer: str, channel: int) -> Job | None:
        """The class-support or drivers job of one channel (``None``: no top images, or the head)."""
        from vizcore.unit import ClassSupportJob, DriversJob

        files = [h.file for h in mining.hits(layer, channel)] if layer in mining.layers else []
        if not files or (part == "class support" and self.is_head(layer)):
            return None
        return (ClassSupportJob(self.lm, layer, channel, files) if part == "class support"
                else DriversJob(self.lm, layer, channel, files))

    def is_head(self, layer: str) -> bool:
        taps = [t.name for t in self.lm.taps()]
        return bool(self.lm.categories) and layer == taps[-1] and self.channels[layer] == len(self.lm.categories)

    # -- disk
    def estimate_bytes(self) -> dict[str, int]:
        """Estimated disk use of the whole precompute per part, and per channel (``per channel``)."""
        s = self.settings
        featviz = int(s.featviz_size ** 2 * PNG_BYTES_PER_PIXEL) + FEATVIZ_ENTRY_BYTES
        per = {"top images": s.k * HIT_BYTES, "feature visualisation": featviz,
               "class support": CLASS_SUPPORT_BYTES, "drivers": DRIVERS_BYTES}
        total = {part: v * self.n_units for part, v in per.items()}
        total["per channel"] = sum(per.values())
        total["total"] = sum(v for k, v in total.items() if k in PARTS)
        return total

    def to_json(self) -> dict:
        return {"model": self.lm.spec.name, "weights": self.lm.weights.label(), "dataset": self.dataset.to_json(),
                "layers": {n: self.channels[n] for n in self.layers}, "settings": self.settings.to_json()}


def channel_counts(lm: "LoadedModel", layers: Sequence[str]) -> dict[str, int]:
    """Channels of each tap (the first dimension of its output, 1 for a scalar)."""
    from vizcore.activations import tap_shapes

    shapes = {t.name: s for t, s in tap_shapes(lm)}
    out = {}
    for name in layers:
        shape = shapes.get(name)
        if not shape:
            raise ValueError(f"{name} of {lm.name} produces no output for an image; choose another tap")
        out[name] = int(shape[0])
    return out


def plan(lm: "LoadedModel", dataset: "ImageDataset", layers: Sequence[str] | str = "all",
         settings: PrecomputeSettings | None = None) -> Plan:
    """The plan of a precompute of ``layers`` (tap names, or ``"all"``: every tap with channel maps).

    Raises:
        UnknownLayerError: a name that is not a tap of the model (with the closest names).
    """
    from vizcore.activations import tap_shapes

    settings = settings or PrecomputeSettings()
    if layers == "all" or list(layers) == ["all"]:
        names = [t.name for t, s in tap_shapes(lm) if t.kind != "input" and s and len(s) == 3]
    else:
        taps = {t.name for t in lm.taps()}
        names = []
        for name in layers:
            lm.resolve(name)  # an unknown name fails here with the closest valid ones
            if name not in taps:
                raise ValueError(f"{name} is a module of {lm.name} but not one of its taps; precompute works on "
                                 f"taps (see `vizcore layers --model {lm.name}`)")
            names.append(name)
        order = {t.name: i for i, t in enumerate(lm.taps())}
        names = sorted(dict.fromkeys(names), key=order.__getitem__)
    if not names:
        raise ValueError(f"{lm.name} has no tap with channel maps to precompute")
    return Plan(lm, dataset, names, channel_counts(lm, names), settings)


# ------------------------------------------------------------------------------ status
@dataclass(frozen=True)
class LayerStatus:
    """How much of one tap is precomputed, per part (units done of units in all)."""

    layer: str
    channels: int
    done: dict[str, int]
    total: dict[str, int]

    @property
    def complete(self) -> bool:
        return all(self.done[p] >= self.total[p] for p in self.total)

    def to_json(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "done": self.done, "total": self.total,
                "complete": self.complete}


def present(job: Job) -> bool:
    """Whether ``job``'s result is in the cache, without reading it (one entry per job)."""
    from vizcore import cache as _cache

    key = job.key()
    return key is not None and _cache.entry_path(job.kind, key, ".json" if job.codec == "json" else ".pt").is_file()


def status(p: Plan, layer: str) -> LayerStatus:
    """What of ``layer`` is in the cache (reads entries' presence only; computes nothing)."""
    n = p.channels[layer]
    b = p.settings.featviz_batch

    fv = p.featviz_jobs(layer)
    fv_done = sum(min(b, n - i * b) for i, j in enumerate(fv) if present(j))
    mining = cached(p.mining_job())
    done = {"top images": n if mining is not None else 0, "feature visualisation": fv_done}
    total = {"top images": n, "feature visualisation": n}
    for part in ("class support", "drivers"):
        if part == "class support" and p.is_head(layer):
            continue
        total[part] = n
        done[part] = sum(present(j) for j in p.unit_jobs(mining, part, layer)) if mining is not None else 0
    return LayerStatus(layer, n, done, total)


def command(p: Plan, dataset_arg: str | None = None, layers: Sequence[str] | None = None) -> str:
    """The CLI command that precomputes ``layers`` (default: the plan's) with the plan's settings."""
    s = p.settings
    d = PrecomputeSettings()
    parts = ["python -m vizcore precompute", f"--model {p.lm.spec.name}"]
    wa = getattr(p.lm, "weights_arg", None) or "auto"
    if wa != "auto":
        parts.append(f"--weights {wa}")
    parts += [f"--data {dataset_arg or p.dataset.name}", "--layers " + " ".join(layers or p.layers)]
    for name, flag in (("featviz_steps", "--featviz-steps"), ("featviz_size", "--featviz-size"),
                       ("featviz_batch", "--featviz-batch"), ("k", "--k"), ("seed", "--seed")):
        if getattr(s, name) != getattr(d, name):
            parts.append(f"{flag} {getattr(s, name)}")
    return " ".join(parts)


def precomputed_featviz(lm: "LoadedModel", layer: str, channel: int, n_channels: int, *, steps: int, size: int,
                        batch: int | None = None, seed: int = 0):
    """The cached feature visualisation of one channel from a precompute's batch with these settings
    (a :class:`vizcore.featureviz.FeatureVizResult`), or ``None``: the unit page shows it at once."""
    from vizcore.featureviz.cached import featviz_jobs

    b = int(batch or PrecomputeSettings.featviz_batch)
    start = int(channel) // b * b
    (job,) = featviz_jobs(lm, layer, range(start, min(start + b, int(n_channels))), batch=b, steps=int(steps),
                          size=int(size), seed=int(seed))
    hit = cached(job)
    return next((r for r in hit if r.channel == int(channel)), None) if hit else None


# ------------------------------------------------------------------------------ running it
@dataclass
class PrecomputeReport:
    """What a precompute did: per part, jobs run and found in the cache, and seconds."""

    plan: dict
    parts: dict[str, dict] = field(default_factory=dict)
    estimate: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"plan": self.plan, "parts": self.parts, "estimate_bytes": self.estimate, "seconds": self.seconds}


Progress = Callable[[str, int, int], None]
"""``progress(part, units_done, units_total)``: channels done of one part."""


class BudgetError(ValueError):
    """The precompute would not fit the results cache's budget (``VIZCORE_CACHE_MAX_MB``)."""


def check_budget(p: Plan) -> None:
    """Refuse, before any work, a precompute whose estimate exceeds the cache budget."""
    from vizcore import cache as _cache

    est = p.estimate_bytes()["total"]
    budget = _cache.cache_budget_mb() * 2**20
    if est > budget:
        raise BudgetError(
            f"this precompute needs about {est / 2**20:,.1f} MB of cache ({p.n_units:,} channels, "
            f"{p.estimate_bytes()['per channel'] / 1024:,.1f} KB each) but VIZCORE_CACHE_MAX_MB is "
            f"{budget / 2**20:,.0f}: raise it or precompute fewer layers")


def precompute(p: Plan, options: RunOptions | None = None, *, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None,
               parts: Sequence[str] = PARTS) -> PrecomputeReport:
    """Compute (or find in the cache) every part of every unit of the plan.

    Args:
        options: engine (``local`` or ``ray``), Ray address, batch size of the mining pass.
        progress: ``progress(part, channels_done, channels_total)`` as each part advances.
        should_stop: polled between jobs; :class:`vizcore.jobs.Stopped` is raised, and what was
            completed stays cached (rerunning computes only the rest).
        parts: a subset of :data:`PARTS` (mining always runs first when a later part needs it).

    Raises:
        BudgetError: the estimate exceeds the cache budget (before any work).
    """
    options = options or RunOptions()
    if options.cache:
        check_budget(p)
    report = PrecomputeReport(p.to_json(), estimate=p.estimate_bytes())
    t_all = time.perf_counter()
    n = p.n_units

    def part_progress(part: str, per_job: Sequence[int]) -> Callable[[int, int], None]:
        def report_(done_jobs: int, _total: int) -> None:
            if progress is not None:
                progress(part, sum(per_job[:done_jobs]) if done_jobs < len(per_job) else n, n)
        return report_

    mining = None
    if any(part in parts for part in ("top images", "class support", "drivers")):
        t0 = time.perf_counter()
        job = p.mining_job()
        hit = cached(job, options)
        if progress is not None:
            progress("top images", 0, n)
        mining = hit if hit is not None else run(
            job, options, should_stop=should_stop,
            progress=(lambda d, t: progress("top images", round(n * d / max(t, 1)), n)) if progress else False)
        if progress is not None:
            progress("top images", n, n)
        report.parts["top images"] = {"jobs": 1, "from_cache": int(hit is not None),
                                      "seconds": time.perf_counter() - t0, "images": mining.n_images}
    for part in PARTS[1:]:
        if part not in parts:
            continue
        jobs = p.featviz_jobs() if part == "feature visualisation" else p.unit_jobs(mining, part)
        per_job = [len(j.channels) for j in jobs] if part == "feature visualisation" else [1] * len(jobs)
        # A cached job counts as done at once, so the bar starts where the last run stopped.
        hit = [options.cache and present(j) for j in jobs]
        per_job_sorted = [u for u, h in zip(per_job, hit) if h] + [u for u, h in zip(per_job, hit) if not h]
        t0 = time.perf_counter()
        n_cached = sum(hit)
        run_many(jobs, options, progress=part_progress(part, per_job_sorted), should_stop=should_stop)
        report.parts[part] = {"jobs": len(jobs), "from_cache": n_cached, "seconds": time.perf_counter() - t0}
    report.seconds = time.perf_counter() - t_all
    return report


__all__ = ["BudgetError", "LayerStatus", "PARTS", "Plan", "PrecomputeReport", "PrecomputeSettings", "channel_counts",
           "check_budget", "command", "plan", "precompute", "precomputed_featviz", "status"]
