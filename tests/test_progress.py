"""The shared progress widget's arithmetic: throughput and time left from the job's own counts."""
from __future__ import annotations

from dashboard.widgets.progress import duration, eta_text


def test_time_left_from_own_throughput():
    # 340 of 1280 images in 16 s: 21.25 img/s, 940 left: 44 s
    assert eta_text(340, 1280, 16.0) == "340/1,280 images · 21.2 img/s · about 44 s left"
    # a resumed job counts only what it did since it resumed: 100 images in 10 s, 300 left
    assert eta_text(300, 600, 10.0, done_at_start=200) == "300/600 images · 10.0 img/s · about 30 s left"
    # slower than one item a second: seconds per item
    assert eta_text(1, 5, 4.0, unit="probes", rate_unit="probe") == "1/5 probes · 4.0 s/probe · about 16 s left"


def test_before_any_work_and_when_done():
    assert eta_text(0, 1000, 3.0) == "0/1,000 images · measuring speed…"
    assert eta_text(200, 1000, 0.0, done_at_start=200) == "200/1,000 images · measuring speed…"
    assert eta_text(1000, 1000, 40.0) == "1,000/1,000 images · done"


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0.4, 44, 89, 90, 600, 3599, 3600, 5400)] == [
        "0 s", "44 s", "89 s", "2 min", "10 min", "1 h 00 min", "1 h 00 min", "1 h 30 min"]
