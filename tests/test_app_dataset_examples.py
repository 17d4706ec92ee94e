"""AppTest of the Dataset examples page: mining the built-in samples with the bundled model; the Mine
button, the ImageNet sample images, the time left and the grid filling in while mining runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import pages

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = pages.DATASET_EXAMPLES.path


def _open(at: AppTest, source: str = "samples") -> AppTest:
    at.session_state["dataset_examples_source"] = source
    at.switch_page(PAGE)
    return at.run()


def _mine(at: AppTest) -> AppTest:
    assert [b.label for b in at.button if b.key == "dataset_examples_start"] == ["Mine"]
    return at.button(key="dataset_examples_start").click().run()


def test_page_mines_samples_and_renders_grid(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path))  # a cold cache, whatever ran before
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.session_state["dataset_examples_layer"] = "blocks.1.0"  # 24 channels, shallow: quick
    at.session_state["dataset_examples_heat"] = False
    _open(at)
    assert not at.exception, at.exception
    assert at.title[0].value == "Dataset examples"
    assert not at.success and "Press **Mine**" in at.info[0].value  # nothing mined before the press
    _mine(at)
    assert not at.exception, at.exception
    ok = [s.value for s in at.success]
    assert ok and "10 images of **samples**" in ok[0] and "24 channels" in ok[0] and "mined now" in ok[0]
    captions = [c for im in at.image for c in im.captions]
    # the grid: 24 channel montages whose captions carry the engine's best value per channel
    from vizcore.patches import mine_top_patches

    ref = mine_top_patches(lite0, "samples", ["blocks.1.0"], k=9, batch_size=16, workers=0, cache=False)
    grid = sorted((c for c in captions if c.startswith("channel ")), key=lambda c: int(c.split()[1]))
    assert grid == [f"channel {c} · max activation {ref.layers['blocks.1.0'][c][0].value:.3g}" for c in range(24)]
    # the detail view of channel 0: its 9 patches, best first
    detail = [c for c in captions if c.startswith("#")]
    assert len(detail) == 9
    for r, (cap, hit) in enumerate(zip(detail, ref.layers["blocks.1.0"][0])):
        assert cap.startswith(f"#{r + 1} · {hit.value:.3g} · ")

    # a second visit (new session) is served from the disk cache
    at2 = AppTest.from_file(APP, default_timeout=240)
    at2.run()
    at2.session_state["dataset_examples_layer"] = "blocks.1.0"
    at2.session_state["dataset_examples_heat"] = False
    _open(at2)
    assert not at2.exception, at2.exception
    assert "from the cache" in at2.success[0].value


def test_channel_target_preselects_layer_and_channel(lite0):
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.session_state["channel_target"] = {"model": "efficientnet_lite0", "layer": "blocks.0.0", "channel": 5}
    _open(at)
    _mine(at)
    assert not at.exception, at.exception
    assert at.selectbox(key="dataset_examples_layer").value == "blocks.0.0"
    assert at.number_input(key="dataset_examples_channel").value == 5
    assert any("channel 5" in i.value for i in at.info)
    # detail view: 9 patches and their heatmaps
    assert "layer **blocks.0.0**" in at.success[0].value
    captions = [c for im in at.image for c in im.captions]
    assert sum(c.startswith("#") for c in captions) == 9
    assert sum(c.startswith("map at (") for c in captions) == 9
    at.number_input(key="dataset_examples_channel").set_value(3).run()
    assert not at.exception, at.exception
    assert at.number_input(key="dataset_examples_channel").value == 3

    # the channel's feature visualisation, on request (few steps, small image: quick)
    at.slider(key="dataset_examples_fv_steps").set_value(16)
    at.select_slider(key="dataset_examples_fv_size").set_value(96).run()  # (as a browser reruns on a change)
    at.button(key="dataset_examples_fv_start").click().run()  # a job: one run per few steps, until done
    for _ in range(10):
        assert not at.exception, at.exception
        if not [b for b in at.button if b.key == "dataset_examples_fv_stop"]:
            break
        at.run()
    assert not at.exception, at.exception
    fv = [c for im in at.image for c in im.captions if c.startswith("objective ")]
    assert len(fv) == 1
    start, final = (float(s) for s in fv[0].split("(")[0].replace("objective", "").split("→"))
    assert final > start


@pytest.mark.slow
def test_imagenet_samples_default_mine_button_time_left_and_partial_grid(lite0, imagenet_samples, monkeypatch,
                                                                         tmp_path):
    """The default dataset is the ImageNet sample images once present; mining starts on Mine only,
    shows done/total, img/s and the time left, fills the grid in, and stops and resumes."""
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path))
    monkeypatch.setenv("VIZCORE_IMAGENET_SAMPLES", str(imagenet_samples))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.session_state["dataset_examples_layer"] = "blocks.1.0"
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.radio(key="dataset_examples_source").value == "imagenet-samples"
    assert "1,000 images of imagenet-samples" in at.info[0].value
    at.run()  # sidebar changes and reruns never mine
    assert not at.get("progress") and not at.image
    _mine(at)
    assert not at.exception, at.exception
    (bar,) = [p.proto.text for p in at.get("progress")]
    # one step: 4 batches of 16; the bar's fraction and text come from the same counts
    assert re.fullmatch(r"Mining 3 layer\(s\) of efficientnet_lite0 over imagenet-samples: 64/1,000 images · "
                        r"[0-9.]+ (img/s|s/img) · about \d+ (s|min) left", bar), bar
    assert at.get("progress")[0].proto.value == 6  # percent: 64 / 1000
    assert any("top 9 of the first 64 images" in c.value for c in at.caption)
    grid = sorted((c for im in at.image for c in im.captions), key=lambda c: int(c.split()[1]))
    from vizcore.patches import mine_top_patches

    ref = mine_top_patches(lite0, f"imagenet-samples:{imagenet_samples}", ["blocks.1.0"], k=9, batch_size=16,
                           workers=0, cache=False, indices=range(64))
    assert grid == [f"channel {c} · max activation {ref.layers['blocks.1.0'][c][0].value:.3g}" for c in range(12)]
    assert not at.success  # not finished
    at.button(key="dataset_examples_stop").click().run()
    assert not at.exception, at.exception
    assert "Stopped after 64 of 1,000 images" in at.warning[0].value
    assert [b.label for b in at.button if b.key == "dataset_examples_start"] == ["Resume"]
    assert len([c for im in at.image for c in im.captions]) == 12  # the partial grid stays
    at.button(key="dataset_examples_start").click().run()
    assert "128/1,000 images" in at.get("progress")[0].proto.text


@pytest.mark.slow
def test_imagenet_samples_download_button(tmp_path, monkeypatch, http_server):
    """Without the photos on this machine, the dataset choice offers one Download (from a stand-in server
    here), with a progress bar; offline it says why in one message, and nothing is mined."""
    import io
    import zipfile

    from PIL import Image

    import dashboard.widgets.datasets as wd
    from vizcore.data import imagenet_samples as ims

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "vc"))
    monkeypatch.delenv("VIZCORE_IMAGENET_SAMPLES", raising=False)
    monkeypatch.setattr(wd, "SHARED_DATA", tmp_path / "no-shared-data")
    www, base = http_server
    buf = io.BytesIO()
    ref = tmp_path / "ref"  # the stand-in's photos, for their content digest
    ref.mkdir()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, name in enumerate(["n01440764_tench", "n01443537_goldfish"]):
            img = io.BytesIO()
            Image.new("RGB", (32, 32), (200 * i, 50, 50)).save(img, format="JPEG")
            zf.writestr(f"imagenet-sample-images-master/{name}.JPEG", img.getvalue())
            (ref / f"{name}.JPEG").write_bytes(img.getvalue())
    (www / "master.zip").write_bytes(buf.getvalue())
    monkeypatch.setattr(ims, "SAMPLES_URL", f"{base}/master.zip")
    monkeypatch.setattr(ims, "SAMPLES_COUNT", 2)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.radio(key="dataset_examples_source").value == "imagenet-samples"
    assert any("Not on this machine yet" in c.value for c in at.sidebar.caption)
    assert "Choose a dataset" in at.info[0].value
    assert not [b for b in at.button if b.key == "dataset_examples_start"]
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")  # offline: one clear message, nothing breaks
    at.button(key="dataset_examples_dl_imagenet").click().run()
    assert not at.exception, at.exception
    assert any("VIZCORE_OFFLINE=1" in e.value for e in at.error)
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    # the stand-in's photos are not the published ones: the pinned digest refuses them, nothing is kept
    at.button(key="dataset_examples_dl_imagenet").click().run()
    assert not at.exception, at.exception
    assert any("checksum mismatch" in e.value for e in at.error)
    assert ims.find_samples() is None
    monkeypatch.setattr(ims, "SAMPLES_DIGEST", ims.samples_digest(ref))
    at.button(key="dataset_examples_dl_imagenet").click().run()
    assert not at.exception, at.exception
    assert ims.find_samples() == ims.default_dir()
    assert any(f"From {ims.default_dir()}" in c.value for c in at.sidebar.caption)
    assert "in 2 images of imagenet-samples" in at.info[0].value  # ready to mine, not mined
