"""Datasets: folders, lists, samples, stimuli, fingerprints and skipping bad files."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from vizcore.data import (
    BatchReport,
    cue_conflict_dataset,
    file_list,
    image_folder,
    iter_batches,
    open_dataset,
    samples_dataset,
)


def test_class_folder_labels(small_folder):
    ds = image_folder(small_folder)
    assert len(ds) == 13
    assert ds.classes() == ["bird", "car", "dog"]
    assert all(os.path.basename(os.path.dirname(it.path)) == it.label for it in ds.items)


def test_flat_folder_takes_labels_csv(imagenet_samples):
    ds = open_dataset(imagenet_samples)
    assert len(ds) == 1000
    first = {os.path.basename(it.path): it.label for it in ds.items}
    assert first["n01440764_tench.jpg"] == "tench"


def test_file_list_and_txt(tmp_path, small_folder):
    files = sorted(str(p) for p in small_folder.rglob("*.jpg"))[:3]
    ds = file_list(files)
    assert ds.paths == files
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(files) + "\n")
    assert open_dataset(lst).paths == [os.path.realpath(f) for f in files]


def test_fingerprint_tracks_files(small_folder):
    fp = image_folder(small_folder).fingerprint()
    assert fp == image_folder(small_folder).fingerprint()
    victim = next(small_folder.rglob("*.jpg"))
    time.sleep(0.01)
    os.utime(victim, None)
    assert image_folder(small_folder).fingerprint() != fp


def test_samples_dataset():
    ds = samples_dataset()
    assert {"cat", "coffee"} <= set(ds.labels())


def test_cue_conflict_layout(cue_conflict_root):
    cc = cue_conflict_dataset(cue_conflict_root)
    assert len(cc) == 1200  # 1,280 minus the 80 same-class images
    assert all(it.labels["shape"] != it.labels["texture"] for it in cc.items)
    assert len(set(cc.labels("texture"))) == 16
    assert len(open_dataset(cue_conflict_root / "style-transfer-preprocessed-512")) == 1200
    assert len(open_dataset(f"edges:{cue_conflict_root}")) == 160
    assert len(open_dataset(f"silhouettes:{cue_conflict_root}")) == 160


def test_bad_specs(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        open_dataset(tmp_path / "empty")


def test_iter_batches_skips_unreadable(tmp_path, small_folder):
    (small_folder / "bird" / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = next(small_folder.rglob("n*.jpg")).read_bytes()
    (small_folder / "car" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    ds = image_folder(small_folder)
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    report = BatchReport()
    seen = []
    for xs, idx in iter_batches(ds, tf, batch_size=4, workers=0, report=report):
        assert xs.shape[1:] == (3, 32, 32) and xs.dtype == torch.float32
        seen += idx
    bad = {os.path.basename(s["file"]) for s in report.skipped}
    assert bad == {"broken.jpg", "truncated.jpg"}
    assert len(seen) == len(ds) - 2 == report.n_ok
    assert sorted(seen) == seen  # order preserved


def test_torchvision_set_is_exported_once_as_a_labelled_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path))
    """CIFAR-10 as a user with a network gets it: here the downloader is replaced by a tiny set."""
    import numpy as np
    import torchvision.datasets as tvd
    from PIL import Image

    calls = []

    class TinyCifar:
        classes = ["airplane", "cat"]

        def __init__(self, root, download, train):
            calls.append((root, download, train))
            rng = np.random.default_rng(0)
            self.items = [(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), i % 2)
                          for i in range(6)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    monkeypatch.setattr(tvd, "CIFAR10", TinyCifar)
    ds = open_dataset("cifar10")
    assert len(ds) == 6 and ds.classes() == ["airplane", "cat"]
    assert len(calls) == 1 and calls[0][1:] == (True, False)  # download requested, test split
    fp = ds.fingerprint()
    again = open_dataset("cifar10")  # exported once: no second download
    assert len(calls) == 1 and again.fingerprint() == fp


def test_torchvision_set_without_network_fails_fast_with_a_clear_message(tmp_path):
    from vizcore.data import torchvision_dataset

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="cannot get stl10"):
        torchvision_dataset("stl10", root=tmp_path)
    assert time.perf_counter() - t0 < 60
    assert not any(tmp_path.rglob("*.png"))


def test_one_rule_for_evenly_spaced_subsets(tmp_path):
    """"N evenly spaced images" is vizcore.data.datasets.evenly_spaced everywhere: the same N picks
    the same images on every page (no page spaces them its own way)."""
    import re

    from vizcore.data.datasets import evenly_spaced, image_folder

    assert evenly_spaced(10, 4) == [0, 2, 5, 8]
    assert evenly_spaced(5, 9) == [0, 1, 2, 3, 4] and evenly_spaced(5, 0) == []
    assert evenly_spaced(1200, 300) == list(range(0, 1200, 4))
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"")
    ds = image_folder(tmp_path)
    sub = ds.evenly_spaced(3)
    assert [p.rsplit("/", 1)[-1] for p in sub.paths] == ["0.png", "2.png", "4.png"]
    assert sub.name == f"{ds.name} (3 of 6)" and ds.evenly_spaced(0) is ds and ds.evenly_spaced(6) is ds
    pages = Path(__file__).resolve().parents[1] / "dashboard"
    for f in pages.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"linspace\(0, n_|round\(i \* len\(", text), f"{f.name} spaces images its own way"
