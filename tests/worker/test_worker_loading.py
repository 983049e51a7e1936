"""Model and weights loading: safe formats only, mismatches named, converted models load back."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from converters.conversion import convert
from converters.models import build_model
from converters.saved import load_conversion, save_conversion, save_state_dict
from converters.spec import ConversionMismatchError
from worker.errors import InputError, NetworkUnavailableError, WeightsMismatchError
from worker.loading import build, read_state_dict

ARCH = "torchvision:resnet18"


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_model(ARCH, num_classes=10).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_round_trip(tmp_path, resnet, suffix):
    path = tmp_path / f"w{suffix}"
    save_state_dict(resnet, path)
    model = build(ARCH, 10, "upload", path)
    for key, value in resnet.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_wrapped_and_dataparallel_state_dicts(tmp_path, resnet):
    state = resnet.state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    loaded = read_state_dict(tmp_path / "ckpt.pt")
    assert set(loaded) == set(state)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('RELUSWAP_EVIL_MARKER', '/tmp/reluswap-evil')}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_are_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("RELUSWAP_EVIL_MARKER", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Evil()}, evil)
    with pytest.raises(InputError, match="weights_only"):
        read_state_dict(evil)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputError, match="cannot read weights"):
        read_state_dict(raw)
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.safetensors")


def test_mismatch_names_keys_and_shapes(tmp_path):
    five = build_model(ARCH, num_classes=5)
    state = five.state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.bias"] = torch.zeros(3)
    save_state_dict(five, tmp_path / "five.safetensors")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsMismatchError) as info:
        build(ARCH, 10, "upload", tmp_path / "bad.safetensors")
    message = str(info.value)
    assert "fc.weight (weights [5, 512], model [10, 512])" in message
    assert "fc.bias (weights [5], model [10])" in message
    assert "missing from the weights (1): layer1.0.conv1.weight [64, 64, 3, 3]" in message
    assert "not in the model (1): extra.bias [3]" in message


def test_unknown_arch_and_missing_upload():
    with pytest.raises(InputError, match="unknown torchvision classification model 'resnet19'"):
        build("torchvision:resnet19", 10)
    with pytest.raises(InputError, match="no weights file"):
        build(ARCH, 10, "upload", None)


def test_default_weights_offline_is_a_clear_error(offline):
    with pytest.raises(NetworkUnavailableError, match="could not fetch the default pretrained weights of "
                       "torchvision:resnet18: .*need the network"):
        build(ARCH, 10, "default")


def _converted_dir(tmp_path, resnet, activation="pvlu"):
    example = torch.randn(2, 3, 32, 32)
    conversion = convert(resnet, activation, "all", example_inputs=example)
    with torch.no_grad():  # move every new parameter off its identity value
        for name, p in conversion.model.named_parameters():
            if any(name in s.parameters for s in conversion.replaced):
                p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / "conv"
    save_conversion(out, conversion, arch=ARCH, num_classes=10, example_input_shape=[1, 3, 32, 32])
    return out, conversion.model.eval(), example


def test_load_conversion_reproduces_the_model(tmp_path, resnet):
    out, model, example = _converted_dir(tmp_path, resnet)
    rebuilt, record = load_conversion(out)
    assert record["activation"] == "pvlu" and record["sites_replaced"] == 17
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        assert float((rebuilt(example) - model(example)).abs().max()) <= 1e-6


def test_load_conversion_refuses_weights_of_another_spec(tmp_path, resnet):
    out, _, _ = _converted_dir(tmp_path, resnet)
    record = json.loads((out / "conversion.json").read_text())
    record["spec"]["activation"] = "frelu"
    record["spec"]["granularity"] = "layer"
    record["spec"]["replaced"] = [[name, "frelu"] for name, _ in record["spec"]["replaced"]]
    (out / "conversion.json").write_text(json.dumps(record))
    with pytest.raises((ConversionMismatchError, RuntimeError), match="different conversion spec"):
        load_conversion(out)
    with pytest.raises(FileNotFoundError, match="not a converted model directory"):
        load_conversion(tmp_path)
