"""Emitting one custom-domain node per converted site during torch.onnx.export.

Outside export the modules run their ordinary PyTorch math, so training is untouched. Parameters
go straight into the node, so they keep their state_dict names and (C,) shapes.
"""

from __future__ import annotations

import torch

from converters.geometry import conv_out_size

from .functions import DOMAIN, VERSION


def activation_node(module, x: torch.Tensor) -> torch.Tensor:
    info = module.info
    attrs = {}
    if info.supports_cap:
        attrs["cap"] = float(module.cap) if module.cap is not None else float("inf")
    params = tuple(getattr(module, name) for name in info.param_names)
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::{info.onnx_op}", (x, *params), attrs, dtype=x.dtype, shape=x.shape, version=VERSION
    )


def convrelu_node(module, x: torch.Tensor) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    n, _, h, w = x.shape
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    attrs = {
        "strides": [sh, sw],
        "pads": [ph, pw, ph, pw],
        "dilations": [dh, dw],
        "group": int(module.groups),
    }
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::ConvReLU",
        (x, module.weight, module.bias, module.theta),
        attrs,
        dtype=x.dtype,
        shape=(n, module.out_channels, ho, wo),
        version=VERSION,
    )
