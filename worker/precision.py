"""Where and in what precision a job runs: the device, mixed precision and channels_last on CUDA,
and strict fp32 for measurements."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


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
