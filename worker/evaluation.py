"""Evaluation: loss and accuracy in strict fp32, the same way for the baseline, at init and final."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .precision import Precision
from .progress import Reporter


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
