"""The elementwise activations: identity init, catalogue values, shapes, errors, broadcast, gradients."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from converters.activations import (
    PVLU,
    LearnableActivation,
    activation_class,
    create_activation,
    register,
    registered_names,
)
from converters.catalog import CATALOG, UnknownActivationError, get_info

ELEMENTWISE = [n for n in CATALOG if CATALOG[n].kind == "elementwise"]
PRESERVING = [n for n in ELEMENTWISE if CATALOG[n].function_preserving]
WITH_PARAMS = [n for n in ELEMENTWISE if CATALOG[n].params]
WITH_CHANNEL = [n for n in WITH_PARAMS if "channel" in CATALOG[n].granularities]
NDIMS = [2, 3, 4, 5]
C = 3


def _input(ndim: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (2, C, 4, 3, 2)[:ndim]
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    # Sample 0 negative, sample 1 positive: every channel sees both sides of the kink.
    return torch.stack([-x[0].abs(), x[1].abs()])


def _granularities(name: str) -> list[str | None]:
    return list(CATALOG[name].granularities) or [None]


def _randomize(act: LearnableActivation, seed: int = 1, scale: float = 0.5) -> None:
    """Non-identity parameter values, distinct per channel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in act.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


# --- registry -------------------------------------------------------------------------------------


def test_registry_holds_the_catalogue_in_order():
    assert registered_names() == list(CATALOG)
    for name in CATALOG:
        assert activation_class(name).name == name


def test_registry_errors():
    with pytest.raises(UnknownActivationError, match="accepted: relu"):
        activation_class("swish")
    with pytest.raises(ValueError, match="ConvReLU2d.from_conv"):
        create_activation("convrelu", 4)
    with pytest.raises(ValueError, match="already registered"):
        register(activation_class("pvlu"))

    class Bogus(LearnableActivation):
        name = "bogus"

    with pytest.raises(ValueError, match="not in the catalogue"):
        register(Bogus)


# --- identity init --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", PRESERVING)
def test_identity_init_is_relu_exactly(name, ndim, dtype):
    x = _input(ndim, dtype)
    for gran in _granularities(name):
        act = create_activation(name, C, granularity=gran).to(dtype)
        y = act(x)
        assert y.shape == x.shape and y.dtype == dtype
        assert (y - torch.relu(x)).abs().max().item() == 0.0


@pytest.mark.parametrize("ndim", NDIMS)
def test_leaky_relu_is_not_function_preserving(ndim):
    assert get_info("leaky_relu").function_preserving is False
    x = _input(ndim)
    act = create_activation("leaky_relu", C)
    assert act.negative_slope == CATALOG["leaky_relu"].options["negative_slope"] == 0.01
    y = act(x)
    assert torch.equal(y, torch.where(x >= 0, x, 0.01 * x))
    assert (y - torch.relu(x)).abs().max().item() > 0.01
    assert create_activation("leaky_relu", C, negative_slope=0.2)(
        torch.tensor([[-1.0]])
    ).item() == pytest.approx(-0.2)


# --- init values and shapes -----------------------------------------------------------------------


