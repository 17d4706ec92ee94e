"""The job layer (vizcore.jobs): a new analysis defined here, in the test file alone, gets a cached
result, a run on the local engine and on a local Ray with equal results, a stop with a partial
result, and a resume that ends equal to an uninterrupted run; the same through the dashboard
widget in AppTest. Also the generator form (StepJob) and the shared CLI flags."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from vizcore import cache
from vizcore.jobs import JobRun, PassJob, RunOptions, StepJob, Stopped, Tick, add_run_flags, cached, run
from vizcore.passes import DatasetPass, PassInfo

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ a toy analysis, defined only here
class MeanColourPass(DatasetPass):
    """Per image, the mean of each colour channel; the result is the dataset's mean colour and
    the brightest image. Pure step/merge/finish: the job layer does the rest."""

    kind = "toy-mean-colour"

    def __init__(self):
        super().__init__({})

    def transform(self):
        return lambda img: torch.from_numpy(np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32))

    def empty(self):
        return {}

    def step(self, x, indices: Sequence[int]):
        means = x.mean(dim=(1, 2))  # (B, 3)
        return {int(i): means[j].tolist() for j, i in enumerate(indices)}

    def merge(self, a, b):
        return {**a, **b}

    def finish(self, state, info: PassInfo):
        if not state:
            return {"n": 0, "mean": None, "brightest": None, "complete": info.complete}
        idx = sorted(state)
        arr = np.array([state[i] for i in idx])
        return {"n": len(idx), "mean": arr.mean(axis=0).round(6).tolist(),
                "brightest": idx[int(arr.sum(axis=1).argmax())], "complete": info.complete}


class MeanColourJob(PassJob):
    kind = "toy-mean-colour"
    codec = "json"

    def make_pass(self):
        return MeanColourPass()

    def key(self):
        from vizcore.identity import result_key

        return result_key(self.kind, 1, None, self.dataset, indices=self.indices)


@pytest.fixture()
def colours(tmp_path):
    """24 flat-colour images: the answers are known exactly."""
    from vizcore.data import image_folder

    rng = np.random.default_rng(0)
    for i in range(24):
        c = rng.integers(0, 256, size=3)
        Image.fromarray(np.full((20, 20, 3), c, dtype=np.uint8)).save(tmp_path / f"im{i:02d}.png")
    return image_folder(tmp_path)


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _expected(ds):
    arr = np.array([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) for p in ds.paths])
    return arr.mean(axis=0), int(arr.sum(axis=1).argmax())


def test_a_pass_defined_here_runs_caches_stops_and_resumes(colours, fresh_cache):
    mean, brightest = _expected(colours)
    opts = RunOptions(batch_size=5, workers=0)
    job = MeanColourJob(colours)
    assert cached(job, opts) is None

    whole = run(job, opts)
    assert whole["n"] == 24 and whole["complete"] and whole["brightest"] == brightest
    assert np.allclose(whole["mean"], mean, atol=1e-4)
    assert cached(MeanColourJob(colours), opts) == whole  # a new job object finds it in the cache
    assert [e.kind for e in cache.entries()] == ["toy-mean-colour"]  # one entry (the kind's marker is no entry)
    assert cached(MeanColourJob(colours), opts.but(cache=False)) is None

    # Stop after two batches: Stopped carries the partial result, nothing more is cached.
    cache.clear()
    calls = []
    with pytest.raises(Stopped) as e:
        run(MeanColourJob(colours), opts, should_stop=lambda: len(calls) >= 2, progress=lambda d, t: calls.append(d))
    assert e.value.partial["n"] == 10 and not e.value.partial["complete"]
    assert cached(MeanColourJob(colours), opts) is None

    # The dashboard's stepper: stop, resume, end equal to the uninterrupted run, cached once.
    r = JobRun(MeanColourJob(colours), opts)
    assert not r.complete and r.partial() is None
    assert not r.step(5) and r.done == 5 and r.partial()["n"] == 5
    assert not r.step(5, should_stop=lambda: True) and r.done == 5  # stopped before doing anything
    while not r.step(5):
        pass
    assert r.result == whole and not r.from_cache
    again = JobRun(MeanColourJob(colours), opts)
    assert again.complete and again.from_cache and again.result == whole


def test_cache_writes_go_through_the_budget(colours, fresh_cache, monkeypatch):
    """Every job's entry is a cache entry like any other: counted, touched, evicted LRU."""
    opts = RunOptions(batch_size=8, workers=0)
    run(MeanColourJob(colours), opts)
    kinds = cache.info()["kinds"]
    assert kinds["toy-mean-colour"]["entries"] == 1
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "0")
    run(MeanColourJob(colours, indices=range(10)), opts)  # evicts the older entry, keeps itself
    assert cache.info()["kinds"]["toy-mean-colour"]["entries"] == 1
    assert cached(MeanColourJob(colours, indices=range(10)), opts) is not None


