"""The Ray backend (vizcore.distributed): the same results as the local backend, on a local Ray.

One local Ray (2 CPUs, a small object store) serves the whole module; each test runs real
passes of the bundled EfficientNet-Lite0 over at least 200 real images and compares with
the local backend: mining byte for byte, features within 1e-5 (they are equal), shape-bias
decisions identical. Also: a SIGKILLed actor changes nothing, Stop and Ctrl-C end the Ray
job and leave nothing cached and no process behind, and a Ray result is read from the same
cache by the dashboard.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from dashboard import pages

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 200
LAYERS = ["stem", "blocks.1.0", "blocks.3.0"]  # real taps; the forward stops at blocks.3 (quick)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, started once for the module and shut down after it."""
    from vizcore.distributed import init_ray, shutdown_ray

    if ray.is_initialized():
        ray.shutdown()
    info = init_ray(num_cpus=2, object_store_mb=256)
    yield info
    shutdown_ray()


@pytest.fixture(scope="module")
def photos(imagenet_samples):
    from vizcore.data import image_folder

    return image_folder(imagenet_samples).subset(range(N_IMAGES), name=f"imagenet-samples-{N_IMAGES}")


@pytest.fixture(scope="module")
def mined_locally(lite0, photos):
    from vizcore.patches import mine_top_patches

    return mine_top_patches(lite0, photos, LAYERS, k=5, batch_size=16, workers=1, cache=False)


def _index_json(res) -> str:
    return json.dumps(res.to_json(), indent=2)


def _worker_pids(kind: str = "mining") -> list[int]:
    """Processes of this machine running our pass as a Ray actor (``ray::MapWorker(...VizcorePass_<kind>...)``)."""
    mark = f"VizcorePass_{kind}".encode()
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and mark in _cmdline(pid)]


def _wait_gone(pids_fn, seconds: float = 30.0) -> list[int]:
    t = time.time() + seconds
    while time.time() < t and pids_fn():
        time.sleep(0.5)
    return pids_fn()


def test_mining_on_ray_gives_the_local_index_json_and_cache(local_ray, lite0, photos, mined_locally):
    from vizcore.patches import mine_top_patches

    seen = []
    on_ray = mine_top_patches(lite0, photos, LAYERS, k=5, batch_size=16, engine="ray",
                              progress=lambda d, t: seen.append((d, t)))
    assert on_ray.complete and on_ray.n_images == N_IMAGES and not on_ray.cached
    assert _index_json(on_ray) == _index_json(mined_locally)  # byte for byte (no timing fields in it)
    assert seen[-1] == (N_IMAGES, N_IMAGES) and len(seen) == N_IMAGES // 16 + 1
    # the Ray result landed under the local keys: a local call reads it without running the model
    again = mine_top_patches(lite0, photos, LAYERS, k=5, batch_size=16, workers=0)
    assert again.cached and _index_json(again) == _index_json(mined_locally)


def test_killed_actor_is_restarted_and_the_result_is_unchanged(local_ray, lite0, photos, mined_locally):
    from vizcore.patches import mine_top_patches

    killed: list[int] = []

    def progress(done: int, total: int) -> None:
        if not killed and done >= 32:
            pids = _worker_pids()
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    res = mine_top_patches(lite0, photos, LAYERS, k=5, batch_size=16, engine="ray", cache=False,
                           progress=progress)
    assert killed
    assert _index_json(res) == _index_json(mined_locally)


def test_stop_ends_the_ray_job_and_caches_nothing(local_ray, lite0, photos, tmp_path, monkeypatch):
    from vizcore.patches import mine_top_patches

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    from vizcore.jobs import Stopped

    with pytest.raises(Stopped) as stop:
        mine_top_patches(lite0, photos, LAYERS, k=5, batch_size=16, engine="ray", should_stop=should_stop)
    part = stop.value.partial
    assert not part.complete and 0 < part.n_images < N_IMAGES
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))
    assert _wait_gone(_worker_pids) == []  # the actor pool is gone; the module's Ray stays up
    assert ray.is_initialized()


def test_features_on_ray_match_local(local_ray, lite0, photos):
    from vizcore.features import extract_features

    layers = ["blocks.2.0", "blocks.4.0"]
    here = extract_features(lite0, photos, layers, batch_size=16, workers=1, cache=False)
    there = extract_features(lite0, photos, layers, batch_size=16, cache=False, engine="ray")
    assert there.files == here.files and np.array_equal(there.indices, here.indices)
    for name in layers:
        assert there.layers[name].shape == here.layers[name].shape == (N_IMAGES, here.layers[name].shape[1])
        assert np.abs(there.layers[name] - here.layers[name]).max() <= 1e-5
    assert there.grids == here.grids


