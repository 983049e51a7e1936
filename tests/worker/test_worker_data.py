"""Dataset references: digits, image folders (with and without splits), archives, synthetic, torchvision."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from service.job_config import DatasetConfig
from worker.data import load_data, stratified_split
from worker.errors import ArchiveError, InputError, NetworkUnavailableError


def _cfg(uri: str, **kw) -> DatasetConfig:
    return DatasetConfig(uri=uri, **kw)


def test_digits_real_data_resized_three_channels(tmp_path):
    data = load_data(_cfg("builtin:digits", image_size=24), tmp_path)
    assert data.num_classes == 10 and data.image_size == 24
    assert len(data.train) + len(data.val) == 1797
    assert abs(len(data.val) - 0.2 * 1797) < 10
    x, y = data.val[0]
    assert x.shape == (3, 24, 24) and 0 <= y < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated to 3 channels
    # Normalised with the dataset's own statistics: roughly zero mean, unit std over the set.
    xs = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1) < 0.05
    # Every class in both splits, and the split is a function of split_seed only.
    assert set(data.val.targets.tolist()) == set(range(10))
    again = load_data(_cfg("builtin:digits", image_size=24), tmp_path)
    assert torch.equal(again.val.images, data.val.images)
    other = load_data(_cfg("builtin:digits", image_size=24, split_seed=1), tmp_path)
    assert not torch.equal(other.val.targets, data.val.targets)


def test_digits_config_normalisation_and_augmentation(tmp_path):
    data = load_data(_cfg("builtin:digits", mean=[0.5], std=[0.5], augment=True), tmp_path)
    assert data.mean == [0.5] * 3 and data.image_size == 32
    assert data.train.augment and not data.val.augment
    torch.manual_seed(0)
    a = data.train[0][0]
    torch.manual_seed(1)
    b = data.train[0][0]
    assert a.shape == b.shape == (3, 32, 32)
    assert torch.equal(data.val[0][0], data.val[0][0])


def test_stratified_split_keeps_every_class():
    targets = [0] * 10 + [1] * 3 + [2] * 2
    train, val = stratified_split(targets, 0.2, seed=0)
    assert sorted(train + val) == list(range(15))
    assert {targets[i] for i in val} == {0, 1, 2} and {targets[i] for i in train} == {0, 1, 2}


def test_synthetic(tmp_path):
    data = load_data(_cfg("synthetic:4x80", image_size=16), tmp_path)
    assert data.num_classes == 4 and len(data.train) + len(data.val) == 80
    assert data.train[0][0].shape == (3, 16, 16)


def _images(root: Path, classes: dict[str, int], size=(12, 10)) -> None:
    from PIL import Image

    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            mode = "L" if i % 2 else "RGB"  # grey images become 3 channels too
            Image.new(mode, size, color=(i * 20) if mode == "L" else (i * 20, 10, 200)).save(root / c / f"{i}.png")


def test_imagefolder_seeded_split(tmp_path):
    _images(tmp_path / "ds", {"cat": 6, "dog": 4})
    data = load_data(_cfg(f"imagefolder:{tmp_path / 'ds'}", image_size=16, val_split=0.25), tmp_path / "w")
    assert data.classes == ["cat", "dog"]
    assert len(data.train) + len(data.val) == 10 and len(data.val) >= 2
    x, _ = data.train[0]
    assert x.shape == (3, 16, 16)


def test_imagefolder_train_val_folders(tmp_path):
    _images(tmp_path / "ds/train", {"a": 3, "b": 3})
    _images(tmp_path / "ds/val", {"a": 1, "b": 2})
    data = load_data(_cfg(f"imagefolder:{tmp_path / 'ds'}", image_size=8), tmp_path / "w")
    assert (len(data.train), len(data.val)) == (6, 3)
    assert "splits from train/ and val/" in data.notes[0]


def test_imagefolder_split_classes_must_agree(tmp_path):
    _images(tmp_path / "ds/train", {"a": 2, "b": 2})
    _images(tmp_path / "ds/val", {"a": 1, "c": 1})
    with pytest.raises(InputError, match="only in train/: b; only in val/: c"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'ds'}"), tmp_path / "w")


def test_imagefolder_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'missing'}"), tmp_path / "w")
    _images(tmp_path / "one", {"only": 3})
    with pytest.raises(InputError, match="at least 2"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'one'}"), tmp_path / "w")
    (tmp_path / "empty/a").mkdir(parents=True)
    (tmp_path / "empty/b").mkdir(parents=True)
    with pytest.raises(InputError, match="not a usable image folder"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'empty'}"), tmp_path / "w")


def test_allowed_roots_confine_paths(tmp_path):
    _images(tmp_path / "ds", {"a": 2, "b": 2})
    with pytest.raises(InputError, match="not under an allowed data root"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'ds'}"), tmp_path / "w", allowed_roots=[tmp_path / "elsewhere"])
    with pytest.raises(InputError, match="not under an allowed data root"):
        load_data(_cfg(f"imagefolder:{tmp_path / 'elsewhere/../ds'}"), tmp_path / "w",
                  allowed_roots=[tmp_path / "elsewhere"])
    load_data(_cfg(f"imagefolder:{tmp_path / 'ds'}"), tmp_path / "w", allowed_roots=[tmp_path])


def _zip_dir(src: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, Path("top") / f.relative_to(src))  # a single top-level folder
    return archive


def test_archive_and_upload(tmp_path):
    _images(tmp_path / "src", {"x": 3, "y": 3})
    archive = _zip_dir(tmp_path / "src", tmp_path / "ds.zip")
    data = load_data(_cfg(f"archive:{archive}", image_size=8), tmp_path / "w")
    assert data.classes == ["x", "y"] and any("extracted 6 files" in n for n in data.notes)
    up = load_data(_cfg("upload", image_size=8), tmp_path / "w2", files={"dataset": archive})
    assert up.classes == ["x", "y"]
    with pytest.raises(InputError, match="no dataset file"):
        load_data(_cfg("upload"), tmp_path / "w3")
    with pytest.raises(ArchiveError, match="files"):
        load_data(_cfg(f"archive:{archive}"), tmp_path / "w4", archive_limits={"max_files": 3})


def test_torchvision_dataset_offline_is_a_clear_error(offline, tmp_path):
    with pytest.raises(NetworkUnavailableError, match="torchvision:CIFAR10 is not in the cache .* could not be "
                       "downloaded"):
        load_data(_cfg("torchvision:CIFAR10"), tmp_path / "w")


def test_torchvision_unknown_name(tmp_path):
    with pytest.raises(InputError, match="unknown torchvision dataset 'ImageNet'; accepted: CIFAR10, CIFAR100"):
        load_data(_cfg("torchvision:ImageNet"), tmp_path / "w")


@pytest.mark.parametrize("uri", ["builtin:digits", "imagefolder"])
def test_the_held_out_test_split_is_fixed_and_never_augmented(tmp_path, uri):
    """Every child of a compare job holds out the same images, seen the same way whatever its
    training seed; the test images leave the training split."""
    if uri == "imagefolder":
        _images(tmp_path / "imgs", {"cat": 8, "dog": 8})
        uri = f"imagefolder:{tmp_path / 'imgs'}"
    cfg = _cfg(uri, image_size=16, augment=True, test_split=0.25)
    seen = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        bundle = load_data(cfg, tmp_path / f"work{seed}")
        seen.append(torch.stack([bundle.test[i][0] for i in range(len(bundle.test))]))
        assert set(bundle.test.indices).isdisjoint(bundle.train.indices)
    assert torch.equal(seen[0], seen[1])
