"""CLI sub-commands: each module has `add(subparsers)` that registers its arguments and `run`."""

from . import activations, demo, export, finetune, pretrain, serve, sites, worker

ALL = (sites, activations, pretrain, finetune, export, serve, worker, demo)
