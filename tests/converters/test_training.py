"""trainable(): what each mode trains, and the optimizer groups (decay per parameter kind)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from converters import convert, trainable


def _groups(groups):
    return {g["name"]: g for g in groups}


def _count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.fixture
def converted(filled_model, example_input):
    return convert(copy.deepcopy(filled_model("torchvision:resnet18")), "pvlu", example_inputs=example_input)


def test_bn_act_trains_batchnorm_and_activation_parameters(converted):
    model = converted.model
    groups = _groups(trainable(model, "bn+act", weight_decay=0.01))
    assert set(groups) == {"activation", "bn"}
    assert groups["activation"]["weight_decay"] == 0.01 and groups["bn"]["weight_decay"] == 0.0
    assert _count(groups["activation"]["params"]) == converted.added_parameters()
    bn_params = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    assert _count(groups["bn"]["params"]) == _count(bn_params)
    trained = {id(p) for g in groups.values() for p in g["params"]}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in trained), name
    assert not model.conv1.weight.requires_grad and not model.fc.weight.requires_grad


def test_bn_act_updates_running_statistics_and_act_does_not(converted, example_input):
    model = converted.model
    bn = model.layer1[0].bn1 if hasattr(model.layer1, "__getitem__") else model.get_submodule("layer1.0.bn1")
    trainable(model, "bn+act")
    model.train()
    before = bn.running_mean.clone()
    model(example_input)
    assert not torch.equal(before, bn.running_mean)

    groups = _groups(trainable(model, "act"))
    assert set(groups) == {"activation"}
    model.train()
    frozen = bn.running_mean.clone()
    out_train = model(example_input)
    assert torch.equal(frozen, bn.running_mean)
    model.eval()
    with torch.no_grad():
        out_eval = model(example_input)
    assert (out_train - out_eval).abs().max() == 0  # BN behaved as in eval while "training"
    # Back to bn+act: statistics move again.
    trainable(model, "bn+act")
    model.train()
    model(example_input)
    assert not torch.equal(frozen, bn.running_mean)


def test_all_trains_everything(converted):
    groups = _groups(trainable(converted.model, "all", weight_decay=5e-4))
    assert set(groups) == {"activation", "bn", "weights"}
    assert groups["weights"]["weight_decay"] == 5e-4
    assert all(p.requires_grad for p in converted.model.parameters())
    total = sum(_count(g["params"]) for g in groups.values())
    assert total == _count(converted.model.parameters())


def test_prelu_slopes_get_no_decay_and_convrelu_thresholds_their_own_l2(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    prelu = _groups(trainable(convert(model, "prelu", example_inputs=example_input).model, "bn+act", weight_decay=0.1))
    assert prelu["prelu_slope"]["weight_decay"] == 0.0 and "activation" not in prelu
    conversion = convert(model, "convrelu", example_inputs=example_input, fallback="adarelu")
    groups = _groups(trainable(conversion.model, "bn+act", weight_decay=0.1, threshold_l2=1e-3))
    assert groups["convrelu_theta"]["weight_decay"] == 1e-3
    assert groups["activation"]["weight_decay"] == 0.1  # the adarelu fallback at the stem
    thetas = [m.theta for m in conversion.model.modules() if hasattr(m, "theta") and m.theta.ndim == 3]
    assert _count(groups["convrelu_theta"]["params"]) == _count(thetas)
    # The conv weights a ConvReLU2d owns stay frozen.
    assert not conversion.model.get_submodule("layer1.0.conv2").weight.requires_grad


def test_one_optimizer_step_moves_only_trainable_parameters(converted, example_input):
    model = converted.model.train()
    opt = torch.optim.Adam(trainable(model, "bn+act"), lr=1e-2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model(example_input).logsumexp(1).sum().backward()
    opt.step()
    moved = {k for k, v in model.named_parameters() if not torch.equal(before[k], v)}
    assert "layer1.0.relu.alpha" in moved and "bn1.weight" in moved
    assert not any(k.endswith("conv1.weight") or k.startswith("fc.") for k in moved)


def test_unknown_mode_names_the_accepted_ones(converted):
    with pytest.raises(ValueError, match="trainable mode must be one of bn\\+act, act, all"):
        trainable(converted.model, "bn")
