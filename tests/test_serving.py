"""Safe-to-serve defaults: the shipped Streamlit config and `make dashboard`'s address handling."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_reads_the_shipped_config(monkeypatch, tmp_path):
    """Streamlit itself, started in the repository root, sees the safe values (a misspelt option
    would fall back to its unsafe default and fail here)."""
    from streamlit import config

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.streamlit/config.toml of the machine's user
    try:
        config.get_config_options(force_reparse=True)
        expect = {"server.address": "127.0.0.1", "server.maxUploadSize": 25, "server.headless": True,
                  "client.showErrorDetails": "none", "client.toolbarMode": "viewer",
                  "browser.gatherUsageStats": False}
        for key, value in expect.items():
            assert config.get_option(key) == value, key
            assert config.get_where_defined(key) == str(ROOT / ".streamlit" / "config.toml"), key
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)


@pytest.fixture
def fake_venv(tmp_path) -> Path:
    """A venv whose `streamlit` prints its arguments, so `make dashboard` runs without serving."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "streamlit"
    script.write_text('#!/bin/sh\necho "streamlit $*"\n')
    script.chmod(0o755)
    (venv / ".installed").touch()
    return venv


def _make(venv: Path, *args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "ADDRESS")}
    out = subprocess.run(["make", "-s", "-o", str(venv / ".installed"), "dashboard", f"VENV={venv}", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_dashboard_prints_the_address_and_defaults_to_loopback(fake_venv):
    out = _make(fake_venv)
    assert "open http://127.0.0.1:8501" in out
    assert "streamlit run dashboard/app.py --server.port 8501 --server.address 127.0.0.1" in out
    assert "VIZCORE_DATA_ROOTS" not in out


def test_make_dashboard_port_and_address(fake_venv):
    out = _make(fake_venv, "PORT=8611", "ADDRESS=0.0.0.0")
    assert "open http://localhost:8611 here" in out and "from another machine" in out
    assert "VIZCORE_DATA_ROOTS" in out  # reachable from elsewhere: says what limits the inputs
    assert "--server.port 8611 --server.address 0.0.0.0" in out
