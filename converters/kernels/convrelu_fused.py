"""ConvReLU through the Triton kernels: launchers, a torch custom op and its autograd formula.

`convrelu_fused(x, weight, bias, theta, stride, padding, dilation, groups)` has the signature of the
other ConvReLU forms (converters/activations/convrelu.py). It is a custom op (reluswap::convrelu_fused)
so torch.compile treats it as one opaque node instead of tracing into the launch code. Callers check
`fused_unsupported_reason(x)` first and take the exact path when it names a reason.

Memory: forward saves x, weight and theta for backward, the same as conv(relu(x)) saves (its relu
output instead of x); no patch matrix is ever materialised. The weight gradient is computed only
when the weight trains (in `bn+act` fine-tuning it does not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from converters.geometry import conv_out_size

try:
    import triton

    from . import convrelu_triton as kernels
except ImportError as exc:  # triton ships with the Linux CUDA torch wheel; elsewhere it may be missing
    triton = kernels = None
    _IMPORT_ERROR = f"triton is not importable ({exc})"
else:
    _IMPORT_ERROR = None

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SPLIT_UNIT = 128  # wgrad splits hold a multiple of every BK, so chunks never straddle two splits


def interpreting() -> bool:
    return kernels is not None and kernels.INTERPRET


def fused_unsupported_reason(x: Tensor) -> str | None:
    """None when the kernels can take `x` (after the autocast cast); else why not."""
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    if x.device.type != "cuda" and not interpreting():
        return f"the fused kernel runs on CUDA (or on CPU under TRITON_INTERPRET=1), not on {x.device.type}"
    dtype = _compute_dtype(x)
    if dtype not in DTYPES:
        return f"the fused kernel takes float32, bfloat16 or float16, not {dtype}"
    if x.ndim != 4:
        return f"the fused kernel takes (N, C, H, W) input, got {x.ndim} dimensions"
    return None


def _compute_dtype(x: Tensor) -> torch.dtype:
    # Under autocast the conv runs in the autocast dtype, as F.conv2d would.
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def convrelu_fused(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """Fused ConvReLU forward (differentiable wrt x, weight, bias and theta)."""
    dtype = _compute_dtype(x)
    x, weight, theta = x.to(dtype), weight.to(dtype), theta.to(dtype)
    bias = bias.to(dtype) if bias is not None else None
    return torch.ops.reluswap.convrelu_fused(
        x, weight, bias, theta, list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)), int(groups))


# ---------------------------------------------------------------- launchers


def _out_hw(x: Tensor, weight: Tensor, stride, padding, dilation) -> tuple[int, int]:
    (_, _, h, w), (_, _, kh, kw) = x.shape, weight.shape
    return (conv_out_size(h, kh, stride[0], padding[0], dilation[0]),
            conv_out_size(w, kw, stride[1], padding[1], dilation[1]))


def _layout(x: Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dense(x: Tensor) -> Tensor:
    """x itself when NCHW- or channels_last-contiguous (gradients reuse its strides); else a copy."""
    return x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()


def _precision(dtype: torch.dtype) -> str:
    # fp32 follows cuDNN's TF32 switch, so "fused vs Conv2d" compares like with like.
    if dtype == torch.float32 and not interpreting() and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _geometry(weight: Tensor, stride, padding, dilation) -> dict:
    _, _, kh, kw = weight.shape
    return dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1])


def _forward(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    x = _dense(x)
    n, _, h, w = x.shape
    d, cg = weight.shape[:2]
    ho, wo = _out_hw(x, weight, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(f"ConvReLU: the (dilated) kernel {tuple(weight.shape[2:])} does not fit the padded input "
                         f"{tuple(x.shape[2:])} (padding {tuple(padding)}, dilation {tuple(dilation)})")
    out = torch.empty((n, d, ho, wo), device=x.device, dtype=x.dtype, memory_format=_layout(x))
    m, dg = n * ho * wo, d // groups
    if m == 0 or d == 0:
        return out

    def grid(meta):
        return triton.cdiv(m, meta["BM"]), triton.cdiv(dg, meta["BN"]), groups

    # (ky, kx, c, d) order: a (c, d) weight tile is one coalesced load, not a gather with stride 9.
    wt = weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)
    kernels._fwd_kernel[grid](
        x, wt, bias if bias is not None else theta, theta, out,
        m, h, w, ho, wo, cg, dg,
        *x.stride(), *wt.stride(), *theta.stride(), *out.stride(),
        **_geometry(weight, stride, padding, dilation),
        HAS_BIAS=bias is not None, PRECISION=_precision(x.dtype),
    )
    return out


def _dgrad(grad, x, weight, theta, stride, padding, dilation, groups, need_x, need_theta):
    n, c, h, w = x.shape
    d, cg = weight.shape[:2]
    ho, wo = grad.shape[2:]
    gx = torch.empty_like(x) if need_x else x.new_empty(0)
    gt = torch.zeros((c, theta.shape[1] * theta.shape[2]), device=x.device, dtype=torch.float32)
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    m = n * hp * wp
    if m and d:
        def grid(meta):
            return triton.cdiv(m, meta["BM"]), triton.cdiv(cg, meta["BN"]), groups

        # (ky, kx, d, c) order: a (d, c) weight tile is one coalesced load.
        wt = weight.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
        kernels._dgrad_kernel[grid](
            grad, x, wt, theta, gx if need_x else gt, gt,
            m, h, w, hp, wp, ho, wo, cg, d // groups,
            *grad.stride(), *x.stride(), *wt.stride(), *theta.stride(),
            **_geometry(weight, stride, padding, dilation),
            NEED_X=need_x, NEED_THETA=need_theta, PRECISION=_precision(x.dtype),
        )
    elif need_x:
        gx.zero_()
    return gx, gt.reshape(theta.shape).to(theta.dtype) if need_theta else theta.new_empty(0)


def wgrad_split(m: int, tiles: int, device: torch.device) -> int:
    """How many chunks the output pixels are split into so the GPU has ~4 programs per SM."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return max(1, min(math.ceil(4 * sms / max(tiles, 1)), math.ceil(m / SPLIT_UNIT)))


