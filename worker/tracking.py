"""Optional experiment trackers (job config `tracking`), fed by the pipeline's progress events.

    callback = open_tracking(cfg, out_dir, progress, tracking_uri)  # None when nothing is enabled

The returned callable passes every event on to `progress` first, then to each tracker, so the
trackers see exactly what the job record and the CLI see (worker/progress.py): "step" events (loss,
lr per step), "epoch" events, and the final "end" event, after report.json and the figures are
written. A tracker never fails the job: an error (a missing package, an unreachable server) disables
that tracker, is reported as a warning log event and noted in report.json's `tracking` section.

- TensorBoard (torch.utils.tensorboard, needs the `tensorboard` package): event files in the artifact
  folder `tensorboard/` (storage lists only the top level, so report.json names the folder). Scalars
  train/loss and train/lr per step; epoch/<metric> per epoch (train_loss, train_accuracy, val_loss,
  val_accuracy, lr, images_per_s, seconds, test_accuracy); final/<metric> at the end; the config as
  text and as hparams.
- MLflow (the `mlflow-skinny` or `mlflow` package; a SQLite store needs `alembic` too): a run in the
  experiment "reluswap" at `tracking_uri` (the worker's RELUSWAP_MLFLOW_TRACKING_URI, the CLI's
  --mlflow-uri); unset: sqlite:///<out_dir>/mlflow/mlflow.db. Params: the flattened config
  (model.arch, train.lr, ...). Metrics: per epoch (step = epoch) and the job's final metrics.
  Artifacts: report.json, report.html, metrics.csv and the PNG figures. The run ends FINISHED,
  FAILED or KILLED (cancelled).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("reluswap.worker")

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlflow"
MLFLOW_EXPERIMENT = "reluswap"
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy", "lr", "seconds",
                 "images_per_s")
ARTIFACT_FILES = ("report.json", "report.html", "metrics.csv")
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "crashed": "FAILED"}
MLFLOW_BATCH = 100  # log_batch takes at most 100 params at a time


def flatten_config(config: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.01}} -> {"train.lr": "0.01"}: strings as they are, other leaves as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def _numbers(values: dict, keys=None) -> dict[str, float]:
    keys = values.keys() if keys is None else keys
    return {k: float(values[k]) for k in keys
            if isinstance(values.get(k), int | float) and not isinstance(values.get(k), bool)}


def _read_report(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def _redact(uri: str) -> str:
    """A URI without its user:password part, for report.json."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, config: dict, out_dir: Path, info: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.out_dir = out_dir
        self.config = config
        self.writer = SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR))
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```")
        info["dir"] = TENSORBOARD_DIR

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            for key in ("loss", "lr"):
                if event.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", event[key], event["step"], walltime=event.get("time"))
        elif kind == "epoch":
            for key, value in _numbers(event, EPOCH_METRICS).items():
                self.writer.add_scalar(f"epoch/{key}", value, event["epoch"], walltime=event.get("time"))
        elif kind == "end":
            self._hparams(_numbers(_read_report(self.out_dir).get("metrics") or {}))
            self.close()

    def _hparams(self, metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = {k: (v if len(v) <= 250 else v[:250]) for k, v in flatten_config(self.config).items()}
        final = {f"final/{k}": v for k, v in metrics.items()}
        # Written into this folder's event file (SummaryWriter.add_hparams would make a subfolder).
        writer = self.writer._get_file_writer()
        for summary in hparams(params, final):
            writer.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, 0)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    name = "mlflow"

    def __init__(self, config: dict, out_dir: Path, info: dict, tracking_uri: str | None, run_name: str):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        artifact_location = None
        if tracking_uri is None:
            (out_dir / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{(out_dir / MLFLOW_DIR / 'mlflow.db').resolve()}"
            artifact_location = (out_dir / MLFLOW_DIR / "artifacts").resolve().as_uri()
        elif tracking_uri.startswith("sqlite:///"):  # beside the database, not ./mlruns of the worker's cwd
            artifact_location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        self.out_dir = out_dir
        self.client = client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifact_location))
        run = client.create_run(experiment_id, run_name=run_name, tags={"reluswap.out_dir": str(out_dir)})
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten_config(config).items()]
        for i in range(0, len(params), MLFLOW_BATCH):
            client.log_batch(self.run_id, params=params[i:i + MLFLOW_BATCH])
        info.update({"tracking_uri": _redact(tracking_uri), "experiment_id": experiment_id, "run_id": self.run_id})

    def _metrics(self, values: dict[str, float], step: int, when: float | None) -> None:
        from mlflow.entities import Metric

        stamp = int(1000 * (when or time.time()))
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "epoch":
            self._metrics(_numbers(event, EPOCH_METRICS), event["epoch"], event.get("time"))
        elif kind == "end":
            metrics = _numbers(_read_report(self.out_dir).get("metrics") or {})
            if metrics:
                self._metrics(metrics, 0, event.get("time"))  # the job's metrics (baseline_accuracy, ...)
            names = [*ARTIFACT_FILES, *sorted(p.name for p in self.out_dir.glob("*.png"))]
            for name in names:
                if (self.out_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.out_dir / name))
            self.client.set_terminated(self.run_id, RUN_STATUS.get(event.get("status"), "FAILED"))

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


class Tracking:
    """The composed callback: `progress` first, then each live tracker."""

    def __init__(self, progress: Callable[[dict], None] | None):
        self.progress = progress
        self.trackers: list = []
        self.info: dict = {}  # report.json's `tracking`: {name: {...}} (same object, updated on errors)

    def warn(self, name: str, err: BaseException) -> None:
        message = f"tracking: {name} failed ({type(err).__name__}: {err}); the job goes on without it"
        log.warning(message)
        self.info.setdefault(name, {})["error"] = f"{type(err).__name__}: {err}"
        if self.progress is not None:
            self.progress({"type": "log", "level": "warning", "message": message, "time": time.time()})

    def open(self, name: str, factory: Callable[[dict], object]) -> None:
        info = self.info.setdefault(name, {})
        try:
            self.trackers.append(factory(info))
        except Exception as err:
            self.warn(name, err)

    def __call__(self, event: dict) -> None:
        if self.progress is not None:
            self.progress(event)
        for tracker in list(self.trackers):
            try:
                tracker.handle(event)
            except Exception as err:
                self.trackers.remove(tracker)
                self.warn(tracker.name, err)
                try:
                    tracker.close()
                except Exception:
                    log.debug("closing %s after an error failed too", tracker.name, exc_info=True)

    def describe(self) -> dict:
        return self.info


def open_tracking(cfg, out_dir: Path, progress: Callable[[dict], None] | None,
                  tracking_uri: str | None = None) -> Tracking | None:
    """The trackers cfg.tracking asks for, composed with `progress`; None when none is enabled."""
    wanted = cfg.tracking
    if not (wanted.tensorboard or wanted.mlflow):
        return None
    config = cfg.model_dump(mode="json")
    tracking = Tracking(progress)
    if wanted.tensorboard:
        tracking.open("tensorboard", lambda info: TensorBoardTracker(config, out_dir, info))
    if wanted.mlflow:
        run_name = cfg.metadata.get("name") or out_dir.name
        tracking.open("mlflow", lambda info: MLflowTracker(config, out_dir, info, tracking_uri, run_name))
    return tracking
