"""Texture vs shape (vizcore.cueconflict) and `vizcore shape-bias`.

Exact counts come from a tiny stand-in classifier with hand-set logits on
solid-colour stimuli; behaviour on the real stimuli from EfficientNet-Lite0.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from vizcore import cueconflict as cc
from vizcore.data import stimuli
from vizcore.models import LoadedModel, ModelSpec, Preprocess, WeightsInfo, get_spec

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ a hand-set stand-in classifier
# The dominant colour channel of the input picks one of three hand-set logit patterns.
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _patterns() -> torch.Tensor:
    t = torch.zeros(3, 1000)
    # red: knife (1 class) at 3.0 against ten bird classes at 3.5. Mean per category:
    # knife e^3 = 20.1 > bird (10 e^3.5 + 39) / 49 = 7.5, so the average rule says knife,
    # where max or sum aggregation would say bird.
    t[0, 499] = 3.0
    t[0, [8, 10, 11, 12, 13, 14, 15, 16, 18, 19]] = 3.5
    # green: one cat class at 5 against ten dog classes at 4: mean says cat
    # ((e^5 + 5) / 6 = 25.6 > (10 e^4 + 99) / 109 = 5.9), sum would say dog.
    t[1, 281] = 5.0
    t[1, 152:162] = 4.0
    # blue: African elephant.
    t[2, 386] = 8.0
    return t


class StandIn(nn.Module):
    def __init__(self, n_out: int = 1000):
        super().__init__()
        self.register_buffer("table", _patterns()[:, :n_out] if n_out <= 1000 else torch.zeros(3, n_out))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, n_out)
        return self.table[x.mean(dim=(2, 3)).argmax(dim=1)] + 0 * self.dummy


def standin(n_out: int = 1000, name: str = "standin") -> LoadedModel:
    spec = ModelSpec(name=name, family="test", builder=lambda: StandIn(n_out), taps=lambda m: [],
                     preprocess=Preprocess(resize=16, crop=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    return LoadedModel(spec=spec, model=StandIn(n_out).eval(), weights=WeightsInfo("random", "test"))


# cue-conflict file -> colour; expected decision in the comment
CUE = {
    "knife/knife1-bird1.png": RED,          # knife: shape hit
    "bird/bird2-knife2.png": RED,           # knife: texture hit
    "cat/cat1-elephant1.png": BLUE,         # elephant: texture hit
    "cat/cat2-dog1.png": GREEN,             # cat: shape hit
    "dog/dog2-cat3.png": GREEN,             # cat: texture hit
    "dog/dog3-elephant2.png": GREEN,        # cat: neither
    "bear/bear1-elephant3.png": BLUE,       # elephant: texture hit
    "elephant/elephant1-cat4.png": BLUE,    # elephant: shape hit
    "cat/cat5-cat6.png": GREEN,             # same class: dropped
}
SIL = {"cat/cat1.png": GREEN, "dog/dog1.png": GREEN, "knife/knife1.png": RED}  # 2 of 3 correct
EDGES = {"elephant/elephant1.png": BLUE}  # 1 of 1


def _write(root: Path, files: dict) -> None:
    for rel, colour in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), colour).save(p)


@pytest.fixture
def colour_stimuli(tmp_path) -> Path:
    root = tmp_path / "stimuli"
    _write(root / "style-transfer-preprocessed-512", CUE)
    _write(root / "filled-silhouettes", SIL)
    _write(root / "edges", EDGES)
    return root


# ---------------------------------------------------------------------------- the mapping
def test_sixteen_disjoint_categories_with_published_counts():
    assert len(cc.CATEGORIES) == 16 and list(cc.CATEGORIES) == sorted(cc.CATEGORIES)
    sizes = {c: len(ix) for c, ix in cc.CATEGORY_CLASSES.items()}
    assert sizes == cc.PUBLISHED_COUNTS
    assert sum(sizes.values()) == 207
    flat = [i for ix in cc.CATEGORY_CLASSES.values() for i in ix]
    assert len(flat) == len(set(flat)), "categories overlap"
    assert all(0 <= i < 1000 for i in flat)


def test_category_classes_name_the_right_imagenet_classes(imagenet_samples):
    rows = {int(r["index"]): (r["wnid"], r["label"])
            for r in csv.DictReader((imagenet_samples / "labels.csv").open())}
    label = {c: sorted(rows[i][1] for i in ix) for c, ix in cc.CATEGORY_CLASSES.items()}
    assert label["cat"] == sorted(["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "cougar"])
    assert label["elephant"] == ["African elephant", "Indian elephant"]
    assert label["knife"] == ["cleaver"] and label["oven"] == ["rotisserie"] and label["airplane"] == ["airliner"]
    assert rows[cc.CATEGORY_CLASSES["keyboard"][0]][0] == "n03085013"
    assert "minivan" in label["truck"] and "fire engine" in label["truck"]
    assert "wine bottle" in label["bottle"] and "water jug" in label["bottle"]
    # the dog range: Japanese spaniel .. Mexican hairless, without e.g. dalmatian
    dog = cc.CATEGORY_CLASSES["dog"]
    assert rows[dog[0]][1] == "Japanese spaniel" and rows[dog[-1]][1] == "Mexican hairless"
    assert "dalmatian" not in label["dog"] and "ostrich" not in label["bird"]
    assert {"goldfinch", "bald eagle", "king penguin", "black swan"} <= set(label["bird"])


def test_decide_uses_the_average_rule():
    t = _patterns()
    assert cc.decide(t) == ["knife", "cat", "elephant"]
    # the same logits under max / sum aggregation would decide differently (the test is sharp)
    probs = torch.softmax(t, dim=1).numpy()
    by_max = [max(cc.CATEGORIES, key=lambda c: p[list(cc.CATEGORY_CLASSES[c])].max()) for p in probs]
    by_sum = [max(cc.CATEGORIES, key=lambda c: p[list(cc.CATEGORY_CLASSES[c])].sum()) for p in probs]
    assert by_max[0] == "bird" and by_sum[1] == "dog"


# ------------------------------------------------------------------- exact counts, stand-in
def test_stand_in_counts_are_exact(colour_stimuli):
    r = cc.shape_bias(standin(), colour_stimuli, batch_size=3, workers=0, use_cache=False)
    got = {Path(d.file).name: d.decision for d in r.decisions}
    assert got == {"knife1-bird1.png": "knife", "bird2-knife2.png": "knife", "cat1-elephant1.png": "elephant",
                   "cat2-dog1.png": "cat", "dog2-cat3.png": "cat", "dog3-elephant2.png": "cat",
                   "bear1-elephant3.png": "elephant", "elephant1-cat4.png": "elephant"}
    assert r.n == 8  # cat5-cat6 dropped
    assert (r.shape_hits, r.texture_hits) == (3, 4)
    assert r.shape_bias == pytest.approx(3 / 7)
    assert r.shape_accuracy == pytest.approx(3 / 8) and r.texture_accuracy == pytest.approx(4 / 8)
    pc = r.per_category
    assert pc["knife"] == 1.0 and pc["bird"] == 0.0 and pc["cat"] == 0.5 and pc["dog"] == 0.0
    assert pc["elephant"] == 1.0 and pc["bear"] == 0.0 and pc["truck"] is None
    assert r.per_category_counts["dog"] == {"n": 2, "shape": 0, "texture": 1}
    assert (r.silhouettes.correct, r.silhouettes.n) == (2, 3)
    assert (r.edges.correct, r.edges.n) == (1, 1)
    j = r.to_json()
    assert j["silhouettes"] == pytest.approx(2 / 3) and j["edges"] == 1.0
    assert json.loads(json.dumps(j))["per_category"]["cat"] == 0.5


def test_progress_stop_cache_and_cue_conflict_folder_alone(colour_stimuli):
    lm = standin(name="standin-cache")
    calls = []
    r1 = cc.shape_bias(lm, colour_stimuli, batch_size=2, workers=0, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    r2 = cc.shape_bias(lm, colour_stimuli, batch_size=2, workers=0)
    assert r2.cached and not r1.cached
    assert r2.to_json(decisions=True) | {"seconds": 0} == r1.to_json(decisions=True) | {"seconds": 0}
    from vizcore.jobs import Stopped

    with pytest.raises(Stopped):
        cc.shape_bias(lm, colour_stimuli, workers=0, use_cache=False, should_stop=lambda: True)
    # the cue-conflict folder alone: no silhouettes or edges
    alone = cc.shape_bias(lm, colour_stimuli / "style-transfer-preprocessed-512", workers=0, use_cache=False)
    assert alone.n == 8 and alone.silhouettes is None and alone.edges is None
    assert "silhouettes" not in alone.to_json()


def test_step_by_step_equals_one_run_and_bad_files_are_skipped(colour_stimuli):
    (colour_stimuli / "style-transfer-preprocessed-512" / "cat" / "cat9-dog9.png").write_bytes(b"not a png")
    lm = standin(name="standin-steps")
    from vizcore.jobs import JobRun, RunOptions

    job = JobRun(cc.ShapeBiasJob.of(lm, colour_stimuli), RunOptions(batch_size=5, workers=0, cache=False))
    assert job.total == 13 and not job.complete
    seen, steps = [], 0
    while not job.complete:
        job.step(5, progress=lambda d, t: seen.append((d, t)))
        steps += 1
    assert steps == 3 and seen[:2] == [(5, 13), (10, 13)] and seen[-1] == (13, 13)  # batches of 5 indices
    stepped = job.result
    whole = cc.shape_bias(lm, colour_stimuli, batch_size=4, workers=1, use_cache=False)
    for r in (stepped, whole):
        assert (r.n, r.shape_hits, r.texture_hits) == (8, 3, 4)
        assert [Path(s["file"]).name for s in r.skipped] == ["cat9-dog9.png"]
    assert stepped.to_json(decisions=True) | {"seconds": 0} == whole.to_json(decisions=True) | {"seconds": 0}


def test_no_imagenet_head_is_a_clear_error(colour_stimuli):
    with pytest.raises(cc.NoImageNetHeadError, match="no 1000-class ImageNet head"):
        cc.check_imagenet_head(get_spec("timm/fastvit_mci0"))  # a CLIP image tower, 512 outputs
    lm = standin(10, name="standin-10")  # claims a head but outputs 10 scores
    with pytest.raises(cc.NoImageNetHeadError, match="not 1000 ImageNet class scores"):
        cc.shape_bias(lm, colour_stimuli, workers=0, use_cache=False)


# ------------------------------------------------------------------- stimuli: locate, download
def test_locate_stimuli(cue_conflict_root, tmp_path, monkeypatch):
    assert cc.locate_stimuli(cue_conflict_root) == cue_conflict_root
    alone = cue_conflict_root / "style-transfer-preprocessed-512"
    assert cc.locate_stimuli(alone) == alone
    monkeypatch.setenv("VIZCORE_STIMULI", str(cue_conflict_root))
    assert cc.locate_stimuli() == cue_conflict_root
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(cc.StimuliError, match="holds no cue-conflict stimuli"):
        cc.locate_stimuli(tmp_path / "other")


def test_stimuli_have_one_home(cue_conflict_root):
    """vizcore.data.stimuli owns the layout; cueconflict re-exports it, the dataset opener reads it."""
    from vizcore.data import cue_conflict_dataset, open_dataset

    for name in ("SUBSET_FOLDERS", "StimuliError", "locate_stimuli", "download_stimuli", "stimuli_digest",
                 "default_stimuli_dir"):
        assert getattr(cc, name) is getattr(stimuli, name)
    for sub, folder in stimuli.SUBSET_FOLDERS.items():
        ds = cue_conflict_dataset(cue_conflict_root, sub)
        assert all(f"/{folder}/" in p for p in ds.paths)
        assert len(open_dataset(f"{sub}:{cue_conflict_root}")) == len(ds)
    with pytest.raises(KeyError, match="cue-conflict, silhouettes, edges"):
        cue_conflict_dataset(cue_conflict_root, "sketches")


def test_published_digest_matches_the_reference_copy(cue_conflict_root):
    assert cc.stimuli_digest(cue_conflict_root) == cc.STIMULI_DIGEST
    for sub, n in cc.STIMULI_COUNTS.items():
        assert sum(1 for p in (cue_conflict_root / cc.SUBSET_FOLDERS[sub]).rglob("*") if p.is_file()) == n


def test_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    monkeypatch.delenv("VIZCORE_STIMULI", raising=False)
    t = time.perf_counter()
    with pytest.raises(cc.StimuliError, match="VIZCORE_OFFLINE.*--stimuli"):
        cc.locate_stimuli()  # nothing in the (temporary) cache -> would download
    with pytest.raises(cc.StimuliError, match="VIZCORE_OFFLINE"):
        cc.download_stimuli(tmp_path / "dl")
    # network allowed but nothing answers: still fast and clear
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    with pytest.raises(cc.StimuliError, match="cannot download the cue-conflict stimuli"):
        cc.download_stimuli(tmp_path / "dl", url="http://127.0.0.1:9/texture-vs-shape.zip", progress=False)
    assert time.perf_counter() - t < 10
    assert not (tmp_path / "dl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_download_from_a_local_server(tmp_path, http_server, monkeypatch, capfd):
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    www, base = http_server
    src = tmp_path / "src"
    _write(src / "style-transfer-preprocessed-512", {"cat/cat1-dog1.png": GREEN, "dog/dog1-cat1.png": RED})
    _write(src / "filled-silhouettes", {"cat/cat1.png": GREEN})
    _write(src / "edges", {"cat/cat1.png": BLUE})
    files = {f"texture-vs-shape-master/stimuli/{p.relative_to(src).as_posix()}": p.read_bytes()
             for p in src.rglob("*.png")}
    files["texture-vs-shape-master/README.md"] = b"not extracted"
    files["texture-vs-shape-master/stimuli/other-experiment/x.png"] = b"not extracted"
    (www / "ok.zip").write_bytes(_zip_of(files))
    digest = cc.stimuli_digest(src)
    counts = {"cue-conflict": 2, "silhouettes": 1, "edges": 1}

    dest = tmp_path / "cache" / "stimuli"
    got = cc.download_stimuli(dest, url=f"{base}/ok.zip", counts=counts, digest=digest, progress=True)
    assert got == dest and cc.stimuli_digest(dest) == digest
    assert sorted(p.name for p in dest.iterdir()) == ["edges", "filled-silhouettes", "style-transfer-preprocessed-512"]
    assert "texture-vs-shape.zip" in capfd.readouterr().err  # the tqdm bar
    assert cc.locate_stimuli(dest) == dest
    with pytest.raises(cc.StimuliError, match="checksum mismatch"):  # the published digest does not match
        cc.download_stimuli(tmp_path / "x", url=f"{base}/ok.zip", counts=counts, progress=False)
    # locate_stimuli: a missing --stimuli folder is downloaded into; with no path, the cache is
    monkeypatch.setattr(stimuli, "STIMULI_URL", f"{base}/ok.zip")  # where the download code reads them
    monkeypatch.setattr(stimuli, "STIMULI_DIGEST", digest)
    monkeypatch.setattr(stimuli, "STIMULI_COUNTS", counts)
    monkeypatch.delenv("VIZCORE_STIMULI", raising=False)
    assert cc.locate_stimuli(tmp_path / "given", progress=False) == tmp_path / "given"
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "vc"))
    assert cc.locate_stimuli(progress=False) == cc.default_stimuli_dir()
    assert cc.stimuli_digest(cc.default_stimuli_dir()) == digest
    assert cc.locate_stimuli(download=False) == cc.default_stimuli_dir()  # found in the cache now

    # wrong digest, wrong counts, unsafe paths, not a zip: errors, and nothing left behind
    for name, kwargs, match in [
        ("ok.zip", {"counts": counts, "digest": "0" * 64}, "checksum mismatch"),
        ("ok.zip", {"counts": {**counts, "edges": 160}, "digest": None}, "edges: 1 files, expected 160"),
    ]:
        with pytest.raises(cc.StimuliError, match=match):
            cc.download_stimuli(tmp_path / "bad", url=f"{base}/{name}", progress=False, **kwargs)
    (www / "evil.zip").write_bytes(_zip_of({"r/stimuli/edges/../../evil.png": b"x"}))
    with pytest.raises(cc.StimuliError, match="unsafe path"):
        cc.download_stimuli(tmp_path / "bad", url=f"{base}/evil.zip", digest=None, progress=False)
    (www / "junk.zip").write_bytes(b"this is not a zip")
    with pytest.raises(cc.StimuliError, match="not a valid zip"):
        cc.download_stimuli(tmp_path / "bad", url=f"{base}/junk.zip", digest=None, progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.rglob("*.part")]


# ------------------------------------------------------------------- real stimuli, real model
def test_lite0_decisions_match_a_direct_computation(lite0, cue_conflict_root):
    """The batched matrix rule agrees with a per-image numpy loop on real logits."""
    from vizcore.data import cue_conflict_dataset, load_image

    ds = cue_conflict_dataset(cue_conflict_root).subset(range(0, 1200, 150))
    x = torch.stack([lite0.transform()(load_image(p)) for p in ds.paths])
    with torch.inference_mode():
        logits = lite0.model(x)
    probs = torch.softmax(logits, 1).numpy()
    direct = []
    for p in probs:
        means = {c: float(np.mean(p[list(ix)])) for c, ix in cc.CATEGORY_CLASSES.items()}
        direct.append(max(sorted(means), key=lambda c: means[c]))
    assert cc.decide(logits) == direct


@pytest.mark.slow
def test_lite0_on_all_stimuli(lite0, cue_conflict_root):
    r = cc.shape_bias(lite0, cue_conflict_root, batch_size=16)
    assert r.n == 1200 and not r.skipped
    # The model-vs-human protocol: stimuli as they are (224 px, no resize to 256, no centre crop).
    assert r.protocol["crop"] is False and r.protocol["resize"] is False and r.protocol["input_size"] == 224
    # Bundled weights and checksummed stimuli make the decisions deterministic: pinned.
    assert (r.shape_hits, r.texture_hits) == (197, 626)
    assert (r.silhouettes.correct, r.edges.correct) == (83, 57)
    assert 0 < r.shape_bias < 1
    assert r.shape_hits + r.texture_hits <= 1200
    # a trained network decides for the shape or the texture class far above chance (2/16)
    assert r.shape_accuracy + r.texture_accuracy > 0.4
    assert r.texture_accuracy > r.shape_accuracy  # ImageNet CNNs are texture-biased
    assert r.silhouettes is not None and r.silhouettes.n == 160 and r.silhouettes.accuracy > 0.2
    assert r.edges is not None and r.edges.n == 160 and r.edges.accuracy > 0.15
    assert sum(v["n"] for v in r.per_category_counts.values()) == 1200
    assert all(v is None or 0 <= v <= 1 for v in r.per_category.values())


# ------------------------------------------------------------------- CLI contract
def _cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "vizcore", "shape-bias", *args], capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=timeout)


@pytest.fixture
def small_stimuli(tmp_path, cue_conflict_root) -> Path:
    """A real subset: 2 cue-conflict images per shape class, 1 silhouette and 1 edge drawing per class."""
    root = tmp_path / "small"
    for sub, per in (("style-transfer-preprocessed-512", 3), ("filled-silhouettes", 1), ("edges", 1)):
        for d in sorted((cue_conflict_root / sub).iterdir()):
            (root / sub / d.name).mkdir(parents=True)
            for f in sorted(d.iterdir())[:per]:
                shutil.copy(f, root / sub / d.name / f.name)
    return root


@pytest.mark.slow
def test_cli_json_contract(small_stimuli, tmp_path):
    out = tmp_path / "out" / "sb.json"
    p = _cli("--model", "efficientnet_lite0", "--stimuli", str(small_stimuli), "--json", "--out", str(out))
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert json.loads(out.read_text()) == j
    for k in ("model", "weights", "n", "shape_hits", "texture_hits", "shape_bias", "shape_accuracy",
              "texture_accuracy", "per_category", "silhouettes", "edges"):
        assert k in j, k
    assert j["model"] == "efficientnet_lite0" and j["weights"]["source"] == "package"
    # 3 files per class, of which the airplane1-airplane1 style same-class ones are dropped
    assert 16 * 2 <= j["n"] <= 16 * 3
    assert j["shape_hits"] + j["texture_hits"] <= j["n"]
    if j["shape_hits"] + j["texture_hits"]:
        assert j["shape_bias"] == pytest.approx(j["shape_hits"] / (j["shape_hits"] + j["texture_hits"]))
    assert j["shape_accuracy"] == pytest.approx(j["shape_hits"] / j["n"])
    assert set(j["per_category"]) == set(cc.CATEGORIES)
    assert 0 <= j["silhouettes"] <= 1 and j["silhouettes_n"] == 16 and j["edges_n"] == 16
    assert "img" in p.stderr  # tqdm progress on stderr
    # human-readable text (cached now)
    t = _cli("--model", "efficientnet_lite0", "--stimuli", str(small_stimuli))
    assert t.returncode == 0, t.stderr
    assert "shape bias" in t.stdout and "human observers" in t.stdout and "clock" in t.stdout


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(tmp_path):
    p = _cli("--model", "timm/fastvit_mci0", "--stimuli", str(tmp_path), timeout=120)
    assert p.returncode == 2 and "no 1000-class ImageNet head" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    env = {"VIZCORE_OFFLINE": "1", "VIZCORE_STIMULI": "", "VIZCORE_CACHE": str(tmp_path / "empty-cache")}
    t = time.perf_counter()
    p = _cli("--model", "efficientnet_lite0", env=env, timeout=120)
    assert p.returncode == 2 and "VIZCORE_OFFLINE" in p.stderr and "--stimuli" in p.stderr
    assert "Traceback" not in p.stderr
    assert time.perf_counter() - t < 60
    p = _cli("--model", "no_such_net", "--stimuli", str(tmp_path), timeout=120)
    assert p.returncode == 2 and "unknown model" in p.stderr
