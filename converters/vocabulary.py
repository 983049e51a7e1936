"""The library's closed sets of names, each defined once, and the one check that names them.

Torch-free, so the job config (service/job_config.py), the CLI's choices and the API's validation
derive their accepted values from here without importing PyTorch. Activation names are the keys of
converters.catalog.CATALOG (the catalogue owns them, as timm's activation dicts do).
"""

from __future__ import annotations

from collections.abc import Iterable

# How new parameters start: "identity" reproduces the original network exactly, "paper" uses the
# values the papers trained with.
INITS = ("identity", "paper")
# Parameter shape of an elementwise activation: one value per channel, or one per site.
GRANULARITIES = ("channel", "layer")
# ConvReLU at a ReLU site that no Conv2d consumes: leave it a ReLU, or use AdaReLU (max(x, theta)).
FALLBACKS = ("skip", "adarelu")
# The kinds of ReLU call site: plain ReLU, and ReLU6 (capped at 6).
SITE_KINDS = ("relu", "relu6")
# What fine-tuning trains: BatchNorm + activation parameters, activation parameters only, everything.
TRAINABLE_MODES = ("bn+act", "act", "all")
# Where architectures come from: `<source>:<name>`.
MODEL_SOURCES = ("torchvision", "timm")
# How ConvReLU runs in PyTorch (converters/activations/convrelu.py): "auto" picks fused on CUDA,
# patches elsewhere.
CONVRELU_IMPLS = ("auto", "fused", "patches", "shifted", "unfold")


def accepted(values: Iterable[str]) -> str:
    """The accepted values, as every error message lists them."""
    shown = ", ".join(str(v) for v in values)
    return shown or "none"


def not_one_of(value, values: Iterable[str]) -> str:
    """The message for a value outside its closed set: "must be one of A, B; got 'x'"."""
    return f"must be one of {accepted(values)}; got {value!r}"


def check_choice(field: str, value, values: tuple) -> None:
    """A ValueError naming the field and the accepted values when value is not one of them."""
    if value not in values:
        raise ValueError(f"{field} {not_one_of(value, values)}")


def check_options(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Options an activation does not take: one message, naming them and the accepted ones."""
    known = list(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {owner}; accepted: {accepted(known)}")
