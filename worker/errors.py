"""Errors a job ends with. Each has a stable `code` (the job object's error.code in docs/api.md)."""

from __future__ import annotations


class JobError(RuntimeError):
    """A job that cannot succeed: bad input, or a check that failed. Not retried."""

    code = "job_failed"

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self), "param": self.param}


class InputError(JobError, ValueError):
    """A model, weights or dataset reference that cannot be used; names the field."""

    code = "invalid_input"


class WeightsMismatchError(InputError):
    """A state_dict that does not fit the architecture (keys and shapes named)."""

    code = "weights_mismatch"


class ArchiveError(InputError):
    """An archive refused by the safe extractor (unsafe path, link out, over the caps)."""

    code = "unsafe_archive"


class NetworkUnavailableError(InputError):
    """Something needs a download and the network is not there."""

    code = "network_unavailable"


class ConversionCheckError(JobError):
    """The converted model does not predict what the original did at identity init: a bug."""

    code = "conversion_check_failed"


class ExportCheckError(JobError):
    """model.onnx or model.pt2 does not compute what the PyTorch model computes."""

    code = "export_check_failed"


class TrainingDiverged(JobError):
    """The training loss became non-finite."""

    code = "training_diverged"


class CompileFailed(JobError):
    """torch.compile of the training step failed under train.compile "on"."""

    code = "compile_failed"


class JobCancelled(Exception):
    """Raised inside the job when should_cancel() says so; the job ends `cancelled`."""
