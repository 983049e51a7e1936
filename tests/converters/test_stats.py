"""Per-site activation statistics: hand-computed values, original vs converted, thresholds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converters import activation_stats, convert


class _Probe(nn.Module):
    """Two sites: a functional relu on the input itself, then an nn.ReLU after scaling."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(F.relu(x) * 2 - 1)


def test_hand_computed_statistics():
    # Channel 0 is positive at 3 of 4 positions, channel 1 never, channel 2 always.
    x = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]], [[-1.0, -2.0], [0.0, -3.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    first, second = activation_stats(_Probe(), [x, x.clone()])
    assert first.name == "relu" and second.name == "act"
    assert first.units == 3 and first.samples_per_unit == 8
    assert first.activation_probability == [0.75, 0.0, 1.0]
    assert first.lifetime_sparsity == pytest.approx((0.75 + 0 + 1) / 3)
    mean = (0.75 + 1) / 3
    assert first.dispersion == pytest.approx(math.sqrt(((0.75 - mean) ** 2 + mean**2 + (1 - mean) ** 2) / 3))
    assert first.dead_fraction == pytest.approx(1 / 3)
    # relu(x)*2-1 > 0 where x > 0.5: channel 0 at 3 of 4 positions, channel 2 never (0.5*2-1 = 0).
    assert second.activation_probability == [0.75, 0.0, 0.0]
    assert second.dead_fraction == pytest.approx(2 / 3)


def test_accepts_loaders_of_pairs_and_restores_the_mode():
    model = _Probe().train()
    x = torch.randn(2, 3, 4, 4)
    stats = activation_stats(model, [(x, torch.tensor([0, 1]))])
    assert len(stats) == 2 and model.training
    with pytest.raises(ValueError, match="no batches"):
        activation_stats(model, [])


@pytest.mark.parametrize("ref", ["torchvision:googlenet", "timm:densenet121", "torchvision:resnet18"])
def test_converted_at_identity_has_the_statistics_of_the_original(filled_model, example_input, ref):
    model = filled_model(ref)
    batches = [example_input, torch.randn(example_input.shape, generator=torch.Generator().manual_seed(5))]
    before = activation_stats(model, batches)
    assert len(before) == {"torchvision:googlenet": 57, "timm:densenet121": 121, "torchvision:resnet18": 17}[ref]
    assert all(0.0 < s.lifetime_sparsity < 1.0 for s in before)
    for activation in ("pvlu", "convrelu"):
        conversion = convert(model, activation, example_inputs=example_input, fallback="adarelu")
        after = activation_stats(conversion.model, batches)
        assert [s.name for s in after] == [s.name for s in before]
        # pvlu at identity is bit-exact; convrelu sums in another order (fp32), so a pre-activation
        # within ~1e-7 of zero may flip: allow two samples per unit.
        for a, b in zip(before, after):
            tolerance = 1e-12 if activation == "pvlu" else 2.0 / a.samples_per_unit + 1e-12
            assert a.activation_probability == pytest.approx(b.activation_probability, abs=tolerance)


def test_adarelu_counts_units_above_theta(filled_model, example_input):
    model = filled_model("torchvision:resnet18")
    conversion = convert(model, "adarelu", strategy="names:layer1.0.relu", example_inputs=example_input)
    base = activation_stats(conversion.model, [example_input])
    with torch.no_grad():
        conversion.model.get_submodule("layer1.0.relu").theta.fill_(1e6)
    raised = activation_stats(conversion.model, [example_input])
    index = next(s.index for s in conversion.sites if s.name == "layer1.0.relu")
    assert base[index].lifetime_sparsity > 0.2
    assert raised[index].lifetime_sparsity == 0.0 and raised[index].dead_fraction == 1.0
    # The site before it is untouched by the change.
    assert raised[0].activation_probability == base[0].activation_probability


def test_statistics_follow_training_of_the_shared_modules(filled_model, example_input):
    """The probes run the model's own modules, so changing a BN bias shows up at once."""
    import copy

    model = copy.deepcopy(filled_model("torchvision:resnet18"))
    before = activation_stats(model, [example_input])
    with torch.no_grad():
        model.bn1.bias.fill_(-1e4)
    after = activation_stats(model, [example_input])
    assert before[0].dead_fraction < 0.5 and after[0].dead_fraction == 1.0