def test_shape_bias_on_ray_makes_the_same_decisions(local_ray, lite0, cue_conflict_root):
    from vizcore.cueconflict import ShapeBiasPass
    from vizcore.jobs import RunOptions, pass_job, run

    p = ShapeBiasPass(lite0, cue_conflict_root, use_cache=False)
    picks = list(range(0, len(p.dataset), len(p.dataset) // N_IMAGES))[:N_IMAGES]  # every subset
    assert len(picks) == N_IMAGES and {p.dataset.items[i].labels["subset"] for i in picks} == \
        {"cue-conflict", "silhouettes", "edges"}
    here = run(pass_job(p, p.dataset, picks), RunOptions(batch_size=16, workers=1))
    there = run(pass_job(p, p.dataset, picks), RunOptions(batch_size=16, engine="ray"))
    assert there.to_json(decisions=True) | {"seconds": 0} == here.to_json(decisions=True) | {"seconds": 0}
    assert (there.shape_hits, there.texture_hits, there.silhouettes, there.edges) == \
        (here.shape_hits, here.texture_hits, here.silhouettes, here.edges)
    assert there.shape_hits + there.texture_hits > 0


def test_cka_on_ray_equals_local_and_the_cli_has_ray_address(local_ray, lite0, photos, tmp_path, monkeypatch):
    """CKA is a job like every pass: RunOptions(engine="ray", ray_address=...) sends it to the cluster
    (here the module's local Ray, by its address), with the same matrix as the local engine, cached
    under the same key; `vizcore similarity --ray-address` reaches it from the command line."""
    from vizcore.cli import build_parser
    from vizcore.jobs import RunOptions
    from vizcore.similarity import cka

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    ds = photos.subset(range(48), name="photos-48")
    layers = ["stem", "blocks.1.0", "blocks.3.0"]
    here = cka(lite0, None, ds, layers=layers, options=RunOptions(batch_size=16, workers=1, cache=False))
    there = cka(lite0, None, ds, layers=layers,
                options=RunOptions(batch_size=16, engine="ray"))
    np.testing.assert_allclose(there.matrix, here.matrix, atol=1e-9)
    assert (there.n_images, there.batches) == (here.n_images, here.batches) == (48, 3)
    again = cka(lite0, None, ds, layers=layers, batch_size=16, workers=0)  # the Ray result, from the cache
    assert again.from_cache and np.array_equal(again.matrix, there.matrix)
    args = build_parser().parse_args(["similarity", "samples", "--models", "efficientnet_lite0", "--out",
                                      str(tmp_path / "o"), "--engine", "ray", "--ray-address", "127.0.0.1:1"])
    assert RunOptions.from_args(args).ray_address == "127.0.0.1:1" and RunOptions.from_args(args).engine == "ray"


def test_dashboard_reads_a_ray_result_without_recomputing(local_ray, lite0, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from vizcore.patches import mine_top_patches

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "shared-cache"))  # the cluster's shared folder
    mined = mine_top_patches(lite0, "samples", ["blocks.1.0"], k=9, batch_size=16, engine="ray")
    assert mined.complete and not mined.cached
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.session_state["dataset_examples_source"] = "samples"  # not the page's default (ImageNet samples)
    at.session_state["dataset_examples_layer"] = "blocks.1.0"
    at.session_state["dataset_examples_earlier"] = False
    at.session_state["dataset_examples_heat"] = False
    at.switch_page(pages.DATASET_EXAMPLES.path)
    at.run()
    assert not at.exception, at.exception
    ok = [s.value for s in at.success]
    assert ok and "from the cache" in ok[0] and "10 images of **samples**" in ok[0]
    assert not at.get("progress")  # nothing was mined in the page
    best = {c.split(" · ")[0]: c for im in at.image for c in im.captions if c.startswith("channel ")}
    assert best["channel 0"] == f"channel 0 · max activation {mined.layers['blocks.1.0'][0][0].value:.3g}"
    # the page's own Ray engine: another layer, mined on the process's Ray, then cached
    at.radio(key="dataset_examples_engine").set_value("ray")
    at.selectbox(key="dataset_examples_layer").set_value("blocks.0.0")
    at.run()
    assert not at.exception, at.exception
    assert not at.success  # not cached: nothing runs before Mine is pressed
    at.button(key="dataset_examples_start").click().run()  # on Ray, one step mines everything
    if not at.success:
        at.run()
    assert not at.exception, at.exception
    assert "mined now" in at.success[0].value and "layer **blocks.0.0**" in at.success[0].value
    run = at.session_state["dataset_examples_jobrun"][1]  # the job widget's run: Ray did it, in one call
    assert run.options.engine == "ray" and run.complete and not run.from_cache
    assert mine_top_patches(lite0, "samples", ["blocks.0.0"], k=9, batch_size=16, workers=0).cached


# A Ctrl-C from a terminal reaches a process whose SIGINT is at its default. A test session started
# in the background of a non-interactive shell (`make test &`) inherits SIGINT *ignored*, its
# subprocesses inherit that, and Python leaves an ignored SIGINT ignored: the CLI never sees the
# signal. (That, not Ray, is why this test once failed in background full runs.) So the CLI is
# started through this shim, which puts SIGINT back to its default and unblocks it, then execs.
_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def _marked_env(tmp_path) -> tuple[dict, Callable[[], list[int]]]:
    """An environment for a CLI run with its own cache and a marker, and a finder of every
    process that carries the marker (the CLI, and the Ray it starts: raylet, GCS, workers)."""
    mark = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIZCORE_CACHE": str(tmp_path / "cache"),
           "VIZCORE_TEST_MARK": mark}
    env.pop("RAY_ADDRESS", None)

    def ours() -> list[int]:
        pids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if f"VIZCORE_TEST_MARK={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                        pids.append(int(pid))
                except OSError:
                    pass
        return pids

    return env, ours


