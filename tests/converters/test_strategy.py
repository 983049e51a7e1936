"""The strategy grammar: parsing, errors, and each clause on resnet50 and densenet121."""

from __future__ import annotations

import pytest
import torch

from converters import convert, find_sites
from converters.blocks import detect_blocks
from converters.site import Site
from converters.strategy import GRAMMAR, StrategyError, parse_strategy, select_sites


def _site(i: int, name: str, scope: str, kind: str = "relu") -> Site:
    return Site(index=i, name=name, kind=kind, call="module", scope=scope, module=name, inplace=False)


TOY = [_site(0, "stem.relu", "stem")] + [
    _site(1 + 2 * b + k, f"stage{b + 1}.relu_{k}" if k else f"stage{b + 1}.relu", f"stage{b + 1}") for b in range(3) for k in range(2)
] + [_site(7, "head.relu6", "head", "relu6")]


def names(sites) -> list[str]:
    return [s.name for s in sites]


def pick(strategy: str, sites=TOY, **kw) -> list[str]:
    return names(select_sites(sites, strategy, detect_blocks([s.scope for s in sites]), **kw))


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("all", [s.name for s in TOY]),
        ("first:2", ["stem.relu", "stage1.relu"]),
        ("last:1", ["head.relu6"]),
        ("first:0", []),
        ("first:100", [s.name for s in TOY]),
        ("fraction:0.5", ["stem.relu", "stage1.relu", "stage1.relu_1", "stage2.relu"]),
        ("fraction:0.25@last", ["stage3.relu_1", "head.relu6"]),
        ("block:stage2", ["stage2.relu", "stage2.relu_1"]),
        ("block:first", ["stage1.relu", "stage1.relu_1"]),
        ("block:last", ["stage3.relu", "stage3.relu_1"]),
        ("block:-2", ["stage2.relu", "stage2.relu_1"]),
        ("block:1,3", ["stage1.relu", "stage1.relu_1", "stage3.relu", "stage3.relu_1"]),
        ("names:*_1", ["stage1.relu_1", "stage2.relu_1", "stage3.relu_1"]),
        ("names:stem.*,head.*", ["stem.relu", "head.relu6"]),
        ("kind:relu6", ["head.relu6"]),
        ("kind:relu;last:1", ["stage3.relu_1"]),
        ("block:stage1,stage3;names:*_1", ["stage1.relu_1", "stage3.relu_1"]),
        (" first:3 ; last:1 ", ["stage1.relu_1"]),
    ],
)
def test_clauses_on_a_toy_model(strategy, expected):
    assert pick(strategy) == expected


def test_block_prefix_is_a_scope_prefix_not_a_string_prefix():
    sites = [_site(0, "layer1.relu", "layer1"), _site(1, "layer10.relu", "layer10"), _site(2, "layer1.0.relu", "layer1.0")]
    assert pick("block:layer1", sites) == ["layer1.relu", "layer1.0.relu"]


def test_dead_clause_uses_calibration_fractions_lazily():
    calls = []

    def fractions():
        calls.append(1)
        return {"stage1.relu": 1.0, "stage2.relu": 0.5, "stage3.relu": 0.49}

    assert pick("dead:0.5", dead_fractions=fractions) == ["stage1.relu", "stage2.relu"]
    assert pick("first:1", dead_fractions=fractions) == ["stem.relu"]
    assert len(calls) == 1  # only the dead clause asked for statistics
    with pytest.raises(StrategyError, match="dead:R needs calibration data"):
        pick("dead:0.5")


@pytest.mark.parametrize(
    "bad,problem",
    [
        ("", "the strategy is empty"),
        ("everything", "unknown clause 'everything'"),
        ("first", "clause 'first' needs an argument"),
        ("first:-1", "N must be >= 0"),
        ("first:two", "'two' is not an integer"),
        ("fraction:1.5", "F must be between 0 and 1"),
        ("fraction:0.5@first", "only '@last'"),
        ("kind:gelu", "unknown kind 'gelu'; accepted: relu, relu6"),
        ("names:a,,b", "empty item"),
        ("block:0", "count from 1"),
        ("dead:0", "R must be in (0, 1]"),
        ("all;;last:1", "empty clause"),
        ("all:3", "takes no argument"),
    ],
)
def test_bad_strategies_fail_with_the_grammar(bad, problem):
    with pytest.raises(StrategyError) as info:
        parse_strategy(bad)
    assert problem in str(info.value)
    assert GRAMMAR in str(info.value)


def test_block_numbers_out_of_range_and_models_without_blocks():
    with pytest.raises(StrategyError, match="out of range: this model has 3 blocks"):
        pick("block:4")
    flat = [_site(0, "features.1", "features"), _site(1, "features.4", "features")]
    with pytest.raises(StrategyError, match="needs a detected block structure"):
        pick("block:first", flat)
    assert pick("block:features", flat) == ["features.1", "features.4"]


