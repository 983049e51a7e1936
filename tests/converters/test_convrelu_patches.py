"""ConvReLU "patches" impl (convrelu_patches.py) against the unfold reference and against conv(relu(x))."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import converters.activations.convrelu_patches as patches_mod
from converters.activations import ConvReLU2d, convrelu_unfold
from converters.activations.convrelu_patches import convrelu_patches

N, CIN, COUT, H, W = 2, 4, 8, 9, 7  # odd, non-square sizes

# (kh, kw), stride, padding, dilation, groups (4 = depthwise with channel multiplier 2), bias
GRID = [
    c
    for c in itertools.product(
        [(1, 1), (3, 3), (1, 3), (5, 5)], [1, 2], [0, 1, 2], [1, 2], [1, 2, 4], [True, False]
    )
    if min(H, W) + 2 * c[2] - c[3] * (max(c[0]) - 1) - 1 >= 0
]


def _tensors(kernel, groups, bias, dtype=torch.float64, seed=0, cout=COUT):
    """x on a grid of multiples of 1/4, theta on odd multiples of 1/16 (both signs, never 0): no ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-12, 13, (N, CIN, H, W), generator=g).to(dtype) / 4
    w = torch.randn(cout, CIN // groups, *kernel, generator=g, dtype=dtype)
    b = torch.randn(cout, generator=g, dtype=dtype) if bias else None
    theta = (torch.randint(-8, 8, (CIN, *kernel), generator=g).to(dtype) * 2 + 1) / 16
    return x, w, b, theta


def _grads(fn, x, w, b, theta, args, upstream=None):
    leaves = [t.detach().requires_grad_() for t in (x, w, theta) + ((b,) if b is not None else ())]
    y = fn(leaves[0], leaves[1], leaves[3] if b is not None else None, leaves[2], *args)
    if upstream is None:
        upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=y.dtype)
    return y, torch.autograd.grad((y * upstream).sum(), leaves)


@pytest.fixture(params=["default", "bands", "images"])
def chunking(request, monkeypatch):
    """default chunks; one output row per chunk (bands of one image); all images in one chunk."""
    if request.param == "bands":
        monkeypatch.setattr(patches_mod, "CHUNK_BYTES", 1)
        monkeypatch.setattr(patches_mod, "MIN_POSITIONS", 1)
    elif request.param == "images":
        monkeypatch.setattr(patches_mod, "CHUNK_BYTES", 1 << 30)
    return request.param


@pytest.mark.parametrize("kernel,s,p,dil,groups,bias", GRID)
def test_forward_and_gradients_equal_unfold(kernel, s, p, dil, groups, bias, monkeypatch):
    x, w, b, theta = _tensors(kernel, groups, bias)
    args = (s, p, dil, groups)
    yu, gu = _grads(convrelu_unfold, x, w, b, theta, args)
    for layout in ("nchw", "nhwc"):  # nhwc: groups == 1 only, the others fall back to nchw
        monkeypatch.setattr(patches_mod, "LAYOUT", layout)
        yp, gp = _grads(convrelu_patches, x, w, b, theta, args)
        assert yp.shape == yu.shape == F.conv2d(x, w, b, s, p, dil, groups).shape
        assert (yp - yu).abs().max().item() <= 1e-10, layout
        for name, a, c in zip(["x", "weight", "theta", "bias"], gp, gu):
            assert (a - c).abs().max().item() <= 1e-10, (layout, name)


@pytest.mark.parametrize(
    "kernel,s,p,dil,groups",
    [((3, 3), 1, 1, 1, 1), ((3, 3), 2, 2, 2, 2), ((1, 3), 2, 1, 1, 4), ((5, 3), 2, 1, 1, 1)],
)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_chunkings_agree(chunking, layout, kernel, s, p, dil, groups, monkeypatch):
    monkeypatch.setattr(patches_mod, "LAYOUT", layout)
    x, w, b, theta = _tensors(kernel, groups, True, seed=3)
    args = (s, p, dil, groups)
    yu, gu = _grads(convrelu_unfold, x, w, b, theta, args)
    yp, gp = _grads(convrelu_patches, x, w, b, theta, args)
    assert (yp - yu).abs().max().item() <= 1e-10
    for name, a, c in zip(["x", "weight", "theta", "bias"], gp, gu):
        assert (a - c).abs().max().item() <= 1e-10, name


