"""ConvReLU: the two implementations against each other and against a loop over the formula."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from converters.activations import (
    ConvReLU2d,
    activation_class,
    convrelu_ineligible_reason,
    convrelu_shifted,
    convrelu_unfold,
)
from converters.activations.convrelu_patches import convrelu_patches

# kernel, stride, padding, dilation, groups, bias
CASES = list(itertools.product([1, 3], [1, 2], [0, 1], [1, 2], [1, 2], [True, False]))
N, CIN, COUT, HW = 2, 4, 4, 9


def _tensors(k, groups, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, CIN, HW, HW, generator=g, dtype=torch.float64)
    w = torch.randn(COUT, CIN // groups, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(COUT, generator=g, dtype=torch.float64) if bias else None
    theta = torch.randn(CIN, k, k, generator=g, dtype=torch.float64) * 0.5  # both signs
    return x, w, b, theta


def _naive(x, w, b, theta, s, p, dil, groups):
    """The notes' formula, one output position at a time."""
    n, _, h, wd = x.shape
    d, cg, k, _ = w.shape
    xpad = F.pad(x, (p, p, p, p))  # zeros, thresholded below like every other input
    ho, wo = (h + 2 * p - dil * (k - 1) - 1) // s + 1, (wd + 2 * p - dil * (k - 1) - 1) // s + 1
    out = torch.zeros(n, d, ho, wo, dtype=x.dtype)
    dg = d // groups
    for i in range(ho):
        for j in range(wo):
            patch = xpad[
                :, :, i * s : i * s + dil * (k - 1) + 1 : dil, j * s : j * s + dil * (k - 1) + 1 : dil
            ]
            patch = torch.maximum(patch, theta)  # (n, c, k, k)
            for gi in range(groups):
                pg = patch[:, gi * cg : (gi + 1) * cg]
                wg = w[gi * dg : (gi + 1) * dg]
                out[:, gi * dg : (gi + 1) * dg, i, j] = torch.einsum("nckl,dckl->nd", pg, wg)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


@pytest.mark.parametrize("k,s,p,dil,groups,bias", CASES)
def test_shifted_unfold_and_loop_agree(k, s, p, dil, groups, bias):
    x, w, b, theta = _tensors(k, groups, bias)
    args = (s, p, dil, groups)
    ys = convrelu_shifted(x, w, b, theta, *args)
    yu = convrelu_unfold(x, w, b, theta, *args)
    yn = _naive(x, w, b, theta, *args)
    assert ys.shape == yu.shape == yn.shape == F.conv2d(x, w, b, s, p, dil, groups).shape
    assert (ys - yu).abs().max().item() <= 1e-10
    assert (ys - yn).abs().max().item() <= 1e-10
    # theta really matters here: the thresholded result is not the plain conv of relu(x).
    assert (ys - F.conv2d(torch.relu(x), w, b, s, p, dil, groups)).abs().max().item() > 1e-3


@pytest.mark.parametrize("k,s,p,dil,groups,bias", CASES)
def test_shifted_and_unfold_gradients_agree(k, s, p, dil, groups, bias):
    x, w, b, theta = _tensors(k, groups, bias, seed=1)
    leaves = [t.requires_grad_() for t in (x, w, theta) + ((b,) if bias else ())]
    y = convrelu_shifted(x, w, b, theta, s, p, dil, groups)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    gs = torch.autograd.grad((y * upstream).sum(), leaves)
    gu = torch.autograd.grad((convrelu_unfold(x, w, b, theta, s, p, dil, groups) * upstream).sum(), leaves)
    for name, a, c in zip(["x", "weight", "theta", "bias"], gs, gu):
        assert (a - c).abs().max().item() <= 1e-10, name
    assert gs[2].abs().max().item() > 0  # some inputs fall below theta: theta gets a gradient


def test_gradcheck_shifted():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    t = (
        torch.rand(2, 3, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    )  # |theta| >= 0.1: away from the pad's 0
    theta = torch.where(torch.rand(2, 3, 3, generator=g) < 0.5, t, -t).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: convrelu_shifted(*a, 1, 1, 1, 1), (x, w, b, theta))