def _sigint_ignored(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def _ctrl_c_after_first_report(cmd: list[str], env: dict, total: int, workers: Callable[[], list[int]]
                               ) -> tuple[int, str]:
    """Run the CLI ``cmd`` (its arguments after ``python -m vizcore``); send one SIGINT as soon
    as its progress bar shows a first unit of ``total`` done, with a Ray worker of ours running
    (no sleep: the outcome does not depend on the machine's speed). Returns (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT, "-m", "vizcore", *cmd], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err_seen: list[str] = []
    first = threading.Event()

    def read_stderr() -> None:
        """Collect stderr; set ``first`` when the progress bar shows work done (tqdm's ``n/total``)."""
        buf = ""
        for ch in iter(lambda: proc.stderr.read(1), ""):
            buf += ch
            if ch in "\r\n":
                err_seen.append(buf)
                m = re.search(rf"\b(\d+)/{total}\b", buf)
                if m and 0 < int(m.group(1)) < total:
                    first.set()
                buf = ""
        err_seen.append(buf)
        first.set()  # the process ended: stop waiting

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert first.wait(400), "no progress reported"
        assert proc.poll() is None, "".join(err_seen)  # still running: the interrupt comes mid-job
        assert not _sigint_ignored(proc.pid)  # the shim worked: a terminal's Ctrl-C would reach it
        assert workers(), "the Ray job runs no worker"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=30)
    return proc.returncode, "".join(err_seen)


def test_cli_engine_ray_json_and_ctrl_c_leaves_no_ray_process(lite0, imagenet_samples, tmp_path):
    """Ctrl-C during `vizcore mine --engine ray` (which starts its own local Ray): exit 130,
    nothing cached or written, every process of that Ray gone (found by a marker in their
    environment)."""
    env, ours = _marked_env(tmp_path)
    # Enough work that it cannot finish between the first batch's report and the SIGINT (1,000
    # images of the 1,000 ImageNet samples, 2 per batch).
    from vizcore.data import image_folder

    every = image_folder(imagenet_samples).paths
    files = tmp_path / "many.txt"
    files.write_text("\n".join(every[:1000]))
    rc, err = _ctrl_c_after_first_report(
        ["mine", str(files), "--layers", "stem", "--batch-size", "2", "--engine", "ray", "--no-montage",
         "--out", str(tmp_path / "out")], env, 1000, lambda: [p for p in _worker_pids() if p in ours()])
    assert rc == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "cache" / "patches").exists() or not any(
        p for p in (tmp_path / "cache" / "patches").iterdir() if not p.name.startswith("."))  # (the kind marker)
    assert not (tmp_path / "out" / "index.json").exists()
    assert _wait_gone(ours) == []


