"""Arguments shared by `pretrain` and `finetune`: model, weights, data and training flags.

Flags default to None so that only what the user typed overrides a --config file.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.contract import DATASET_SCHEMES, OPTIMIZERS, SCHEDULES, SWITCH_SETTINGS


def add_model_data(p) -> None:
    p.add_argument("--model", help="torchvision:<name> or timm:<name>")
    p.add_argument("--num-classes", type=int, help="default: the dataset's class count")
    p.add_argument("--weights", help="none (random, default), default (the library's pretrained weights; needs "
                   "the network), or a state_dict file (.safetensors, .pt, .pth)")
    p.add_argument("--data", help="builtin:digits, imagefolder:<dir>, a folder, a .zip/.tar.gz, "
                   "torchvision:<Name> (CIFAR10, MNIST, ...), synthetic:<classes>x<images>")
    p.add_argument("--image-size", type=int)
    p.add_argument("--val-split", type=float)
    p.add_argument("--augment", action="store_true", default=None, help="light augmentation of the training split")


def add_training(p) -> None:
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", choices=SWITCH_SETTINGS, help="mixed precision on CUDA (default auto)")
    p.add_argument("--compile", choices=SWITCH_SETTINGS,
                   help="torch.compile of the training step: auto (default: on CUDA, eager on CPU), on (fail if "
                   "it cannot compile), off")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def data_uri(value: str) -> str:
    """A dataset reference, or a bare path turned into imagefolder:/archive:."""
    scheme, sep, _ = value.partition(":")
    if sep and scheme in DATASET_SCHEMES:
        return value
    from worker.archives import is_archive

    path = Path(value).expanduser()
    if path.is_file() and is_archive(path):
        return f"archive:{path}"
    if path.is_dir():
        return f"imagefolder:{path}"
    raise ValueError(f"--data {value!r} is neither a dataset reference ({', '.join(s + ':' for s in DATASET_SCHEMES)}) "
                     "nor an existing folder or .zip/.tar.gz archive")


def weights_ref(value: str | None, files: dict) -> str | None:
    """none/default pass through; a file becomes 'upload' with files['weights'] set."""
    if value is None or value in ("none", "default"):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--weights: no such file {value!r} (or use none / default)")
    files["weights"] = str(path)
    return "upload"


def read_config_file(path: str | None) -> dict:
    """A --config JSON file (the request body the flags then override); {} without one."""
    if not path:
        return {}
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"--config {path} must hold a JSON object")
    return config


def overlay(config: dict, section: str | None, values: dict) -> None:
    """Set the given (not None) values in config[section] (or at the top level)."""
    target = config if section is None else config.setdefault(section, {})
    for key, value in values.items():
        if value is not None:
            target[key] = value


def model_data_config(args, config: dict, files: dict) -> None:
    overlay(config, "model", {"arch": args.model, "num_classes": args.num_classes,
                              "weights": weights_ref(args.weights, files)})
    overlay(config, "dataset", {"uri": data_uri(args.data) if args.data else None, "image_size": args.image_size,
                                "val_split": args.val_split, "augment": args.augment})


def training_config(args, config: dict) -> None:
    overlay(config, "train", {"epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
                              "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
                              "schedule": args.schedule, "seed": args.seed, "amp": args.amp,
                              "compile": args.compile})