def test_parsed_clauses_print_back():
    assert [str(c) for c in parse_strategy("all;first:3;fraction:0.5@last;block:layer1,2;kind:relu")] == [
        "all", "first:3", "fraction:0.5@last", "block:layer1,2", "kind:relu",
    ]


# ----------------------------------------------------------------------------- real models

RESNET50 = {
    "first:3": ["relu", "layer1.0.relu", "layer1.0.relu_1"],
    "last:2": ["layer4.2.relu_1", "layer4.2.relu_2"],
    "names:layer4.*.relu_2": ["layer4.0.relu_2", "layer4.1.relu_2", "layer4.2.relu_2"],
    "block:layer3;first:2": ["layer3.0.relu", "layer3.0.relu_1"],
    "kind:relu6": [],
    # 1 stem + layer1 (9) + layer2 (12) + layer3 (18) + layer4 (9): site 24 is layer3.0.relu_2
    "fraction:0.5;last:1": ["layer3.0.relu_2"],
    "fraction:0.25@last;first:3": ["layer3.5.relu", "layer3.5.relu_1", "layer3.5.relu_2"],
}


def _resnet50_blocks(sites):
    return {b: [s.name for s in sites if s.name.startswith(b + ".")] for b in ("layer1", "layer2", "layer3", "layer4")}


@pytest.mark.parametrize("strategy", list(RESNET50))
def test_resnet50_clauses(filled_model, example_input, strategy):
    sites = find_sites(filled_model("torchvision:resnet50"), example_input)
    assert pick(strategy, sites) == RESNET50[strategy]


def test_resnet50_blocks(filled_model, example_input):
    sites = find_sites(filled_model("torchvision:resnet50"), example_input)
    blocks = _resnet50_blocks(sites)
    assert [len(v) for v in blocks.values()] == [9, 12, 18, 9]
    assert pick("all", sites) == [s.name for s in sites] and len(sites) == 49
    assert pick("block:first", sites) == blocks["layer1"]
    assert pick("block:last", sites) == blocks["layer4"]
    assert pick("block:2", sites) == blocks["layer2"] == pick("block:layer2", sites)
    assert pick("block:-2", sites) == blocks["layer3"]
    assert pick("block:layer1,layer4", sites) == blocks["layer1"] + blocks["layer4"]
    assert len(pick("fraction:0.5", sites)) == 25


def test_densenet121_clauses(filled_model, example_input):
    sites = find_sites(filled_model("torchvision:densenet121"), example_input)
    block = {k: [s.name for s in sites if s.name.startswith(f"features.denseblock{k}.")] for k in range(1, 5)}
    assert [len(v) for v in block.values()] == [12, 24, 48, 32]  # 6, 12, 24, 16 layers x (relu1, relu2)
    assert pick("first:2", sites) == ["features.relu0", "features.denseblock1.denselayer1.relu1"]
    assert pick("last:1", sites) == ["relu"]  # the functional F.relu in DenseNet.forward
    assert pick("block:first", sites) == block[1]
    assert pick("block:last", sites) == block[4]
    assert pick("block:3", sites) == block[3]
    assert pick("block:features.transition1,features.transition2", sites) == [
        "features.transition1.relu", "features.transition2.relu",
    ]
    assert len(pick("names:*.relu2", sites)) == 6 + 12 + 24 + 16
    assert pick("block:2;names:*denselayer1[0-2].*", sites) == [
        f"features.denseblock2.denselayer{i}.relu{j}" for i in (10, 11, 12) for j in (1, 2)
    ]
    assert pick("fraction:0.1", sites) == ["features.relu0"] + block[1][:11]
    assert pick("kind:relu6", sites) == []


def test_dead_clause_on_resnet50(filled_model, example_input):
    """Kill every unit of one site and half of another through their BatchNorm bias (sites chosen
    so the dead units do not starve a later site too)."""
    import copy

    model = copy.deepcopy(filled_model("torchvision:resnet50"))
    with torch.no_grad():
        model.layer1[0].bn1.bias[:32] = -1e4  # feeds site layer1.0.relu (64 channels): half dead
        model.layer4[2].bn3.bias.fill_(-1e4)  # feeds site layer4.2.relu_2 (after the add): all dead
    calibration = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    only_dead = convert(model, "pvlu", strategy="dead:0.9", example_inputs=example_input, calibration=calibration)
    assert [s.name for s in only_dead.replaced] == ["layer4.2.relu_2"]
    half = convert(model, "pvlu", strategy="dead:0.5", example_inputs=example_input, calibration=calibration)
    assert [s.name for s in half.replaced] == ["layer1.0.relu", "layer4.2.relu_2"]
    with pytest.raises(StrategyError, match="needs calibration data"):
        convert(model, "pvlu", strategy="dead:0.5", example_inputs=example_input)