def test_precompute_engine_ray_ctrl_c_keeps_done_batches_and_resumes(lite0, tmp_path, monkeypatch):
    """Ctrl-C during `vizcore precompute --engine ray` (feature visualisation, one channel per
    Ray job): exit 130, every process of its Ray gone, the batches done before the signal are in
    the cache, and the same command run again computes only the rest."""
    from vizcore import precompute as P
    from vizcore.data import open_dataset

    env, ours = _marked_env(tmp_path)
    plan = P.plan(lite0, open_dataset("samples"), ["stem"],
                  P.PrecomputeSettings(featviz_steps=48, featviz_size=64, featviz_batch=1))
    # the plan's own command (what the Model atlas page tells a user to run), after `python -m vizcore`
    args = [*P.command(plan, "samples").split()[3:], "--parts", "feature visualisation"]
    rc, err = _ctrl_c_after_first_report(
        [*args, "--engine", "ray"], env, 32, lambda: [p for p in ours() if b"_JobActor" in _cmdline(p)])
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _wait_gone(ours) == []

    monkeypatch.setenv("VIZCORE_CACHE", env["VIZCORE_CACHE"])  # the plan's status reads the CLI's cache
    done = P.status(plan, "stem").done["feature visualisation"]  # what was reported done is there, whole
    assert 1 <= done < 32
    again = subprocess.run([sys.executable, "-m", "vizcore", *args, "--workers", "0", "--json"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    fv = json.loads(again.stdout)["parts"]["feature visualisation"]
    assert fv["jobs"] == 32 and fv["from_cache"] == done


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _press_and_step(at, key: str, done, max_steps: int = 40) -> None:
    at.button(key=f"{key}_start").click().run()
    for _ in range(max_steps):
        assert not at.exception, at.exception
        if done(at):
            return
        at.run()
    raise AssertionError(f"{key}: the run did not finish")


def test_probes_and_embeddings_pages_run_on_ray_with_the_local_results(local_ray, lite0, small_folder):
    """The Engine choice of the Linear probes and Embeddings pages reaches the process's Ray: the page's
    job runs there (its feature passes on Ray Data) and shows the numbers of the local engine."""
    from streamlit.testing.v1 import AppTest

    from vizcore.data import open_dataset
    from vizcore.embed import embed
    from vizcore.probes import fit_probes

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.run()
    at.switch_page(pages.PROBES.path)
    at.session_state["probes_source"] = "folder"
    at.session_state["probes_folder"] = str(small_folder)
    at.session_state["probes_max_layers"] = 3
    at.session_state["probes_engine"] = "ray"
    at.run()
    assert not at.exception, at.exception
    assert any("Ray at" in c.value for c in at.caption)  # the page reached Ray before running
    _press_and_step(at, "probes", lambda a: bool(a.success or a.error))
    assert at.success and "Probed 1 network(s)" in at.success[0].value, [e.value for e in at.error]
    run = at.session_state["probes_jobrun"][1]
    assert run.options.engine == "ray" and run.complete and not run.from_cache
    df = at.dataframe[0].value
    ref = fit_probes(lite0, str(small_folder), layers=["stem", "blocks.4.1", "logits"])
    assert list(df["layer"]) == ["stem", "blocks.4.1", "logits"]
    assert list(df["accuracy"]) == [lp.accuracy for lp in ref.layers]

    at.switch_page(pages.EMBEDDINGS.path)
    at.session_state["embeddings_source"] = "folder"
    at.session_state["embeddings_folder"] = str(small_folder)
    at.session_state["embeddings_method"] = "pca"
    at.session_state["embeddings_engine"] = "ray"
    at.run()
    assert not at.exception, at.exception
    _press_and_step(at, "embeddings", lambda a: not a.get("progress") and len(a.get("plotly_chart")) == 2)
    run = at.session_state["embeddings_jobrun"][1]
    assert run.options.engine == "ray" and run.complete
    metrics = {}
    for m in at.metric:
        metrics.setdefault(m.label, []).append(m.value)
    ref = embed(lite0, open_dataset(str(small_folder)), "pool", method="pca")
    assert metrics["Trustworthiness"][1] == f"{ref.quality.trustworthiness:.3f}"
    assert metrics[f"{ref.quality.knn_k}-NN accuracy"][-1] == f"{ref.quality.knn_accuracy:.3f}"