@pytest.mark.parametrize("impl", ["auto", "patches", "shifted", "unfold"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize(
    "k,s,p,dil,groups", [(3, 1, 1, 1, 1), (3, 2, 1, 1, 2), (3, 1, 2, 2, 1), (1, 2, 0, 1, 4)]
)
def test_identity_init_is_conv_of_relu(impl, dtype, tol, k, s, p, dil, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(CIN, COUT, k, s, p, dil, groups).to(dtype)
    m = ConvReLU2d.from_conv(conv, impl=impl)
    assert m.impl == impl and torch.all(m.theta == 0).item()
    x = torch.randn(N, CIN, HW, HW, dtype=dtype)
    with torch.no_grad():
        assert (m(x) - conv(torch.relu(x))).abs().max().item() <= tol


def test_from_conv_reuses_parameters_and_copies_hyperparameters():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2).double().eval()
    m = ConvReLU2d.from_conv(conv, init="paper")
    assert m.weight is conv.weight and m.bias is conv.bias
    assert list(m.state_dict()) == ["weight", "bias", "theta"]
    assert (
        m.theta.shape == (4, 3, 3) and m.theta.dtype == torch.float64 and m.theta.device == conv.weight.device
    )
    assert torch.all(m.theta == 0).item()  # paper init of convrelu is 0 too (catalogue)
    assert (m.stride, m.padding, m.dilation, m.groups) == ((2, 2), (1, 1), (2, 2), 2)
    assert m.training is False
    assert m.rectification_point() == 0.0 and activation_class("convrelu") is ConvReLU2d
    assert "impl=auto" in repr(m)
    # Training the ConvReLU trains the original conv's weight.
    m(torch.randn(1, 4, 9, 9, dtype=torch.float64)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum().item() > 0

    nobias = ConvReLU2d.from_conv(nn.Conv2d(4, 4, 1, bias=False))
    assert nobias.bias is None and list(nobias.state_dict()) == ["weight", "theta"]


def _float64_module(impl: str):
    """(conv, ConvReLU2d with random theta, x, the functional forms' arguments after x), float64."""
    conv = nn.Conv2d(4, 4, 3, padding=1).double()
    m = ConvReLU2d.from_conv(conv, impl=impl)
    with torch.no_grad():
        m.theta.normal_()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    return conv, m, x, (m.weight, m.bias, m.theta, m.stride, m.padding, m.dilation, m.groups)


def test_forward_dispatches_to_the_chosen_impl():
    conv, m, x, args = _float64_module("unfold")
    assert torch.equal(m(x), convrelu_unfold(x, *args))
    m.impl = "shifted"
    assert torch.equal(m(x), convrelu_shifted(x, *args))
    m.impl = "auto"  # on CPU: the patches path
    assert torch.equal(m(x), convrelu_patches(x, *args))
    accepted = "impl must be one of auto, fused, patches, shifted, unfold; got 'fast'"
    with pytest.raises(ValueError, match=accepted):
        m.impl = "fast"
    with pytest.raises(ValueError, match=accepted):
        ConvReLU2d.from_conv(conv, impl="fast")
    with pytest.raises(ValueError, match="init must be one of identity, paper"):
        ConvReLU2d.from_conv(conv, init="zero")


class _MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize(
    "module,reason",
    [
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode 'reflect' is not 'zeros'"),
        (Conv2dSame(4, 4, 3), "Conv2dSame is a Conv2d subclass"),
        (_MyConv(4, 4, 3), "_MyConv is a Conv2d subclass"),
        (nn.Conv2d(4, 4, 3, padding="same"), "padding 'same' is a string"),
        (nn.Linear(4, 4), "Linear is not a Conv2d"),
    ],
)
def test_ineligible_modules_give_the_reason(module, reason):
    assert reason in convrelu_ineligible_reason(module)
    with pytest.raises(ValueError, match=reason):
        ConvReLU2d.from_conv(module)


def test_eligible_conv_has_no_reason():
    assert convrelu_ineligible_reason(nn.Conv2d(4, 4, 3, padding=1)) is None
    assert convrelu_ineligible_reason(nn.Conv2d(4, 4, 3, padding="valid")) is not None


def test_padded_positions_are_thresholded():
    torch.manual_seed(0)
    conv = nn.Conv2d(CIN, COUT, 3, padding=1).double()
    m = ConvReLU2d.from_conv(conv)
    with torch.no_grad():
        m.theta[0, 0, 0] = 0.7  # top-left kernel position of channel 0 only
    x = torch.randn(N, CIN, HW, HW, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        # Thresholding x before padding (the pad stays 0): what eq. 8 does not say.
        alt = sum(
            F.conv2d(
                F.pad(torch.maximum(x, m.theta[:, ky, kx].reshape(1, -1, 1, 1)), (1, 1, 1, 1))[
                    :, :, ky : ky + HW, kx : kx + HW
                ],
                m.weight[:, :, ky : ky + 1, kx : kx + 1],
            )
            for ky in range(3)
            for kx in range(3)
        ) + m.bias.reshape(1, -1, 1, 1)
    # Kernel position (0, 0) reads the pad at output row 0 and column 0: there the pad became 0.7.
    border = torch.zeros(HW, HW, dtype=torch.bool)
    border[0, :] = True
    border[:, 0] = True
    want = (0.7 * m.weight[:, 0, 0, 0]).reshape(1, -1, 1, 1) * border
    assert (y - alt - want).abs().max().item() <= 1e-12
    assert (y - alt).abs().max().item() >= 0.7 * m.weight[:, 0, 0, 0].abs().max().item() - 1e-12 > 0


def test_fused_falls_back_to_the_exact_path_and_says_why():
    # float64 is not a dtype the Triton kernels take: the module still computes ConvReLU, exactly.
    _, m, x, args = _float64_module("fused")
    with pytest.warns(UserWarning, match="falls back to 'patches': .*float64"):
        y = m(x)
    assert torch.equal(y, convrelu_patches(x, *args))


@pytest.mark.parametrize("impl", ["auto", "patches", "shifted", "unfold"])
def test_autocast_runs_every_impl_in_the_autocast_dtype(impl):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    m = ConvReLU2d.from_conv(conv, impl=impl)
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        ref = conv(torch.relu(x))
    assert y.dtype == ref.dtype == torch.bfloat16
    assert (y.float() - ref.float()).abs().max().item() <= 2e-2 * ref.float().abs().max().item()
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and m.theta.grad.dtype == torch.float32


def test_resolve_impl_names_the_form_that_runs():
    from converters.activations.convrelu import resolve_impl

    cpu = torch.empty(1, 1, 1, 1)
    assert resolve_impl("auto", cpu) == "patches"  # the kernels are for CUDA tensors
    assert resolve_impl("fused", cpu.double()) == "patches"  # float64: not a kernel dtype
    assert resolve_impl("shifted", cpu) == "shifted" and resolve_impl("unfold", cpu) == "unfold"
    if torch.cuda.is_available():
        assert resolve_impl("auto", cpu.cuda()) == "fused"
