"""The training loop, shared by `finetune` (converted model) and `pretrain` (ReLU model).

Deterministic on CPU for a fixed seed and thread count: the shuffling order of epoch e comes from a generator
seeded with (seed, e), data loads in the main process, and the global RNG states (augmentation)
travel in the checkpoint. A run resumed from the epoch-k checkpoint therefore replays epochs
k+1.. exactly as an uninterrupted run would. On CUDA: mixed precision (bf16 where supported,
else fp16 with a grad scaler) and channels_last, both switchable.
The training step runs through compiling.StepModel (train.compile).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from service.job_config import TrainConfig

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .compiling import StepModel, resolve_compile
from .errors import TrainingDiverged
from .evaluation import evaluate
from .loaders import loader
from .precision import Precision
from .progress import Reporter

MAX_STEP_RECORDS = 2000  # per-step losses kept in the report (subsampled beyond this)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               precision: Precision, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step, the one Trainer runs (and bench/finetune_throughput.py times): forward
    under precision.autocast(), cross-entropy in fp32, backward, optimizer step (through `scaler`
    for fp16). x and y are already on the device (precision.inputs). Returns (loss, logits),
    neither read back to the host, so a caller timing steps decides where to synchronise."""
    with precision.autocast():
        out = model(x)
        loss = F.cross_entropy(out.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, out


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int):
    """Stepped once per training step. cosine: lr * (1 + cos(pi * step / total)) / 2."""
    if schedule == "cosine":
        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        def factor(step: int) -> float:
            return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    resumed_from_epoch: list[int] = field(default_factory=list)  # one entry per resume
    compile: dict | None = None  # StepModel.info of this attempt (not checkpointed)

    def to_dict(self, max_steps: int = MAX_STEP_RECORDS) -> dict:
        steps = self.steps
        stride = max(1, math.ceil(len(steps) / max_steps))
        out = {
            "epochs": self.epochs,
            "steps": steps[::stride] if stride > 1 else steps,
            "step_stride": stride,
            "resumed_from_epoch": self.resumed_from_epoch,
        }
        if self.compile is not None:
            out["compile"] = dict(self.compile)
        return out


