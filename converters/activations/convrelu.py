"""ConvReLU: a threshold per input channel and kernel position, applied inside the next Conv2d.

    out[n,d,i,j] = bias[d] + sum_{c in group(d), ky, kx} W[d,c,ky,kx] * max(xpad[n,c,i*s+ky*dil,j*s+kx*dil], theta[c,ky,kx])

xpad is x zero-padded; the padded zeros are thresholded too (eq. 8 taken literally), so with
theta = 0 the module computes conv(relu(x)) exactly.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from converters.catalog import get_info
from converters.geometry import conv_out_size
from converters.vocabulary import CONVRELU_IMPLS, check_choice

from .convrelu_patches import convrelu_patches
from .registry import register


def convrelu_unfold(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """Reference form: unfold every patch, threshold it, then a grouped matmul."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    d, cg, kh, kw = weight.shape
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    # Rows of unfold are ordered (c, ky, kx), the order of theta.reshape(-1).
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    cols = torch.maximum(cols, theta.reshape(1, c * kh * kw, 1))
    cols = cols.reshape(n, groups, cg * kh * kw, ho * wo)
    out = weight.reshape(1, groups, d // groups, cg * kh * kw) @ cols  # (n, groups, d/groups, L)
    out = out.reshape(n, d, ho * wo)
    if bias is not None:
        out = out + bias.reshape(1, d, 1)
    return out.reshape(n, d, ho, wo)


def convrelu_shifted(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """Faster form: one thresholded, strided slice and one 1x1 conv per kernel position."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    _, c, h, w = x.shape
    _, _, kh, kw = weight.shape
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x  # zeros: thresholded below like x
    out = None
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            patch = xp[:, :, y0 : y0 + sh * (ho - 1) + 1 : sh, x0 : x0 + sw * (wo - 1) + 1 : sw]
            patch = torch.maximum(patch, theta[:, ky, kx].reshape(1, c, 1, 1))
            term = F.conv2d(patch, weight[:, :, ky : ky + 1, kx : kx + 1], None, 1, 0, 1, groups)
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def fused_unavailable(x: Tensor) -> str | None:
    """None when the Triton kernels can take x (under autocast: in the autocast dtype); else why not."""
    fused = _fused_module()
    return "triton is not importable" if fused is None else fused.fused_unsupported_reason(x)


def resolve_impl(impl: str, x: Tensor) -> str:
    """The form ConvReLU2d(impl=impl) computes x with: "auto" and "fused" resolved for x's device."""
    if impl == "auto":
        return "fused" if x.is_cuda and fused_unavailable(x) is None else "patches"
    if impl == "fused" and fused_unavailable(x) is not None:
        return "patches"
    return impl


def convrelu_fused(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """The Triton implicit-GEMM kernels (converters/kernels), or the exact CPU path where they cannot
    run (no CUDA, float64, no triton): the same function either way."""
    reason = fused_unavailable(x)
    if reason is None:
        return _fused_module().convrelu_fused(x, weight, bias, theta, stride, padding, dilation, groups)
    warnings.warn(f"ConvReLU2d impl 'fused' falls back to 'patches': {reason}", stacklevel=3)
    return convrelu_patches(x, weight, bias, theta, stride, padding, dilation, groups)


def convrelu_auto(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """The fastest exact form for where x lives: fused kernels on CUDA, patches elsewhere."""
    if resolve_impl("auto", x) == "fused":
        return _fused_module().convrelu_fused(x, weight, bias, theta, stride, padding, dilation, groups)
    return convrelu_patches(x, weight, bias, theta, stride, padding, dilation, groups)


_FUSED = None  # converters.kernels.convrelu_fused once imported; False when triton is missing


def _fused_module():
    # Imported on first use: triton is slow to import, and under TRITON_INTERPRET=1 (CPU tests) it
    # must see that variable when the kernels are defined. A plain global, not functools.cache,
    # which torch.compile would trace through.
    global _FUSED
    if _FUSED is None:
        try:
            from converters.kernels import convrelu_fused as module
        except ImportError:
            module = False
        _FUSED = module
    return _FUSED or None


# impl name -> function(x, weight, bias, theta, stride, padding, dilation, groups) for 4-D x.
# bench/convrelu_conv.py measures them against Conv2d(ReLU(x)): patches is the fastest on CPU (1.2-1.8x
# of the pair at resnet50's 3x3 shapes), shifted and unfold are 2-9x; fused needs a GPU.
_IMPL_FUNCTIONS = {
    "auto": convrelu_auto,
    "fused": convrelu_fused,  # converters/kernels: Triton implicit GEMM, threshold applied on load
    "patches": convrelu_patches,  # convrelu_patches.py: one GEMM per chunk, hand-written backward
    "shifted": convrelu_shifted,
    "unfold": convrelu_unfold,  # the reference
}
assert tuple(_IMPL_FUNCTIONS) == CONVRELU_IMPLS, "every impl name in the vocabulary has one function"
_HAND_WRITTEN = ("auto", "fused", "patches")  # not traceable by torch.export with a symbolic batch
DEFAULT_IMPL = "auto"


def convrelu_ineligible_reason(module: nn.Module) -> str | None:
    """None when ConvReLU can take this module; else a short reason."""
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not a Conv2d"
    if type(module) is not nn.Conv2d:
        # Subclasses (timm Conv2dSame, ConvReLU2d itself, ...) may compute something else in forward.
        return f"{type(module).__name__} is a Conv2d subclass, not nn.Conv2d"
    if module.padding_mode != "zeros":
        return f"padding_mode {module.padding_mode!r} is not 'zeros'"
    if isinstance(module.padding, str):
        return f"padding {module.padding!r} is a string, not explicit integers"
    return None


@register
class ConvReLU2d(nn.Conv2d):
    """A Conv2d that reads the pre-activation and thresholds each input patch with theta."""

    name: ClassVar[str] = "convrelu"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        init: str = "identity",
        impl: str = DEFAULT_IMPL,
    ):
        if padding_mode != "zeros":
            raise ValueError(f"ConvReLU2d needs padding_mode 'zeros', got {padding_mode!r}")
        if padding in ("same", "valid"):
            raise ValueError(f"ConvReLU2d needs explicit integer padding, got {padding!r}")
        value = get_info(self.name).init_values(init)["theta"]  # validates init
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        self.init = init
        self.impl = impl
        shape = (in_channels, *self.kernel_size)
        self.theta = nn.Parameter(torch.full(shape, float(value), device=device, dtype=dtype))

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        check_choice("impl", value, CONVRELU_IMPLS)
        self._impl = value
        if value in ("auto", "fused") and torch.cuda.is_available():
            _fused_module()  # import now, not inside a torch.compile trace of forward

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, init: str = "identity", impl: str = DEFAULT_IMPL) -> ConvReLU2d:
        """Wrap `conv`, sharing its weight and bias Parameters (no copy)."""
        reason = convrelu_ineligible_reason(conv)
        if reason is not None:
            raise ValueError(f"cannot build ConvReLU2d from this module: {reason}")
        w = conv.weight
        # Built on the meta device so no throw-away weight is allocated, then given conv's Parameters.
        m = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device="meta",
            dtype=w.dtype,
            init=init,
            impl=impl,
        )
        m.weight = w
        m.bias = conv.bias
        value = get_info(cls.name).init_values(init)["theta"]
        m.theta = nn.Parameter(torch.full(tuple(m.theta.shape), float(value), device=w.device, dtype=w.dtype))
        m.train(conv.training)
        return m

    def forward(self, x: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export() and x.ndim == 4:
            from converters.export.symbolic import convrelu_node

            return convrelu_node(self, x)
        unbatched = x.ndim == 3
        if unbatched:
            x = x.unsqueeze(0)
        weight, bias, theta = self.weight, self.bias, self.theta
        if torch.is_autocast_enabled(x.device.type):
            # Run in the autocast dtype as F.conv2d would; the hand-written impls take one dtype.
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight, theta = x.to(dtype), weight.to(dtype), theta.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        fn = _IMPL_FUNCTIONS[self._impl]
        if torch.compiler.is_exporting() and self._impl in _HAND_WRITTEN:
            # torch.export (model.pt2) needs aten ops only and a batch it can keep symbolic: patches
            # loops over chunks in Python and fused is a reluswap custom op, so export the shifted form.
            fn = convrelu_shifted
        out = fn(x, weight, bias, theta, self.stride, self.padding, self.dilation, self.groups)
        return out.squeeze(0) if unbatched else out

    def rectification_point(self) -> float:
        # theta averaged over kernel positions is not a per-unit threshold: report x > 0.
        return 0.0

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self._impl}"
