"""The job contract's closed sets: what the API, the worker and the CLI agree on, defined once.

Torch-free: the API process imports it, and so do the worker and the CLI (by name). The job
config's schema (service/job_config.py) derives its accepted values from here and from the
library's vocabulary (converters/vocabulary.py).
"""

from __future__ import annotations

# A job's life: queued -> running -> succeeded | failed | cancelled; a running job asked to stop is
# `cancelling` until its worker notices.
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("running", "cancelling")  # a worker holds the job
ENDED_STATUSES = ("succeeded", "failed", "cancelled")  # nothing will change any more
NOT_ENDED_STATUSES = tuple(s for s in JOB_STATUSES if s not in ENDED_STATUSES)

# The stages of a running job, in order (progress.stage in the job object and in events).
STAGES = ("loading", "baseline", "converting", "training", "verifying", "exporting")
# The end marker: a succeeded job's progress.stage (stage_index == len(STAGES), fraction 1.0).
DONE_STAGE = "done"
PROGRESS_STAGES = (*STAGES, DONE_STAGE)
# progress.overall: each stage's share of the whole job, a fixed guess of where the time goes (training
# dominates); a stage without its own fraction counts as done when the next one starts.
STAGE_WEIGHTS = {"loading": 0.05, "baseline": 0.05, "converting": 0.05, "training": 0.7, "verifying": 0.1,
                 "exporting": 0.05}

# The Celery task the API sends by name, so it never imports the worker.
TASK_NAME = "reluswap.finetune"

# Dataset references `<scheme>:<rest>`; "upload" (no colon) means an archive handed to the job.
DATASET_SCHEMES = ("builtin", "imagefolder", "archive", "torchvision", "synthetic")
DATASET_UPLOAD = "upload"
BUILTIN_DATASETS = ("digits",)
# Schemes whose rest is a path on the server (confined to the allowed data roots).
PATH_SCHEMES = ("imagefolder", "archive")

# model.weights: random, the library's pretrained weights, or a file handed to the job.
WEIGHTS_SOURCES = ("none", "default", "upload")

# Three-way switches of the training config (amp, channels_last, compile); a bool is accepted too.
SWITCH_SETTINGS = ("auto", "on", "off")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
