"""The dashboard's file policy (vizcore.data.roots) and bounded, leak-free dataset listing."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from vizcore.data import sample_path
from vizcore.data.datasets import (
    WalkLimitError, image_folder, image_list, iter_batches, open_dataset,
)
from vizcore.data.roots import PathNotAllowedError, allowed_roots, check_allowed, is_allowed


@pytest.fixture
def outside():
    """A folder outside every allowed root (pytest's tree is allowed by conftest)."""
    d = Path(tempfile.mkdtemp(prefix="vizcore-outside-"))
    shutil.copy(sample_path("cat"), d / "secret.png")
    (d / "notes.txt").write_text("password=hunter2\n")
    yield d
    shutil.rmtree(d)


def _roots(*paths) -> tuple[Path, ...]:
    return tuple(Path(p).resolve() for p in paths)


def test_default_roots_are_home_cwd_and_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("VIZCORE_DATA_ROOTS", raising=False)
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    roots = allowed_roots([tmp_path / "extra"])
    assert roots == _roots(Path.home(), tmp_path, tmp_path / "cache", tmp_path / "extra")
    monkeypatch.setenv("VIZCORE_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert allowed_roots([tmp_path / "extra"]) == _roots(tmp_path / "a", tmp_path / "b")  # the env is the whole list


def test_check_allowed_resolves_dotdot_and_symlinks(tmp_path, outside):
    roots = _roots(tmp_path)
    (tmp_path / "data").mkdir()
    assert check_allowed(str(tmp_path / "data"), roots) == tmp_path / "data"
    assert check_allowed(str(tmp_path / "not-yet"), roots) == tmp_path / "not-yet"  # need not exist
    for bad in (outside, outside / "secret.png", f"{tmp_path}/data/../../..{outside}", "/etc/passwd", "/"):
        with pytest.raises(PathNotAllowedError) as e:
            check_allowed(str(bad), roots)
        msg = str(e.value)
        assert "\n" not in msg and "VIZCORE_DATA_ROOTS" in msg and str(bad) in msg
        assert str(tmp_path) not in msg.replace(str(bad), "")  # names no root
    (tmp_path / "link").symlink_to(outside)
    assert not is_allowed(tmp_path / "link" / "secret.png", roots)
    with pytest.raises(PathNotAllowedError):
        check_allowed(str(tmp_path / "link"), roots)
    with pytest.raises(ValueError):
        check_allowed("  ", roots)


def test_open_dataset_with_roots_refuses_outside_paths_and_escaping_links(tmp_path, outside):
    roots = _roots(tmp_path)
    d = tmp_path / "folder"
    (d / "cats").mkdir(parents=True)
    shutil.copy(sample_path("cat"), d / "cats" / "a.png")
    (d / "cats" / "b.png").symlink_to(outside / "secret.png")  # a link out of the roots
    (d / "out").symlink_to(outside)  # a folder link out of the roots
    for spec in (str(outside), f"cue-conflict:{outside}", f"edges:{outside}", f"any-future-prefix:{outside}",
                 "/etc/passwd"):
        with pytest.raises(PathNotAllowedError):
            open_dataset(spec, roots=roots)
    ds = open_dataset(str(d), roots=roots)
    assert ds.paths == [str(d / "cats" / "a.png")]
    # the CLI passes no roots: any path, links followed
    assert sorted(Path(p).name for p in open_dataset(str(d)).paths) == ["a.png", "b.png", "secret.png"]
    assert open_dataset(str(outside)).paths == [str(outside / "secret.png")]


def test_image_folder_order_and_labels(tmp_path):
    """Flat images first (labels.csv), then each class folder with all images below it, sorted."""
    root = tmp_path / "ds"
    for rel in ("z.png", "b.jpg", "dogs/2.png", "dogs/1.png", "dogs/deep/0.png", "dogs/.hid/3.png",
                "cats/x.PNG", ".hidden/y.png", "cats/readme.md", "cats/.dot.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_path("cat"), root / rel)
    (root / "labels.csv").write_text("file,label\nz.png,zebra\n")
    ds = image_folder(root)
    got = [(str(Path(p).relative_to(root)), lab) for p, lab in zip(ds.paths, ds.labels())]
    assert got == [("b.jpg", None), ("z.png", "zebra"), ("cats/x.PNG", "cats"), ("dogs/.hid/3.png", "dogs"),
                   ("dogs/1.png", "dogs"), ("dogs/2.png", "dogs"), ("dogs/deep/0.png", "dogs")]


def test_image_folder_walk_is_bounded_and_reports_progress(tmp_path):
    root = tmp_path / "many"
    (root / "c").mkdir(parents=True)
    for i in range(600):
        (root / "c" / f"{i:04d}.txt").touch()
    shutil.copy(sample_path("cat"), root / "c" / "cat.png")
    seen = []
    ds = image_folder(root, progress=lambda n, k: seen.append((n, k)))
    assert len(ds) == 1 and seen[-1] == (602, 1)  # the folder c, 600 texts, 1 image
    with pytest.raises(WalkLimitError, match=r"more than 500 entries \(VIZCORE_MAX_WALK_FILES\)"):
        image_folder(root, max_files=500)
    with pytest.raises(WalkLimitError, match="VIZCORE_MAX_WALK_SECONDS"):
        image_folder(root, max_seconds=0)
    os.environ["VIZCORE_MAX_WALK_FILES"] = "100"
    try:
        with pytest.raises(WalkLimitError, match="more than 100 entries"):
            open_dataset(str(root))
    finally:
        del os.environ["VIZCORE_MAX_WALK_FILES"]


def test_list_reports_bad_lines_by_number_never_by_text(tmp_path, outside):
    good = tmp_path / "good.png"
    shutil.copy(sample_path("cat"), good)
    (tmp_path / "fake.png").write_text("password=hunter2\n")  # named like an image, is not one
    lst = tmp_path / "list.txt"
    lst.write_text(f"# a comment\ngood.png\npassword=hunter2\n{outside}/secret.png\nmissing.png\nfake.png\n\n"
                   f"{tmp_path}\n")
    ds = image_list(lst, roots=_roots(tmp_path))
    assert ds.paths == [str(good), str(tmp_path / "fake.png")]
    assert ds.unlisted == [
        {"file": "list.txt line 3", "error": "not an image file name"},
        {"file": "list.txt line 4", "error": "outside the allowed folders"},
        {"file": "list.txt line 5", "error": "no such file"},
        {"file": "list.txt line 8", "error": "not an image file name"}]
    # a listed file that cannot be decoded is reported by its line too
    from torchvision import transforms as T

    from vizcore.data.datasets import BatchReport

    tf = T.Compose([T.Resize((32, 32)), T.ToTensor()])
    report = BatchReport()
    assert sum(len(i) for _, i in iter_batches(ds, tf, batch_size=2, workers=0, report=report)) == 1
    assert [s["file"] for s in report.skipped] == ["list.txt line 6"]
    assert "hunter2" not in repr(report.skipped) + repr(ds.unlisted)


def test_etc_passwd_as_a_list_is_one_clean_line():
    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("no /etc/passwd on this system")
    with pytest.raises(ValueError) as e:
        open_dataset(str(passwd))  # the CLI: allowed, but nothing in it is an image
    msg = str(e.value)
    assert msg.startswith("passwd lists no readable image") and "\n" not in msg
    first = passwd.read_text().splitlines()[0]
    assert first not in msg and first.split(":")[0] + ":" not in msg
    with pytest.raises(PathNotAllowedError):  # the dashboard never gets that far
        open_dataset(str(passwd), roots=_roots(tempfile.gettempdir() + "/nowhere"))


def test_binary_and_unreadable_lists(tmp_path):
    b = tmp_path / "blob.bin"
    b.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="blob.bin is not a text list of image paths"):
        image_list(b)
    assert open_dataset(str(b)).paths == [str(b)]  # binary: one image to try, as any image type
    latin = tmp_path / "latin.lst"
    latin.write_bytes("caf\xe9.png\n".encode("latin-1") * 10)
    with pytest.raises(ValueError, match="latin.lst is not a text list of image paths"):
        image_list(latin)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt lists no files"):
        open_dataset(str(empty))
