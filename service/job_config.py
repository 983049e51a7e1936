"""The job config: the body of POST /finetune (docs/api.md), as a pydantic model.

Shared by the API (validation before a job is queued), the worker and the CLI, which import it by name.

Pure (no torch import), so the API process validates a job before it is queued. Every name
(arch, activation, strategy, trainable mode, dataset reference) is checked here, with a message
that lists the accepted values; unknown fields are rejected at every level.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from converters.catalog import ACTIVATIONS, get_info
from converters.references import parse_model_ref
from converters.strategy import parse_strategy
from converters.vocabulary import (
    CONVRELU_IMPLS,
    FALLBACKS,
    GRANULARITIES,
    INITS,
    TRAINABLE_MODES,
    accepted,
    check_options,
    not_one_of,
)

from .contract import (
    BUILTIN_DATASETS,
    DATASET_SCHEMES,
    DATASET_UPLOAD,
    OPTIMIZERS,
    SCHEDULES,
    SWITCH_SETTINGS,
    WEIGHTS_SOURCES,
)

# Literal[tuple] is Literal[*tuple]: the schema's enums come from the one definition.
Switch = Literal[SWITCH_SETTINGS] | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    arch: str = Field(description="torchvision:<name> or timm:<name>")
    num_classes: int | None = Field(default=None, ge=2, description="default: the dataset's class count")
    weights: str = Field(
        default="none",
        description="none (random), default (the library's pretrained weights; needs the network), "
        "upload (a file handed to the job)",
    )

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        parse_model_ref(v)  # ModelReferenceError is a ValueError naming the accepted sources
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if v not in WEIGHTS_SOURCES:  # pydantic prefixes the field's path
            raise ValueError(not_one_of(v, WEIGHTS_SOURCES))
        return v


class DatasetConfig(_Strict):
    uri: str = Field(
        description="builtin:digits, imagefolder:<dir>, archive:<file .zip/.tar.gz>, torchvision:<Name>, "
        "synthetic:<classes>x<images>, or upload (an archive handed to the job)"
    )
    image_size: int | None = Field(default=None, ge=8, le=1024, description="default: the dataset's own")
    val_split: float = Field(default=0.2, gt=0.0, lt=1.0, description="used when the data has no val split")
    test_split: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="hold this fraction of the training data out as a test split (compare jobs set it): the "
        "best epoch is chosen on validation and reported on test")
    split_seed: int = 0
    mean: list[float] | None = None
    std: list[float] | None = None
    augment: bool = Field(default=False, description="light augmentation of the training split")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if v == DATASET_UPLOAD:
            return v
        scheme, sep, rest = v.partition(":")
        if not sep or scheme not in DATASET_SCHEMES or not rest:
            raise ValueError(
                f"must be one of builtin:{'|'.join(BUILTIN_DATASETS)}, imagefolder:<dir>, archive:<file>, "
                f"torchvision:<Name>, synthetic:<classes>x<images>, {DATASET_UPLOAD}; got {v!r}"
            )
        if scheme == "builtin" and rest not in BUILTIN_DATASETS:
            raise ValueError(f"unknown builtin dataset {rest!r}; accepted: {accepted(BUILTIN_DATASETS)}")
        if scheme == "synthetic":
            parse_synthetic(rest)
        return v

    @field_validator("mean", "std")
    @classmethod
    def _channels(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and len(v) not in (1, 3):
            raise ValueError(f"needs 1 or 3 values (one per channel), got {len(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


def parse_synthetic(rest: str) -> tuple[int, int]:
    """'10x512' -> (10 classes, 512 images in all)."""
    classes, sep, images = rest.partition("x")
    try:
        c, n = int(classes), int(images)
    except ValueError:
        c = n = 0
    if not sep or c < 2 or n < 2 * c:
        raise ValueError(f"synthetic dataset must be synthetic:<classes>x<images> with classes >= 2 and "
                         f"images >= 2 * classes (e.g. synthetic:10x512); got synthetic:{rest}")
    return c, n


class ActivationOptions(BaseModel):
    """init, granularity, fallback, convrelu_impl, plus the activation's own fixed options
    (e.g. negative_slope for leaky_relu), which JobConfig checks against the catalogue."""

    model_config = ConfigDict(extra="allow")

    init: Literal[INITS] = "identity"
    granularity: Literal[GRANULARITIES] | None = None
    fallback: Literal[FALLBACKS] | None = None
    # auto: the Triton kernels on CUDA, "patches" on CPU (converters/activations/convrelu.py)
    convrelu_impl: Literal[CONVRELU_IMPLS] = "auto"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainConfig(_Strict):
    trainable: str = "bn+act"
    epochs: int = Field(default=3, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    optimizer: Literal[OPTIMIZERS] = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="sgd only")
    weight_decay: float = Field(default=0.0, ge=0.0)
    threshold_l2: float = Field(default=1e-4, ge=0.0, description="L2 on ConvReLU thresholds")
    seed: int = 0
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs: stop after this many steps")
    amp: Switch = Field(default="auto", description="mixed precision on CUDA")
    channels_last: Switch = "auto"
    compile: Switch = Field(
        default="auto",
        description="torch.compile of the training step: auto (on CUDA only), on (fail the job if it cannot "
        "compile), off (eager)",
    )
    schedule: Literal[SCHEDULES] = "cosine"
    stats_batches: int | None = Field(default=16, ge=1, description="validation batches for activation statistics")

    @field_validator("trainable")
    @classmethod
    def _trainable(cls, v: str) -> str:
        if v not in TRAINABLE_MODES:
            raise ValueError(not_one_of(v, TRAINABLE_MODES))
        return v

    @field_validator("amp", "channels_last", "compile", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        # One message naming the accepted values (instead of one per member of the union).
        if isinstance(v, bool) or v in SWITCH_SETTINGS:
            return v
        raise ValueError(f"must be one of {accepted(SWITCH_SETTINGS)} (or true / false); got {v!r}")


class ExportConfig(_Strict):
    onnx: bool = Field(default=True, description="model.onnx: one reluswap node per site plus defining functions")
    opset: int = Field(default=18, ge=18, le=23, description="default-domain opset of model.onnx")
    inline: bool = Field(default=False, description="model.onnx with the functions inlined (standard ops only)")
    pt2: bool = Field(default=True, description="model.pt2: a torch.export program of the converted model")


class TrackingConfig(_Strict):
    tensorboard: bool = Field(default=False, description="TensorBoard event files in the artifact folder "
                              "tensorboard/: per-step loss and lr, per-epoch metrics, the config")
    mlflow: bool = Field(default=False, description="an MLflow run at the worker's tracking URI: the config "
                         "as params, per-epoch metrics, report.json, report.html and the figures")


class JobConfig(_Strict):
    model: ModelConfig
    dataset: DatasetConfig
    activation: str
    activation_options: ActivationOptions = Field(default_factory=ActivationOptions)
    strategy: str = "all"
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            raise ValueError(f"unknown activation {v!r}; accepted: {accepted(ACTIVATIONS)}")
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        parse_strategy(v)  # StrategyError is a ValueError carrying the grammar
        return v

    @model_validator(mode="after")
    def _activation_options(self) -> JobConfig:
        info = get_info(self.activation)
        opts = self.activation_options
        common = [name for name in ActivationOptions.model_fields]
        try:
            check_options(self.activation, opts.options, [*common, *info.options])
        except ValueError as err:
            raise ValueError(f"activation_options: {err}") from None
        info.check_granularity(opts.granularity)
        if opts.fallback is not None and info.kind != "conv":
            raise ValueError("activation_options.fallback applies to convrelu only")
        return self

    def checkpoint_key(self) -> dict:
        """What a checkpoint must agree on to be resumed (metadata, export and tracking do not count)."""
        return self.model_dump(mode="json", exclude={"metadata", "export", "tracking"})


class ConfigError(ValueError):
    """An invalid job config; the message names every bad field and the accepted values."""


def parse_config(data: dict | JobConfig) -> JobConfig:
    """Validate a config dict (raises ConfigError with one line per problem)."""
    if isinstance(data, JobConfig):
        return data
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid job config:\n  " + validation_message(err)) from None


def validation_message(err: ValidationError) -> str:
    """One line per problem: the field's dotted path, then what is wrong and what is accepted."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ").replace("\n", "\n    ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{where}: {msg}" if where else msg)
    return "\n  ".join(lines)


__all__ = [
    "ActivationOptions",
    "ConfigError",
    "DatasetConfig",
    "ExportConfig",
    "JobConfig",
    "ModelConfig",
    "TrainConfig",
    "parse_config",
    "parse_synthetic",
]
