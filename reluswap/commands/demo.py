"""`reluswap demo`: the main job end to end through HTTP, on the bundled digits.

Pretrain a resnet18 on builtin:digits (cached), start the embedded service, POST /finetune with
the weights uploaded (pvlu, all sites), follow progress, download model.onnx, run it in
onnxruntime on validation images, print the metrics. Then POST /compare: pvlu and frelu against
the ReLU control over 2 seeds, and print the leaderboard with its verdicts. With DEMO_KEEP=1 the
service stays up (the dashboard at /ui) until Ctrl-C; then it stops.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

IMAGE_SIZE = 32


def add(sub) -> None:
    p = sub.add_parser("demo", help="run the main job end to end through the HTTP API")
    p.add_argument("--dir", default=".cache/demo", help="cache and service data (default .cache/demo)")
    p.add_argument("--activation", default="pvlu")
    p.add_argument("--strategy", default="all")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the job")
    p.add_argument("--compare-activations", default="pvlu,frelu",
                   help="the demo's compare job: these against the ReLU control (empty: skip it)")
    p.add_argument("--compare-seeds", type=int, default=2)
    p.add_argument("--compare-steps", type=int, default=30, help="training steps of each compare child")
    p.set_defaults(run=run)


def _pretrained(directory: Path) -> Path:
    weights = directory / f"resnet18-digits-{IMAGE_SIZE}px.safetensors"
    if weights.exists():
        print(f"[demo] using cached pretrained weights {weights}")
        return weights
    from service.job_config import parse_config
    from worker.pretrain import pretrain

    print("[demo] pretraining a ReLU resnet18 on builtin:digits (the stand-in for your pretrained model) ...")
    cfg = parse_config({
        "model": {"arch": "torchvision:resnet18", "num_classes": 10},
        "dataset": {"uri": "builtin:digits", "image_size": IMAGE_SIZE},
        "activation": "relu",
        "train": {"epochs": 4, "lr": 0.003, "batch_size": 64, "seed": 0},
    })
    result = pretrain(cfg.model, cfg.dataset, cfg.train, weights)
    print(f"[demo] pretrained: validation accuracy {result['val_accuracy']:.4f}")
    return weights


def _follow(client, path: str, describe, timeout: float) -> dict:
    """GET path every second until it ends, printing describe(object) whenever it changes."""
    from service.contract import ENDED_STATUSES

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        record = client.get(path).raise_for_status().json()
        line = describe(record)
        if line != last:
            print(line, flush=True)
            last = line
        if record["status"] in ENDED_STATUSES:
            return record
        time.sleep(1.0)
    raise RuntimeError(f"{path} did not end within {timeout:.0f} s")


def _job_line(job: dict) -> str:
    progress = job.get("progress") or {}
    line = f"[demo] {job['status']:<10} stage={progress.get('stage', '-')}"
    if progress.get("steps"):
        line += f" epoch {progress.get('epoch')}/{progress.get('epochs')} step {progress.get('step')}/{progress.get('steps')}"
        if progress.get("loss") is not None:
            line += f" loss {progress['loss']:.4f}"
    return line


def _run_onnx(model_path: Path) -> tuple[int, int]:
    """Run model.onnx in onnxruntime on validation digits; returns (correct, total)."""
    import numpy as np
    import onnxruntime as ort

    from service.job_config import DatasetConfig
    from worker.data import load_data

    data = load_data(DatasetConfig(uri="builtin:digits", image_size=IMAGE_SIZE), model_path.parent / "work")
    images = np.stack([data.val[i][0].numpy() for i in range(16)]).astype(np.float32)
    labels = np.array([int(data.val[i][1]) for i in range(16)])
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    predicted = logits.argmax(1)
    print(f"[demo] onnxruntime on {len(labels)} validation digits: predicted {predicted.tolist()}")
    print(f"[demo]                                       labels {labels.tolist()}")
    return int((predicted == labels).sum()), len(labels)


def run(args) -> int:
    import httpx

    from reluswap.supervisor import start_embedded

    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    weights = _pretrained(directory)
    print("[demo] starting the service: bundled redis-server, API, one worker ...", flush=True)
    service = start_embedded(directory / "service")
    print(f"[demo] serving at {service.url}")
    try:
        headers = {"Authorization": f"Bearer {service.api_key}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=60) as client:
            config = {
                "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "upload"},
                "dataset": {"uri": "builtin:digits", "image_size": IMAGE_SIZE},
                "activation": args.activation,
                "strategy": args.strategy,
                "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.001, "seed": 0},
                "export": {"onnx": True},
            }
            with weights.open("rb") as f:
                response = client.post("/finetune", data={"config": json.dumps(config)},
                                       files={"weights": (weights.name, f, "application/octet-stream")})
            if response.status_code != 202:
                raise RuntimeError(f"POST /finetune answered {response.status_code}: {response.text}")
            job = response.json()
            print(f"[demo] POST /finetune -> 202, job {job['id']} ({response.headers.get('location')})")
            job = _follow(client, f"/jobs/{job['id']}", _job_line, args.timeout)
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['status']}: {job.get('error')}")
            artifacts = client.get(f"/jobs/{job['id']}/artifacts").raise_for_status().json()
            names = [a["name"] for a in artifacts["data"]] if isinstance(artifacts, dict) else [a["name"] for a in artifacts]
            print(f"[demo] artifacts: {', '.join(names)}")
            model_path = directory / "model.onnx"
            model_path.write_bytes(client.get(f"/jobs/{job['id']}/artifacts/model.onnx").raise_for_status().content)
            correct, total = _run_onnx(model_path)
            m = job["metrics"]
            print("[demo] metrics:")
            for key in ("baseline_accuracy", "converted_accuracy_at_init", "final_accuracy",
                        "relative_error_decrease", "sites_total", "sites_replaced", "onnx_max_abs_diff"):
                if key in m:
                    print(f"[demo]   {key:<28} {m[key]}")
            print(f"[demo]   onnxruntime accuracy on {total} images: {correct}/{total}")
            if args.compare_activations:
                _compare(client, weights, args)
            if os.environ.get("DEMO_KEEP") == "1":
                _keep_serving(service)
    finally:
        print("[demo] stopping the service")
        service.stop()
    return 0


def _compare(client, weights: Path, args) -> None:
    """The verdict, not only a number: the same fine-tune against the ReLU control, over seeds."""
    from rich.console import Console

    from ._leaderboard import leaderboard_table, winner_line

    body = {
        "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "upload"},
        "dataset": {"uri": "builtin:digits", "image_size": IMAGE_SIZE},
        "activations": [a for a in args.compare_activations.split(",") if a],
        "strategies": [args.strategy],
        "seeds": args.compare_seeds,
        "train": {"max_steps": args.compare_steps, "batch_size": 64, "lr": 0.001, "seed": 0, "stats_batches": 4},
        "export": {"onnx": False, "pt2": False},
    }
    with weights.open("rb") as f:
        response = client.post("/compare", data={"config": json.dumps(body)},
                               files={"weights": (weights.name, f, "application/octet-stream")})
    if response.status_code != 202:
        raise RuntimeError(f"POST /compare answered {response.status_code}: {response.text}")
    compare = response.json()
    total = compare["progress"]["children"]
    print(f"[demo] POST /compare -> 202, compare job {compare['id']}: {total} children "
          f"(the original, then relu + {', '.join(body['activations'])} x {body['seeds']} seeds)")
    compare = _follow(client, f"/compare/{compare['id']}",
                      lambda c: f"[demo] compare {c['status']:<10} {c['progress']['ended']}/{total} children ended",
                      args.timeout)
    if compare["status"] != "succeeded":
        raise RuntimeError(f"compare job {compare['status']}: {compare.get('error')}")
    board = client.get(f"/compare/{compare['id']}/artifacts/leaderboard.json").raise_for_status().json()
    console = Console()
    console.print(leaderboard_table(board))
    console.print(winner_line(board))


def _keep_serving(service) -> None:
    print(f"[demo] the dashboard: {service.url}/ui  (API key: {service.api_key})")
    print("[demo] serving until Ctrl-C")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
