"""AppTest of the Activations page on the bundled EfficientNet-Lite0 with real photographs:
what the page shows must equal what the engine computes for the same image."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamlit.testing.v1 import AppTest

from dashboard import pages
from vizcore.activations import extract
from vizcore.render import channel_grid
from vizcore.data import load_image, load_sample

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
KEY = "activations"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(pages.ACTIVATIONS.path).run()
    assert not at.exception, at.exception
    return at


def _predictions(at: AppTest) -> list[str]:
    """Bar labels of the first plotly chart (the predictions), best first."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return list(reversed(spec["data"][0]["y"]))


def _expected(preds) -> list[str]:
    return [f"{p.label} ({p.index})" for p in preds]


def _grid_channels(caption: str) -> list[int]:
    return [int(c) for c in caption.split(": ", 1)[1].split(", ")]


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key=f"{KEY}_upload").set_value((name, data, mime)).run()
    assert not at.exception, at.exception
    return at


def _tap_labels(at: AppTest) -> list[str]:
    """Labels of the per-layer expanders (``**name** · kind · shape``)."""
    return [e.label for e in at.expander if e.label.startswith("**")]


def _badges(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "-badge[" in m.value]


def _crop_caption(at: AppTest) -> str:
    return at.image[0].captions[0]


def test_default_sample_renders_every_tap_grids_and_predictions(lite0):
    at = _app()
    assert [t.value for t in at.title] == ["Activations"]
    assert not at.error
    cat = load_sample("cat")
    res = extract(lite0, cat)
    taps = [t.name for t in lite0.taps()]
    # One expander per tap, in network order, labelled with the output shape.
    labels = _tap_labels(at)
    assert len(labels) == len(taps)
    for label, (name, la) in zip(labels, res.layers.items()):
        assert label.startswith(f"**{name}**")
        assert "×".join(map(str, la.shape)) in label
    # Predictions chart equals the engine's top-5 on the same photo.
    assert _predictions(at) == _expected(res.predictions)
    assert _crop_caption(at).startswith("cat: the 224px crop")
    # Every spatial tap has a grid image whose channels are the engine's top-16 by mean.
    spatial = [n for n, la in res.layers.items() if la.spatial]
    assert len(at.get("download_button")) == len(spatial)
    tap_expanders = [e for e in at.expander if e.label.startswith("**")]
    for exp, (name, la) in zip(tap_expanders, res.layers.items()):
        if not la.spatial:
            assert not exp.image
            continue
        assert len(exp.image) == 1
        _, chans = channel_grid(la.output, top=16, order="mean")
        assert _grid_channels(exp.image[0].captions[0]) == chans
        assert exp.image[0].value[0].endswith(".png")
    # The weight-source badge says the weights came from the bundled package.
    assert _badges(at) == [":green-badge[:material/verified: weights: package]"]


def test_upload_real_png_and_other_formats(lite0):
    at = _app()
    coffee = load_sample("coffee")
    coffee.thumbnail((200, 200))
    data = _png(coffee)
    _upload(at, "my_coffee.png", data)
    assert not at.error
    assert _crop_caption(at).startswith("my_coffee.png: the 224px crop")
    preds = extract(lite0, load_image(data), layers=["stem"]).predictions
    assert _predictions(at) == _expected(preds)
    assert preds[0].label in ("espresso", "cup", "coffee mug")
    assert len(_tap_labels(at)) == len(lite0.taps())

    # Modes a user may upload: CMYK JPEG, 16-bit greyscale, palette with transparency, EXIF-rotated JPEG.
    grey16 = Image.fromarray(np.asarray(coffee.convert("L"), dtype=np.uint16) * 257)
    assert grey16.mode == "I;16"
    rgba = coffee.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(coffee.size))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    variants = {
        "cmyk.jpg": (_png(coffee.convert("CMYK"), format="JPEG"), "image/jpeg"),
        "grey16.png": (_png(grey16), "image/png"),
        "palette.png": (_png(rgba.convert("P", palette=Image.Palette.ADAPTIVE)), "image/png"),
        "rgba.webp": (_png(rgba, format="WEBP"), "image/webp"),
        "rotated.jpg": (_png(coffee, format="JPEG", exif=exif.tobytes()), "image/jpeg"),
        "huge.jpg": (_png(load_sample("coffee").resize((4800, 3200)), format="JPEG", quality=70),
                     "image/jpeg"),
    }
    for name, (blob, mime) in variants.items():
        _upload(at, name, blob, mime)
        assert not at.error, (name, [e.value for e in at.error])
        assert _crop_caption(at).startswith(f"{name}: the 224px crop"), name
        expected = extract(lite0, load_image(blob), layers=["stem"]).predictions
        assert _predictions(at) == _expected(expected), name
    # EXIF orientation was honoured: the decoded upload is portrait although the pixels are landscape.
    assert load_image(variants["rotated.jpg"][0]).size == coffee.size[::-1]


