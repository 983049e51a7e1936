"""train.compile: torch.compile of the training step (worker/compiling.py, worker/trainer.py).

The config value is validated with a message naming the field; "auto" is eager on CPU; "on"
compiles on CPU too (inductor needs a C++ compiler, which the dev machine has) and trains to the
eager losses; checkpoints keep the original module's keys. A compiler that cannot run (inductor
pointed at a missing C++ compiler) fails "on" naming train.compile, and lets "auto" go on eagerly.

The compiling tests are marked slow: a cold inductor compile of the tiny net takes ~20 s on 2 cores
(the FX graph cache under /tmp makes later runs a few seconds).
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import tiny_convnet

from converters.conversion import convert
from converters.training import trainable
from service.job_config import ConfigError, DatasetConfig, TrainConfig, parse_config
from worker.checkpoint import load_checkpoint
from worker.compiling import StepModel, resolve_compile
from worker.data import load_data
from worker.errors import CompileFailed
from worker.precision import Precision
from worker.progress import Reporter
from worker.trainer import Trainer

CPU = Precision(torch.device("cpu"))
BODY = {"model": {"arch": "torchvision:resnet18"}, "dataset": {"uri": "builtin:digits"}, "activation": "pvlu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(DatasetConfig(uri="synthetic:4x64", image_size=8), tmp_path_factory.mktemp("w"))


def _trainer(data, tmp_path, events: list | None = None, **train) -> Trainer:
    model = convert(tiny_convnet(), "pvlu", "all", example_inputs=torch.randn(2, 3, 8, 8)).model
    cfg = TrainConfig(**{"epochs": 1, "max_steps": 3, "batch_size": 16, "seed": 1, **train})
    groups = trainable(model, cfg.trainable, cfg.weight_decay, cfg.threshold_l2)
    reporter = Reporter(events.append if events is not None else None, interval=0.0)
    return Trainer(model, groups, data.train, data.val, cfg, CPU, reporter, tmp_path / "ckpt" / "last.pt", "key")


def _losses(trainer: Trainer) -> list[float]:
    return [s["loss"] for s in trainer.history.steps]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_config_accepts_the_settings_and_names_the_field_otherwise():
    assert parse_config(BODY).train.compile == "auto"
    for value in ("auto", "on", "off", True, False):
        assert parse_config({**BODY, "train": {"compile": value}}).train.compile == value
    for bad in ("fast", "yes", 1, None):
        with pytest.raises(ConfigError) as info:
            parse_config({**BODY, "train": {"compile": bad}})
        message = str(info.value)
        assert "train.compile" in message and "auto, on, off" in message and repr(bad) in message


def test_cli_flag_sets_train_compile():
    from reluswap.cli import build_parser
    from reluswap.commands.finetune import build_config

    base = ["finetune", "--model", "torchvision:resnet18", "--data", "builtin:digits", "--activation", "pvlu",
            "--out", "unused"]
    config, _ = build_config(build_parser().parse_args([*base, "--compile", "on"]))
    assert config["train"]["compile"] == "on"
    config, _ = build_config(build_parser().parse_args(base))
    assert "compile" not in config.get("train", {})  # the config's default (auto) applies
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--compile", "fast"])


def test_auto_resolves_to_eager_on_cpu(data, tmp_path):
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile("on", torch.device("cpu")) is True and resolve_compile(True, torch.device("cpu"))
    assert resolve_compile("off", torch.device("cuda")) is False and not resolve_compile(False, torch.device("cuda"))
    trainer = _trainer(data, tmp_path, max_steps=1)
    assert trainer.step_model.module is trainer.model
    history = trainer.fit(resume=False)
    assert history.to_dict()["compile"] == {"setting": "auto", "enabled": False, "used": False, "fallback": None}
    assert history.epochs[0]["compiled"] is False


@pytest.mark.slow
def test_compile_on_trains_like_eager_and_checkpoints_plain_keys(data, tmp_path, fresh_dynamo):
    eager = _trainer(data, tmp_path / "eager", compile="off")
    eager.fit(resume=False)
    events: list = []
    compiled = _trainer(data, tmp_path / "compiled", events, compile="on")
    assert compiled.step_model.compiled and compiled.step_model.module is not compiled.model
    compiled.fit(resume=False)

    assert len(_losses(compiled)) == 3
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-4, abs=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    info = compiled.history.to_dict()["compile"]
    assert info == {"setting": "on", "enabled": True, "used": True, "fallback": None}
    assert compiled.history.epochs[0]["compiled"] is True
    assert any(e["type"] == "epoch" and e["compiled"] is True for e in events)

    ckpt, reason = load_checkpoint(tmp_path / "compiled" / "ckpt" / "last.pt", "key")
    assert reason is None
    assert not [k for k in ckpt["model"] if "_orig_mod" in k]
    assert ckpt["model"].keys() == eager.model.state_dict().keys()


@pytest.mark.slow
def test_a_compiler_that_cannot_run(data, tmp_path, fresh_dynamo):
    import torch._inductor.config as inductor_config

    eager = _trainer(data, tmp_path / "eager", compile="off")
    eager.fit(resume=False)
    # No working C++ compiler (and no cached graph to skip it): what a machine without gcc gives.
    broken = {"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}

    with inductor_config.patch(broken):
        strict = _trainer(data, tmp_path / "on", compile="on")
        with pytest.raises(CompileFailed) as info:
            strict.fit(resume=False)
    assert info.value.param == "train.compile" and "train.compile" in str(info.value)
    assert info.value.to_dict()["code"] == "compile_failed"

    # "auto" on CUDA: on CPU it never compiles, so build its StepModel as auto resolves it on CUDA.
    torch._dynamo.reset()
    events: list = []
    fallback = _trainer(data, tmp_path / "auto", events, compile="off")
    fallback.step_model = StepModel(fallback.model, enabled=True, required=False, reporter=fallback.reporter,
                                    setting="auto")
    fallback.history.compile = fallback.step_model.info
    with inductor_config.patch(broken):
        fallback.fit(resume=False)
    # The failed step was redone eagerly from the same state: exactly the eager run.
    assert _losses(fallback) == _losses(eager)
    info = fallback.history.to_dict()["compile"]
    assert info["enabled"] is True and info["used"] is False and "C++ compiler" in info["fallback"]
    assert fallback.history.epochs[0]["compiled"] is False
    warnings = [e for e in events if e["type"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 1 and "torch.compile" in warnings[0]["message"]
