"""Bad input on every page: one clear ``st.error`` line, no exception, no traceback, no leak.

Each page's inputs get the values a careless or hostile visitor would type: an empty folder,
a folder of non-images, a text file, an unreadable path (``chmod 000``; as root it is
readable, so its content is not images either), a path outside ``VIZCORE_DATA_ROOTS``
(conftest allows pytest's tree, the reference data and the checkout), ``/etc/passwd`` as a
list, the whole filesystem; an unknown timm name; a corrupt upload.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.data import sample_path

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
TRACE_WORDS = ("Traceback", 'File "', ", line ", "site-packages")

pytestmark = pytest.mark.slow  # each case runs a page (a model is built once per session)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, str]:
    """Bad inputs by name, as typed into a path field."""
    base = tmp_path_factory.mktemp("bad")
    (base / "empty").mkdir()
    (base / "nonimages" / "cls").mkdir(parents=True)
    (base / "nonimages" / "a.txt").write_text("hello\n")
    (base / "nonimages" / "cls" / "b.csv").write_text("x,y\n")
    (base / "fake.png").write_text("password=hunter2\n")  # an image by name only, at the top
    (base / "notes.txt").write_text("password=hunter2\nsecret line\n")
    locked = base / "locked"
    locked.mkdir()
    (locked / "only.txt").write_text("password=hunter2\n")
    locked.chmod(0o000)  # unreadable; root reads it anyway and finds no image
    outside = Path(tempfile.mkdtemp(prefix="vizcore-outside-"))
    shutil.copy(sample_path("cat"), outside / "cat.png")
    yield {"empty folder": str(base / "empty"), "non-images": str(base / "nonimages"),
           "text file": str(base / "notes.txt"), "unreadable": str(locked), "outside roots": str(outside),
           "/etc/passwd": "/etc/passwd", "root": "/", "missing": str(base / "no-such-folder"),
           "dotdot escape": f"{base}/../../../..{outside}",
           # specs smuggled into the path field must stay paths (no stimuli root, no download)
           "prefixed spec": f"cue-conflict:{base}/nonimages", "download spec": "cifar10"}
    locked.chmod(0o700)
    shutil.rmtree(outside)


def _app(page: str, state: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def _one_clean_error(at: AppTest, *must: str) -> str:
    """The page raised nothing and shows exactly one error line without a traceback or leak."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    msg = errors[0]
    assert "\n" not in msg.strip() and not any(w in msg for w in TRACE_WORDS), msg
    assert "hunter2" not in msg and "secret line" not in msg and "root:x:" not in msg, msg
    for word in must:
        assert word in msg, (word, msg)
    return msg


DATASET_CASES = {
    "empty folder": "no images found",
    "non-images": "no images found",
    "text file": "notes.txt lists no readable image",
    "unreadable": "",  # permission denied, or (as root) no images found
    "outside roots": "VIZCORE_DATA_ROOTS",
    "/etc/passwd": "VIZCORE_DATA_ROOTS",
    "root": "VIZCORE_DATA_ROOTS",
    "missing": "no such dataset",
    "dotdot escape": "VIZCORE_DATA_ROOTS",
    "prefixed spec": "no such dataset: ./cue-conflict:",
    "download spec": "no such dataset: ./cifar10",
}


@pytest.mark.parametrize("page", ["dataset_examples", "probes", "embeddings"])
@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_dataset_folder_input(page, case, bad, lite0):
    at = _app(page, {f"{page}_source": "folder", f"{page}_folder": bad[case]})
    msg = _one_clean_error(at, "Cannot open the dataset", DATASET_CASES[case])
    if case == "unreadable":
        assert "permission denied" in msg or "no images found" in msg, msg
    assert not at.get("progress")  # no listing left on the page


def test_folder_walk_bound(monkeypatch, tmp_path, lite0):
    """A folder with more entries than VIZCORE_MAX_WALK_FILES stops with one line naming the bound."""
    (tmp_path / "big" / "c").mkdir(parents=True)
    for i in range(60):
        (tmp_path / "big" / "c" / f"{i}.txt").touch()
    monkeypatch.setenv("VIZCORE_MAX_WALK_FILES", "50")
    at = _app("dataset_examples", {"dataset_examples_source": "folder",
                                   "dataset_examples_folder": str(tmp_path / "big")})
    _one_clean_error(at, "more than 50 entries (VIZCORE_MAX_WALK_FILES)")