def _bomb_png() -> bytes:
    """A valid PNG whose header claims 20000 x 20000 pixels (400 M: a decompression bomb)."""
    raw = _png(Image.new("L", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    start = raw.index(b"IHDR") - 4
    return raw[:start] + patched + raw[start + 25:]


@pytest.mark.parametrize("name,blob,words", [
    ("notes.txt", b"this is not an image at all\n" * 20, "not an image"),
    ("truncated.png", None, "truncated"),
    ("bomb.png", None, "bomb"),
    ("empty.jpg", b"", "not an image"),
])
def test_bad_upload_shows_error_and_page_keeps_working(lite0, name, blob, words):
    if name == "truncated.png":
        full = _png(load_sample("coffee"))
        blob = full[: len(full) // 2]
    elif name == "bomb.png":
        blob = _bomb_png()
    at = _app()
    _upload(at, name, blob)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and name in errors[0] and words in errors[0].lower(), errors
    # The built-in sample is shown instead, with all its layers.
    assert _crop_caption(at).startswith("cat: the 224px crop")
    assert len(_tap_labels(at)) == len(lite0.taps())
    assert _predictions(at) == _expected(extract(lite0, load_sample("cat"), layers=["stem"]).predictions)
    # ...and a good upload afterwards works again.
    good = load_sample("astronaut")
    good.thumbnail((160, 160))
    _upload(at, "astronaut.png", _png(good))
    assert not at.error
    assert _crop_caption(at).startswith("astronaut.png: the 224px crop")


def test_grid_tiles_are_numbered_and_the_channel_box_follows_a_new_image(lite0):
    from streamlit.runtime.memory_media_file_storage import _calculate_file_id

    from vizcore.render import channel_grid

    at = _app()
    res = extract(lite0, load_sample("cat"))
    name = "blocks.2.0"
    exp = next(e for e in at.expander if e.label.startswith(f"**{name}**"))
    grid, chans = channel_grid(res.layers[name].output, top=16, order="mean", cell=64, labels=True)
    assert exp.image[0].value[0].endswith(_calculate_file_id(_png(grid), "image/png") + ".png")  # numbered tiles

    def boxes() -> dict[str, tuple[int, int]]:
        """Per spatial layer: (the channel box, the grid's top channel)."""
        out = {}
        for e in at.expander:
            layer = e.label.split("**")[1] if e.label.startswith("**") else None
            box = [n for n in e.number_input if n.key == f"{KEY}_ch_efficientnet_lite0_{layer}"]
            if box and e.image:
                out[layer] = (box[0].value, _grid_channels(e.image[0].captions[0])[0])
        return out

    before = boxes()
    assert before and all(v == top for v, top in before.values())
    at.selectbox(key=f"{KEY}_sample").set_value("astronaut").run()
    assert not at.exception
    after = boxes()
    assert all(v == top for v, top in after.values()), after  # the new image's top channel
    assert any(after[la][1] != before[la][1] for la in after)  # the check can fail: some top channels moved
    # A channel the user picks stays while the image stays.
    at.number_input(key=f"{KEY}_ch_efficientnet_lite0_{name}").set_value(3).run()
    at.toggle(key=f"{KEY}_shared").set_value(True).run()
    assert at.number_input(key=f"{KEY}_ch_efficientnet_lite0_{name}").value == 3


def test_choose_another_sample_and_grid_options(lite0):
    at = _app()
    at.selectbox(key=f"{KEY}_sample").set_value("coffee").run()
    assert not at.exception and not at.error
    assert _crop_caption(at).startswith("coffee: the 224px crop")
    res = extract(lite0, load_sample("coffee"))
    assert _predictions(at) == _expected(res.predictions)
    # Fewer channels ranked by max, on a shared scale.
    at.slider(key=f"{KEY}_top").set_value(8)
    at.radio(key=f"{KEY}_order").set_value("max")
    at.toggle(key=f"{KEY}_shared").set_value(True)
    at.run()
    assert not at.exception
    la = res.layers["blocks.2.0"]
    exp = next(e for e in at.expander if e.label.startswith("**blocks.2.0**"))
    _, chans = channel_grid(la.output, top=8, order="max", shared_scale=True)
    assert _grid_channels(exp.image[0].captions[0]) == chans and len(chans) == 8


def test_gradcam_overlay_on_demand(lite0):
    at = _app()
    exp = next(e for e in at.expander if e.label.startswith("**blocks.3.0**"))
    assert len(exp.image) == 1  # grid only: Grad-CAM is not computed until asked for
    at.toggle(key=f"{KEY}_cam_efficientnet_lite0_blocks.3.0").set_value(True).run()
    assert not at.exception and not at.error
    exp = next(e for e in at.expander if e.label.startswith("**blocks.3.0**"))
    assert len(exp.image) == 2
    top1 = extract(lite0, load_sample("cat"), layers=["stem"]).predictions[0]
    assert exp.image[1].captions[0] == f"Grad-CAM at blocks.3.0 for {top1.label}"
    # The other layers stay without an overlay.
    other = next(e for e in at.expander if e.label.startswith("**blocks.4.0**"))
    assert len(other.image) == 1
    # Several layers side by side, for the second most likely class.
    second = extract(lite0, load_sample("cat"), layers=["stem"]).predictions[1]
    at.selectbox(key=f"{KEY}_cam_target_efficientnet_lite0").set_value(second.index)
    at.multiselect(key=f"{KEY}_cam_layers_efficientnet_lite0").set_value(["blocks.1.0", "blocks.5.0", "head"])
    at.run()
    assert not at.exception and not at.error
    gallery = next(e for e in at.expander if e.label == "Grad-CAM across layers")
    assert [i.captions[0] for i in gallery.image] == ["blocks.1.0", "blocks.5.0", "head"]
    exp = next(e for e in at.expander if e.label.startswith("**blocks.3.0**"))
    assert exp.image[1].captions[0] == f"Grad-CAM at blocks.3.0 for {second.label}"


def test_other_model_random_weights():
    at = _app()
    at.selectbox(key=f"{KEY}_model").set_value("resnet18")
    at.radio(key=f"{KEY}_weights").set_value("random")
    at.run()
    assert not at.exception and not at.error
    labels = _tap_labels(at)
    assert labels[0].startswith("**conv1**") and len(labels) == 12
    assert _badges(at) == [":orange-badge[:material/warning: weights: random init]"]


@pytest.mark.parametrize("button,words", [("dsx", ("dataset", "example", "patch")),
                                          ("fv", ("feature", "visuali"))])
def test_channel_buttons_switch_page_with_target(lite0, button, words):
    at = _app()
    at.number_input(key=f"{KEY}_ch_efficientnet_lite0_blocks.2.0").set_value(7).run()
    at.button(key=f"{KEY}_link_efficientnet_lite0_blocks.2.0_{button}").click().run()
    assert at.session_state["channel_target"] == {"model": "efficientnet_lite0", "layer": "blocks.2.0",
                                                  "channel": 7}
    titles = [t.value for t in at.title]
    assert "Activations" not in titles
    assert not [f for f in at.file_uploader if f.key == f"{KEY}_upload"]  # left the page
    assert any(word in t.lower() for t in titles for word in words), titles


def test_unknown_timm_model_shows_error(lite0):
    at = _app()
    at.text_input(key=f"{KEY}_timm").set_value("timm/not_a_real_model_xyz").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "not_a_real_model_xyz" in errors[0], errors
    assert not _tap_labels(at)
    # Clearing the name brings the default model back.
    at.text_input(key=f"{KEY}_timm").set_value("").run()
    assert not at.error and len(_tap_labels(at)) == len(lite0.taps())


def test_late_layer_maps_upsampled_over_the_image_and_unit_link(lite0):
    from urllib.parse import parse_qs

    from vizcore.render import overlay_grid

    at = _app()
    name = "blocks.5.0"
    exp = next(e for e in at.expander if e.label.startswith(f"**{name}**"))
    tiles = exp.image[0].value
    at.toggle(key=f"{KEY}_up_efficientnet_lite0_{name}").set_value(True).run()
    assert not at.exception and not at.error
    exp = next(e for e in at.expander if e.label.startswith(f"**{name}**"))
    assert len(exp.image) == 1 and exp.image[0].value != tiles
    chans = _grid_channels(exp.image[0].captions[0])
    res = extract(lite0, load_sample("cat"), layers=[name])
    expected = overlay_grid(lite0, name, res.layers[name].output, res.image, chans, cell=64, labels=True)
    assert expected.size == (4 * 66 + 2, 4 * 66 + 2)  # 16 channels in a 4 x 4 grid of 64 px overlays
    # Media ids are content hashes: the page shows exactly the engine's picture.
    from streamlit.runtime.memory_media_file_storage import _calculate_file_id

    assert exp.image[0].value[0].endswith(_calculate_file_id(_png(expected), "image/png") + ".png")
    # The other layers keep their tiles.
    other = next(e for e in at.expander if e.label.startswith("**blocks.4.0**"))
    assert other.image[0].value != exp.image[0].value
    # Every channel picker links to that channel's unit page.
    at.number_input(key=f"{KEY}_ch_efficientnet_lite0_{name}").set_value(5).run()
    links = [(p.proto.page, parse_qs(p.proto.query_string)) for p in at.get("page_link")]
    assert ("unit", {"model": ["efficientnet_lite0"], "weights": ["auto"], "layer": [name], "channel": ["5"]}) \
        in links


# ------------------------------------------------------------------ neighbours and arriving links
@pytest.fixture
def hundred(imagenet_samples, tmp_path) -> Path:
    """100 real photos (every 10th of the 1,000): two steps of the page's feature pass (4 batches of 16)."""
    folder = tmp_path / "hundred"
    folder.mkdir()
    for p in sorted(imagenet_samples.glob("*.jpg"))[::10][:100]:
        (folder / p.name).symlink_to(p)
    return folder


def test_neighbours_of_the_session_image_with_progress_stop_and_resume(lite0, hundred, tmp_path, monkeypatch):
    """The session's image is the query; the feature pass shows its progress and time left, stops,
    resumes where it stopped, and the page then shows the engine's neighbours at an early, a middle
    and the last tap, each row the query beside its neighbours."""
    import re

    from vizcore.data import open_dataset
    from vizcore.neighbours import nearest_neighbours

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    at = _app()
    assert at.radio(key=f"{KEY}_nb_source").value == "imagenet-samples"  # the default once present
    picks = at.multiselect(key=f"{KEY}_nb_layers_efficientnet_lite0").value
    taps = [t.name for t in lite0.taps() if t.kind not in ("input", "logits")]
    assert picks == [taps[0], taps[len(taps) // 2], taps[-1]], picks
    at.radio(key=f"{KEY}_nb_source").set_value("folder").run()
    at.text_input(key=f"{KEY}_nb_folder").set_value(str(hundred)).run()
    assert not at.exception, at.exception
    assert any("Press **Find neighbours**" in i.value and "100 images" in i.value for i in at.info)
    assert not at.get("progress")  # nothing runs before the press

    at.button(key=f"{KEY}_nb_start").click().run()  # one step: 4 batches of 16
    assert not at.exception, at.exception
    (bar,) = [p.proto.text for p in at.get("progress")]
    assert re.fullmatch(r"Pooled features of hundred: 64/100 images · [0-9.]+ (img/s|s/img) · "
                        r"about \d+ (s|min) left", bar), bar
    at.button(key=f"{KEY}_nb_stop").click().run()
    assert not at.exception, at.exception
    assert any("Stopped after 64 of 100 images" in m.value for m in at.warning)
    assert [b.label for b in at.button if b.key == f"{KEY}_nb_start"] == ["Resume"]
    assert not [s for s in at.main.subheader if s.value in picks]
    at.button(key=f"{KEY}_nb_start").click().run()  # resumes at 64: the last 36 images, then the result
    assert not at.exception, at.exception
    assert not at.get("progress")

    heads = [s.value for s in at.main.subheader]
    assert heads[-3:] == picks
    rows = [im.captions for im in at.image if im.captions and im.captions[0].startswith("query: ")]
    caps = [c for row in rows for c in row]
    sample = at.selectbox(key=f"{KEY}_sample").value
    assert len(rows) == 3 and all(row[0] == f"query: {sample}" and len(row) == 7 for row in rows)
    ref = nearest_neighbours(lite0, load_sample(sample), open_dataset(str(hundred)), picks, k=6, workers=0,
                             cache=False)
    hits = [c for c in caps if not c.startswith("query: ")]
    assert hits == [f"{Path(h.file).name} · {h.similarity:.3f}" for layer in picks for h in ref.layers[layer]]
    # a new session finds the features in the disk cache: neighbours at once, no button
    at2 = _app()
    at2.radio(key=f"{KEY}_nb_source").set_value("folder").run()
    at2.text_input(key=f"{KEY}_nb_folder").set_value(str(hundred)).run()
    assert [s.value for s in at2.main.subheader][-3:] == picks
    assert any("features from the cache" in c.value for c in at2.caption)


def test_arriving_on_a_layer_and_channel_from_another_page(lite0):
    """A channel target (what Similarity's Activations button sets) opens this page on that layer:
    first in the list, expanded, with the channel picked; "Network order" puts it back."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.session_state["channel_target"] = {"model": "efficientnet_lite0", "layer": "blocks.4.0", "channel": 7}
    at.switch_page(pages.ACTIVATIONS.path).run()
    assert not at.exception, at.exception
    labels = _tap_labels(at)
    assert labels[0].startswith("**blocks.4.0**")
    expanded = [e.label for e in at.expander if e.label.startswith("**") and e.proto.expanded]
    assert expanded == [labels[0]]
    assert at.number_input(key=f"{KEY}_ch_efficientnet_lite0_blocks.4.0").value == 7
    assert any("Opened on **blocks.4.0** (channel 7)" in i.value for i in at.info)
    # the channel can still be changed; later reruns keep the user's choice
    at.number_input(key=f"{KEY}_ch_efficientnet_lite0_blocks.4.0").set_value(3).run()
    assert at.number_input(key=f"{KEY}_ch_efficientnet_lite0_blocks.4.0").value == 3
    at.button(key=f"{KEY}_unfocus").click().run()
    assert not at.exception, at.exception
    assert [la.split("**")[1] for la in _tap_labels(at)] == [t.name for t in lite0.taps()]
