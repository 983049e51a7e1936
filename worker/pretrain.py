"""Train an ordinary ReLU model (every parameter) and save its state_dict: the demo's stand-in for a
user's pretrained network, and what the finetune tests start from."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from converters.saved import save_state_dict
from service.job_config import DatasetConfig, ModelConfig, TrainConfig

from .checkpoint import seed_everything
from .data import load_data
from .errors import InputError
from .evaluation import evaluate
from .loaders import loader
from .loading import build
from .precision import Precision, pick_device
from .progress import Reporter
from .trainer import Trainer


def pretrain(
    model_cfg: ModelConfig,
    data_cfg: DatasetConfig,
    train_cfg: TrainConfig,
    out_file: str | os.PathLike,
    *,
    files: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    device=None,
    work_dir: str | os.PathLike | None = None,
) -> dict:
    """Train all parameters of model_cfg.arch on the data; save the state_dict (.safetensors, or
    .pt/.pth); return {val_accuracy, val_loss, ...}. train_cfg.trainable is ignored ("all")."""
    from converters.training import trainable

    out_file = Path(out_file)
    if out_file.suffix not in (".safetensors", ".pt", ".pth"):
        raise InputError(f"--out must end in .safetensors, .pt or .pth; got {out_file.name}", "out")
    reporter = Reporter(progress, should_cancel)
    device = pick_device(device)
    precision = Precision.choose(device, train_cfg.amp, train_cfg.channels_last)
    seed_everything(train_cfg.seed)
    reporter.stage("loading")
    work_dir = Path(work_dir) if work_dir is not None else out_file.parent / (out_file.name + ".work")
    try:
        data = load_data(data_cfg, work_dir, files)
    finally:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    if model_cfg.num_classes is not None and model_cfg.num_classes != data.num_classes:
        raise InputError(f"model.num_classes is {model_cfg.num_classes} but the dataset has {data.num_classes} "
                         "classes", "model.num_classes")
    model = build(model_cfg.arch, data.num_classes, model_cfg.weights, (files or {}).get("weights")).to(device)
    if precision.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    groups = trainable(model, "all", train_cfg.weight_decay, train_cfg.threshold_l2)
    reporter.stage("training")
    trainer = Trainer(model, groups, data.train, data.val, train_cfg, precision, reporter)
    history = trainer.fit(resume=False)
    reporter.stage("verifying")
    final = evaluate(model, loader(data.val, train_cfg.batch_size, device), precision)
    reporter.stage("exporting")
    save_state_dict(model, out_file)
    return {
        "arch": model_cfg.arch,
        "num_classes": data.num_classes,
        "val_accuracy": final.accuracy,
        "val_loss": final.loss,
        "train_size": len(data.train),
        "val_size": len(data.val),
        "epochs": history.epochs,
        "out": str(out_file),
    }
