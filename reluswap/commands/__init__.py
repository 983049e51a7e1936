"""CLI sub-commands: each module has `add(subparsers)` that registers its arguments and `run`."""

from . import activations, compare, demo, export, finetune, pretrain, serve, sites, worker

ALL = (sites, activations, pretrain, finetune, compare, export, serve, worker, demo)
