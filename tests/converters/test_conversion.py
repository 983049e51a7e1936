"""convert() on real models: identity init preserves the function, parameters are per site and
change the output, counts add up, in-place hazards are refused, BN still trains."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize
from torch import nn

from converters import InplaceHazardError, convert, find_sites
from converters.activations import ConvReLU2d, LearnableActivation
from converters.catalog import CATALOG, get_info

MODELS = [
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:vgg16_bn",
    "torchvision:densenet121",
    "torchvision:googlenet",
    "torchvision:mobilenet_v3_small",
    "timm:resnet50",
    "timm:densenet121",
]
PRESERVING = [name for name, info in CATALOG.items() if info.function_preserving]


def expected_added_parameters(conversion, source: nn.Module, granularity: str | None = None) -> int:
    """The sum the papers' shapes give, computed from the sites, not from the converted model."""
    total = 0
    for site in conversion.replaced:
        info = get_info(site.replacement)
        if info.kind == "conv":
            for path in site.convrelu_convs:
                conv = source.get_submodule(path)
                total += conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        else:
            per_param = site.channels if (granularity or info.default_granularity) == "channel" else 1
            total += len(info.params) * per_param
    return total


@pytest.mark.parametrize("ref", MODELS)
@pytest.mark.parametrize("activation", PRESERVING)
def test_identity_init_preserves_the_function(filled_model, example_input, ref, activation):
    model = filled_model(ref)
    conversion = convert(model, activation, example_inputs=example_input, fallback="adarelu")
    with torch.no_grad():
        expected = model(example_input)
        got = conversion.model.eval()(example_input)
    assert (got - expected).abs().max().item() <= 1e-6

    sites = conversion.sites
    replaced = conversion.replaced
    if activation == "convrelu":
        assert all(s.replacement in ("convrelu", "adarelu") for s in replaced)
        assert {s.name for s in replaced if s.replacement == "convrelu"} == {s.name for s in sites if s.convrelu}
    else:
        assert len(replaced) == len(sites)
    assert conversion.added_parameters() == expected_added_parameters(conversion, model)
    n_before = sum(p.numel() for p in model.parameters())
    n_graph_original = sum(p.numel() for p in conversion.model.parameters()) - conversion.added_parameters()
    assert n_graph_original <= n_before  # nothing but the new parameters was added

    if activation == "relu":
        return
    randomize(conversion)
    with torch.no_grad(), record_site_outputs(conversion) as seen:
        changed = conversion.model(example_input)
    # Every replaced site now computes something other than ReLU ...
    assert len(seen) == sum(max(1, len(s.convrelu_convs)) if s.replacement == "convrelu" else 1 for s in replaced)
    assert all(diff > 0 for diff in seen.values())
    # ... and so does the network (random mobilenet_v3_small saturates its SE gates: a small change).
    scale = expected.abs().max().item()
    assert (changed - expected).abs().max().item() > 1e-6 * scale