@pytest.mark.slow
def test_the_same_pass_on_a_local_ray_equals_local(colours, fresh_cache, monkeypatch):
    ray = pytest.importorskip("ray")
    from vizcore.distributed import init_ray, shutdown_ray

    # The workers import this test module to unpickle the pass.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_mb=200)
    try:
        local = run(MeanColourJob(colours), RunOptions(batch_size=5, workers=0, cache=False))
        there = run(MeanColourJob(colours), RunOptions(batch_size=5, engine="ray", cache=False))
        assert there == local
        with pytest.raises(Stopped) as e:
            run(MeanColourJob(colours), RunOptions(batch_size=5, engine="ray", cache=False),
                should_stop=lambda: True)
        assert e.value.partial is not None and not e.value.partial["complete"]
    finally:
        shutdown_ray()


# ------------------------------------------------------------------ the generator form
class CountdownJob(StepJob):
    """A toy long computation: sums 1..n one number per tick, reporting the sum so far."""

    kind = "toy-countdown"
    unit = "numbers"
    codec = "json"

    def __init__(self, n: int):
        self.n = n

    def key(self):
        return cache.cache_key(kind=self.kind, n=self.n)

    def work(self):
        total = 0
        yield Tick(0, self.n)
        for i in range(1, self.n + 1):
            total += i
            yield Tick(i, self.n, {"sum": total, "upto": i})
        return {"sum": total, "upto": self.n}


def test_a_generator_job_steps_stops_resumes_and_caches(fresh_cache):
    opts = RunOptions()
    with pytest.raises(Stopped) as e:
        run(CountdownJob(10), opts, should_stop=(lambda it=iter(range(100)): next(it) >= 4))
    assert e.value.partial == {"sum": 10, "upto": 4}
    assert cached(CountdownJob(10), opts) is None
    r = JobRun(CountdownJob(10), opts)
    assert r.total == 1 and r.done == 0  # before the first step the total is not known
    r.step(3)
    assert (r.done, r.total) == (3, 10) and r.partial() == {"sum": 6, "upto": 3}
    while not r.step(3):
        pass
    assert r.result == {"sum": 55, "upto": 10}
    assert run(CountdownJob(10), opts) == {"sum": 55, "upto": 10}
    assert JobRun(CountdownJob(10), opts).from_cache


def test_a_chain_of_jobs_is_one_job_that_caches_each_part(colours, fresh_cache):
    """ChainJob (several models scored in turn on one page): one progress over all parts, each part
    cached as soon as it completes, a stop keeps the finished parts, the end equals separate runs."""
    from vizcore.jobs import ChainJob

    opts = RunOptions(batch_size=4, workers=0)
    parts = lambda: {"a": MeanColourJob(colours, indices=range(0, 8)),  # noqa: E731
                     "b": MeanColourJob(colours, indices=range(8, 20)), "c": CountdownJob(3)}
    r = JobRun(ChainJob(parts()), opts)
    assert r.total == 8 + 12 + 1
    r.step(8)  # the first part, complete: cached at once
    assert r.done == 8 and cached(parts()["a"], opts) is not None and cached(parts()["b"], opts) is None
    r.step(4)
    assert r.done == 12 and set(r.partial()) == {"a", "b"} and r.partial()["b"]["n"] == 4
    while not r.step(4):
        pass
    assert r.result == {"a": run(parts()["a"], opts), "b": run(parts()["b"], opts), "c": {"sum": 6, "upto": 3}}
    assert JobRun(ChainJob(parts()), opts).from_cache
    with pytest.raises(Stopped):
        run(ChainJob({"d": MeanColourJob(colours, indices=range(20, 24))}), opts, should_stop=lambda: True)


