"""The one widget that runs a job (:mod:`vizcore.jobs`) on a page.

Progress with the time left, Stop, Resume, the partial result drawn as it grows, the
engine the user chose, and the cached result at once without pressing anything. The
:class:`vizcore.jobs.JobRun` lives in session state under the page's key, so a rerun
(a Stop press, a widget change elsewhere) keeps the work done; another job (changed
settings) starts afresh.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

import streamlit as st

from dashboard.widgets.progress import stepped_job
from vizcore.jobs import Job, JobRun, RunOptions


def job_run(key: str, job: Job, options: RunOptions | None = None, *, job_id: Hashable | None = None) -> JobRun:
    """The session's :class:`JobRun` of ``job`` (kept across reruns while ``job_id`` stays the same).

    ``job_id`` defaults to the job's cache key with the options; give one for jobs that are
    not cached (``key() is None``).
    """
    options = options or RunOptions()
    ident = job_id if job_id is not None else (job.kind, job.key(), options)
    slot = f"{key}_jobrun"
    held = st.session_state.get(slot)
    if held is None or held[0] != ident:
        held = st.session_state[slot] = (ident, JobRun(job, options))
    return held[1]


def run_job(key: str, job: Job, options: RunOptions | None = None, *, what: str,
            partial: Callable[[Any], None] | None = None, start_label: str = "Run", autostart: bool = False,
            idle_note: str = "", unit: str | None = None, rate_unit: str | None = None,
            units_per_step: int | None = None, job_id: Hashable | None = None) -> Any | None:
    """Run ``job`` with progress, time left, Stop and Resume; return its result once complete.

    Args:
        key: the page's session-state prefix.
        job: the job (built from the page's widgets; cheap to build on every rerun).
        options: engine, batch size, cache (:class:`RunOptions`; the dashboard loads in this thread).
        what: the progress bar's label.
        partial: draws a result so far (called with ``JobRun.partial()``; while running and after a stop).
        start_label, autostart, idle_note: as :func:`dashboard.widgets.progress.stepped_job`.
        unit, rate_unit: what the bar counts (default: the job's unit).
        units_per_step: work per script run (default: two batches of a pass, one tick otherwise).
        job_id: identity of the job in session state (default: its cache key and options).

    Returns:
        The complete result (cached or just computed), or ``None`` while it is not complete.
    """
    options = options or RunOptions(workers=0)
    run = job_run(key, job, options, job_id=job_id)
    if run.complete:
        return run.result
    unit = unit or job.unit
    rate_unit = rate_unit or {"images": "img"}.get(unit, unit.rstrip("s"))
    per_step = units_per_step or (2 * options.batch_size if unit == "images" else 1)

    def step(progress) -> None:
        run.step(per_step, progress=progress)

    def draw() -> None:
        if partial is not None and (p := run.partial()) is not None:
            partial(p)

    done = stepped_job(key, ("job", job_id if job_id is not None else (job.kind, job.key(), options)),
                       counts=lambda: (run.done, run.total), step=step, what=what,
                       partial=draw if partial is not None else None, start_label=start_label,
                       autostart=autostart, unit=unit, rate_unit=rate_unit, idle_note=idle_note)
    return run.result if done and run.complete else None
