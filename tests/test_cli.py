"""The command line as a user runs it (``python -m vizcore``): JSON contracts and error exits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizcore.data import sample_path

ROOT = Path(__file__).resolve().parents[1]


def vizcore(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIZCORE_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.pop("VIZCORE_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "vizcore", *map(str, args)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=600)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout == ""
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_models_json():
    rows = json.loads(vizcore("models", "--json").stdout)
    names = [r["name"] for r in rows]
    for n in ("alexnet", "vgg16_bn", "vgg_c", "googlenet", "inception_v3", "resnext50_32x4d",
              "wide_resnet50_2", "densenet201", "mobilenet_v3_small", "bagnet33", "efficientnet_lite0"):
        assert n in names
    assert all(set(r) == {"name", "family", "weights"} for r in rows)
    by = {r["name"]: r for r in rows}
    assert by["efficientnet_lite0"] == {"name": "efficientnet_lite0", "family": "efficientnet",
                                        "weights": "package"}
    assert by["vgg_c"]["weights"] == "random" and by["resnet50"]["family"] == "resnet"
    assert {r["weights"] for r in rows} <= {"package", "hub-cache", "download", "random"}
    text = vizcore("models").stdout
    assert "timm/<name>" in text and "efficientnet_lite0" in text


@pytest.mark.slow
def test_layers_json():
    rows = json.loads(vizcore("layers", "--model", "resnet18", "--json").stdout)
    assert all({"name", "kind", "output_shape"} <= set(r) for r in rows)
    assert rows[0] == {"name": "conv1", "kind": "stem", "module": "relu", "output_shape": [64, 112, 112]}
    assert [r["name"] for r in rows][-3:] == ["layer4.1", "avgpool", "fc"]
    assert rows[-1]["output_shape"] == [1000] and rows[-1]["kind"] == "logits"
    inc = json.loads(vizcore("layers", "--model", "inception_v3", "--json").stdout)
    assert inc[0]["output_shape"] == [32, 149, 149]  # at its own 299 x 299 input
    small = json.loads(vizcore("layers", "--model", "alexnet", "--json", "--input-size", "127").stdout)
    assert {r["name"]: r["output_shape"] for r in small}["conv1"] == [64, 31, 31]
    text = vizcore("layers", "--model", "vgg16").stdout
    assert "conv5_3" in text and "512x14x14" in text


@pytest.mark.slow
def test_predict_json():
    cat, coffee = sample_path("cat"), sample_path("coffee")
    p = vizcore("predict", cat, coffee, "--topk", "3", "--json")
    rows = json.loads(p.stdout)
    assert [r["file"] for r in rows] == [str(cat), str(coffee)]
    for r in rows:
        assert set(r) == {"file", "model", "weights", "predictions"}
        assert r["model"] == "efficientnet_lite0" and r["weights"] == "package"
        assert len(r["predictions"]) == 3
        assert all(set(q) == {"index", "label", "prob"} for q in r["predictions"])
        probs = [q["prob"] for q in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert rows[0]["predictions"][0]["index"] in range(281, 286)
    assert rows[1]["predictions"][0]["index"] in (967, 968)
    assert rows[1]["predictions"][0]["label"] in ("espresso", "cup")
    assert p.stderr.count("weights from package") == 1  # one model load for all images
    text = vizcore("predict", cat).stdout
    assert str(cat) in text and "%" in text


@pytest.mark.slow
def test_predict_with_weights_file(tmp_path):
    from vizcore.models import build, get_spec

    torch.manual_seed(0)
    ckpt = tmp_path / "mnv3s.pth"
    torch.save(build(get_spec("mobilenet_v3_small")).state_dict(), ckpt)
    p = vizcore("predict", sample_path("cat"), "--model", "mobilenet_v3_small", "--weights", ckpt, "--json")
    assert json.loads(p.stdout)[0]["weights"] == "file"
    assert f"weights from file: {ckpt}" in p.stderr


@pytest.mark.slow
def test_activations_writes_grids_and_index(tmp_path):
    out = tmp_path / "acts"
    vizcore("activations", sample_path("cat"), "--out", out, "--top", "9", "--cell", "20")
    index = json.loads((out / "index.json").read_text())
    assert index["model"] == "efficientnet_lite0" and index["weights"]["source"] == "package"
    assert index["predictions"][0]["index"] in range(281, 286)
    layers = index["layers"]
    assert [entry["name"] for entry in layers][:2] == ["stem", "blocks.0.0"] and len(layers) == 20
    for entry in layers:
        assert {"name", "module", "output_shape", "stats", "file", "channels_shown"} <= set(entry)
        c = entry["output_shape"][0]
        assert len(entry["stats"]["mean"]) == c and len(entry["stats"]["max"]) == c
        assert len(entry["channels_shown"]) == min(9, c)
        img = Image.open(out / entry["file"])
        assert img.size == (3 * 20 + 4 * 2, 3 * 20 + 4 * 2)
    assert len(list(out.glob("*.png"))) == len(layers) + 1  # plus the input crop
    assert Image.open(out / "input.png").size == (224, 224)

    out2 = tmp_path / "two"
    vizcore("activations", sample_path("coffee"), "--out", out2, "--layers", "head", "stem", "logits",
            "--top", "4", "--order", "max", "--shared-scale", "--gradcam")
    idx2 = json.loads((out2 / "index.json").read_text())
    assert [entry["name"] for entry in idx2["layers"]] == ["stem", "head", "logits"]  # network order
    assert idx2["predictions"][0]["index"] in (967, 968)
    assert idx2["gradcam_target"] == idx2["predictions"][0]["index"]
    head = idx2["layers"][1]
    assert Image.open(out2 / head["gradcam"]).size == (224, 224)
    assert "gradcam" not in idx2["layers"][2]  # logits have no spatial extent
    assert idx2["grid"] == {"top": 4, "order": "max", "shared_scale": True, "cell": 64}
    stem = idx2["layers"][0]
    assert stem["channels_shown"] == list(np.argsort(-np.array(stem["stats"]["max"]), kind="stable")[:4])


ERRORS = [
    (["layers", "--model", "resnet05"], ["unknown model 'resnet05'", "resnet50"]),
    (["predict", "CAT", "--model", "vgg_16"], ["unknown model", "vgg16"]),
    (["activations", "CAT", "--out", "OUT", "--layers", "blocks.9.0"],
     ["unknown layer 'blocks.9.0'", "Closest valid names"]),
    (["activations", "CAT", "--out", "OUT", "--model", "resnet18", "--layers", "layer4.7"],
     ["unknown layer", "layer4.1"]),
    (["predict", "CAT", "NOT_AN_IMAGE"], ["cannot read", "notes.jpg", "not an image"]),
    (["predict", "MISSING"], ["no such file"]),
    (["activations", "TRUNCATED", "--out", "OUT"], ["cannot read", "truncated"]),
    (["predict", "CAT", "--model", "resnet18", "--weights", "EVIL"],
     ["evil.pth was refused for safety: loading it would call builtins.exec"]),
    (["predict", "CAT", "--model", "resnet18", "--weights", "NOT_AN_IMAGE"],
     ["notes.jpg is not a PyTorch checkpoint (it looks like a text file)"]),
    (["predict", "CAT", "--model", "resnet18", "--weights", "NAN18"],
     ["weights refused: tensor conv1.weight holds NaN"]),
    (["predict", "CAT", "--model", "resnet34", "--weights", "R18"], ["weights do not fit resnet34", "missing keys"]),
    (["predict", "CAT", "--topk", "0"], ["--topk"]),
    (["predict", "BOMB"], ["bomb.png: 400,000,000 pixels is more than the 100,000,000 allowed",
                           "decompression bomb"]),
]
# These run as real subprocesses; the rest call vizcore.cli.main in-process (same code,
# no interpreter start-up), which keeps this file fast on a small CPU.
IN_SUBPROCESS = {0, 2, 4, 7}


@pytest.mark.parametrize("case", [pytest.param(i, marks=pytest.mark.slow) if i in IN_SUBPROCESS else i
                                  for i in range(len(ERRORS))])
def test_errors_are_one_line(tmp_path, case, capsys):
    args, needles = ERRORS[case]
    from vizcore.models import build, get_spec

    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    data = sample_path("coffee").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 3])
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"\x80\x02cbuiltins\nexec\nq\x00X\x05\x00\x00\x00print\x85R.")
    r18 = tmp_path / "r18.pth"
    if "R18" in args:
        torch.save(build(get_spec("resnet18")).state_dict(), r18)
    bomb = tmp_path / "bomb.png"
    if "BOMB" in args:
        import struct
        import zlib

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    nan18 = tmp_path / "nan18.pth"
    if "NAN18" in args:
        state = build(get_spec("resnet18")).state_dict()
        state["conv1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, nan18)
    subs = {"CAT": sample_path("cat"), "NOT_AN_IMAGE": bad, "MISSING": tmp_path / "missing.png",
            "TRUNCATED": cut, "EVIL": evil, "R18": r18, "NAN18": nan18, "BOMB": bomb, "OUT": tmp_path / "out"}
    argv = [str(subs.get(a, a)) for a in args]
    if case in IN_SUBPROCESS:
        p = vizcore(*argv, ok=False)
    else:
        from vizcore.cli import main

        code = main(argv)
        cap = capsys.readouterr()
        p = subprocess.CompletedProcess(argv, code, cap.out, cap.err)
    line = assert_one_line_error(p, *needles)
    assert line.startswith(f"vizcore {args[0]}: error:")
    assert not (tmp_path / "out").exists()
