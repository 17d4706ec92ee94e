"""ImageNet sample images: locating them, the `imagenet-samples` spec, and the download itself
(against a stand-in server on 127.0.0.1 serving a small archive built here)."""
from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import pytest

from vizcore.data import open_dataset
from vizcore.data import imagenet_samples as ims


def _jpeg(colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 16), colour).save(buf, format="JPEG")
    return buf.getvalue()


# Real classes, named as in the repository (note the two "crane"s: labels come from the wnid).
PHOTOS = {"n01440764_tench.JPEG": _jpeg((200, 30, 30)), "n02012849_crane.JPEG": _jpeg((30, 200, 30)),
          "n03126707_crane.JPEG": _jpeg((30, 30, 200))}


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def archive(http_server, tmp_path):
    """The repository's layout: a top folder with the photos and a README; returns (url, digest)."""
    www, base = http_server
    files = {f"imagenet-sample-images-master/{k}": v for k, v in PHOTOS.items()}
    files["imagenet-sample-images-master/README.md"] = b"not a photo"
    files["imagenet-sample-images-master/gallery.jpg"] = _jpeg((0, 0, 0))  # not n<wnid>_<label>: left out
    (www / "master.zip").write_bytes(_zip(files))
    ref = tmp_path / "ref"
    ref.mkdir()
    for k, v in PHOTOS.items():
        (ref / k).write_bytes(v)
    return f"{base}/master.zip", ims.samples_digest(ref)


def test_download_labels_and_dataset(archive, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    url, digest = archive
    dest = tmp_path / "cache" / "imagenet-samples"
    got = ims.download_samples(dest, url=url, count=3, digest=digest, progress=True)
    assert got == dest
    assert "imagenet-sample-images.zip" in capfd.readouterr().err  # the tqdm bar
    assert sorted(p.name for p in dest.iterdir()) == sorted([*PHOTOS, "labels.csv", "manifest.json"])
    rows = list(csv.DictReader((dest / "labels.csv").open()))
    assert [(r["index"], r["wnid"], r["label"], r["file"]) for r in rows] == [
        ("0", "n01440764", "tench", "n01440764_tench.JPEG"),
        ("134", "n02012849", "crane", "n02012849_crane.JPEG"),   # the bird
        ("517", "n03126707", "crane", "n03126707_crane.JPEG"),   # the machine
    ]
    assert json.loads((dest / "manifest.json").read_text())["digest"] == digest
    seen = []  # the dashboard's bar: bytes done and total
    ims.download_samples(tmp_path / "again", url=url, count=3, digest=digest, progress=lambda d, t: seen.append((d, t)))
    size = (tmp_path / "www" / "master.zip").stat().st_size
    assert seen and seen[-1] == (size, size)
    ds = open_dataset(f"imagenet-samples:{dest}")
    assert ds.name == "imagenet-samples" and len(ds) == 3
    assert ds.labels() == ["tench", "crane", "crane"]
    # the cache is found again without a download, by the plain spec too
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "vc"))
    monkeypatch.delenv(ims.ENV, raising=False)
    monkeypatch.setattr(ims, "SAMPLES_URL", url)
    monkeypatch.setattr(ims, "SAMPLES_COUNT", 3)
    monkeypatch.setattr(ims, "SAMPLES_DIGEST", digest)
    assert ims.find_samples() is None
    ds = open_dataset("imagenet-samples")  # downloads into the cache, once
    assert ims.find_samples() == ims.default_dir() and len(ds) == 3
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    assert len(open_dataset("imagenet-samples")) == 3  # offline now: served from the cache


