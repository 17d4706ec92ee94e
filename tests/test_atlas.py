"""Activation atlases (vizcore.atlas) on EfficientNet-Lite0 and 16 ImageNet samples: every cell's vector
is the mean of its members, cells plus too-small cells hold every vector, a class atlas's kept plus
dropped vectors are the sample, a fixed seed gives the same layout and icons, every icon's objective
rises from its start, and a dataset too small for the grid gets one line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vizcore.atlas import (AtlasError, AtlasJob, atlas_image, bin_layout, class_filter, layout_2d, place,
                           position_crop)
from vizcore.concepts import ConceptError, DirectionIconsJob, VectorJob
from vizcore.jobs import RunOptions, run

OPTS = RunOptions(batch_size=8, workers=0, cache=False)
LAYER = "blocks.3.0"  # 80 channels, 14x14
# small and quick; no transforms, so the objective optimised is the one measured
ICONS = dict(icon_steps=16, icon_size=32, icon_batch=8, icon_transforms="none")
pytestmark = pytest.mark.slow  # a UMAP fit and a few dozen optimisation steps: about a minute


@pytest.fixture(scope="module")
def ds16(imagenet_samples):
    from vizcore.data import open_dataset

    return open_dataset(str(imagenet_samples)).subset(range(0, 160, 10))


@pytest.fixture(scope="module")
def sample(lite0, ds16):
    return run(VectorJob(lite0, ds16, LAYER, per_image=8), OPTS)


@pytest.fixture(scope="module")
def atlas(lite0, ds16):
    return run(AtlasJob(lite0, ds16, LAYER, 3, per_image=8, min_count=3, options=OPTS, **ICONS), OPTS)


def test_each_cell_is_the_mean_of_its_members(atlas, sample):
    assert atlas.n_sample == 16 * 8 and len(atlas.kept) == atlas.n_sample and not len(atlas.dropped)
    vec = sample.vectors[atlas.kept]
    assert atlas.cells and len(atlas.means) == len(atlas.cells)
    for c, m in zip(atlas.cells, atlas.means):
        assert c["count"] == len(c["members"]) >= 3
        assert np.allclose(m, vec[c["members"]].mean(0), atol=1e-5)
        assert set(c["top"]) <= set(c["members"])
    members = np.concatenate([c["members"] for c in atlas.cells])
    bins = bin_layout(atlas.layout, 3, 3)
    assert sorted(np.concatenate([members, bins.empty_points]).tolist()) == list(range(len(atlas.kept)))
    assert (atlas.layout >= 0).all() and (atlas.layout <= 1).all()


def test_every_icon_rises_from_its_start(atlas):
    assert len(atlas.icons.images) == len(atlas.cells)
    assert all(f > s for s, f in zip(atlas.icons.start, atlas.icons.final))
    pic = atlas_image(atlas, cell=32)
    assert pic.size == (96, 96)
    c = atlas.cells[0]
    tile = np.asarray(pic.crop((c["col"] * 32, c["row"] * 32, c["col"] * 32 + 32, c["row"] * 32 + 32)))
    assert np.array_equal(tile, np.asarray(atlas.icons.images[0]))
    drawn = {(c["row"], c["col"]) for c in atlas.cells}
    empty = [(r, q) for r in range(3) for q in range(3) if (r, q) not in drawn]
    for r, q in empty:
        assert (np.asarray(pic.crop((q * 32, r * 32, q * 32 + 32, r * 32 + 32))) == 255).all()


def test_a_fixed_seed_gives_the_same_layout_and_icons(lite0, atlas, sample):
    vec = sample.vectors[atlas.kept]
    first = layout_2d(vec, seed=0)
    assert np.array_equal(layout_2d(vec.copy(), seed=0), first)
    assert not np.array_equal(layout_2d(vec, seed=1), first)
    again = run(DirectionIconsJob(lite0, LAYER, atlas.means, steps=16, size=32, seed=0, batch_size=8,
                                       transforms="none"), OPTS)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again.images, atlas.icons.images))


def test_class_atlas_keeps_the_strongest_vectors(lite0, ds16):
    a = run(AtlasJob(lite0, ds16, "head", 3, per_image=16, target="goldfish", keep=0.25, icon_steps=0,
                     options=OPTS), OPTS)
    assert a.target_label == "goldfish" and a.icons is None
    assert sorted(np.concatenate([a.kept, a.dropped]).tolist()) == list(range(a.n_sample))
    assert len(a.kept) == round(0.25 * a.n_sample)
    s = run(VectorJob(lite0, ds16, "head", per_image=16, target=a.target), OPTS).score
    assert s[a.kept].min() >= s[a.dropped].max()
    k, d = class_filter(np.array([3.0, 1.0, 3.0, 0.0]), 0.5)
    assert k.tolist() == [0, 2] and d.tolist() == [1, 3]


def test_the_session_image_is_placed_and_positions_cropped(lite0, atlas, imagenet_samples):
    img = Image.open(imagenet_samples / "n01443537_goldfish.jpg")
    pts = place(lite0, atlas, img)
    assert len(pts) == 14 * 14
    cells = {(c["row"], c["col"]) for c in atlas.cells}
    assert all((p["row"], p["col"]) in cells for p in pts)
    m = atlas.cells[0]["top"][0]
    crop = position_crop(lite0, atlas.files[int(atlas.image[m])], atlas.module, int(atlas.position[m]), atlas.hw)
    assert 8 < crop.size[0] <= 224


def test_bad_input_gets_one_clear_line(lite0, ds16):
    with pytest.raises(AtlasError, match=r"too few for a 20×20 grid: need at least 800"):
        AtlasJob(lite0, ds16, LAYER, 20, per_image=8)
    with pytest.raises(ConceptError, match="no spatial map"):
        AtlasJob(lite0, ds16, "pool", 3)
    with pytest.raises(AtlasError, match="unknown layout"):
        AtlasJob(lite0, ds16, LAYER, 3, method="pca")


def test_cli_atlas_writes_the_picture_and_cells(ds16, tmp_path, capsys):
    import json
    import os

    from vizcore.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in ds16.paths[:8]:
        os.symlink(p, folder / os.path.basename(p))
    out = tmp_path / "out"
    rc = main(["atlas", str(folder), "--layer", LAYER, "--grid", "2", "--per-image", "4", "--min-count", "2",
               "--icon-steps", "2", "--icon-size", "32", "--out", str(out), "--workers", "0", "--no-cache"])
    assert rc == 0
    js = json.loads((out / "atlas.json").read_text())
    assert js["grid"] == 2 and js["n_kept"] == 32 and sum(c["count"] for c in js["cells"]) <= 32
    assert Image.open(out / "atlas.png").size == (64, 64) and len(js["icons"]["final"]) == js["n_cells"]
    capsys.readouterr()
    assert main(["atlas", str(folder), "--layer", LAYER, "--grid", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vizcore atlas: error: 128 vectors (8 images × 16 positions) are too few for a 20×20 grid")
