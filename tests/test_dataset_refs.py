"""Short dataset names for addresses (vizcore.data.refs): never a server path, never outside the roots."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vizcore.data.refs import (
    DatasetRefError, dataset_ref, ref_spec, resolve_dataset_ref, root_names,
)
from vizcore.data.roots import PathNotAllowedError


@pytest.fixture
def tree(tmp_path) -> dict[str, Path]:
    """Two data roots (``srv/data`` and ``srv/more``), a folder of images in each, a root named like
    the first, and a secret folder outside every root."""
    data, more, again = tmp_path / "srv" / "data", tmp_path / "srv" / "more", tmp_path / "other" / "data"
    secret = tmp_path / "secret"
    for d in (data / "cats" / "tabby", more / "dogs", again / "x", secret):
        d.mkdir(parents=True)
    for i, d in enumerate((data / "cats" / "tabby", more / "dogs", secret)):
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(d / f"img{i}.png")
    (data / "escape").symlink_to(secret)  # a symlink under a root that leads out of it
    return {"data": data, "more": more, "again": again, "secret": secret,
            "roots": (data.resolve(), more.resolve(), again.resolve())}


def test_root_names_are_folder_names_made_unique(tree):
    assert list(root_names(tree["roots"])) == ["data", "more", "data-2"]


def test_a_folder_is_named_by_its_root_and_relative_path_and_resolves_back(tree):
    roots = tree["roots"]
    ref = dataset_ref(str(tree["data"] / "cats"), roots)
    assert ref == "data/cats"
    assert str(tree["data"]) not in ref and not ref.startswith("/")
    assert ref_spec(ref, roots) == str(tree["roots"][0] / "cats")
    ds = resolve_dataset_ref(ref, roots)
    assert [Path(p).name for p in ds.paths] == ["img0.png"] and ds.labels() == ["tabby"]
    assert dataset_ref(str(tree["more"] / "dogs"), roots) == "more/dogs"
    assert dataset_ref(str(tree["again"] / "x"), roots) == "data-2/x"
    # A prefixed spec keeps its prefix; the path after it is named the same way.
    assert dataset_ref(f"cue-conflict:{tree['more']}", roots) == "cue-conflict:more/"


def test_offered_datasets_have_their_own_short_names(tree):
    roots, imagenet, stimuli = tree["roots"], str(tree["more"] / "dogs"), str(tree["data"] / "cats")
    kw = {"imagenet": imagenet, "stimuli": stimuli}
    assert dataset_ref("samples", roots) == "builtin"
    assert ref_spec("builtin", roots) == ref_spec("samples", roots) == "samples"
    assert dataset_ref(f"imagenet-samples:{imagenet}", roots, **kw) == "imagenet-samples"
    assert ref_spec("imagenet-samples", roots, **kw) == f"imagenet-samples:{imagenet}"
    assert dataset_ref(f"cue-conflict:{stimuli}", roots, **kw) == "stimuli"
    assert dataset_ref(f"edges:{stimuli}", roots, **kw) == "edges:stimuli"
    assert ref_spec("stimuli", roots, **kw) == f"cue-conflict:{stimuli}"
    assert ref_spec("edges:stimuli", roots, **kw) == f"edges:{stimuli}"
    assert dataset_ref("cifar10:train", roots) == ref_spec("cifar10:train", roots) == "cifar10:train"
    with pytest.raises(DatasetRefError, match="no cue-conflict stimuli"):
        ref_spec("stimuli", roots)


@pytest.mark.parametrize("ref,error,words", [
    ("/etc", DatasetRefError, "not by a path"),
    ("~/x", DatasetRefError, "not by a path"),
    ("data/../../secret", DatasetRefError, "'..'"),
    ("data/cats/../../..", DatasetRefError, "'..'"),
    ("nope/cats", DatasetRefError, "unknown dataset"),
    ("data/escape", PathNotAllowedError, "outside"),
    ("cue-conflict:data/escape", PathNotAllowedError, "outside"),
    ("imagenet-samples:/etc", DatasetRefError, "not by a path"),
])
def test_resolving_refuses_anything_outside_the_roots(tree, ref, error, words):
    with pytest.raises(error, match=words) as e:
        resolve_dataset_ref(ref, tree["roots"])
    assert str(tree["secret"]) not in str(e.value)
    assert "\n" not in str(e.value)


def test_a_path_outside_the_roots_has_no_short_name(tree):
    with pytest.raises(PathNotAllowedError):
        dataset_ref(str(tree["secret"]), tree["roots"])
    with pytest.raises(PathNotAllowedError):
        dataset_ref(str(tree["data"] / "escape"), tree["roots"])  # resolved through the symlink
