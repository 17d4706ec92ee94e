"""vizcore.precompute: plan, status, command, estimate, budget, a real precompute, resume, CLI.

Real model (the bundled EfficientNet-Lite0), real photos (the built-in samples). Kept small:
``blocks.0.0`` (16 channels), k=1 or 2, feature visualisations of 4 steps at 32 px.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vizcore import precompute as P
from vizcore.jobs import RunOptions, Stopped, cached

ROOT = Path(__file__).resolve().parents[1]
LAYER = "blocks.0.0"
SMALL = P.PrecomputeSettings(featviz_steps=4, featviz_size=32, featviz_batch=8, k=2)


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh results cache for one test (so 'computes nothing' means what it says)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("VIZCORE_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def photos():
    from vizcore.data import open_dataset

    return open_dataset("samples").subset([0, 1, 2], name="three samples")


def featviz_png(p: P.Plan, layer: str = LAYER) -> list[bytes]:
    """The PNG bytes of every cached featviz image of ``layer``, in channel order."""
    from vizcore import cache

    out = []
    for job in p.featviz_jobs(layer):
        entry = cache.load_torch(job.kind, job.key())
        assert entry is not None, f"featviz batch {job.channels} not cached"
        out += entry["png"]
    return out


def test_plan_status_command_estimate(lite0, photos, own_cache):
    p = P.plan(lite0, photos, [LAYER, "stem"], SMALL)
    assert p.layers == ["stem", LAYER]  # network order, whatever the order given
    assert p.channels == {"stem": 32, LAYER: 16}
    assert p.n_units == 48
    assert p.mining_layers() == ["stem", LAYER]
    assert [j.channels for j in p.featviz_jobs(LAYER)] == [list(range(8)), list(range(8, 16))]
    assert p.featviz_job(LAYER, 11).channels == list(range(8, 16))
    # the command reproduces the plan: its non-default settings only
    cmd = P.command(p, "samples")
    assert cmd == ("python -m vizcore precompute --model efficientnet_lite0 --data samples --layers stem blocks.0.0 "
                   "--featviz-steps 4 --featviz-size 32 --featviz-batch 8 --k 2")
    assert P.command(P.plan(lite0, photos, [LAYER]), "samples", layers=["stem"]).endswith("--layers stem")
    # estimate: per part = per channel x channels; the total is their sum
    est = p.estimate_bytes()
    assert est["total"] == sum(est[part] for part in P.PARTS)
    assert est["total"] == est["per channel"] * p.n_units
    assert est["feature visualisation"] > 48 * 32 * 32  # at least 1 byte per pixel
    # nothing computed yet
    st = P.status(p, LAYER)
    assert st.total == {part: 16 for part in P.PARTS}
    assert st.done == {part: 0 for part in P.PARTS} and not st.complete
    # bad input: one clear line each
    with pytest.raises(Exception, match="blocks.0.9|closest|did you mean|not"):
        P.plan(lite0, photos, ["blocks.0.9"])
    with pytest.raises(ValueError, match="featviz-steps"):
        P.PrecomputeSettings(featviz_steps=0)


def test_all_layers_and_head(lite0, photos):
    p = P.plan(lite0, photos, "all", SMALL)
    assert "stem" in p.layers and LAYER in p.layers and len(p.layers) > 10
    assert all(n > 0 for n in p.channels.values())
    assert not p.is_head(LAYER)


def test_budget_refused_before_any_work(lite0, photos, own_cache, monkeypatch):
    p = P.plan(lite0, photos, [LAYER], SMALL)
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "0.001")
    mb = p.estimate_bytes()["total"] / 2**20
    with pytest.raises(P.BudgetError, match=rf"about {mb:,.1f} MB .*16 channels"):
        P.precompute(p, RunOptions(workers=0))
    assert not any(f.is_file() for f in own_cache.rglob("*"))  # nothing was computed or written
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "1000")
    P.check_budget(p)  # fits


def test_interrupted_featviz_resumes_and_matches_an_uninterrupted_run(lite0, photos, tmp_path, monkeypatch):
    p = P.plan(lite0, photos, [LAYER], SMALL)
    parts = ("feature visualisation",)
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "straight"))
    P.precompute(p, RunOptions(workers=0), parts=parts)
    straight = featviz_png(p)

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "stopped"))
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(Stopped):
        # stop as soon as the first batch (8 channels) is done
        P.precompute(p, RunOptions(workers=0), parts=parts, progress=lambda *a: seen.append(a),
                     should_stop=lambda: any(d >= 8 for _, d, _ in seen))
    st = P.status(p, LAYER)
    assert st.done["feature visualisation"] == 8 and st.total["feature visualisation"] == 16
    report = P.precompute(p, RunOptions(workers=0), parts=parts)
    assert report.parts["feature visualisation"] == {**report.parts["feature visualisation"], "jobs": 2,
                                                     "from_cache": 1}
    assert P.status(p, LAYER).done["feature visualisation"] == 16
    assert featviz_png(p) == straight  # byte-identical PNGs


@pytest.mark.slow
def test_precompute_everything_then_all_from_cache(lite0, photos, own_cache):
    from vizcore.featureviz.cached import FeatVizJob
    from vizcore.patches import MiningJob
    from vizcore.unit import ClassSupportJob, DriversJob

    p = P.plan(lite0, photos.subset([0, 1]), [LAYER], P.PrecomputeSettings(
        featviz_steps=4, featviz_size=32, featviz_batch=8, k=1))
    seen: dict[str, tuple[int, int]] = {}
    report = P.precompute(p, RunOptions(workers=0), progress=lambda part, d, t: seen.__setitem__(part, (d, t)))
    assert seen == {part: (16, 16) for part in P.PARTS}
    assert {part: r["from_cache"] for part, r in report.parts.items()} == {part: 0 for part in P.PARTS}
    st = P.status(p, LAYER)
    assert st.complete and st.done == {part: 16 for part in P.PARTS}

    again = P.precompute(p, RunOptions(workers=0))
    assert {part: r["from_cache"] for part, r in again.parts.items()} == {
        part: r["jobs"] for part, r in again.parts.items()}  # computed nothing

    # readable through the same jobs the unit page runs, with the page's arguments
    mining = cached(MiningJob(lite0, p.dataset, p.mining_layers(), k=1))
    assert mining is not None and mining.n_images == 2
    for c in (0, 15):
        files = [h.file for h in mining.hits(LAYER, c)]
        assert len(files) == 1 and Path(files[0]).is_file()
        cs = cached(ClassSupportJob(lite0, LAYER, c, files))
        assert cs is not None and cs.channel == c and cs.top
        dr = cached(DriversJob(lite0, LAYER, c, files))
        assert dr is not None
        (fv,) = [r for r in cached(FeatVizJob(lite0, LAYER, p.featviz_job(LAYER, c).channels,
                                              steps=4, size=32, seed=0)) if r.channel == c]
        assert fv.image.size == (32, 32)


def test_cli_estimate_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIZCORE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "vizcore", "precompute", "--model", "efficientnet_lite0",
                          "--data", "samples", "--layers", LAYER, "--featviz-steps", "4", "--featviz-size", "32",
                          "--k", "2", "--estimate", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout)
    assert js["layers"] == {LAYER: 16}
    assert js["settings"]["featviz_steps"] == 4 and js["settings"]["k"] == 2
    assert js["estimate_bytes"]["total"] > 0
    assert js["status"][0]["layer"] == LAYER and js["status"][0]["complete"] is False
    assert "KB of cache per channel" in out.stderr
    assert not (tmp_path / "cache" / "featviz").exists()  # --estimate computes nothing

    bad = subprocess.run([sys.executable, "-m", "vizcore", "precompute", "--model", "efficientnet_lite0",
                          "--data", "samples", "--layers", "nope", "--estimate"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_real_run_then_resumed_from_cache(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIZCORE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vizcore", "precompute", "--model", "efficientnet_lite0", "--data", "samples",
           "--layers", LAYER, "--featviz-steps", "4", "--featviz-size", "32", "--featviz-batch", "8", "--k", "2",
           "--parts", "top images", "feature visualisation", "--workers", "0", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    js = json.loads(first.stdout)
    assert js["parts"]["feature visualisation"]["jobs"] == 2 and js["parts"]["feature visualisation"]["from_cache"] == 0
    assert js["parts"]["top images"]["images"] == 10
    assert len(list((tmp_path / "cache" / "featviz").rglob("*.pt"))) == 2
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    js2 = json.loads(second.stdout)
    assert js2["parts"]["feature visualisation"]["from_cache"] == 2 and js2["parts"]["top images"]["from_cache"] == 1

    # and the static site from the same cache, by the same arguments
    site = tmp_path / "site"
    args = [a for a in cmd[4:] if a not in ("--parts", "top images", "feature visualisation", "--workers", "0",
                                            "--json")]
    out = subprocess.run([sys.executable, "-m", "vizcore", "export-site", *args, "--out", str(site)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "16 unit pages" in out.stderr
    unit = (site / "efficientnet_lite0" / "auto" / LAYER / "5.html").read_text()
    assert "Feature visualisation" in unit and "Top dataset images" in unit
    assert "Not precomputed: class support, drivers." in unit