def test_every_command_gets_the_same_run_flags():
    p = argparse.ArgumentParser()
    add_run_flags(p, batch_size=16)
    args = p.parse_args(["--batch-size", "8", "--workers", "0", "--no-cache", "--engine", "ray",
                         "--ray-address", "127.0.0.1:6379"])
    assert RunOptions.from_args(args) == RunOptions(8, 0, "ray", "127.0.0.1:6379", False)
    assert RunOptions.from_args(p.parse_args([])).batch_size == 16
    with pytest.raises(ValueError, match="unknown engine"):
        RunOptions(engine="spark")
    with pytest.raises(ValueError, match="at least 1"):
        RunOptions(batch_size=0)


# ------------------------------------------------------------------ the dashboard widget
PAGE = '''
import streamlit as st
from dashboard.widgets.jobs import run_job
from vizcore.data import image_folder
from vizcore.jobs import RunOptions
import test_jobs as T

ds = image_folder(st.session_state["folder"])
res = run_job("toy", T.MeanColourJob(ds), RunOptions(batch_size=4, workers=0), what="Mean colour",
              partial=lambda p: st.write(f"so far {p['n']} images"), units_per_step=4)
if res is not None:
    st.success(f"done: {res['n']} images, brightest {res['brightest']}")
'''


@pytest.mark.slow
def test_the_dashboard_widget_runs_stops_resumes_and_reads_the_cache(colours, fresh_cache, tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.syspath_prepend(str(TESTS.parent))
    sys.modules.setdefault("test_jobs", sys.modules[__name__])
    _, brightest = _expected(colours)

    def app():
        at = AppTest.from_string(PAGE, default_timeout=60)
        at.session_state["folder"] = colours.root
        return at

    at = app().run()
    assert [b.label for b in at.button] == ["Run"]
    at.button[0].click().run()  # starts; each run does one step of 4 images
    assert any("so far" in m.value for m in at.markdown)
    at.button(key="toy_stop").click().run()
    assert at.warning and "Stopped after" in at.warning[0].value
    stopped_at = int(at.warning[0].value.split("Stopped after ")[1].split(" ")[0])
    assert 0 < stopped_at < 24
    assert cached(MeanColourJob(colours), RunOptions()) is None  # nothing half-done is cached
    assert at.button[0].label == "Resume"
    at.button[0].click().run()
    for _ in range(20):
        if at.success:
            break
        at.run()
    assert at.success and at.success[0].value == f"done: 24 images, brightest {brightest}"
    assert cached(MeanColourJob(colours), RunOptions()) is not None

    fresh = app().run()  # a new session: the cached result without pressing anything
    assert fresh.success and not [b for b in fresh.button if b.label in ("Run", "Resume")]


# ------------------------------------------------------------------ many independent jobs
def test_run_many_caches_each_job_as_it_completes_and_resumes(fresh_cache):
    from vizcore.jobs import run_many

    jobs = [CountdownJob(n) for n in (3, 4, 5, 6)]
    seen = []
    with pytest.raises(Stopped) as e:
        run_many(jobs, RunOptions(), should_stop=lambda: len(seen) >= 2, on_result=lambda i, r: seen.append(i))
    assert e.value.partial[:2] == [{"sum": 6, "upto": 3}, {"sum": 10, "upto": 4}] and e.value.partial[2:] == [None, None]
    assert [cached(j) is not None for j in jobs] == [True, True, False, False]
    counts = []
    out = run_many([CountdownJob(n) for n in (3, 4, 5, 6)], RunOptions(), progress=lambda d, t: counts.append(d))
    assert [r["sum"] for r in out] == [6, 10, 15, 21]
    assert counts == [2, 3, 4]  # the two cached jobs count as done at once


@pytest.mark.slow
def test_run_many_on_ray_actors_equals_local(fresh_cache, monkeypatch):
    ray = pytest.importorskip("ray")
    from vizcore.distributed import init_ray, shutdown_ray
    from vizcore.jobs import run_many

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_mb=200)
    try:
        local = run_many([CountdownJob(n) for n in range(1, 7)], RunOptions(cache=False))
        there = run_many([CountdownJob(n) for n in range(1, 7)], RunOptions(engine="ray"))
        assert there == local
        assert all(cached(CountdownJob(n)) == local[n - 1] for n in range(1, 7))  # cached by the driver
    finally:
        shutdown_ray()