def _wgrad(grad, x, weight, theta, stride, padding, dilation, groups, split: int | None = None) -> Tensor:
    n, _, h, w = x.shape
    d, cg, kh, kw = weight.shape
    ho, wo = grad.shape[2:]
    m, dg = n * ho * wo, d // groups
    if m == 0 or d == 0:
        return torch.zeros_like(weight)
    if split is None:
        split = wgrad_split(m, math.ceil(dg / 64) * kh * kw * math.ceil(cg / 64) * groups, x.device)
    per_split = math.ceil(math.ceil(m / split) / SPLIT_UNIT) * SPLIT_UNIT
    split = math.ceil(m / per_split)
    gw = torch.empty((split, d, cg, kh, kw), device=x.device, dtype=torch.float32)

    def grid(meta):
        return triton.cdiv(dg, meta["BM"]), kh * kw * triton.cdiv(cg, meta["BN"]), groups * split

    kernels._wgrad_kernel[grid](
        grad, x, theta, gw,
        m, h, w, ho, wo, cg, dg, per_split, d * cg * kh * kw, split,
        *grad.stride(), *x.stride(), *theta.stride(),
        **_geometry(weight, stride, padding, dilation),
        PRECISION=_precision(x.dtype),
    )
    return gw.sum(0).to(weight.dtype)


# ---------------------------------------------------------------- custom ops


@torch.library.custom_op("reluswap::convrelu_fused", mutates_args=())
def _fused_op(x: Tensor, weight: Tensor, bias: Tensor | None, theta: Tensor, stride: Sequence[int],
              padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    return _forward(x, weight, bias, theta, stride, padding, dilation, groups)


@_fused_op.register_fake
def _fused_fake(x, weight, bias, theta, stride, padding, dilation, groups):
    ho, wo = _out_hw(x, weight, stride, padding, dilation)
    return torch.empty((x.shape[0], weight.shape[0], ho, wo), device=x.device, dtype=x.dtype, memory_format=_layout(x))


@torch.library.custom_op("reluswap::convrelu_fused_backward", mutates_args=())
def _backward_op(grad: Tensor, x: Tensor, weight: Tensor, theta: Tensor, stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], groups: int, need_x: bool, need_weight: bool,
                 need_theta: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_theta); the ones not needed are empty tensors."""
    grad = grad.contiguous(memory_format=_layout(x))
    gx, gt = (x.new_empty(0), theta.new_empty(0))
    if need_x or need_theta:
        gx, gt = _dgrad(grad, x, weight, theta, stride, padding, dilation, groups, need_x, need_theta)
    gw = _wgrad(grad, x, weight, theta, stride, padding, dilation, groups) if need_weight else weight.new_empty(0)
    return gx, gw, gt


@_backward_op.register_fake
def _backward_fake(grad, x, weight, theta, stride, padding, dilation, groups, need_x, need_weight, need_theta):
    return (torch.empty_like(x) if need_x else x.new_empty(0),
            torch.empty_like(weight) if need_weight else weight.new_empty(0),
            torch.empty_like(theta) if need_theta else theta.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, theta, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(_dense(x), weight, theta)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight, theta = ctx.saved_tensors
    need_x, need_w, need_b, need_t = ctx.needs_input_grad[:4]
    gx = gw = gt = gb = None
    if need_x or need_w or need_t:
        gx, gw, gt = torch.ops.reluswap.convrelu_fused_backward(grad, x, weight, theta, *ctx.geometry,
                                                                need_x, need_w, need_t)
    if need_b and ctx.has_bias:
        gb = grad.sum((0, 2, 3), dtype=torch.float32).to(grad.dtype)
    return (gx if need_x else None, gw if need_w else None, gb, gt if need_t else None, None, None, None, None)


_fused_op.register_autograd(_backward, setup_context=_setup_context)
