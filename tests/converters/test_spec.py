"""A converted state_dict reloads strictly into a fresh conversion of the same spec; another spec
fails with a message that names the difference."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from model_helpers import randomize

from converters import ConversionMismatchError, convert, convert_from_spec
from converters.spec import ConversionSpec, load_converted_state_dict


@pytest.mark.parametrize("activation,strategy", [("pvlu", "all"), ("convrelu", "block:first"), ("dualline", "last:5")])
def test_same_spec_reloads_strictly(filled_model, example_input, activation, strategy):
    model = filled_model("torchvision:resnet18")
    trained = randomize(convert(model, activation, strategy=strategy, example_inputs=example_input))
    state = trained.model.state_dict()
    fresh = convert(model, activation, strategy=strategy, example_inputs=example_input)
    assert list(fresh.model.state_dict()) == list(state)  # same keys, same order
    fresh.model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert (fresh.model(example_input) - trained.model(example_input)).abs().max() <= 1e-6


def test_rebuild_from_the_saved_spec(filled_model, example_input):
    model = filled_model("torchvision:resnet50")
    trained = randomize(convert(model, "adarelu", strategy="block:layer2;fraction:0.5", example_inputs=example_input))
    saved = json.loads(json.dumps(trained.spec.to_dict()))  # as conversion.json would hold it
    rebuilt = convert_from_spec(model, saved, example_input)
    assert rebuilt.spec.to_dict() == trained.spec.to_dict()
    rebuilt.model.load_state_dict(trained.model.state_dict(), strict=True)
    with torch.no_grad():
        assert (rebuilt.model(example_input) - trained.model(example_input)).abs().max() <= 1e-6


def test_rebuild_keeps_convrelu_fallback_sites(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    trained = randomize(convert(model, "convrelu", example_inputs=example_input, fallback="adarelu"))
    rebuilt = convert_from_spec(model, ConversionSpec.from_dict(trained.spec.to_dict()), example_input)
    assert [(s.name, s.replacement) for s in rebuilt.replaced] == [(s.name, s.replacement) for s in trained.replaced]
    rebuilt.model.load_state_dict(trained.model.state_dict(), strict=True)


@pytest.mark.parametrize(
    "other,message",
    [
        (dict(activation="frelu"), "activation: weights have 'pvlu', this model has 'frelu'"),
        (dict(activation="pvlu", granularity="layer"), "granularity: weights have 'channel', this model has 'layer'"),
        (dict(activation="pvlu", strategy="first:3"), "sites replaced only in the weights: layer1.1.relu"),
    ],
)
def test_another_spec_fails_clearly(filled_model, example_input, other, message):
    model = filled_model("torchvision:resnet18")
    state = convert(model, "pvlu", strategy="first:4", example_inputs=example_input).model.state_dict()
    other = dict(other)
    activation = other.pop("activation")
    other.setdefault("strategy", "first:4")
    target = convert(model, activation, example_inputs=example_input, **other).model
    with pytest.raises(RuntimeError, match="different conversion spec") as info:
        target.load_state_dict(state, strict=True)
    assert message in str(info.value)
    with pytest.raises(ConversionMismatchError, match="conversion.json"):
        load_converted_state_dict(target, state)


def test_spec_survives_deepcopy(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    conversion = convert(model, "pvlu", strategy="first:4", example_inputs=example_input)
    clone = copy.deepcopy(conversion.model)
    other = convert(model, "frelu", strategy="first:4", example_inputs=example_input).model.state_dict()
    with pytest.raises(RuntimeError, match="different conversion spec"):
        clone.load_state_dict(other)
    assert clone.meta["reluswap"]["spec"]["activation"] == "pvlu"
