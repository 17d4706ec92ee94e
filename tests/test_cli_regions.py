"""``vizcore detect`` and ``vizcore segment`` as a user runs them: files, JSON, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import vizcore
from vizcore.data import sample_path


@pytest.mark.slow
def test_detect_rcnn_and_fast_rcnn_write_boxes_and_overlay(tmp_path):
    img = tmp_path / "cat.png"
    Image.open(sample_path("cat")).resize((200, 133)).save(img)
    docs = {}
    for method in ("rcnn", "fast-rcnn"):
        out = tmp_path / method
        p = vizcore("detect", img, "--method", method, "--proposals", "30", "--threshold", "0.2", "--out", out,
                    "--json", "--no-cache")
        doc = json.loads(p.stdout)
        assert doc == json.loads((out / "detections.json").read_text())
        assert doc["proposals"] == 30 and doc["method"] == method
        assert all(d["score"] >= 0.2 for d in doc["detections"])
        overlay = Image.open(out / "overlay.png")
        assert overlay.size == (200, 133)
        if doc["detections"]:  # the overlay differs from the image where a box is drawn
            x1, y1 = (int(v) for v in doc["detections"][0]["box"][:2])
            assert not np.array_equal(np.asarray(overlay)[y1, x1:x1 + 5], np.asarray(Image.open(img).convert("RGB"))[y1, x1:x1 + 5])
        docs[method] = doc
    assert docs["rcnn"]["full_forward_passes"] == 30 and docs["fast-rcnn"]["full_forward_passes"] == 1
    assert docs["fast-rcnn"]["layer"] == "blocks.6" and docs["fast-rcnn"]["pool"] == "align"


@pytest.mark.slow
def test_detect_and_segment_with_torchvision_models(tmp_path):
    img = tmp_path / "horse.png"
    Image.open(sample_path("horse")).resize((160, 120)).save(img)
    p = vizcore("detect", img, "--method", "mask-rcnn", "--weights", "random", "--min-size", "128",
                "--threshold", "0", "--out", tmp_path / "m", "--json")
    doc = json.loads(p.stdout)
    assert doc["masks"] is None or doc["masks"][1:] == [120, 160]
    assert (tmp_path / "m" / "overlay.png").is_file()
    p = vizcore("segment", img, "--model", "deeplabv3_resnet50", "--weights", "random", "--size", "64",
                "--out", tmp_path / "s", "--json")
    doc = json.loads(p.stdout)
    assert doc["native_size"] == [8, 11] and abs(sum(c["fraction"] for c in doc["classes"]) - 1) < 1e-4
    assert Image.open(tmp_path / "s" / "mask.png").size == (160, 120)


def _error(capsys, *argv) -> str:
    """Run the CLI in this process; the one error line (after at most the weights line)."""
    from vizcore.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and "Traceback" not in "\n".join(err)
    errors = [ln for ln in err if "error:" in ln]
    assert len(errors) == 1 and err[-1] == errors[0] and errors[0].startswith(f"vizcore {argv[0]}: error:"), err
    return errors[0]


def test_detect_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 20), (90, 120, 30)).save(tiny)
    assert "too small for region proposals" in _error(capsys, "detect", tiny)
    cat = sample_path("cat")
    line = _error(capsys, "detect", cat, "--layer", "head", "--proposals", "5")
    assert "cannot start from 'head'" in line and "blocks.6" in line
    assert "classification model, not a detection one" in _error(
        capsys, "detect", cat, "--method", "faster-rcnn", "--model", "efficientnet_lite0")
    assert "detection model, not a classification one" in _error(
        capsys, "predict", cat, "--model", "fasterrcnn_resnet50_fpn_v2")
    assert "not a segmentation one" in _error(capsys, "segment", cat, "--model", "resnet18")
    assert "the number of proposals must be at least 1" in _error(capsys, "detect", cat, "--proposals", "0")


def test_activations_command_on_a_detectors_backbone(tmp_path):
    """The tap commands take a detector: its backbone's taps, no predictions; predict still refuses it."""
    img = tmp_path / "cat.png"
    Image.open(sample_path("cat")).resize((120, 80)).save(img)
    out = tmp_path / "acts"
    vizcore("activations", img, "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--weights", "random",
            "--layers", "backbone.body.0", "backbone.body.16", "--top", "4", "--out", out)
    index = json.loads((out / "index.json").read_text())
    assert index["predictions"] == [] and index["input_size"] == [800, 800]
    assert [(la["name"], la["output_shape"]) for la in index["layers"]] == [
        ("backbone.body.0", [16, 400, 400]), ("backbone.body.16", [960, 25, 25])]
    assert Image.open(out / index["layers"][0]["file"]).size[0] > 0