def test_checksum_count_and_bad_archives_leave_nothing(archive, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    url, digest = archive
    www, base = http_server
    bad = tmp_path / "bad"
    with pytest.raises(ims.SamplesError, match="checksum mismatch"):
        ims.download_samples(bad, url=url, count=3, digest="0" * 64, progress=False)
    with pytest.raises(ims.SamplesError, match="3 photos, expected 1000"):
        ims.download_samples(bad, url=url, digest=None, progress=False)
    # the published digest is pinned and checked by default: a right-sized set of other photos fails it
    assert ims.SAMPLES_COMMIT in ims.SAMPLES_URL and len(ims.SAMPLES_DIGEST) == 64
    with pytest.raises(ims.SamplesError, match=f"checksum mismatch.*!= {ims.SAMPLES_DIGEST[:16]}"):
        ims.download_samples(bad, url=url, count=3, progress=False)
    (www / "alien.zip").write_bytes(_zip({"r/n99999999_thing.JPEG": PHOTOS["n01440764_tench.JPEG"]}))
    with pytest.raises(ims.SamplesError, match="not an ImageNet-1k class"):
        ims.download_samples(bad, url=f"{base}/alien.zip", count=None, digest=None, progress=False)
    (www / "junk.zip").write_bytes(b"this is not a zip")
    with pytest.raises(ims.SamplesError, match="not a valid zip"):
        ims.download_samples(bad, url=f"{base}/junk.zip", count=None, digest=None, progress=False)
    with pytest.raises(ims.SamplesError, match="cannot download"):  # 404
        ims.download_samples(bad, url=f"{base}/missing.zip", count=None, digest=None, progress=False)
    assert not bad.exists()
    assert not [p for p in tmp_path.rglob("*.part")]


def test_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "vc"))
    monkeypatch.delenv(ims.ENV, raising=False)
    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(ims.SamplesError, match="VIZCORE_OFFLINE=1.*VIZCORE_IMAGENET_SAMPLES"):
        open_dataset("imagenet-samples")
    # network allowed but nothing answers: still fast and clear
    monkeypatch.setenv("VIZCORE_OFFLINE", "0")
    with pytest.raises(ims.SamplesError, match="cannot download the ImageNet sample images"):
        ims.download_samples(tmp_path / "dl", url="http://127.0.0.1:9/master.zip", progress=False)
    assert time.perf_counter() - t < 10
    assert not (tmp_path / "dl").exists() and not ims.default_dir().exists()
    with pytest.raises(ims.SamplesError, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        ims.download_samples(tmp_path / "full", url="http://127.0.0.1:9/master.zip", progress=False)


def test_reference_copy_by_env_and_spec(imagenet_samples, monkeypatch, tmp_path):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "vc"))
    monkeypatch.setenv(ims.ENV, str(imagenet_samples))
    assert ims.find_samples() == imagenet_samples
    ds = open_dataset("imagenet-samples")
    assert len(ds) == 1000 and len(set(ds.labels())) == 998  # two cranes, two maillots
    # labels.csv of the reference copy agrees with the standard index this module uses
    index = ims.imagenet_index()
    rows = list(csv.DictReader((imagenet_samples / "labels.csv").open()))
    assert all(index[r["wnid"]] == int(r["index"]) for r in rows)
    assert all(r["file"].rsplit(".", 1)[0].split("_", 1)[1].replace("_", " ") == r["label"] for r in rows)
    monkeypatch.setenv(ims.ENV, str(tmp_path))  # a folder without the photos: a clear error
    with pytest.raises(ims.SamplesError, match="VIZCORE_IMAGENET_SAMPLES"):
        open_dataset("imagenet-samples")
    monkeypatch.delenv(ims.ENV)
    assert ims.find_samples(candidates=(imagenet_samples,)) == imagenet_samples


@pytest.mark.slow
def test_cli_accepts_the_spec(imagenet_samples, monkeypatch, tmp_path, capsys):
    from vizcore.cli import main

    monkeypatch.setenv(ims.ENV, str(imagenet_samples))
    # the stem only: the forward stops there, so 1,000 photos take seconds
    rc = main(["mine", "imagenet-samples", "--model", "efficientnet_lite0", "--layers", "stem", "--k", "1",
               "--out", str(tmp_path / "out"), "--batch-size", "50"])
    assert rc == 0, capsys.readouterr().err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["n_images"] == 1000 and "imagenet-samples" in json.dumps(index["dataset"])