class Trainer:
    """Trains `model` on `groups` for cfg.epochs (or cfg.max_steps), checkpointing every epoch."""

    def __init__(self, model: nn.Module, groups: list[dict], train_set: Dataset, val_set: Dataset,
                 cfg: TrainConfig, precision: Precision, reporter: Reporter,
                 checkpoint_path: str | os.PathLike | None = None, fingerprint: str | None = None,
                 test_set: Dataset | None = None):
        self.model = model
        self.cfg = cfg
        self.precision = precision
        self.reporter = reporter
        self.train_set, self.val_set = train_set, val_set
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.fingerprint = fingerprint
        self.steps_per_epoch = len(loader(train_set, cfg.batch_size, precision.device, shuffle=True))
        if self.steps_per_epoch == 0:
            raise ValueError("the training split is empty")
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
            self.epochs = math.ceil(cfg.max_steps / self.steps_per_epoch)
        else:
            self.epochs = cfg.epochs
            self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(groups, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if precision.amp_dtype == torch.float16 else None
        self.history = History()
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps
        self.val_loader = loader(val_set, cfg.batch_size, precision.device)
        # A held-out test split (compare jobs): measured every epoch, so the epoch chosen on
        # validation is reported on data that did not choose it.
        self.test_loader = loader(test_set, cfg.batch_size, precision.device) if test_set is not None else None
        setting = cfg.compile
        self.step_model = StepModel(model, resolve_compile(setting, precision.device),
                                    required=setting in ("on", True), reporter=reporter, setting=setting)
        self.history.compile = self.step_model.info
        if self.step_model.compiled:
            reporter.log(f"train.compile={setting}: the training step runs torch.compile of the model "
                         "(the first step compiles)")

    # ------------------------------------------------------------ checkpoints

    def resume(self) -> int | None:
        """Load the last checkpoint when it belongs to this config; the epoch it ends, or None."""
        if self.checkpoint_path is None:
            return None
        state, reason = load_checkpoint(self.checkpoint_path, self.fingerprint)
        if reason:
            self.reporter.log(reason, "warning")
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        threads = state.get("threads")
        if self.precision.device.type == "cpu" and threads not in (None, torch.get_num_threads()):
            self.reporter.log(f"the checkpoint was written with {threads} CPU threads, this attempt has "
                              f"{torch.get_num_threads()}: results may differ from an uninterrupted run in the "
                              "last bits (CPU reductions depend on the thread count)", "warning")
        h = state["history"]
        self.history = History(list(h["epochs"]), list(h["steps"]), [*h["resumed_from_epoch"], self.epoch],
                               compile=self.step_model.info)
        self.reporter.log(f"resumed from the checkpoint of epoch {self.epoch} (step {self.step})")
        return self.epoch

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "config": self.fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_state(),
            "threads": torch.get_num_threads(),
            "history": {"epochs": self.history.epochs, "steps": self.history.steps,
                        "resumed_from_epoch": self.history.resumed_from_epoch},
        })

    # ------------------------------------------------------------ training

    def fit(self, resume: bool = True) -> History:
        seed_everything(self.cfg.seed)
        if resume:
            self.resume()
        while self.epoch < self.epochs and self.step < self.total_steps:
            self._epoch()
            self.epoch += 1
            self.save()
        return self.history

    def train_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch already on the device: train_step through the compiled
        module when train.compile asks for it, with the eager fallback. No scheduler step, no records
        (the epoch loop does those). bench/finetune_throughput.py times this."""
        step_model = self.step_model
        if not step_model.compiled:
            return train_step(self.model, x, y, self.optimizer, self.precision, self.scaler)
        if step_model.proven:
            try:
                return train_step(step_model.module, x, y, self.optimizer, self.precision, self.scaler)
            except Exception as err:
                # A recompilation that failed (guards broke: rare in a loop of same-shape batches).
                # Nothing was kept to restore: if it was the backward, this step's BatchNorm update counts twice.
                if not step_model.is_compile_error(err):
                    raise
                step_model.failed(err)  # raises CompileFailed for train.compile "on"
                return train_step(self.model, x, y, self.optimizer, self.precision, self.scaler)
        # The first compiled step compiles: the forward (nothing ran yet when it fails) and, lazily,
        # the backward (the forward ran: BatchNorm statistics moved, the RNG advanced). Parameters
        # only change in optimizer.step, after both. So keep the buffers and the RNG state, and on a
        # compile error restore them and redo the step eagerly: the step then counts once, as in eager.
        buffers = [b.detach().clone() for b in self.model.buffers()]
        rng = rng_state()
        try:
            result = train_step(step_model.module, x, y, self.optimizer, self.precision, self.scaler)
        except Exception as err:
            if not step_model.is_compile_error(err):
                raise
            step_model.failed(err)  # raises CompileFailed for train.compile "on"
        else:
            step_model.proven = True
            return result
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), buffers, strict=True):
                b.copy_(saved)
        set_rng_state(rng)
        return train_step(self.model, x, y, self.optimizer, self.precision, self.scaler)

    def _epoch(self) -> None:
        cfg, precision, reporter, model = self.cfg, self.precision, self.reporter, self.model
        epoch = self.epoch + 1  # 1-based in events and records
        started = time.perf_counter()
        model.train()
        total_loss, correct, seen, steps = 0.0, 0, 0, 0
        reporter.start_window()
        for x, y in loader(self.train_set, cfg.batch_size, precision.device, shuffle=True, seed=cfg.seed,
                           epoch=self.epoch):
            if self.step >= self.total_steps:
                break
            reporter.check_cancel()
            x, y = precision.inputs(x), y.to(precision.device)
            loss, out = self.train_batch(x, y)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.step += 1
            steps += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"the training loss is {value} at step {self.step}; lower train.lr", "train.lr")
            total_loss += value * len(y)
            correct += int((out.detach().argmax(1) == y).sum())
            seen += len(y)
            self.history.steps.append({"step": self.step, "epoch": epoch, "loss": value, "lr": lr})
            reporter.step(len(y), force=steps == 1, epoch=epoch, epochs=self.epochs, step=self.step,
                          steps=self.total_steps, fraction=self.step / self.total_steps, loss=value,
                          accuracy=correct / seen, lr=lr)
        reporter.check_cancel()
        train_seconds = time.perf_counter() - started
        # Eager, on the original module: the baseline, at-init and final measurements of the job are
        # eager strict fp32, and so stays this one (inductor may fuse and reorder float ops), and an
        # eval-mode no-grad forward would be a second compilation for a small validation split.
        val = evaluate(model, self.val_loader, precision, reporter=reporter)
        record = {
            "epoch": epoch,
            "steps": steps,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": val.loss,
            "val_accuracy": val.accuracy,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "images_per_s": seen / max(train_seconds, 1e-9),  # includes compiling, in the first epoch
            "compiled": self.step_model.compiled,
        }
        if self.test_loader is not None:
            record["test_accuracy"] = evaluate(model, self.test_loader, precision, reporter=reporter).accuracy
        self.history.epochs.append(record)
        reporter.emit({"type": "epoch", "epochs": self.epochs, **record, "step": self.step,
                       "steps": self.total_steps})
