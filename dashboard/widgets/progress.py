"""One progress widget for every long job: counts, throughput, time left, Run/Stop, partial results.

It knows nothing about the engine's runner classes: a page gives it two callables,
``counts() -> (done, total)`` and ``step(progress)`` (a bounded amount of work; it may call
``progress(done, total)`` while it runs), so it drives a :class:`vizcore.passes.PassRun`,
a mining or shape-bias job, or a loop of layer fits alike.

The throughput is the job's own: images (or layers) done since this widget started
the job, over the wall-clock seconds since then, so the estimate of the time left
includes everything the page does between steps.

The job advances inside an ``st.fragment`` that reruns itself every
:data:`TICK_S` seconds while the job runs: each rerun does one step and redraws the
bar and the partial results (the ``partial`` callable) without redrawing the page;
the whole page reruns once the job has finished or is stopped. Run and Stop sit
outside the fragment, so Stop interrupts a step at its next progress update. A test
(AppTest) that calls ``at.run()`` advances the job by one step per call and sees
every intermediate state.
"""
from __future__ import annotations

import time
from typing import Callable, Hashable

import streamlit as st

from dashboard.widgets.text import plain

TICK_S = 0.25
"""Seconds between the fragment's reruns while a job runs (each rerun does one step)."""

Counts = Callable[[], "tuple[int, int]"]
Progress = Callable[[int, int], None]


def duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 05 min``: the precision a person needs to decide whether to wait."""
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if round(s / 60) < 60:
        return f"{round(s / 60)} min"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"


def eta_text(done: int, total: int, seconds: float | None, done_at_start: int = 0, *,
             unit: str = "images", rate_unit: str = "img") -> str:
    """``"340/1280 images · 21.3 img/s · about 44 s left"``.

    ``seconds`` is the time since the clock started, when ``done_at_start`` items were
    already done (a resumed job); before any item is done since then, the speed is unknown.
    """
    text = f"{done:,}/{total:,} {unit}"
    n = done - done_at_start
    if done >= total:
        return text + " · done"
    if not seconds or seconds <= 0 or n <= 0:
        return text + " · measuring speed…"
    rate = n / seconds
    speed = f"{rate:.1f} {rate_unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{rate_unit}"
    return f"{text} · {speed} · about {duration((total - done) / rate)} left"


class Clock:
    """Start time and count of one phase of one job, kept in session state under ``key``.

    A new ``phase`` (another job, another stage of it, or a resume) restarts the clock.
    """

    def __init__(self, key: str):
        self.key = key

    def restart(self, phase: Hashable, done: int) -> None:
        st.session_state[self.key] = {"phase": phase, "t0": time.perf_counter(), "done0": int(done)}

    def text(self, phase: Hashable, done: int, total: int, *, unit: str = "images", rate_unit: str = "img") -> str:
        c = st.session_state.get(self.key)
        if c is None or c["phase"] != phase or done < c["done0"]:
            self.restart(phase, done)
            c = st.session_state[self.key]
        return eta_text(done, total, time.perf_counter() - c["t0"], c["done0"], unit=unit, rate_unit=rate_unit)


def progress_bar(key: str, done: int, total: int, *, what: str, phase: Hashable = None,
                 unit: str = "images", rate_unit: str = "img", bar=None, note: str = ""):
    """Draw (or update ``bar``) ``what: done/total unit · rate · about N s left``; returns the bar.

    The fraction of the bar and its text come from the same counts, so they always agree.
    ``note`` is appended (e.g. the current objective) without restarting the clock.
    """
    text = f"{what}: " + Clock(f"{key}_clock").text((what, phase), done, total, unit=unit, rate_unit=rate_unit)
    text += f" · {note}" if note else ""
    frac = min(1.0, done / total) if total else 1.0
    if bar is None:
        return st.progress(frac, text=text)
    bar.progress(frac, text=text)
    return bar


def stepped_job(key: str, job_id: Hashable, *, counts: Counts, step: Callable[[Progress], None], what: str,
                partial: Callable[[], None] | None = None, start_label: str = "Run", autostart: bool = False,
                unit: str = "images", rate_unit: str = "img",
                stage: Callable[[], "tuple[int, int, str, str, str]"] | None = None, idle_note: str = "") -> bool:
    """Run/Stop buttons, a progress bar with the time left, and the partial results of a long job.

    Args:
        key: session-state prefix (the page's key).
        job_id: identifies the job; another id (changed settings) is another job, not yet running.
        counts: ``() -> (done, total)`` of the current phase, without doing any work.
        step: does a bounded amount of work (a few batches, one layer); may call ``progress(done, total)``.
        what: the bar's label.
        partial: draws the results so far (inside the fragment, so they grow while the job runs;
            after a stop, below the Resume button).
        start_label: the start button's label ("Run", "Mine", ...); "Resume" after a stop.
        autostart: run without a press (a job the page may start by itself).
        unit, rate_unit: "images" / "img", or e.g. "layers" / "layer".
        stage: for a job of several stages measured in different units (a feature pass in images,
            then probe fits in layers): ``() -> (done, total, unit, rate_unit, label)`` of the current
            stage, which the bar shows instead of ``counts``; a new stage restarts the clock.
        idle_note: shown beside the start button (what pressing it will do, how long it takes).

    Returns:
        Whether the job is complete (the page then draws its final results).
    """
    ctl_key = f"{key}_job_ctl"
    ctl = st.session_state.get(ctl_key)
    if ctl is None or ctl.get("id") != job_id:
        ctl = st.session_state[ctl_key] = {"id": job_id, "running": bool(autostart), "stopped": False,
                                           "error": None}
    done, total = counts()
    if done >= total:
        ctl["running"] = False
        return True

    def start() -> None:
        ctl.update(running=True, stopped=False, error=None)
        st.session_state.pop(f"{key}_clock", None)  # a resumed job measures its speed afresh

    def stop() -> None:
        ctl.update(running=False, stopped=True)

    # The buttons live outside the fragment: a click there reruns the whole page, which interrupts a
    # step at its next progress update (a click inside a fragment waits for the step to end), and
    # the callbacks set the state before that rerun starts.
    c1, c2 = st.columns([1, 5], vertical_alignment="center")
    if not ctl["running"]:
        c1.button("Resume" if done else start_label, key=f"{key}_start", type="primary",
                  icon=":material/play_arrow:", on_click=start)
        if ctl["error"]:
            c2.error(plain(ctl["error"]))  # quotes the engine's message: names and paths a visitor chose
        elif ctl["stopped"]:
            c2.warning(f"Stopped after {done:,} of {total:,} {unit}; the results so far are shown below, "
                       "and nothing half-done is cached. Resume continues where it stopped.")
        elif idle_note:
            c2.info(idle_note)
        if partial is not None and done:
            partial()
        return False
    c1.button("Stop", key=f"{key}_stop", icon=":material/stop:", on_click=stop)
    c2.empty()  # replaces the idle message at once (else it lingers, greyed, through the first step)

    def body() -> None:
        done, total = counts()
        if done >= total or not ctl["running"]:  # finished or stopped since: let the page redraw
            st.rerun(scope="app")

        def now() -> tuple[int, int, str, str, str]:
            if stage is not None:
                d, t, u, ru, label = stage()
                return d, t, u, ru, f"{what} · {label}"
            return (*counts(), unit, rate_unit, what)

        def draw(d: int | None = None, t: int | None = None, bar=None):
            sd, stt, u, ru, label = now()
            return progress_bar(key, sd if d is None else d, stt if t is None else t, what=label, unit=u,
                                rate_unit=ru, bar=bar)

        bar = draw()
        try:
            step(lambda d, t: draw(d, t, bar=bar))
        except Exception as e:  # noqa: BLE001 - shown on the page; the job keeps what it had done
            ctl.update(running=False, error=f"{what}: {e}")
            st.rerun(scope="app")
        done, total = counts()
        if done < total:
            draw(bar=bar)
        else:
            bar.progress(1.0, text=f"{what}: done")
        if partial is not None:
            partial()
        if done >= total:
            ctl["running"] = False
            st.rerun(scope="app")

    st.fragment(body, run_every=TICK_S)()
    done, total = counts()
    return done >= total