@pytest.mark.parametrize("init", ["identity", "paper"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_init_values_and_shapes_follow_the_catalogue(name, init):
    info = get_info(name)
    default = create_activation(name, C, init=init)
    assert default.granularity == info.default_granularity
    assert [n for n, _ in default.named_parameters()] == list(info.param_names)
    for gran in _granularities(name):
        act = create_activation(name, C, init=init, granularity=gran)
        assert act.init == init and act.granularity == gran and act.channels == C
        for p in info.params:
            value = getattr(act, p.name)
            assert tuple(value.shape) == ((C,) if gran == "channel" else (1,))
            assert value.requires_grad
            assert torch.all(value == getattr(p, init)).item()


def test_paper_values_spot_check():
    # The catalogue is the source; these guard against a silent edit of the notes' table.
    assert create_activation("pvlu", C, init="paper").alpha.tolist() == [0.5] * C
    assert create_activation("frelu", C, init="paper").b.tolist() == [-1.0]
    assert create_activation("dualline", C, init="paper").m.tolist() == [pytest.approx(-0.22)]
    assert create_activation("prelu", C, init="paper").a.tolist() == [0.25] * C


def test_rectification_point():
    for name in ELEMENTWISE:
        if name != "adarelu":
            assert create_activation(name, C).rectification_point() == 0.0
    act = create_activation("adarelu", C)
    with torch.no_grad():
        act.theta.copy_(torch.tensor([0.1, -0.2, 0.3]))
    assert act.rectification_point().tolist() == pytest.approx([0.1, -0.2, 0.3])


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_bad_arguments_name_the_field_and_accepted_values(name):
    with pytest.raises(ValueError, match=r"init .*identity, paper"):
        create_activation(name, C, init="random")
    accepted = ", ".join(CATALOG[name].granularities) or "none"
    with pytest.raises(ValueError, match=rf"granularity 'pixel' .*accepted: {accepted}"):
        create_activation(name, C, granularity="pixel")
    opts = ", ".join(CATALOG[name].options) or "none"
    with pytest.raises(ValueError, match=rf"option.*slope_max.*accepted: {opts}"):
        create_activation(name, C, slope_max=1.0)
    if CATALOG[name].supports_cap:
        with pytest.raises(ValueError, match="cap must be a positive number"):
            create_activation(name, C, cap=-1.0)
    else:
        with pytest.raises(ValueError, match=r"cap is not supported by .*accepted for: relu, pvlu, frelu"):
            create_activation(name, C, cap=6.0)


def test_granularity_not_offered_by_paramless_activations():
    with pytest.raises(ValueError, match="accepted: none"):
        create_activation("relu", C, granularity="channel")


# --- capped forms (ReLU6 sites) -------------------------------------------------------------------


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", [n for n in ELEMENTWISE if CATALOG[n].supports_cap])
def test_capped_identity_is_relu6(name, ndim):
    x = _input(ndim) * 3  # values well beyond 6 on both sides
    assert (x > 6).any() and (x < 0).any()
    act = create_activation(name, C, cap=6).double()
    assert act.cap == 6.0
    y = act(x)
    assert (y - x.clamp(0, 6)).abs().max().item() == 0.0
    assert (y - torch.relu(x)).abs().max().item() > 1.0  # the cap is really applied


# --- per-channel broadcast ------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", WITH_CHANNEL)
def test_channel_parameter_only_affects_its_channel(name, ndim):
    x = _input(ndim)
    act = create_activation(name, C, granularity="channel").double()
    _randomize(act)
    y0 = act(x)
    for pname, p in act.named_parameters():
        for c in range(C):
            saved = p.detach().clone()
            with torch.no_grad():
                p[c] += 0.7
            y1 = act(x)
            with torch.no_grad():
                p.copy_(saved)  # exact restore (+0.7 -0.7 may round)
            changed = (y1 - y0).abs().flatten(2).amax(dim=(0, 2)) if ndim > 2 else (y1 - y0).abs().amax(0)
            others = [k for k in range(C) if k != c]
            assert changed[others].max().item() == 0.0, (pname, c)
            assert changed[c].item() > 1e-3, (pname, c)


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("name", WITH_CHANNEL)
def test_channel_form_equals_layer_form_per_channel(name, ndim):
    x = _input(ndim)
    act = create_activation(name, C, granularity="channel").double()
    _randomize(act)
    y = act(x)
    for c in range(C):
        layer = create_activation(name, C, granularity="layer").double()
        with torch.no_grad():
            for (_, p), (_, q) in zip(act.named_parameters(), layer.named_parameters()):
                q.copy_(p[c : c + 1])
        assert (layer(x)[:, c] - y[:, c]).abs().max().item() == 0.0


# --- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gradcheck(name):
    torch.manual_seed(0)
    for gran in _granularities(name):
        for ndim in (2, 4):
            act = create_activation(name, C, granularity=gran).double()
            _randomize(act, scale=0.3)
            if name == "adarelu":
                with torch.no_grad():
                    act.theta.uniform_(-0.05, 0.05)
            x = _input(ndim) / 3
            x = torch.where(x >= 0, x + 0.2, x - 0.2).requires_grad_()  # |x| >= 0.2: away from 0 and theta
            names = [n for n, _ in act.named_parameters()]
            params = tuple(p.detach().clone().requires_grad_() for p in act.parameters())

            def f(x, *ps, act=act, names=names):
                return functional_call(act, dict(zip(names, ps)), (x,))

            assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("ndim", NDIMS)
@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_pvlu_gradients_match_the_paper(granularity, ndim):
    x = _input(ndim).requires_grad_()
    act = PVLU(C, granularity=granularity).double()
    _randomize(act, scale=0.8)
    act(x).sum().backward()
    a, b = act.param_view(act.alpha, x).detach(), act.param_view(act.beta, x).detach()
    xd = x.detach()
    dims = [d for d in range(ndim) if d != 1] if granularity == "channel" else list(range(ndim))
    want_alpha = torch.sin(b * xd).sum(dim=dims).reshape(-1)
    want_beta = (a * xd * torch.cos(b * xd)).sum(dim=dims).reshape(-1)
    want_x = (xd > 0).double() + a * b * torch.cos(b * xd)
    assert (act.alpha.grad - want_alpha).abs().max().item() <= 1e-10
    assert (act.beta.grad - want_beta).abs().max().item() <= 1e-10
    assert (x.grad - want_x).abs().max().item() <= 1e-10
