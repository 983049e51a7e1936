"""find_sites on real torchvision and timm models: counts, names, scopes, blocks, ConvReLU reach."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converters import TraceError, find_sites
from converters.blocks import detect_blocks

# (model, sites, {(kind, call): count}) counted by hand from each model's forward; mobilenet_v3_small
# has 14 nn.ReLU modules (its other activations are Hardswish/Hardsigmoid).
CENSUS = [
    ("torchvision:resnet18", 17, {("relu", "module"): 17}),
    ("torchvision:resnet50", 49, {("relu", "module"): 49}),
    ("torchvision:vgg16_bn", 15, {("relu", "module"): 15}),
    ("torchvision:densenet121", 121, {("relu", "module"): 120, ("relu", "function"): 1}),
    ("torchvision:googlenet", 57, {("relu", "function"): 57}),
    ("torchvision:mobilenet_v3_small", 14, {("relu", "module"): 14}),
    ("timm:resnet50", 49, {("relu", "module"): 49}),
    ("timm:densenet121", 121, {("relu", "inner"): 121}),
]


@pytest.mark.parametrize("ref,count,calls", CENSUS, ids=[c[0] for c in CENSUS])
def test_census(filled_model, example_input, ref, count, calls):
    sites = find_sites(filled_model(ref), example_input)
    assert len(sites) == count
    assert dict(Counter((s.kind, s.call) for s in sites)) == calls
    assert [s.index for s in sites] == list(range(count))
    assert len({s.name for s in sites}) == count, "site names must be unique"
    assert all(s.channels and s.channels > 0 for s in sites)


def test_reused_module_gives_one_site_per_call(filled_model, example_input):
    sites = find_sites(filled_model("torchvision:resnet18"), example_input)
    names = [s.name for s in sites]
    assert names[:6] == ["relu", "layer1.0.relu", "layer1.0.relu_1", "layer1.1.relu", "layer1.1.relu_1", "layer2.0.relu"]
    assert names[-1] == "layer4.1.relu_1"
    by_name = {s.name: s for s in sites}
    assert by_name["layer1.0.relu_1"].module == "layer1.0.relu"  # the same module, its second call
    assert by_name["layer1.0.relu_1"].scope == "layer1.0"
    assert by_name["layer3.0.relu"].channels == 256
    assert by_name["relu"].scope == "" and by_name["relu"].block is None


def test_names_are_deterministic(filled_model, example_input):
    model = filled_model("torchvision:resnet50")
    first = [s.to_dict() for s in find_sites(model, example_input)]
    second = [s.to_dict() for s in find_sites(model, example_input)]
    assert first == second
    assert [s["name"] for s in first][1:4] == ["layer1.0.relu", "layer1.0.relu_1", "layer1.0.relu_2"]


def test_functional_sites_are_named_after_their_scope(filled_model, example_input):
    sites = find_sites(filled_model("torchvision:googlenet"), example_input)
    assert sites[0].name == "conv1.relu" and sites[0].call == "function" and sites[0].scope == "conv1"
    assert sites[-1].name == "inception5b.branch4.1.relu"
    dense = find_sites(filled_model("torchvision:densenet121"), example_input)
    assert dense[-1].name == "relu" and dense[-1].call == "function" and dense[-1].channels == 1024


def test_timm_activation_inside_batchnormact(filled_model, example_input):
    sites = find_sites(filled_model("timm:densenet121"), example_input)
    first = sites[0]
    assert first.call == "inner" and first.name == "features.norm0.act"
    assert first.convrelu is False and "inside leaf module" in first.convrelu_reason


def test_relu6_is_its_own_kind(example_input):
    import torchvision

    sites = find_sites(torchvision.models.mobilenet_v2(num_classes=10).eval(), example_input)
    assert len(sites) == 35 and {s.kind for s in sites} == {"relu6"}


def test_every_functional_spelling_is_found():
    class Spellings(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            a = F.relu(x)
            b = torch.relu(a + 1)
            c = F.relu(b - 1, inplace=True)
            d = c.relu()
            e = (d * 2).relu_()
            f = torch.relu_(e - 0.5)
            g = F.relu6(f)
            return g

    sites = find_sites(Spellings().eval(), torch.randn(1, 3, 4, 4))
    assert [s.call for s in sites] == ["function"] * 3 + ["method"] * 2 + ["function"] * 2
    assert [s.inplace for s in sites] == [False, False, True, False, True, True, False]
    assert [s.kind for s in sites] == ["relu"] * 6 + ["relu6"]
    assert [s.name for s in sites] == ["relu", "relu_1", "relu_2", "relu_3", "relu_4", "relu_5", "relu6"]
    assert sites[0].convrelu is False and "not a Conv2d" in sites[0].convrelu_reason


@pytest.mark.parametrize(
    "ref,eligible,only_convs,single_conv",
    [
        # graph-surgery.md: resnet50 32 of 49 sites feed a single conv (post-add ReLUs also feed the
        # residual path; the three that enter a downsampling block feed two convs).
        ("torchvision:resnet50", 47, 35, 32),
        ("torchvision:densenet121", 119, 119, 119),
    ],
)
def test_convrelu_reach(filled_model, example_input, ref, eligible, only_convs, single_conv):
    sites = find_sites(filled_model(ref), example_input)
    assert sum(s.convrelu for s in sites) == eligible
    assert sum(s.convrelu and not s.convrelu_keeps_relu for s in sites) == only_convs
    assert sum(s.convrelu and not s.convrelu_keeps_relu and len(s.convrelu_convs) == 1 for s in sites) == single_conv
    ineligible = [s for s in sites if not s.convrelu]
    assert all(s.convrelu_reason for s in ineligible)


def test_convrelu_looks_through_identity_and_checks_padding_mode():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.skip = nn.Identity()
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.c = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")

        def forward(self, x):
            x = self.b(self.skip(F.relu(self.a(x))))
            return self.c(F.relu(x))

    first, second = find_sites(Net().eval(), torch.randn(1, 3, 8, 8))
    assert first.convrelu and first.convrelu_convs == ["b"]
    assert not second.convrelu and "reflect" in second.convrelu_reason


@pytest.mark.parametrize(
    "ref,blocks",
    [
        ("torchvision:resnet50", ["layer1", "layer2", "layer3", "layer4"]),
        ("torchvision:densenet121", [f"features.denseblock{i}" for i in range(1, 5)]),
        ("timm:resnet50", ["layer1", "layer2", "layer3", "layer4"]),
        ("torchvision:vgg16_bn", []),
    ],
)
def test_detected_blocks(filled_model, example_input, ref, blocks):
    sites = find_sites(filled_model(ref), example_input)
    assert list(detect_blocks([s.scope for s in sites]).prefixes) == blocks
    for s in sites:
        assert s.block == next((b for b in blocks if s.in_block(b)), None)


def test_untraceable_module_is_named():
    class DataDependent(nn.Module):
        def forward(self, x):
            return F.relu(x) if x.sum() > 0 else x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 3, 1), DataDependent())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(TraceError, match=r"module 'body\.1' \(DataDependent\)"):
        find_sites(Net(), torch.randn(1, 3, 4, 4))
    # As a leaf it traces, and its ReLU is out of reach (it is not an nn.ReLU module).
    assert find_sites(Net(), torch.randn(1, 3, 4, 4), leaf_modules=[DataDependent]) == []


def test_timm_notrace_lists_keep_timm_vgg_traceable(example_input):
    import timm

    sites = find_sites(timm.create_model("vgg16_bn", num_classes=10).eval(), example_input)
    assert len(sites) == 15


def test_find_sites_leaves_the_model_alone(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    find_sites(model, example_input)
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
