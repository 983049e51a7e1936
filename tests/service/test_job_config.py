"""The job config: docs/api.md's POST /finetune body, validated with messages that name the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from converters.vocabulary import TRAINABLE_MODES
from service.job_config import ConfigError, JobConfig, parse_config

BODY = {
    "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "upload"},
    "dataset": {"uri": "builtin:digits", "image_size": 32, "val_split": 0.2, "mean": [0.3], "std": [0.3]},
    "activation": "pvlu",
    "activation_options": {"init": "identity", "granularity": "channel"},
    "strategy": "all",
    "train": {"trainable": "bn+act", "epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.001,
              "weight_decay": 0.0, "threshold_l2": 0.0001, "seed": 0, "max_steps": None, "amp": "auto"},
    "export": {"onnx": True, "opset": 18},
    "metadata": {"any": "strings"},
}


def test_api_example_body_validates():
    cfg = parse_config(BODY)
    assert isinstance(cfg, JobConfig)
    assert cfg.model.arch == "torchvision:resnet18" and cfg.train.schedule == "cosine"
    # Round trip: the dumped config is itself valid.
    assert parse_config(cfg.model_dump(mode="json")) == cfg


def test_defaults_are_small():
    cfg = parse_config({"model": {"arch": "timm:resnet18"}, "dataset": {"uri": "builtin:digits"}, "activation": "frelu"})
    assert cfg.model.weights == "none" and cfg.train.trainable == "bn+act" and cfg.strategy == "all"


def _error(body: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(body)
    return str(info.value)


def _with(path: str, value) -> dict:
    import copy

    body = copy.deepcopy(BODY)
    *parents, leaf = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    target[leaf] = value
    return body


@pytest.mark.parametrize("path, value, expected", [
    ("model.arch", "keras:resnet", "model.arch: model reference 'keras:resnet' must be '<source>:<name>' with source one of torchvision, timm"),
    ("model.weights", "pickle", "model.weights: must be one of none, default, upload"),
    ("model.num_classes", 1, "model.num_classes"),
    ("dataset.uri", "s3://bucket", "dataset.uri: must be one of builtin:digits"),
    ("dataset.uri", "builtin:mnist", "unknown builtin dataset 'mnist'; accepted: digits"),
    ("dataset.uri", "synthetic:10", "synthetic:<classes>x<images>"),
    ("dataset.val_split", 1.5, "dataset.val_split"),
    ("dataset.mean", [0.1, 0.2], "dataset.mean: needs 1 or 3 values"),
    ("dataset.std", [0.0], "dataset.std: every std must be > 0"),
    ("activation", "swish", "activation: unknown activation 'swish'; accepted: relu, leaky_relu, prelu, pvlu"),
    ("strategy", "first", "strategy: clause 'first' needs an argument"),
    ("train.trainable", "bn", "train.trainable: must be one of bn+act, act, all"),
    ("train.optimizer", "lamb", "train.optimizer: Input should be 'adam' or 'sgd'"),
    ("train.schedule", "step", "train.schedule"),
    ("train.lr", -1, "train.lr"),
    ("activation_options.init", "random", "activation_options.init"),
    ("activation_options.granularity", "layer", None),  # accepted by pvlu
])
def test_bad_fields_are_named(path, value, expected):
    body = _with(path, value)
    if expected is None:
        parse_config(body)
        return
    assert expected in _error(body)


@pytest.mark.parametrize("where", ["", "model.", "dataset.", "train.", "export."])
def test_unknown_fields_rejected(where):
    body = _with(f"{where}surprise", 1)
    assert f"{where}surprise: unknown field" in _error(body)


def test_activation_options_checked_against_the_catalogue():
    assert "unknown option(s) slope for pvlu; accepted: init, granularity, fallback, convrelu_impl" in _error(
        _with("activation_options", {"slope": 0.1}))
    ok = _with("activation", "leaky_relu")
    ok["activation_options"] = {"negative_slope": 0.2}
    assert parse_config(ok).activation_options.options == {"negative_slope": 0.2}
    frelu = _with("activation", "frelu")  # layer-wise only in its default, but accepts channel
    frelu["activation_options"] = {"granularity": "channel"}
    parse_config(frelu)
    conv = _with("activation", "convrelu")
    conv["activation_options"] = {"granularity": "channel"}
    assert "granularity 'channel' is not accepted by convrelu" in _error(conv)
    fb = _with("activation_options", {"fallback": "adarelu"})
    assert "fallback applies to convrelu only" in _error(fb)


def test_every_problem_reported_at_once():
    body = _with("activation", "swish")
    body["train"]["trainable"] = "bn"
    message = _error(body)
    assert "activation:" in message and "train.trainable:" in message


def test_closed_sets_come_from_the_vocabulary():
    """The schema's enums are the library's and the contract's sets, not copies."""
    from converters.vocabulary import CONVRELU_IMPLS, FALLBACKS, GRANULARITIES, INITS
    from service.contract import OPTIMIZERS, SCHEDULES
    from service.job_config import ActivationOptions, TrainConfig

    schema = JobConfig.model_json_schema()["$defs"]
    options = schema["ActivationOptions"]["properties"]
    assert tuple(options["init"]["enum"]) == INITS
    assert tuple(options["convrelu_impl"]["enum"]) == CONVRELU_IMPLS
    assert ActivationOptions.model_fields["fallback"].annotation.__args__[0].__args__ == FALLBACKS
    assert ActivationOptions.model_fields["granularity"].annotation.__args__[0].__args__ == GRANULARITIES
    assert TrainConfig.model_fields["optimizer"].annotation.__args__ == OPTIMIZERS
    assert TrainConfig.model_fields["schedule"].annotation.__args__ == SCHEDULES
    assert "train.trainable: must be one of " + ", ".join(TRAINABLE_MODES) in _error(_with("train.trainable", "x"))


def test_config_module_does_not_import_torch():
    code = "import sys, service.job_config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
