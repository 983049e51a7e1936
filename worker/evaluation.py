"""Evaluation: loss and accuracy in strict fp32, the same way for the baseline, at init and final."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .precision import Precision
from .progress import Reporter

# Confusion matrices beyond this many classes would dwarf the rest of report.json.
MAX_CONFUSION_CLASSES = 100


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    samples: int
    logits: torch.Tensor | None = None  # (N, classes) float32 on CPU, when asked for
    correct: torch.Tensor | None = None  # (N,) bool on CPU: the prediction was right, in loader order
    confusion: list[list[int]] | None = None  # rows: true class, columns: predicted

    def to_dict(self) -> dict:
        out = {"loss": self.loss, "accuracy": self.accuracy, "samples": self.samples}
        if self.confusion is not None:
            out["confusion"] = self.confusion
        return out

    def correct_bits(self) -> str:
        """The correct vector as a string of 0/1 (compact in JSON; McNemar reads it)."""
        return "".join("1" if c else "0" for c in self.correct.tolist())


def evaluate(model: nn.Module, data: DataLoader, precision: Precision, keep_logits: bool = False,
             reporter: Reporter | None = None) -> EvalResult:
    """Loss and accuracy in strict fp32 (mixed precision is for training only), so the baseline,
    at-init and final numbers are measured alike."""
    was_training = model.training
    model.eval()
    total_loss, seen, kept, hits, pairs = 0.0, 0, [], [], []
    try:
        batches = len(data)
    except TypeError:  # an iterable without a length: no fraction to report
        batches = None
    try:
        with torch.no_grad(), precision.strict():
            for batch, (x, y) in enumerate(data, 1):
                if reporter is not None:
                    reporter.check_cancel()
                x, y = precision.inputs(x), y.to(precision.device)
                out = model(x).float()
                total_loss += float(F.cross_entropy(out, y, reduction="sum"))
                predicted = out.argmax(1)
                hits.append((predicted == y).cpu())
                pairs.append(torch.stack([y, predicted]).cpu())
                seen += len(y)
                if keep_logits:
                    kept.append(out.cpu())
                if reporter is not None:
                    reporter.batches(batch, batches)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("the validation split is empty")
    correct = torch.cat(hits)
    classes = out.shape[1]
    confusion = None
    if classes <= MAX_CONFUSION_CLASSES:
        true, predicted = torch.cat(pairs, dim=1)
        confusion = torch.bincount(true * classes + predicted, minlength=classes * classes)
        confusion = confusion.reshape(classes, classes).tolist()
    return EvalResult(total_loss / seen, int(correct.sum()) / seen, seen, torch.cat(kept) if keep_logits else None,
                      correct, confusion)