@contextlib.contextmanager
def record_site_outputs(conversion):
    """Max |new activation output - what ReLU would have given| per replaced module."""
    seen: dict[str, float] = {}
    handles = []
    for name, module in conversion.model.named_modules():
        if isinstance(module, ConvReLU2d):
            def hook(m, args, out, name=name):
                plain = F.conv2d(F.relu(args[0]), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
                seen[name] = (out - plain).abs().max().item()
        elif isinstance(module, LearnableActivation):
            def hook(m, args, out, name=name):
                plain = args[0].clamp(0, m.cap) if m.cap else F.relu(args[0])
                seen[name] = (out - plain).abs().max().item()
        else:
            continue
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("ref", ["torchvision:resnet18", "torchvision:googlenet"])
def test_leaky_relu_is_not_function_preserving(filled_model, example_input, ref):
    model = filled_model(ref)
    conversion = convert(model, "leaky_relu", example_inputs=example_input, negative_slope=0.2)
    with torch.no_grad():
        diff = (conversion.model(example_input) - model(example_input)).abs().max().item()
    assert diff > 1e-4
    assert conversion.added_parameters() == 0


@pytest.mark.parametrize("granularity,expected", [("channel", 2 * 9 * 64 + 0), ("layer", 2 * 17)])
def test_granularity_sets_parameter_shapes(filled_model, example_input, granularity, expected):
    model = filled_model("torchvision:resnet18")
    conversion = convert(model, "pvlu", example_inputs=example_input, granularity=granularity)
    if granularity == "channel":
        expected = sum(2 * s.channels for s in conversion.sites)
    assert conversion.added_parameters() == expected
    for site in conversion.replaced:
        alpha = conversion.model.get_submodule(site.name).alpha
        assert alpha.shape == ((site.channels,) if granularity == "channel" else (1,))


def test_every_call_site_owns_its_parameters(filled_model, example_input):
    conversion = convert(filled_model("torchvision:resnet18"), "pvlu", example_inputs=example_input)
    acts = [conversion.model.get_submodule(s.name) for s in conversion.replaced]
    assert len(acts) == 17 and len({id(a) for a in acts}) == 17
    assert all(isinstance(a, LearnableActivation) for a in acts)
    assert len({a.alpha.data_ptr() for a in acts}) == 17
    keys = set(conversion.model.state_dict())
    assert {"layer1.0.relu.alpha", "layer1.0.relu_1.alpha", "layer1.0.relu_1.beta"} <= keys
    # Changing one site's parameter changes the output; the other two calls of the same
    # torchvision nn.ReLU do not share it.
    x = example_input
    with torch.no_grad():
        base = conversion.model(x)
        conversion.model.get_submodule("layer1.0.relu_1").alpha.fill_(0.5)
        out = conversion.model(x)
    assert (out - base).abs().max() > 1e-4
    assert conversion.model.get_submodule("layer1.0.relu").alpha.abs().max() == 0


def test_input_model_is_untouched(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conversion = convert(model, "convrelu", example_inputs=example_input)
    randomize(conversion)
    assert all(type(m) is not ConvReLU2d for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # No parameter is shared between the original and the converted model.
    originals = {p.data_ptr() for p in model.parameters()}
    assert not originals & {p.data_ptr() for p in conversion.model.parameters()}


def test_partial_strategy_keeps_other_calls_of_a_shared_module(filled_model, example_input):
    """Replacing only the first call of layer1.0.relu moves that path to the new module; the
    second call must still compute a plain ReLU."""
    model = filled_model("torchvision:resnet18")
    conversion = convert(model, "frelu", strategy="names:layer1.0.relu", example_inputs=example_input)
    assert [s.name for s in conversion.replaced] == ["layer1.0.relu"]
    with torch.no_grad():
        assert (conversion.model(example_input) - model(example_input)).abs().max() == 0
        conversion.model.get_submodule("layer1.0.relu").b.fill_(-0.3)
        only_first = conversion.model(example_input)
    both = convert(model, "frelu", strategy="names:layer1.0.relu,layer1.0.relu_1", example_inputs=example_input)
    with torch.no_grad():
        both.model.get_submodule("layer1.0.relu").b.fill_(-0.3)
        assert (both.model(example_input) - only_first).abs().max() == 0  # relu_1 still at identity
        both.model.get_submodule("layer1.0.relu_1").b.fill_(-0.3)
        assert (both.model(example_input) - only_first).abs().max() > 1e-4


def test_batchnorm_still_switches_between_train_and_eval(filled_model, example_input):
    conversion = convert(filled_model("torchvision:resnet18"), "pvlu", example_inputs=example_input)
    model = conversion.model
    bn = model.get_submodule("layer1.0.bn1")
    model.train()
    assert bn.training
    before = bn.running_mean.clone()
    model(example_input)
    assert not torch.equal(before, bn.running_mean)  # train mode updates statistics
    model.eval()
    frozen = bn.running_mean.clone()
    with torch.no_grad():
        model(example_input)
    assert torch.equal(frozen, bn.running_mean)
    # and gradients reach the new parameters
    model.train()
    model(example_input).sum().backward()
    assert model.get_submodule("layer4.1.relu_1").alpha.grad is not None


def test_converted_model_keeps_train_mode_of_the_source(example_input):
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).train()
    assert convert(model, "pvlu", example_inputs=example_input).model.training
    assert model.training


def test_convrelu_fuses_into_each_consuming_conv(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    conversion = convert(model, "convrelu", example_inputs=example_input)
    by_name = {s.name: s for s in conversion.sites}
    stem = by_name["relu"]
    assert not stem.replaced and "maxpool" in stem.skip_reason
    fork = by_name["layer1.1.relu_1"]  # feeds layer2.0.conv1 and layer2.0.downsample.0
    assert fork.replaced and fork.parameters == ["layer2.0.conv1.theta", "layer2.0.downsample.0.theta"]
    conv = conversion.model.get_submodule("layer2.0.conv1")
    assert isinstance(conv, ConvReLU2d) and conv.theta.shape == (64, 3, 3)
    assert conversion.model.get_submodule("layer2.0.downsample.0").theta.shape == (64, 1, 1)
    # With fallback the stem gets adarelu instead.
    fallback = convert(model, "convrelu", example_inputs=example_input, fallback="adarelu")
    assert {s.name: s.replacement for s in fallback.replaced}["relu"] == "adarelu"


def test_convrelu_keeps_relu_for_non_conv_consumers():
    """A ReLU feeding a conv and an add: the conv reads the pre-activation, the add still reads
    relu(x), also when the ReLU was in place."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.act(self.a(x))
            return self.b(y) + y

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 6, 6)
    conversion = convert(net, "convrelu", example_inputs=x)
    with torch.no_grad():
        assert (conversion.model(x) - net(x)).abs().max() < 1e-6
        conversion.model.b.theta.fill_(-0.2)
        pre = net.a(x)
        want = F.conv2d(F.pad(pre, (1, 1, 1, 1)).clamp_min(-0.2), net.b.weight, net.b.bias) + F.relu(pre)
        assert (conversion.model(x) - want).abs().max() < 1e-5


def test_relu6_sites_take_capped_forms_only(example_input):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    capped = convert(model, "pvlu", example_inputs=example_input)
    assert len(capped.replaced) == 35
    assert all(capped.model.get_submodule(s.name).cap == 6.0 for s in capped.replaced)
    with torch.no_grad():
        assert (capped.model(example_input) - model(example_input)).abs().max() <= 1e-6
    refused = convert(model, "dualline", example_inputs=example_input)
    assert refused.replaced == []
    assert all("ReLU6" in s.skip_reason for s in refused.sites)


class _Hazard(nn.Module):
    """An in-place ReLU whose input is read again (through a view) after it ran."""

    def __init__(self, read_after: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU(inplace=True)
        self.read_after = read_after

    def forward(self, x):
        y = self.conv(x)
        view = y[:, :2]
        out = self.act(y)
        if self.read_after:
            return out.sum() + view.sum()
        return out.sum()


def test_inplace_hazard_is_refused():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(InplaceHazardError, match=r"site 'act'.*read again"):
        convert(_Hazard(read_after=True), "pvlu", example_inputs=x)
    safe = convert(_Hazard(read_after=False), "pvlu", example_inputs=x)
    assert len(safe.replaced) == 1


def test_inplace_sites_of_real_models_are_safe(filled_model, example_input):
    # Every torchvision ResNet ReLU is in place and none is a hazard.
    sites = find_sites(filled_model("torchvision:resnet50"), example_input)
    assert all(s.inplace for s in sites)
    assert len(convert(filled_model("torchvision:resnet50"), "adarelu", example_inputs=example_input).replaced) == 49


def test_bad_arguments_name_the_field(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    with pytest.raises(ValueError, match="accepted: relu, leaky_relu, prelu, pvlu"):
        convert(model, "swish", example_inputs=example_input)
    with pytest.raises(ValueError, match="init must be one of identity, paper"):
        convert(model, "pvlu", example_inputs=example_input, init="zeros")
    with pytest.raises(ValueError, match="granularity 'pixel'.*accepted: channel, layer"):
        convert(model, "pvlu", example_inputs=example_input, granularity="pixel")
    with pytest.raises(ValueError, match="fallback must be one of skip, adarelu"):
        convert(model, "convrelu", example_inputs=example_input, fallback="prelu")
    with pytest.raises(ValueError, match="unknown option.*negative_slope"):
        convert(model, "pvlu", example_inputs=example_input, negative_slope=0.1)
    with pytest.raises(ValueError, match="example_inputs is required"):
        convert(model, "pvlu")
