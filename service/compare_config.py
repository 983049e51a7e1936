"""The compare config: the body of POST /compare, and the children it fans out into.

A compare job is today's job config in which `activation` and `strategy` become lists
(`activations`, `strategies`, optionally `inits`), plus `seeds` (a count) and `test_split`. Its arms
are the grid's cross product plus two controls that are always added: `original` (the unconverted
model, measured once, no training) and `relu` (a ReLU per site, trained with the same trainable
mode, epochs, lr and seeds: what re-fitting BatchNorm alone gives). Every (arm, seed) is an ordinary
job (a child) whose config differs from its siblings' only in the arm and `train.seed`.

Pure (no torch): the API plans and validates every child before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from converters.catalog import ACTIVATIONS, get_info
from converters.strategy import parse_strategy
from converters.vocabulary import INITS, accepted

from .job_config import (
    ActivationOptions,
    ConfigError,
    DatasetConfig,
    ExportConfig,
    JobConfig,
    ModelConfig,
    TrainConfig,
    _Strict,
    parse_config,
    validation_message,
)

ORIGINAL_ARM = "original"  # the unconverted model: measured once, the reference of every child
CONTROL_ACTIVATION = "relu"  # the control arm: BatchNorm (and nothing else new) re-fit
CONTROL_STRATEGY = "all"
CHILD_KINDS = ("original", "train")
CONTROL_TRAINABLE = ("bn+act", "all")  # modes in which the relu control has something to train


class CompareConfig(_Strict):
    model: ModelConfig
    dataset: DatasetConfig
    activations: list[str] = Field(min_length=1, max_length=32,
                                   description="the activations to compare (relu is always the control)")
    strategies: list[str] = Field(default_factory=lambda: ["all"], min_length=1, max_length=32)
    inits: list[Literal[INITS]] | None = Field(default=None, min_length=1,
                                               description="default: activation_options.init alone")
    seeds: int = Field(default=3, ge=1, le=32, description="runs per arm; seed i trains with train.seed + i")
    test_split: float = Field(default=0.2, gt=0.0, lt=1.0,
                              description="fraction of the training data held out of every child alike; "
                              "the best epoch is chosen on validation and reported on it")
    activation_options: ActivationOptions = Field(default_factory=ActivationOptions)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("activations")
    @classmethod
    def _activations(cls, v: list[str]) -> list[str]:
        unknown = [a for a in v if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {', '.join(map(repr, unknown))}; accepted: {accepted(ACTIVATIONS)}")
        if len(set(v)) != len(v):
            raise ValueError("each activation may appear once")
        return v

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        parsed = [parse_strategy(s) for s in v]
        if len({repr(p) for p in parsed}) != len(parsed):  # "last:2" and "last: 2" are one strategy
            raise ValueError("each strategy may appear once")
        return v

    @field_validator("inits")
    @classmethod
    def _inits(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("each init may appear once")
        return v

    @model_validator(mode="after")
    def _grid_not_empty(self) -> CompareConfig:
        if not any(a != CONTROL_ACTIVATION for a in self.activations):
            raise ValueError(f"activations: name at least one activation besides {CONTROL_ACTIVATION!r} "
                             "(the ReLU control is always added)")
        if self.train.trainable not in CONTROL_TRAINABLE:
            # The control re-fits BatchNorm; with "act" it would have nothing to train and fail every seed.
            raise ValueError(f"train.trainable must be one of {', '.join(CONTROL_TRAINABLE)} in a compare job "
                             f"(the relu control trains BatchNorm); got {self.train.trainable!r}")
        return self


@dataclass(frozen=True)
class Arm:
    name: str
    activation: str
    strategy: str
    init: str
    control: bool = False


@dataclass(frozen=True)
class ChildPlan:
    """One child job: its arm, its seed index (None for the original) and its job config."""

    arm: str
    kind: str  # one of CHILD_KINDS
    seed_index: int | None
    config: dict


def arm_name(activation: str, strategy: str, init: str, with_init: bool) -> str:
    return f"{activation} | {strategy}" + (f" | {init}" if with_init else "")


def arms(cfg: CompareConfig) -> list[Arm]:
    """The control first, then the grid in the order given. relu arms would repeat the control
    (a per-site ReLU computes what the original did, whatever the strategy), so they are not added."""
    inits = cfg.inits or [cfg.activation_options.init]
    with_init = len(inits) > 1
    out = [Arm(CONTROL_ACTIVATION, CONTROL_ACTIVATION, CONTROL_STRATEGY, inits[0], control=True)]
    for activation in cfg.activations:
        if activation == CONTROL_ACTIVATION:
            continue
        for strategy in cfg.strategies:
            for init in inits:
                out.append(Arm(arm_name(activation, strategy, init, with_init), activation, strategy, init))
    return out


def child_count(cfg: CompareConfig) -> int:
    return 1 + cfg.seeds * len(arms(cfg))


def _child_config(cfg: CompareConfig, arm: Arm, seed_index: int) -> dict:
    base = cfg.model_dump(mode="json", exclude={"activations", "strategies", "inits", "seeds", "test_split"})
    base["dataset"]["test_split"] = cfg.test_split
    base["activation"], base["strategy"] = arm.activation, arm.strategy
    base["activation_options"] = _arm_options(base["activation_options"], arm)
    base["train"]["seed"] = cfg.train.seed + seed_index
    return base


def _arm_options(shared: dict, arm: Arm) -> dict:
    """The shared activation options, less what this arm's activation does not take (a slope for
    leaky_relu, a granularity, convrelu's fallback and impl must not fail the other arms)."""
    info = get_info(arm.activation)
    options = {"init": arm.init}
    for key, value in shared.items():
        if key == "init" or value is None:
            continue
        if key == "granularity" and value not in info.granularities:
            continue
        if key in ("fallback", "convrelu_impl") and info.kind != "conv":
            continue
        if key not in ActivationOptions.model_fields and key not in info.options:
            continue
        options[key] = value
    return options


def plan_children(cfg: CompareConfig) -> list[ChildPlan]:
    """The original first, then every (arm, seed). Each child's config is validated here, so a
    grid with a bad cell is refused before anything is stored, naming the arm."""
    original = _child_config(cfg, arms(cfg)[0], 0)
    plans = [ChildPlan(ORIGINAL_ARM, "original", None, original)]
    for arm in arms(cfg):
        for i in range(cfg.seeds):
            config = _child_config(cfg, arm, i)
            try:
                parse_config(config)
            except ConfigError as err:
                raise ConfigError(f"arm {arm.name!r}: {err}") from None
            plans.append(ChildPlan(arm.name, "train", i, config))
    return plans


def parse_compare_config(data: dict | CompareConfig) -> CompareConfig:
    """Validate a compare body (raises ConfigError with one line per problem)."""
    if isinstance(data, CompareConfig):
        return data
    from pydantic import ValidationError

    try:
        return CompareConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid compare config:\n  " + validation_message(err)) from None


__all__ = ["CHILD_KINDS", "ORIGINAL_ARM", "Arm", "ChildPlan", "CompareConfig", "JobConfig", "arms",
           "child_count", "parse_compare_config", "plan_children"]