def test_depthwise_without_multiplier():
    x, w, b, theta = _tensors((3, 3), CIN, True, seed=4, cout=CIN)
    args = (1, 1, 1, CIN)
    yu, gu = _grads(convrelu_unfold, x, w, b, theta, args)
    yp, gp = _grads(convrelu_patches, x, w, b, theta, args)
    assert (yp - yu).abs().max().item() <= 1e-10
    assert all((a - c).abs().max().item() <= 1e-10 for a, c in zip(gp, gu))


def test_gradcheck():
    g = torch.Generator().manual_seed(5)
    x = (torch.randint(-8, 9, (2, 4, 5, 4), generator=g).double() / 4).requires_grad_()
    w = torch.randn(4, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    theta = ((torch.randint(-4, 4, (4, 3, 2), generator=g).double() * 2 + 1) / 16).requires_grad_()
    for s, p, dil in [(1, 1, 1), (2, 2, 1), (1, 1, 2)]:
        assert torch.autograd.gradcheck(
            lambda *a, s=s, p=p, dil=dil: convrelu_patches(*a, s, p, dil, 2), (x, w, b, theta), fast_mode=True
        )


@pytest.mark.parametrize(
    "k,s,p,dil,groups", [(3, 1, 1, 1, 1), (3, 2, 1, 1, 2), (3, 1, 2, 2, 1), (1, 2, 0, 1, 4)]
)
def test_identity_init_is_conv_of_relu(k, s, p, dil, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(CIN, COUT, k, s, p, dil, groups)
    m = ConvReLU2d.from_conv(conv, impl="patches")
    x = torch.randn(N, CIN, H, W)
    with torch.no_grad():
        assert (m(x) - conv(torch.relu(x))).abs().max().item() <= 1e-6


def test_ties_give_the_gradient_to_theta_like_relu():
    """theta = 0 and inputs exactly 0 (and the padded zeros): x gets relu's gradient (relu'(0) = 0)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(CIN, COUT, 3, 1, 1).double()
    m = ConvReLU2d.from_conv(conv, impl="patches")
    x = torch.randn(N, CIN, H, W, dtype=torch.float64)
    x[x.abs() < 0.5] = 0.0  # many exact ties with theta
    x.requires_grad_()
    up = torch.randn(N, COUT, H, W, dtype=torch.float64)
    gx, gw, gb, gt = torch.autograd.grad((m(x) * up).sum(), (x, m.weight, m.bias, m.theta))
    x2 = x.detach().requires_grad_()
    gx2, gw2, gb2 = torch.autograd.grad((conv(torch.relu(x2)) * up).sum(), (x2, conv.weight, conv.bias))
    assert (gx - gx2).abs().max().item() <= 1e-10
    assert (gw - gw2).abs().max().item() <= 1e-10 and (gb - gb2).abs().max().item() <= 1e-10
    # theta gets the whole gradient of every tied (and every lower) input: sum of gP where x <= 0.
    cols = F.unfold(x.detach(), 3, padding=1)  # (N, CIN*9, L)
    gp = conv.weight.reshape(COUT, -1).t() @ up.reshape(N, COUT, -1)
    want = (gp * (cols <= 0)).sum((0, 2)).reshape(CIN, 3, 3)
    assert (gt - want).abs().max().item() <= 1e-10


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 5e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("layout,groups", [("nchw", 2), ("nhwc", 1)])
def test_low_precision_runs_and_is_close(dtype, tol, layout, groups, monkeypatch):
    monkeypatch.setattr(patches_mod, "LAYOUT", layout)
    x, w, b, theta = _tensors((3, 3), groups, True, seed=6)
    args = (1, 1, 1, groups)
    y64, g64 = _grads(convrelu_unfold, x, w, b, theta, args)
    up = torch.randn(y64.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y, g = _grads(
        convrelu_patches, x.to(dtype), w.to(dtype), b.to(dtype), theta.to(dtype), args, up.to(dtype)
    )
    assert y.dtype == dtype and all(t.dtype == dtype for t in g)

    def close(a, ref):
        return (a.double() - ref).abs().max().item() <= tol * max(1.0, ref.abs().max().item())

    assert close(y, y64)
    for name, a, c in zip(["x", "weight", "theta", "bias"], g, g64):
        assert close(a, c), name


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_needs_input_grad_subsets(layout, monkeypatch):
    monkeypatch.setattr(patches_mod, "LAYOUT", layout)
    x, w, b, theta = _tensors((3, 3), 1, True, seed=8)
    args = (2, 1, 1, 1)
    _, (gx_ref, gw_ref, gt_ref, gb_ref) = _grads(convrelu_unfold, x, w, b, theta, args)
    ref = {"x": gx_ref, "w": gw_ref, "b": gb_ref, "t": gt_ref}
    for wanted in [("w", "b", "t"), ("x", "t"), ("x",), ("t",), ("b",), ("w",), ("x", "b")]:
        ts = {"x": x.clone(), "w": w.clone(), "b": b.clone(), "t": theta.clone()}
        for name in wanted:
            ts[name].requires_grad_()
        y = convrelu_patches(ts["x"], ts["w"], ts["b"], ts["t"], *args)
        up = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=y.dtype)
        got = torch.autograd.grad((y * up).sum(), [ts[name] for name in wanted])
        for name, gr in zip(wanted, got):
            assert (gr - ref[name]).abs().max().item() <= 1e-10, (wanted, name)
    with torch.no_grad():
        y = convrelu_patches(x, w, b, theta, *args)
    assert not y.requires_grad


def test_module_unbatched_channels_last_and_saved_memory():
    torch.manual_seed(2)
    conv = nn.Conv2d(CIN, COUT, 3, 1, 0).double()
    m = ConvReLU2d.from_conv(conv, impl="patches")
    with torch.no_grad():
        m.theta.normal_()
    assert "impl=patches" in repr(m)
    x = torch.randn(CIN, H, W, dtype=torch.float64)
    want = convrelu_unfold(x[None], m.weight, m.bias, m.theta, 1, 0, 1, 1)[0]
    assert (m(x) - want).abs().max().item() <= 1e-10
    xb = torch.randn(N, CIN, H, W, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(xb)
    # Saved: the (here unpadded) input, weight and theta; never the kH*kW times larger patches.
    assert sum(seen.values()) <= (xb.numel() + m.weight.numel() + m.theta.numel()) * 8
    assert y.is_contiguous(memory_format=torch.channels_last)  # like Conv2d
    up = torch.randn(y.shape, dtype=torch.float64).to(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad((y * up).sum(), (xb,))
    x2 = xb.detach().contiguous().requires_grad_()
    y2 = convrelu_unfold(x2, m.weight, m.bias, m.theta, 1, 0, 1, 1)
    (gx2,) = torch.autograd.grad((y2 * up).sum(), (x2,))
    assert (y - y2).abs().max().item() <= 1e-10 and (gx - gx2).abs().max().item() <= 1e-10


def test_unknown_layout_is_refused(monkeypatch):
    monkeypatch.setattr(patches_mod, "LAYOUT", "nhcw")
    x, w, b, theta = _tensors((3, 3), 1, True)
    with pytest.raises(ValueError, match="LAYOUT must be auto, nchw or nhwc"):
        convrelu_patches(x, w, b, theta, 1, 1, 1, 1)


def test_empty_batch():
    x, w, b, theta = _tensors((3, 3), 1, True)
    x = x[:0].requires_grad_()
    y = convrelu_patches(x, w, b, theta, 1, 1, 1, 1)
    assert y.shape == (0, COUT, H, W)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    assert gx.shape == x.shape
