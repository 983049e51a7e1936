"""reluswap's converter library: learnable ReLU replacements, call-site surgery, strategies, metrics.

Importing the package itself does not import torch: the pure parts (`converters.catalog`,
`converters.strategy`) serve the API process, and the torch-backed names below load on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "find_sites": "converters.sites",
    "trace_sites": "converters.sites",
    "Site": "converters.site",
    "convert": "converters.conversion",
    "convert_from_spec": "converters.conversion",
    "Conversion": "converters.conversion",
    "ConversionSpec": "converters.spec",
    "ConversionMismatchError": "converters.spec",
    "trainable": "converters.training",
    "activation_stats": "converters.stats",
    "SiteStats": "converters.stats",
    "create_activation": "converters.activations",
    "activation_class": "converters.activations",
    "ConvReLU2d": "converters.activations",
    "LearnableActivation": "converters.activations",
    "TraceError": "converters.tracing",
    "InplaceHazardError": "converters.inplace",
    "StrategyError": "converters.strategy",
    "parse_strategy": "converters.strategy",
    "get_info": "converters.catalog",
    "CATALOG": "converters.catalog",
    "build_model": "converters.models",
}

__all__ = list(_LAZY)  # noqa: PLE0605


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
