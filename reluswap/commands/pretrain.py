"""`reluswap pretrain`: train an ordinary ReLU model and save its state_dict (the demo's stand-in
for a user's pretrained network)."""

from __future__ import annotations

import json

from ._jobargs import add_model_data, add_training, model_data_config, training_config
from ._progress import CancelOnInterrupt, ProgressView


def add(sub) -> None:
    p = sub.add_parser("pretrain", help="train an ordinary ReLU model and save its weights")
    add_model_data(p)
    add_training(p)
    p.add_argument("--out", required=True, help="weights file to write (.safetensors, .pt or .pth)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from service.job_config import DatasetConfig, ModelConfig, TrainConfig, parse_config
    from worker.pretrain import pretrain

    files: dict = {}
    config: dict = {"activation": "relu", "train": {"epochs": 2}}
    model_data_config(args, config, files)
    training_config(args, config)
    for flag, section, key in (("--model", "model", "arch"), ("--data", "dataset", "uri")):
        if key not in config.get(section, {}):
            raise ValueError(f"{flag} is required")
    cfg = parse_config(config)  # the same validation (and messages) as a finetune job
    with CancelOnInterrupt() as cancel, ProgressView("pretrain", enabled=not args.quiet) as view:
        result = pretrain(ModelConfig(**cfg.model.model_dump()), DatasetConfig(**cfg.dataset.model_dump()),
                          TrainConfig(**cfg.train.model_dump()), args.out, files=files, progress=view.on_event,
                          should_cancel=cancel, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['arch']} on {cfg.dataset.uri}: validation accuracy {result['val_accuracy']:.4f} "
              f"(loss {result['val_loss']:.4f}) after {len(result['epochs'])} epoch(s); weights: {result['out']}")
    return 0
