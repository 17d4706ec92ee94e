"""Shared fixtures. Tests read ../shared/data in place and skip (with a reason)
where it is absent; under CI (``VIZCORE_REQUIRE_ALL=1``) a missing requirement
fails instead of skipping."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tests never touch the network and never write into the user's caches.
os.environ.setdefault("VIZCORE_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Every dashboard AppTest (``test_app_*.py``) is slow: each runs the whole app script, often
    several times, with real models. ``pytest -m "not slow"`` is the quick loop without them."""
    for item in items:
        if item.path.name.startswith("test_app_"):
            item.add_marker(pytest.mark.slow)


def need(ok: bool, reason: str) -> None:
    """Skip with ``reason`` unless CI demands everything, where it fails."""
    if ok:
        return
    if os.environ.get("VIZCORE_REQUIRE_ALL"):
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp("vizcore-cache")
    os.environ["VIZCORE_CACHE"] = str(cache)
    yield


@pytest.fixture(autouse=True, scope="session")
def _data_roots(tmp_path_factory):
    """The dashboard may read the test folders (pytest's temporary tree), the reference data and
    the checkout; anything else is outside its roots, as on a served dashboard."""
    os.environ.setdefault("VIZCORE_DATA_ROOTS", os.pathsep.join(
        map(str, (tmp_path_factory.getbasetemp(), SHARED_DATA, ROOT))))
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    need(SHARED_DATA.is_dir(), f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def imagenet_samples(shared_data) -> Path:
    p = shared_data / "imagenet-samples"
    need(p.is_dir(), f"{p} missing")
    return p


@pytest.fixture(scope="session")
def cue_conflict_root(shared_data) -> Path:
    p = shared_data / "cue-conflict"
    need(p.is_dir(), f"{p} missing")
    return p


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 with real ImageNet weights."""
    from vizcore.models import load_model

    lm = load_model("efficientnet_lite0")
    assert lm.weights.source == "package"
    return lm


@pytest.fixture(scope="session")
def resnet18_random():
    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("resnet18", "random")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need(path is not None, "Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def small_folder(tmp_path, imagenet_samples) -> Path:
    """A small labelled image folder: 3 classes of ImageNet samples plus package photos."""
    import csv

    from vizcore.data import sample_path

    rows = list(csv.DictReader((imagenet_samples / "labels.csv").open()))
    picks = {"dog": [r for r in rows if 151 <= int(r["index"]) <= 160][:4],
             "bird": [r for r in rows if 10 <= int(r["index"]) <= 19][:4],
             "car": [r for r in rows if int(r["index"]) in (436, 468, 511, 609, 627, 656, 717, 751)][:4]}
    for cls, rs in picks.items():
        d = tmp_path / "folder" / cls
        d.mkdir(parents=True)
        for r in rs:
            shutil.copy(imagenet_samples / r["file"], d / r["file"])
    shutil.copy(sample_path("cat"), tmp_path / "folder" / "dog" / "zz_cat.png")
    return tmp_path / "folder"


COARSE_GROUPS = {"dog": [(151, 268)], "bird": [(7, 24), (80, 100), (127, 146)],
                 "reptile": [(33, 68)], "insect": [(300, 326)]}


def coarse_imagenet_dataset(root: Path, per_class: int = 20):
    """ImageNet samples grouped into 4 coarse classes (dogs, birds, reptiles, insects)."""
    import csv

    from vizcore.data.datasets import ImageDataset, ImageItem

    rows = list(csv.DictReader((root / "labels.csv").open()))
    items = []
    for name, ranges in COARSE_GROUPS.items():
        picked = [r for r in rows if any(a <= int(r["index"]) <= b for a, b in ranges)]
        items += [ImageItem(str(root / r["file"]), name) for r in picked[:per_class]]
    return ImageDataset(f"imagenet-coarse{per_class}", items, str(root))


@pytest.fixture(scope="session")
def coarse_imagenet(imagenet_samples):
    """80 ImageNet samples in 4 coarse classes (20 dogs, birds, reptiles, insects): linearly
    separable at the top of an ImageNet network, not at its first layer."""
    return coarse_imagenet_dataset(imagenet_samples, 20)


@pytest.fixture
def http_server(tmp_path):
    """A stand-in download server: serves ``tmp_path/www`` on 127.0.0.1 (a random port); yields
    ``(www folder, base url)`` and shuts down afterwards."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"streamlit not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def dashboard_server(tmp_path):
    """``streamlit run dashboard/app.py`` (offline) on a free port by the venv's Python; yields its
    base url (``http://127.0.0.1:PORT``); killed in ``finally``."""
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = dict(os.environ, VIZCORE_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
           "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
