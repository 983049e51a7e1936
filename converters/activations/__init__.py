"""Learnable activations that replace the ReLUs of a pretrained network.

Importing this package imports every module, so the registry holds every catalogue name.
"""

from .adarelu import AdaReLU
from .base import LearnableActivation
from .convrelu import (
    ConvReLU2d,
    convrelu_ineligible_reason,
    convrelu_shifted,
    convrelu_unfold,
)
from .dual_line import DPReLU, DualLine
from .frelu import FReLU
from .pvlu import PVLU
from .registry import activation_class, create_activation, register, registered_names
from .relu import LeakyReLU, PReLU, ReLU

__all__ = [
    "PVLU",
    "AdaReLU",
    "ConvReLU2d",
    "DPReLU",
    "DualLine",
    "FReLU",
    "LeakyReLU",
    "LearnableActivation",
    "PReLU",
    "ReLU",
    "activation_class",
    "convrelu_ineligible_reason",
    "convrelu_shifted",
    "convrelu_unfold",
    "create_activation",
    "register",
    "registered_names",
]
