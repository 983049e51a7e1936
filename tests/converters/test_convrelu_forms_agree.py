"""Every form of ConvReLU computes the same function: the unfold reference, shifted, patches, the
fused Triton kernel (under the interpreter without a GPU) and the ONNX function body that stock
onnxruntime inlines. One padded, strided, grouped geometry with thresholds of both signs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from converters.activations import ConvReLU2d
from converters.export import export_onnx

FORMS = ("unfold", "shifted", "patches", "fused")


def _layer(impl: str) -> ConvReLU2d:
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    layer = ConvReLU2d.from_conv(conv, impl=impl)
    with torch.no_grad():
        layer.theta.copy_(torch.rand(layer.theta.shape, generator=torch.Generator().manual_seed(4)) - 0.5)
    return layer.eval()


def _input() -> torch.Tensor:
    return torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(5))


def _fused_or_skip(x: torch.Tensor) -> None:
    pytest.importorskip("triton")
    from converters.kernels import convrelu_fused

    reason = convrelu_fused.fused_unsupported_reason(x)
    if reason is not None:
        pytest.skip(f"fused kernel unavailable here: {reason}")


@pytest.mark.parametrize("impl", FORMS[1:])
def test_forward_and_gradients_equal_the_reference(impl):
    x = _input()
    if impl == "fused":
        _fused_or_skip(x)
    outputs, grads = {}, {}
    for form in ("unfold", impl):
        layer = _layer(form)
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        y.backward(torch.cos(y.detach()))  # a non-uniform upstream gradient
        outputs[form] = y.detach()
        grads[form] = {"x": xi.grad, "theta": layer.theta.grad, "weight": layer.weight.grad}
    assert (outputs[impl] - outputs["unfold"]).abs().max() <= 1e-5
    for name in ("x", "theta", "weight"):
        want, got = grads["unfold"][name], grads[impl][name]
        assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max())), name


def test_onnx_function_body_equals_the_reference(tmp_path):
    layer, x = _layer("unfold"), _input()
    path = export_onnx(layer, x, tmp_path / "convrelu.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = layer(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
