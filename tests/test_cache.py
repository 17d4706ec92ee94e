"""The results cache keeps ``VIZCORE_CACHE_MAX_MB``: least recently used entries go first, never
the one just written; data (datasets, stimuli) stays outside the budget; ``vizcore cache info``
and ``vizcore cache clear`` report and delete, with one clear line on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import torch

from vizcore import cache
from vizcore.cache import entries, enforce_budget, load_json, load_torch, save_json, save_torch

MB = 2**20


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIZCORE_CACHE_MAX_MB", raising=False)
    return tmp_path / "cache"


def _blob(mb: float) -> torch.Tensor:
    return torch.zeros(int(mb * MB) // 4, dtype=torch.float32)


def _age(path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_least_recently_used_entries_are_evicted_first(root, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "3.5")
    a = save_torch("features", "a", _blob(1))
    b = save_torch("patches", "b", _blob(1))
    c = save_torch("embed", "c", _blob(1))
    for p, ago in ((a, 300), (b, 200), (c, 100)):
        _age(p, ago)
    assert load_torch("features", "a") is not None  # reading marks it used: b is now the oldest
    save_torch("patches", "d", _blob(1))  # 4 MB > 3.5: one entry must go
    assert not b.exists()
    assert a.exists() and c.exists()
    assert sum(e.bytes for e in entries()) <= 3.5 * MB


def test_the_entry_just_written_is_kept_even_when_alone_too_big(root, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "1")
    old = save_torch("features", "old", _blob(0.5))
    _age(old, 60)
    big = save_torch("features", "big", _blob(2))
    assert big.exists() and not old.exists()
    assert torch.equal(load_torch("features", "big"), _blob(2))


def test_json_entries_and_folders_count(root, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "2")
    folder = root / "featviz" / "k1"  # a kind that writes a folder per entry
    folder.mkdir(parents=True)
    (folder / "img.png").write_bytes(b"\0" * (3 * MB // 2))
    _age(folder / "img.png", 100)
    _age(folder, 100)
    save_json("probes", "p", {"acc": [0.5] * 10})
    assert load_json("probes", "p") == {"acc": [0.5] * 10}
    sizes = {e.kind: e.bytes for e in entries()}
    assert sizes["featviz"] == 3 * MB // 2
    save_torch("features", "f", _blob(0.75))  # 1.5 + 0.75 + json > 2: the folder (oldest) goes
    assert not folder.exists()
    assert load_json("probes", "p") is not None


def test_data_is_outside_the_budget(root, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "1")
    export = root / "datasets" / "cifar10-test-png" / "cat"
    export.mkdir(parents=True)
    (export / "000001.png").write_bytes(b"\0" * (2 * MB))
    stim = root / "stimuli" / "texture-vs-shape"
    stim.mkdir(parents=True)
    (stim / "x.png").write_bytes(b"\0" * MB)
    save_torch("features", "f", _blob(0.5))
    assert (export / "000001.png").exists() and (stim / "x.png").exists()
    facts = cache.info()
    assert facts["kinds"]["datasets"] == {"entries": 1, "mb": 2.0, "in_budget": False}
    assert facts["results_mb"] == pytest.approx(0.5, abs=0.01)
    assert facts["data_mb"] == pytest.approx(3.0)


def test_stale_temp_files_count_fresh_ones_do_not(root):
    (root / "patches").mkdir(parents=True)
    fresh = root / "patches" / ".k.pt.abc.tmp"
    fresh.write_bytes(b"\0" * 100)
    stale = root / "patches" / ".j.pt.def.tmp"
    stale.write_bytes(b"\0" * 100)
    _age(stale, 2 * cache.STALE_TMP_S)
    assert [e.path for e in entries()] == [stale]  # a write in progress elsewhere is left alone
    assert enforce_budget(budget_mb=0) and not stale.exists() and fresh.exists()


def test_bad_budget_is_one_clear_line(root, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "5 GB")
    with pytest.raises(ValueError, match="VIZCORE_CACHE_MAX_MB must be a number of MB, not '5 GB'"):
        save_torch("features", "x", _blob(0.01))


def test_a_real_result_writer_keeps_the_budget(root, monkeypatch, resnet18_random, imagenet_samples):
    """Features of two layers, one entry each: a budget of 0 MB keeps only the entry just
    written (the later layer), and that entry is still a valid cache hit."""
    from vizcore.data import image_folder
    from vizcore.features import extract_features

    ds = image_folder(imagenet_samples).subset(range(4))
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "0")
    fresh = extract_features(resnet18_random, ds, ["layer3", "layer4"], workers=0)
    assert len(entries()) == 1
    hit = extract_features(resnet18_random, ds, ["layer4"], workers=0)
    assert hit.from_cache
    assert (hit.layers["layer4"] == fresh.layers["layer4"]).all()


# -------------------------------------------------------------------------- CLI
def _cli(capsys, *argv: str):
    from vizcore.cli import main

    code = main(["cache", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cache_info_and_clear(root, capsys, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE_MAX_MB", "100")
    save_torch("features", "a", _blob(1))
    save_torch("features", "b", _blob(1))
    save_json("probes", "p", {"x": 1})
    (root / "datasets" / "set").mkdir(parents=True)
    (root / "datasets" / "set" / "1.png").write_bytes(b"\0" * MB)

    code, out, _ = _cli(capsys, "info")
    assert code == 0
    assert f"cache: {root}" in out
    assert "datasets        1        1.0  (data, outside the budget)" in out
    assert "features        2        2.0" in out
    assert "results: 2.0 MB of 100 MB budget (2%; VIZCORE_CACHE_MAX_MB)" in out

    code, out, _ = _cli(capsys, "info", "--json")
    facts = json.loads(out)
    assert facts["root"] == str(root) and facts["budget_mb"] == 100
    assert facts["kinds"]["features"]["entries"] == 2 and facts["kinds"]["probes"]["entries"] == 1

    code, out, _ = _cli(capsys, "clear", "--kind", "probes", "--yes")
    assert code == 0 and "deleted 1 entries" in out
    assert load_json("probes", "p") is None and load_torch("features", "a") is not None

    code, out, _ = _cli(capsys, "clear", "--yes")  # every result; data stays
    assert code == 0 and "deleted 2 entries (2.0 MB" in out
    assert entries() == [] and (root / "datasets" / "set" / "1.png").exists()

    code, out, _ = _cli(capsys, "clear", "--kind", "datasets", "--yes")
    assert code == 0 and not (root / "datasets" / "set").exists()


@pytest.mark.parametrize("argv, needle", [
    (["clear"], "would delete 1 entries (1.0 MB, all results (data kept: datasets, stimuli)); add --yes"),
    (["clear", "--kind", "nope", "--yes"], "no cache kind 'nope' under"),
])
def test_cache_clear_errors_are_one_line(root, capsys, monkeypatch, argv, needle):
    save_torch("features", "a", _blob(1))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"vizcore cache: error: {err.split('error: ', 1)[1].strip()}"]
    assert needle in err
    assert load_torch("features", "a") is not None  # nothing deleted


@pytest.mark.slow
def test_cache_command_in_a_real_process(root, tmp_path):
    save_torch("embed", "a", _blob(0.5))
    env = dict(os.environ, VIZCORE_CACHE=str(root))
    import sys

    p = subprocess.run([sys.executable, "-m", "vizcore", "cache", "info", "--json"], capture_output=True,
                       text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["kinds"]["embed"]["mb"] == pytest.approx(0.5, abs=0.01)
    p = subprocess.run([sys.executable, "-m", "vizcore", "cache", "clear"], capture_output=True, text=True,
                       env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "add --yes" in p.stderr and (root / "embed" / "a.pt").exists()


def test_what_the_cache_did_not_write_is_never_counted_followed_or_deleted(root, tmp_path, capsys):
    """The cache root is also a data root: a user's folder there, a link to a folder elsewhere, and
    links inside a real kind folder (to a file and to a folder outside) are not results. They are
    not counted (``cache info``), not followed to size them, and survive ``cache clear`` and a
    budget of 0 MB; the cache's own entries go."""
    outside = tmp_path / "elsewhere"
    (outside / "album").mkdir(parents=True)
    (outside / "album" / "big.jpg").write_bytes(b"\0" * (3 * MB))
    (outside / "precious.pt").write_bytes(b"\0" * (2 * MB))
    mine = save_torch("features", "a" * 24, _blob(1))
    json_entry = save_json("embed", "b" * 24, {"x": 1})
    photos = root / "photos"  # a user's folder placed under the root
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\0" * MB)
    (photos / "abc123").mkdir()  # named like a key, but not in a kind of the cache
    (root / "linked_kind").symlink_to(outside / "album", target_is_directory=True)
    (root / "features" / ("c" * 24 + ".pt")).symlink_to(outside / "precious.pt")
    (root / "features" / ("d" * 24)).symlink_to(outside / "album", target_is_directory=True)
    (root / "features" / "holiday.jpg").write_bytes(b"\0" * MB)  # not a name the cache writes
    user_things = [photos / "cat.jpg", photos / "abc123", root / "linked_kind", outside / "album" / "big.jpg",
                   outside / "precious.pt", root / "features" / ("c" * 24 + ".pt"), root / "features" / ("d" * 24),
                   root / "features" / "holiday.jpg"]

    assert cache.kinds() == ["embed", "features"]
    assert sorted(e.path for e in entries()) == sorted([json_entry, mine])
    facts = cache.info()
    assert set(facts["kinds"]) == {"embed", "features"}
    assert facts["kinds"]["features"] == {"entries": 1, "mb": pytest.approx(1.0, abs=0.01), "in_budget": True}
    assert facts["results_mb"] == pytest.approx(1.0, abs=0.01)
    assert load_torch("features", "c" * 24) is None  # a link is not read through either
    code, out, _ = _cli(capsys, "info")
    assert code == 0 and "photos" not in out and "linked_kind" not in out

    assert len(enforce_budget(budget_mb=0)) == 2  # the cache's own entries only
    save_torch("features", "e" * 24, _blob(0.1))
    assert cache.clear() == (1, pytest.approx(0.1 * MB, abs=4096))
    with pytest.raises(ValueError, match="no cache kind 'photos'"):
        cache.clear("photos")
    missing = [str(p) for p in user_things if not os.path.lexists(p)]
    assert not missing, f"deleted what the cache did not write: {missing}"
    assert (outside / "album" / "big.jpg").stat().st_size == 3 * MB


def test_a_new_kind_is_marked_and_bad_names_are_refused(root):
    """A kind vizcore does not list yet is the cache's once the cache wrote it (its marker file);
    a kind or key that is not a plain name (a path) is refused with one line."""
    save_json("newkind", "k1", {"x": 1})
    assert (root / "newkind" / cache.MARKER).is_file()
    assert "newkind" in cache.kinds() and [e.path.name for e in entries(["newkind"])] == ["k1.json"]
    for kind, key in (("../outside", "k"), ("features", "../../x"), ("features", "a.b")):
        with pytest.raises(ValueError, match="bad cache (kind|key)"):
            save_json(kind, key, {})
    assert not (root.parent / "outside").exists()
