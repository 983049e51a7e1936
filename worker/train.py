"""The training loop and evaluation, shared by `finetune` (converted model) and `pretrain` (ReLU model).

Deterministic on CPU for a fixed seed and thread count: the shuffling order of epoch e comes from a generator
seeded with (seed, e), data loads in the main process, and the global RNG states (augmentation)
travel in the checkpoint. A run resumed from the epoch-k checkpoint therefore replays epochs
k+1.. exactly as an uninterrupted run would. On CUDA: mixed precision (bf16 where supported,
else fp16 with a grad scaler) and channels_last, both switchable.

train.compile ("auto" | "on" | "off", or a bool): torch.compile of the model's forward for the
training step. "auto" compiles on CUDA and runs eager on CPU (compiling costs tens of seconds per
model on CPU for little gain, and eager is easier to debug). The original module stays the one
checkpointed and exported (no `_orig_mod.` prefix in state_dict keys) and the one evaluate() runs.
If compiling fails, "auto" warns and goes on eagerly; "on" fails the job naming train.compile.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .config import COMPILE_SETTINGS, TrainConfig
from .errors import JobError
from .progress import Reporter

MAX_STEP_RECORDS = 2000  # per-step losses kept in the report (subsampled beyond this)


class TrainingDiverged(JobError):
    code = "training_diverged"


class CompileFailed(JobError):
    code = "compile_failed"


def resolve_compile(setting, device: torch.device) -> bool:
    """train.compile -> whether to compile: on/True and off/False as said; auto: on CUDA only."""
    if setting in ("on", True):
        return True
    if setting in ("off", False):
        return False
    if setting == "auto":
        return device.type == "cuda"
    raise ValueError(f"train.compile must be one of {', '.join(COMPILE_SETTINGS)} (or a bool); got {setting!r}")


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a failed compilation raises: dynamo's own errors (which wrap the backend's, e.g.
    InductorError), and inductor's compiler errors, which a lazily compiled backward raises bare."""
    import torch._dynamo.exc as dynamo_exc

    errors: list[type[BaseException]] = [dynamo_exc.TorchDynamoException]
    try:
        import torch._inductor.exc as inductor_exc

        errors += [inductor_exc.CppCompileError, inductor_exc.InvalidCxxCompiler, inductor_exc.OperatorIssue]
    except ImportError:  # pragma: no cover - a torch without inductor
        pass
    return tuple(errors)


class StepModel:
    """The module the training step calls: `model` itself, or torch.compile(model) when `enabled`.

    The compiled wrapper shares model's parameters and buffers; only `model` is ever checkpointed
    or exported. Compilation is lazy (the first forward, and the first backward, compile), so a
    failure shows in a step: `failed(err)` then switches to eager (with a warning, when not
    `required`) or raises CompileFailed naming train.compile (when `required`: compile "on").
    `info` is what the report records: {setting, enabled, used, fallback}.
    """

    def __init__(self, model: nn.Module, enabled: bool, required: bool = False, reporter: Reporter | None = None,
                 setting: str | bool | None = None):
        self.model, self.required, self.reporter = model, required, reporter
        self.info = {"setting": setting if setting is not None else ("on" if enabled else "off"),
                     "enabled": enabled, "used": False, "fallback": None}
        self._compiled: nn.Module | None = None
        self.proven = False  # a compiled step (forward and backward) has run
        if enabled:
            try:
                self._compiled = torch.compile(model)
            except Exception as err:  # e.g. a Python version dynamo does not support
                self.failed(err)
            else:
                self.info["used"] = True

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def module(self) -> nn.Module:
        return self._compiled if self._compiled is not None else self.model

    def is_compile_error(self, err: BaseException) -> bool:
        return self.compiled and isinstance(err, _compile_errors())

    def failed(self, err: BaseException) -> None:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
        why = f"{type(err).__name__}: {first_line}"
        if self.required:
            raise CompileFailed(f"torch.compile of the training step failed ({why}); set train.compile to "
                                "'auto' or 'off' to train without compiling", "train.compile") from err
        self._compiled = None
        self.info.update(used=False, fallback=why)
        if self.reporter is not None:
            self.reporter.log(f"torch.compile of the training step failed, training eagerly instead ({why})",
                              "warning")


@dataclass
class Precision:
    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: full precision
    channels_last: bool = False

    @classmethod
    def choose(cls, device: torch.device, amp, channels_last) -> Precision:
        on_cuda = device.type == "cuda"
        amp_on = on_cuda and amp in ("auto", "on", True)
        dtype = None
        if amp_on:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        cl = on_cuda and channels_last in ("auto", "on", True)
        return cls(device, dtype, cl)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @staticmethod
    @contextlib.contextmanager
    def strict():
        """Full fp32 (no autocast, no TF32) for measurements: ConvReLU's shifted convolutions and
        a plain conv then agree to float rounding, so at-init predictions can be compared."""
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def describe(self) -> dict:
        return {"device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype
                else "off", "channels_last": self.channels_last}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def loader(dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool = False,
           seed: int = 0, epoch: int = 0) -> DataLoader:
    """Shuffled loaders draw their order from a generator seeded with (seed, epoch)."""
    file_backed = not hasattr(dataset, "images")  # in-memory TensorImages need no workers
    workers = min(8, os.cpu_count() or 1) if device.type == "cuda" and file_backed else 0
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
        drop_last=shuffle and len(dataset) > batch_size,  # no size-1 batch for BatchNorm
        pin_memory=device.type == "cuda",
    )


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    samples: int
    logits: torch.Tensor | None = None  # (N, classes) float32 on CPU, when asked for

    def to_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "samples": self.samples}


def evaluate(model: nn.Module, data: DataLoader, precision: Precision, keep_logits: bool = False,
             reporter: Reporter | None = None) -> EvalResult:
    """Loss and accuracy in strict fp32 (mixed precision is for training only), so the baseline,
    at-init and final numbers are measured alike."""
    was_training = model.training
    model.eval()
    total_loss, correct, seen, kept = 0.0, 0, 0, []
    try:
        with torch.no_grad(), precision.strict():
            for x, y in data:
                if reporter is not None:
                    reporter.check_cancel()
                x, y = precision.inputs(x), y.to(precision.device)
                out = model(x).float()
                total_loss += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
                seen += len(y)
                if keep_logits:
                    kept.append(out.cpu())
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("the validation split is empty")
    return EvalResult(total_loss / seen, correct / seen, seen, torch.cat(kept) if keep_logits else None)


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
                 checkpoint_path: str | os.PathLike | None = None, fingerprint: str | None = None):
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
        self.history.epochs.append(record)
        reporter.emit({"type": "epoch", "epochs": self.epochs, **record, "step": self.step,
                       "steps": self.total_steps})
