"""Dataset references -> train and validation datasets of normalised 3-channel images.

- builtin:digits        scikit-learn's handwritten digits (1797 8x8 grey images, 16 levels, 10 classes):
                        scaled to [0, 1], resized bilinearly to image_size, repeated to 3 channels.
- imagefolder:<dir>     one folder per class; with train/ and val/ (or valid/, validation/, test/)
                        subfolders those are the splits, otherwise a seeded stratified split.
- archive:<file>        a .zip or .tar(.gz/.bz2/.xz) in that layout, extracted safely (archives.py).
- upload                an archive handed to the job (files["dataset"]).
- torchvision:<Name>    CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, SVHN, STL10: downloaded to a
                        cache when the network allows; the library's test split is the validation split.
- synthetic:<C>x<N>     N images of C classes (class templates plus noise), seeded: for benchmarks.

Normalisation comes from the config or the dataset's usual values. `augment` adds a light
augmentation to the training split only (random crop after padding by image_size/8, and a
horizontal flip for natural images; never for digits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from service.job_config import DatasetConfig, parse_synthetic
from service.paths import resolve_inside

from .archives import dataset_root, extract_archive, is_archive
from .errors import InputError, NetworkUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_DIR_NAMES = ("val", "valid", "validation", "test")
TRAIN_DIR_NAMES = ("train", "training")
DEFAULT_SIZE = {"builtin": 32, "synthetic": 32, "imagefolder": 224, "archive": 224, "upload": 224}


@dataclass(frozen=True)
class TorchvisionInfo:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    split_arg: bool = False  # SVHN and STL10 take split="train"/"test" instead of train=True/False


TORCHVISION_DATASETS = {
    "CIFAR10": TorchvisionInfo(32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "CIFAR100": TorchvisionInfo(32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "MNIST": TorchvisionInfo(28, (0.1307,), (0.3081,), False),
    "FashionMNIST": TorchvisionInfo(28, (0.2860,), (0.3530,), False),
    "KMNIST": TorchvisionInfo(28, (0.1918,), (0.3483,), False),
    "SVHN": TorchvisionInfo(32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, split_arg=True),
    "STL10": TorchvisionInfo(96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), True, split_arg=True),
}


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    classes: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    uri: str
    notes: list[str] = field(default_factory=list)
    test: Dataset | None = None  # held out of the training data when dataset.test_split is set

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {
            "uri": self.uri,
            "train_size": len(self.train),
            "val_size": len(self.val),
            "test_size": len(self.test) if self.test is not None else 0,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "notes": self.notes,
        }


def cache_dir() -> Path:
    return Path(os.environ.get("RELUSWAP_DATA_CACHE", Path.home() / ".cache" / "reluswap" / "datasets"))


def _three(values) -> list[float]:
    values = [float(v) for v in values]
    return values * 3 if len(values) == 1 else values


# ---------------------------------------------------------------- in-memory tensor datasets


class TensorImages(Dataset):
    """Images in [0, 1] of shape (N, 3, S, S), normalised per item; optional pad-and-crop."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, mean, std, augment: bool = False,
                 flip: bool = False):
        self.images = images
        self.targets = targets
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
        self.augment = augment
        self.flip = flip

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.augment:  # the global torch RNG: seeded and checkpointed by the trainer
            size = x.shape[-1]
            pad = max(size // 8, 1)
            padded = F.pad(x, (pad, pad, pad, pad))
            dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
            x = padded[:, dy : dy + size, dx : dx + size]
            if self.flip and bool(torch.rand(()) < 0.5):
                x = x.flip(-1)
        return (x - self.mean) / self.std, int(self.targets[i])


def stratified_split(targets: list[int] | torch.Tensor, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split keeping every class in both parts where it has at least two samples."""
    targets = torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val = round(len(idx) * val_split)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def _digits(cfg: DatasetConfig, size: int) -> DataBundle:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - the data extra
        raise InputError("builtin:digits needs scikit-learn (pip install reluswap[data])", "dataset.uri") from None
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # 16 grey levels -> [0, 1]
    x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.repeat(1, 3, 1, 1).contiguous()
    y = torch.tensor(digits.target, dtype=torch.int64)
    mean = _three(cfg.mean or [float(x.mean())])
    std = _three(cfg.std or [float(x.std())])
    train_idx, val_idx = stratified_split(y, cfg.val_split, cfg.split_seed)
    return DataBundle(
        train=TensorImages(x[train_idx], y[train_idx], mean, std, augment=cfg.augment),
        val=TensorImages(x[val_idx], y[val_idx], mean, std),
        classes=[str(i) for i in range(10)],
        image_size=size, mean=mean, std=std, uri=cfg.uri,
    )


def _synthetic(cfg: DatasetConfig, rest: str, size: int) -> DataBundle:
    classes, n = parse_synthetic(rest)
    g = torch.Generator().manual_seed(cfg.split_seed)
    templates = F.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                              align_corners=False)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    noise = torch.randn(n, 3, size, size, generator=g)
    x = torch.sigmoid(1.5 * templates[y] + 0.8 * noise)
    mean = _three(cfg.mean or [0.5])
    std = _three(cfg.std or [0.25])
    train_idx, val_idx = stratified_split(y, cfg.val_split, cfg.split_seed)
    return DataBundle(
        train=TensorImages(x[train_idx], y[train_idx], mean, std, augment=cfg.augment, flip=True),
        val=TensorImages(x[val_idx], y[val_idx], mean, std),
        classes=[f"class_{i}" for i in range(classes)],
        image_size=size, mean=mean, std=std, uri=cfg.uri,
    )


# ---------------------------------------------------------------- image files


class _ToRGB:
    def __call__(self, image):
        return image.convert("RGB")


def _transforms(size: int, mean, std, augment: bool, flip: bool, resize: bool = True):
    from torchvision import transforms as T

    steps = [_ToRGB()]
    if resize:
        steps += [T.Resize(size), T.CenterCrop(size)]
    if augment:
        steps.append(T.RandomCrop(size, padding=max(size // 8, 1)))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")
                  and e.name != "__MACOSX")


def _image_folder(root: Path, transform):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=transform, allow_empty=False)
    except (FileNotFoundError, RuntimeError) as err:
        raise InputError(f"{root} is not a usable image folder: {err}", "dataset.uri") from None


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _imagefolder(cfg: DatasetConfig, root: Path, size: int) -> DataBundle:
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}", "dataset.uri")
    root = dataset_root(root)
    mean = _three(cfg.mean or IMAGENET_MEAN)
    std = _three(cfg.std or IMAGENET_STD)
    train_tf = _transforms(size, mean, std, cfg.augment, flip=True)
    val_tf = _transforms(size, mean, std, False, flip=False)
    train_dir, val_dir = _find(root, TRAIN_DIR_NAMES), _find(root, VAL_DIR_NAMES)
    if train_dir is not None and val_dir is not None:
        train_classes, val_classes = _class_dirs(train_dir), _class_dirs(val_dir)
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise InputError(
                f"the class folders of {train_dir.name}/ and {val_dir.name}/ differ: only in "
                f"{train_dir.name}/: {', '.join(only_train) or '-'}; only in {val_dir.name}/: "
                f"{', '.join(only_val) or '-'}", "dataset.uri")
        train, val = _image_folder(train_dir, train_tf), _image_folder(val_dir, val_tf)
        classes = list(train.classes)
        notes = [f"splits from {train_dir.name}/ and {val_dir.name}/"]
    else:
        train_all, val_all = _image_folder(root, train_tf), _image_folder(root, val_tf)
        train_idx, val_idx = stratified_split(train_all.targets, cfg.val_split, cfg.split_seed)
        train, val = Subset(train_all, train_idx), Subset(val_all, val_idx)
        classes = list(train_all.classes)
        notes = [f"seeded split (val_split={cfg.val_split}, split_seed={cfg.split_seed})"]
    if len(classes) < 2:
        raise InputError(f"{root} has {len(classes)} class folder(s); a classifier needs at least 2",
                         "dataset.uri")
    return DataBundle(train=train, val=val, classes=classes, image_size=size, mean=mean, std=std,
                      uri=cfg.uri, notes=notes)


def _torchvision(cfg: DatasetConfig, name: str, size: int | None, download: bool) -> DataBundle:
    import torchvision.datasets as tvd

    info = TORCHVISION_DATASETS.get(name)
    if info is None:
        raise InputError(f"unknown torchvision dataset {name!r}; accepted: {', '.join(TORCHVISION_DATASETS)}",
                         "dataset.uri")
    size = size or info.size
    mean, std = _three(cfg.mean or info.mean), _three(cfg.std or info.std)
    cls = getattr(tvd, name)
    root = cache_dir() / name
    train_tf = _transforms(size, mean, std, cfg.augment, info.flip, resize=size != info.size)
    val_tf = _transforms(size, mean, std, False, False, resize=size != info.size)

    def make(train: bool, transform):
        split = {"split": "train" if train else "test"} if info.split_arg else {"train": train}
        return cls(str(root), download=download, transform=transform, **split)

    try:
        train, val = make(True, train_tf), make(False, val_tf)
    except Exception as err:  # URLError, HTTPError, RuntimeError("Dataset not found..."), socket errors
        raise NetworkUnavailableError(
            f"torchvision:{name} is not in the cache ({root}) and could not be downloaded: "
            f"{type(err).__name__}: {err}. Run once with network access, or set RELUSWAP_DATA_CACHE "
            "to a folder that holds it.", "dataset.uri") from None
    classes = [str(c) for c in getattr(train, "classes", [])] or [
        str(c) for c in sorted(set(int(t) for t in getattr(train, "labels", [])))]
    return DataBundle(train=train, val=val, classes=classes, image_size=size, mean=mean, std=std,
                      uri=cfg.uri, notes=[f"{name}: the test split is the validation split"])


# ---------------------------------------------------------------- entry point


def targets_of(dataset: Dataset) -> list[int]:
    """Class labels of a dataset, without loading images where the dataset keeps them."""
    if isinstance(dataset, Subset):
        base = targets_of(dataset.dataset)
        return [base[i] for i in dataset.indices]
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            return [int(t) for t in getattr(dataset, attr)]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _without_augmentation(train: Dataset, val: Dataset) -> Dataset:
    """The training split seen as validation is: no augmentation (in-memory images turn it off,
    file-backed datasets take the validation transform). Same items, same order."""
    import copy

    if isinstance(train, Subset):
        view = copy.copy(train)
        view.dataset = _without_augmentation(train.dataset, val)
        return view
    if getattr(train, "augment", False):
        plain = copy.copy(train)
        plain.augment = False
        return plain
    val_transform = getattr(_base(val), "transform", None)
    if hasattr(train, "transform") and val_transform is not None:
        plain = copy.copy(train)
        plain.transform = val_transform
        return plain
    return train


def hold_out_test(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """Split a stratified test set off the training split (seeded: every child of a compare job
    holds out the same images). The test images are never augmented."""
    train_idx, test_idx = stratified_split(targets_of(bundle.train), fraction, seed)
    plain = _without_augmentation(bundle.train, bundle.val)
    bundle.train, bundle.test = Subset(bundle.train, train_idx), Subset(plain, test_idx)
    bundle.notes.append(f"test split: {len(test_idx)} images held out of the training data (seed {seed})")
    return bundle


def load_data(
    cfg: DatasetConfig,
    work_dir: str | os.PathLike,
    files: dict | None = None,
    allowed_roots=None,
    download: bool = True,
    archive_limits: dict | None = None,
) -> DataBundle:
    """Resolve the dataset reference. work_dir receives extracted archives. allowed_roots (if
    given) confines imagefolder:/archive: paths, as the service does; files["dataset"] is the
    uploaded archive for uri "upload"."""
    bundle = _load(cfg, work_dir, files, allowed_roots, download, archive_limits)
    if cfg.test_split is not None:
        # A seed apart from the validation split's, so the two draws are independent.
        bundle = hold_out_test(bundle, cfg.test_split, cfg.split_seed + 1)
    return bundle


def _load(cfg: DatasetConfig, work_dir, files, allowed_roots, download, archive_limits) -> DataBundle:
    uri = cfg.uri
    scheme, _, rest = uri.partition(":")
    size = cfg.image_size or DEFAULT_SIZE.get(scheme)
    if scheme == "builtin":
        return _digits(cfg, size)
    if scheme == "synthetic":
        return _synthetic(cfg, rest, size)
    if scheme == "torchvision":
        return _torchvision(cfg, rest, cfg.image_size, download)
    if scheme == "upload":
        archive = (files or {}).get("dataset")
        if archive is None:
            raise InputError("dataset.uri is 'upload' but no dataset file was handed to the job", "dataset.uri")
        return _from_archive(cfg, Path(archive), Path(work_dir), size, archive_limits)
    path = Path(rest).expanduser()
    if allowed_roots is not None and resolve_inside(path, allowed_roots) is None:
        raise InputError(f"{path} is not under an allowed data root", "dataset.uri")
    if scheme == "archive" or (scheme == "imagefolder" and path.is_file() and is_archive(path)):
        if not path.is_file():
            raise InputError(f"dataset archive not found: {path}", "dataset.uri")
        return _from_archive(cfg, path, Path(work_dir), size, archive_limits)
    return _imagefolder(cfg, path, size)


def _from_archive(cfg: DatasetConfig, archive: Path, work_dir: Path, size: int, limits: dict | None) -> DataBundle:
    import shutil

    dest = work_dir / "dataset"
    shutil.rmtree(dest, ignore_errors=True)
    stats = extract_archive(archive, dest, **(limits or {}))
    bundle = _imagefolder(cfg, dest, size)
    bundle.notes.append(f"extracted {stats.files} files ({stats.bytes} bytes) from {archive.name}")
    return bundle