@pytest.mark.parametrize("case", ["non-images", "outside roots", "/etc/passwd", "text file"])
def test_cue_conflict_root_input(case, bad, lite0):
    at = _app("probes", {"probes_source": "cue-conflict", "probes_cc": bad[case]})
    _one_clean_error(at, "Cannot open the dataset")


def test_list_lines_are_reported_by_number_only(bad, tmp_path, lite0):
    shutil.copy(sample_path("cat"), tmp_path / "cat.png")
    lst = tmp_path / "mixed.txt"
    lst.write_text(f"cat.png\npassword=hunter2\n{bad['outside roots']}/cat.png\nmissing.png\n")
    at = _app("probes", {"probes_source": "folder", "probes_folder": str(lst)})
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("1 images" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["mixed.txt line 2", "mixed.txt line 3", "mixed.txt line 4"]
    assert list(table["error"]) == ["not an image file name", "outside the allowed folders", "no such file"]
    assert "hunter2" not in table.to_csv()


@pytest.mark.parametrize("case", ["empty folder", "non-images", "text file", "unreadable", "outside roots",
                                  "/etc/passwd", "dotdot escape"])
def test_shape_bias_stimuli_folder(case, bad, lite0):
    at = _app("shape_bias", {"shape_bias_stimuli": bad[case]})
    _one_clean_error(at)


@pytest.mark.parametrize("page", ["activations", "feature_viz", "dataset_examples", "embeddings"])
def test_unknown_timm_model(page):
    at = _app(page, {f"{page}_timm": "timm/not_a_real_model_xyz"})
    _one_clean_error(at, "not_a_real_model_xyz")


@pytest.mark.parametrize("page, state", [("architectures", {"architectures_models": []}),
                                         ("shape_bias", {"shape_bias_models": []})])
def test_unknown_timm_model_in_multi_model_pages(page, state):
    at = _app(page, {**state, f"{page}_timm": "not_a_real_model_xyz"})
    _one_clean_error(at, "not_a_real_model_xyz")


@pytest.mark.parametrize("page, state", [("activations", {}),
                                         ("compare", {"compare_models": ["efficientnet_lite0", "resnet18"]})])
def test_corrupt_upload(page, state, lite0):
    at = _app(page, state)
    at.file_uploader(key=f"{page}_upload").set_value(("photo.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 50,
                                                      "image/png")).run()
    _one_clean_error(at, "photo.png")
    assert at.image  # the page went on with the built-in image


def test_page_errors_are_one_line_and_tracebacks_only_in_debug(monkeypatch, lite0):
    """What a page raises is caught once in app.py: one line; with VIZCORE_DEBUG=1 also the traceback."""
    import dashboard.widgets.datasets as dw

    def boom(spec, roots):
        raise KeyError("stem")

    monkeypatch.setattr(dw, "_open_dataset", boom)  # an engine bug, not a bad input
    state = {"probes_source": "samples"}
    msg = _one_clean_error(_app("probes", state), "internal error (KeyError", "VIZCORE_DEBUG=1")
    assert "'stem'" in msg
    monkeypatch.setenv("VIZCORE_DEBUG", "1")
    at = _app("probes", state)
    assert len(at.error) == 1 and len(at.exception) == 1
    assert at.exception[0].value == "'stem'"
    assert 'raise KeyError("stem")' in "\n".join(at.exception[0].stack_trace)


def test_uncaught_page_exception_is_one_line(monkeypatch, lite0):
    """An exception no page catches (here from a widget helper) ends in app.py as one error line."""
    import dashboard.widgets.figures as fig

    def broken(*a, **k):
        raise RuntimeError("plot backend exploded\nsecond line of detail")

    monkeypatch.setattr(fig, "predictions_figure", broken)
    import dashboard.widgets as w

    monkeypatch.setattr(w, "predictions_figure", broken)
    msg = _one_clean_error(_app("activations", {}), "plot backend exploded")
    assert "second line" not in msg
    assert os.environ.get("VIZCORE_DEBUG") is None
