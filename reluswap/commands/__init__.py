"""CLI sub-commands: each module has `add(subparsers)` that registers its arguments and `run`."""

from . import activations, finetune, pretrain, sites

ALL = (sites, activations, pretrain, finetune)
