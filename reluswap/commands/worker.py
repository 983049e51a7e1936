"""`reluswap worker`: a production worker against a given broker (one per GPU)."""

from __future__ import annotations

import os


def add(sub) -> None:
    p = sub.add_parser("worker", help="start a Celery worker for fine-tuning jobs (one per GPU)")
    p.add_argument("--broker", default=None, help="broker URL (default: RELUSWAP_BROKER_URL)")
    p.add_argument("--queue", default=None, help="queue to consume (default: RELUSWAP_QUEUE or gpu)")
    p.add_argument("--gpu", default=None, help="the GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)")
    p.set_defaults(run=run)


def run(args) -> int:
    from reluswap.supervisor import worker_command

    env = dict(os.environ)
    if args.broker:
        env["RELUSWAP_BROKER_URL"] = args.broker
    if args.queue:
        env["RELUSWAP_QUEUE"] = args.queue
    if args.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    command = worker_command(queue=env.get("RELUSWAP_QUEUE", "gpu"))
    os.execvpe(command[0], command, env)  # the worker replaces this process: signals reach Celery directly
