"""The Triton ConvReLU kernels against the unfold reference (eq. 8 taken literally).

Without a GPU the kernels run under Triton's interpreter (conftest sets TRITON_INTERPRET=1) at small
shapes; on a CUDA machine the same tests run compiled, plus the resnet50 shapes at full size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from converters.activations.convrelu import convrelu_unfold

pytest.importorskip("triton")
from converters.kernels import convrelu_fused as fused  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
pytestmark = pytest.mark.skipif(fused.fused_unsupported_reason(torch.empty(1, 1, 1, 1, device=DEVICE)) is not None,
                                reason="no CUDA and TRITON_INTERPRET is not set")
needs_cuda = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)


@pytest.fixture(autouse=True)
def ieee_fp32():
    # fp32 kernels follow cuDNN's TF32 switch (like Conv2d); the tests hold fp32 to IEEE tolerances,
    # so it is off here, and on only where a test says so.
    with torch.backends.cudnn.flags(allow_tf32=False):
        yield

# (n, c, d, h, w, kernel, stride, padding, dilation, groups, bias, channels_last)
SMALL = [
    (2, 8, 6, 9, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, False),
    (2, 8, 6, 9, 7, (3, 3), (2, 2), (2, 1), (2, 1), 1, True, False),
    (1, 8, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4, False, False),
    (1, 8, 8, 7, 9, (1, 3), (1, 2), (0, 1), (1, 1), 8, True, False),  # depthwise, non-square
    (1, 6, 5, 8, 8, (5, 5), (1, 1), (2, 2), (1, 1), 1, True, True),  # channels_last
    (2, 20, 18, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, False),  # channel tiles straddle 16
    (1, 4, 4, 6, 6, (1, 1), (2, 2), (0, 0), (1, 1), 1, True, False),
]
# resnet50's 3x3 convs (C -> C, padding 1) at a training batch: CUDA only.
RESNET50 = [(16, c, c, s, s, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, cl)
            for c, s in [(64, 56), (128, 28), (256, 14), (512, 7)] for cl in (False, True)]


def _case(n, c, d, h, w, k, stride, padding, dilation, groups, bias, channels_last, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(d, c // groups, *k, generator=g) / (c // groups * k[0] * k[1]) ** 0.5
    b = torch.randn(d, generator=g) if bias else None
    # Both signs, on a grid x never hits exactly (no ties: the gradient split there is a convention).
    theta = (torch.randint(-4, 5, (c, *k), generator=g) * 0.125 + 1 / 1024).to(torch.float32)
    tensors = [t.to(DEVICE, dtype).requires_grad_() if t is not None else None for t in (x, weight, b, theta)]
    if channels_last:
        tensors[0] = tensors[0].detach().to(memory_format=torch.channels_last).requires_grad_()
    return tensors, (stride, padding, dilation, groups)


def _reference(x, weight, b, theta, geometry):
    """The unfold reference in float64 with its autograd."""
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, weight, b, theta)]
    return convrelu_unfold(*leaves, *geometry), leaves


def _check(tensors, geometry, rtol, dtype=torch.float32):
    x, weight, b, theta = tensors
    out = fused.convrelu_fused(x, weight, b, theta, *geometry)
    ref, leaves = _reference(x, weight, b, theta, geometry)
    assert out.shape == ref.shape and out.dtype == dtype
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    wanted = [t for t in tensors if t is not None]
    got = torch.autograd.grad(out, wanted, grad.to(dtype))
    expected = torch.autograd.grad(ref, [t for t in leaves if t is not None], grad.double())
    scale = lambda t: t.abs().max().item() + 1e-12  # noqa: E731
    err = (out.double() - ref).abs().max().item()
    assert err <= rtol * scale(ref), f"forward: {err} vs scale {scale(ref)}"
    for name, a, e in zip(["x", "weight", "bias", "theta"] if b is not None else ["x", "weight", "theta"],
                          got, expected, strict=True):
        assert a.shape == e.shape and a.dtype == dtype, name
        err = (a.double() - e).abs().max().item()
        assert err <= rtol * scale(e), f"grad {name}: {err} vs scale {scale(e)}"


def _case_id(case) -> str:
    n, c_in, c_out, h, w, k, s, p, d, g, bias, cl = case
    pairs = "-".join(f"{name}{a}x{b}" for name, (a, b) in zip("kspd", (k, s, p, d), strict=True))
    return f"{n}x{c_in}x{h}x{w}to{c_out}-{pairs}-g{g}" + ("-bias" if bias else "") + ("-cl" if cl else "")


@pytest.mark.parametrize("case", SMALL, ids=_case_id)
def test_forward_and_gradients_match_the_reference(case):
    tensors, geometry = _case(*case)
    _check(tensors, geometry, rtol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", RESNET50, ids=_case_id)
def test_resnet50_shapes_on_gpu(case, dtype):
    tensors, geometry = _case(*case, dtype=dtype)
    with torch.backends.cudnn.flags(allow_tf32=True):  # the default: fp32 runs on TF32 tensor cores
        _check(tensors, geometry, rtol=2e-2 if dtype == torch.bfloat16 else 2e-3, dtype=dtype)


def test_identity_init_is_conv_of_relu():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 9, device=DEVICE, requires_grad=True)
    weight = torch.randn(8, 8, 3, 3, device=DEVICE)
    bias = torch.randn(8, device=DEVICE)
    theta = torch.zeros(8, 3, 3, device=DEVICE)
    x.data[0, 0, :3, :3] = 0.0  # ties at theta = 0: relu's convention, no gradient to x
    out = fused.convrelu_fused(x, weight, bias, theta, 1, 1, 1, 1)
    ref = F.conv2d(F.relu(x), weight, bias, 1, 1)
    assert (out - ref).abs().max().item() <= 1e-6 * max(1.0, ref.abs().max().item())
    g, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    assert (g - g_ref).abs().max().item() <= 1e-5 * g_ref.abs().max().item()
    assert (g[0, 0, :3, :3] == 0).all()


def test_ties_send_the_gradient_to_theta():
    # x == theta everywhere: max(x, theta)'s gradient goes to theta only (ReLU's convention at 0).
    x = torch.full((1, 4, 5, 5), 0.5, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, device=DEVICE)
    theta = torch.full((4, 3, 3), 0.5, device=DEVICE, requires_grad=True)
    out = fused.convrelu_fused(x, weight, None, theta, 1, 0, 1, 1)
    gx, gt = torch.autograd.grad(out.sum(), [x, theta])
    assert (gx == 0).all()
    # Each theta[c, ky, kx] is read at every one of the 3x3 output pixels.
    expected = weight.sum(0) * 9
    assert torch.allclose(gt, expected, rtol=1e-5, atol=1e-5)


def test_padded_taps_are_thresholded_and_feed_theta():
    # One pixel, padding 1: eight of the nine taps read the padding, max(0, theta) = theta > 0.
    x = torch.full((1, 1, 1, 1), -5.0, device=DEVICE, requires_grad=True)
    weight = torch.ones(1, 1, 3, 3, device=DEVICE)
    theta = torch.full((1, 3, 3), 0.25, device=DEVICE, requires_grad=True)
    out = fused.convrelu_fused(x, weight, None, theta, 1, 1, 1, 1)
    assert out.item() == pytest.approx(9 * 0.25)
    gx, gt = torch.autograd.grad(out.sum(), [x, theta])
    assert gx.item() == 0 and torch.equal(gt, torch.ones_like(gt))


def test_only_the_needed_gradients_are_computed():
    tensors, geometry = _case(*SMALL[0])
    x, weight, b, theta = tensors
    weight.requires_grad_(False)
    x = x.detach()  # bn+act fine-tuning of the first converted conv: only theta (and bias) train
    out = fused.convrelu_fused(x, weight, b, theta, *geometry)
    out.square().sum().backward()
    assert weight.grad is None and x.grad is None
    ref, leaves = _reference(x, weight, b, theta, geometry)
    ref.square().sum().backward()
    assert torch.allclose(theta.grad.double(), leaves[3].grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(b.grad.double(), leaves[2].grad, rtol=1e-4, atol=1e-4)


def test_weight_gradient_is_the_same_for_every_split():
    tensors, (stride, padding, dilation, groups) = _case(2, 8, 8, 16, 12, (3, 3), (1, 1), (1, 1), (1, 1), 2, False, False)
    x, weight, theta = tensors[0].detach(), tensors[1].detach(), tensors[3].detach()
    grad = torch.randn(2, 8, 16, 12, device=DEVICE)
    args = (grad, x, weight, theta, list(stride), list(padding), list(dilation), groups)
    one = fused._wgrad(*args, split=1)
    three = fused._wgrad(*args, split=3)  # 384 output pixels: three chunks of 128
    assert torch.allclose(one, three, rtol=1e-5, atol=1e-5)


def test_autocast_runs_in_bfloat16():
    tensors, geometry = _case(*SMALL[0])
    x, weight, b, theta = tensors
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = fused.convrelu_fused(x, weight, b, theta, *geometry)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert weight.grad.dtype == torch.float32 and theta.grad.dtype == torch.float32
    ref, _ = _reference(x, weight, b, theta, geometry)
    assert (out.double() - ref).abs().max().item() <= 3e-2 * ref.abs().max().item()


def test_unsupported_dtype_is_named():
    reason = fused.fused_unsupported_reason(torch.empty(1, 1, 1, 1, dtype=torch.float64, device=DEVICE))
    assert reason is not None and "float64" in reason


def test_custom_op_registration_passes_opcheck():
    # Schema, fake (meta) kernel for torch.compile, and autograd registration checked by torch itself.
    tensors, (stride, padding, dilation, groups) = _case(1, 4, 4, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, False)
    torch.library.opcheck(torch.ops.reluswap.convrelu_fused.default,
                          (*tensors, list(stride), list(padding), list(dilation), groups),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_module_trains_under_torch_compile():
    # torch.compile sees the kernels as one opaque custom op (fake kernel + autograd formula): dynamo
    # and AOT autograd trace the module without graph breaks, and gradients match eager's.
    from torch import nn

    from converters.activations import ConvReLU2d

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1).to(DEVICE)
    module = ConvReLU2d.from_conv(conv, impl="fused")
    with torch.no_grad():
        module.theta.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 6, 6, device=DEVICE)
    compiled = torch.compile(module, backend="aot_eager" if not CUDA else "inductor", fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    compiled_grads = [p.grad.clone() for p in (module.weight, module.bias, module.theta)]
    module.zero_grad()
    ref = module(x)
    ref.square().sum().backward()
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, (module.weight.grad, module.bias.grad, module.theta.grad), strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_empty_batch_and_a_kernel_larger_than_the_input():
    weight = torch.randn(4, 4, 3, 3, device=DEVICE, requires_grad=True)
    theta = torch.zeros(4, 3, 3, device=DEVICE, requires_grad=True)
    x = torch.randn(0, 4, 5, 5, device=DEVICE, requires_grad=True)
    out = fused.convrelu_fused(x, weight, None, theta, 1, 1, 1, 1)
    assert out.shape == (0, 4, 5, 5)
    gx, gw, gt = torch.autograd.grad(out.sum(), [x, weight, theta], allow_unused=True)
    assert gx.shape == x.shape and not gw.any() and not gt.any()
    with pytest.raises(ValueError, match="does not fit the padded input"):
        fused.convrelu_fused(torch.randn(1, 4, 2, 2, device=DEVICE), weight, None, theta, 1, 0, 1, 1)
