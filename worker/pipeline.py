"""The fine-tuning job: load, measure, convert, fine-tune, measure, save.

    result = run_job(config, out_dir, progress=print, should_cancel=lambda: False)

Stages (progress events, see progress.py): loading (data, model, weights; class counts checked
before anything runs), baseline (the original model: accuracy, loss, per-site activation
statistics), converting (convert; at identity init the converted model must predict what the
original did, or the job fails), training (checkpoint after every epoch; a rerun with the same
checkpoint directory resumes), verifying (final accuracy, statistics after, learned parameter
statistics), exporting (weights.safetensors, conversion.json, report.json; the saved artifacts
are rebuilt and must reproduce the in-memory model's outputs).

Ends `succeeded`, `cancelled` (should_cancel() returned True; report.json holds what was measured)
or `failed` (a JobError or invalid input: error {code, message, param}). Any other exception is a
crash and propagates, so the caller can retry: the checkpoint lets the next attempt resume.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from converters.saved import CONVERSION_FILE, WEIGHTS_FILE, load_conversion, save_conversion
from service.job_config import ConfigError, JobConfig, parse_config

from .checkpoint import FILENAME as CHECKPOINT_FILE
from .checkpoint import config_fingerprint, seed_everything
from .data import DataBundle, load_data
from .errors import ConversionCheckError, InputError, JobCancelled, JobError
from .evaluation import evaluate
from .exports import write_exports
from .loaders import loader
from .loading import build
from .precision import Precision, pick_device
from .progress import Reporter
from .report import (
    FORMAT,
    conversion_context,
    environment,
    parameter_stats,
    relative_error_decrease,
    versions,
    write_json,
)
from .tracking import open_tracking
from .trainer import Trainer
from .visual import write_visual_report

REPORT_FILE = "report.json"
# A prediction may change at identity init only where the original's top two logits tie to within
# this (relative to the logit scale): float rounding, e.g. of ConvReLU's shifted convolutions.
TIE_TOLERANCE = 1e-4
RELOAD_TOLERANCE = 1e-6
CALIBRATION_BATCHES = 8
MODEL_INIT_SEED = 0
# A compare job's original writes these; its children read them instead of measuring again.
ORIGINAL_LOGITS = "original_logits.safetensors"


def compare_predictions(before: torch.Tensor, after: torch.Tensor) -> dict:
    """Predictions of two models on the same images. A changed prediction is explained only where
    the first model's top two logits tie to within TIE_TOLERANCE (relative to the logit scale)."""
    top2 = before.topk(min(2, before.shape[1]), dim=1).values
    margin = top2[:, 0] - top2[:, -1]
    scale = before.abs().amax(dim=1).clamp_min(1.0)
    differ = before.argmax(1) != after.argmax(1)
    near_tie = margin <= TIE_TOLERANCE * scale
    return {
        "prediction_mismatches": int(differ.sum()),
        "near_tie_mismatches": int((differ & near_tie).sum()),
        "unexplained_mismatches": int((differ & ~near_tie).sum()),
        "max_abs_logit_diff": float((before - after).abs().max()),
    }


@dataclass
class JobResult:
    status: str  # succeeded | cancelled | failed
    metrics: dict
    out_dir: Path
    artifacts: list[str] = field(default_factory=list)
    error: dict | None = None
    report: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)  # the converted model, when trained

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class _Job:
    def __init__(self, cfg: JobConfig, out_dir: Path, reporter: Reporter, files: dict, checkpoint_dir: Path,
                 work_dir: Path, device, allowed_data_roots, download: bool, measure_only: bool = False):
        self.cfg, self.out_dir, self.reporter = cfg, out_dir, reporter
        self.files, self.checkpoint_dir, self.work_dir = files, checkpoint_dir, work_dir
        self.device = pick_device(device)
        self.precision = Precision.choose(self.device, cfg.train.amp, cfg.train.channels_last)
        self.allowed_data_roots, self.download = allowed_data_roots, download
        # measure_only: load and measure the original model, nothing else (a compare's `original`).
        # files["original"]: that measurement's folder, reused instead of measuring again.
        self.measure_only = measure_only
        self.original_dir = Path(files["original"]) if files.get("original") else None
        self.metrics: dict = {k: None for k in (
            "baseline_accuracy", "converted_accuracy_at_init", "final_accuracy", "relative_error_decrease",
            "sites_total", "sites_replaced")}
        self.report: dict = {
            "format": FORMAT,
            "status": "running",
            "config": cfg.model_dump(mode="json"),
            "metrics": self.metrics,
            "timings": {},
            "environment": {**environment(self.device), "precision": self.precision.describe()},
            "versions": versions(),
        }
        self.artifacts: list[str] = []
        # Filled as the stages run; _finish reports whatever was reached.
        self.num_classes: int | None = None
        self.conversion = None
        self.trainer: Trainer | None = None
        self.converted: torch.nn.Module | None = None

    # ------------------------------------------------------------ helpers

    def _timed(self, stage: str):
        job = self

        class _Timer:
            def __enter__(self):
                job.reporter.stage(stage)
                job.reporter.check_cancel()
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                job.report["timings"][stage] = round(time.perf_counter() - self.t, 3)

        return _Timer()

    def _stats(self, model, data: DataBundle) -> list[dict]:
        from converters.stats import activation_stats

        batches = loader(data.val, self.cfg.train.batch_size, self.device)
        return [s.to_dict() for s in activation_stats(model, batches, max_batches=self.cfg.train.stats_batches,
                                                      device=self.device)]

    def _prepare(self, model):
        model = model.to(self.device)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    # ------------------------------------------------------------ stages

    def run(self, resume: bool) -> JobResult:
        cfg = self.cfg
        seed_everything(cfg.train.seed)
        with self._timed("loading"):
            data, model = self._load()
        val_loader = loader(data.val, cfg.train.batch_size, self.device)
        test_loader = loader(data.test, cfg.train.batch_size, self.device) if data.test is not None else None

        with self._timed("baseline"):
            if self.original_dir is not None:
                baseline = self._reuse_original(data)
            else:
                baseline = evaluate(model, val_loader, self.precision, keep_logits=True, reporter=self.reporter)
                self.report["baseline"] = baseline.to_dict()
                if test_loader is not None:
                    self.report["baseline"]["test_accuracy"] = evaluate(
                        model, test_loader, self.precision, reporter=self.reporter).accuracy
                self.report["activation_stats"] = {"before": self._stats(model, data), "after": None}
            self.metrics["baseline_accuracy"] = baseline.accuracy
        if self.measure_only:
            self._save_original(baseline)
            return self._finish("succeeded")

        with self._timed("converting"):
            conversion = self._convert(model, data)
            del model
            converted = self.converted = self._prepare(conversion.model)
            at_init = evaluate(converted, val_loader, self.precision, keep_logits=True, reporter=self.reporter)
            self.metrics["converted_accuracy_at_init"] = at_init.accuracy
            self.report["at_init"] = {**at_init.to_dict(), **self._compare_at_init(baseline, at_init)}
            self.report["parameter_stats"] = {"at_init": parameter_stats(converted, conversion.sites), "final": None}

        with self._timed("training"):
            from converters.training import trainable

            groups = trainable(converted, cfg.train.trainable, cfg.train.weight_decay, cfg.train.threshold_l2)
            if not groups:
                raise InputError(f"train.trainable {cfg.train.trainable!r} leaves nothing to train: {cfg.activation} "
                                 "has no learnable parameters (use bn+act or all)", "train.trainable")
            self.report["trainable"] = {
                "mode": cfg.train.trainable,
                "groups": {g["name"]: sum(p.numel() for p in g["params"]) for g in groups},
                "weight_decay": {g["name"]: g["weight_decay"] for g in groups},
            }
            trainer = Trainer(converted, groups, data.train, data.val, cfg.train, self.precision, self.reporter,
                              self.checkpoint_dir / CHECKPOINT_FILE, config_fingerprint(cfg.checkpoint_key()),
                              test_set=data.test)
            self.reporter.emit({"type": "progress", "stage": "training", "epoch": trainer.epoch,
                                "epochs": trainer.epochs, "step": 0, "steps": trainer.total_steps, "fraction": 0.0})
            self.trainer = trainer
            trainer.fit(resume=resume)
            self.report["training"] = self._training_record()
            self.report["peak"] = peak_epoch(self.report["training"]["epochs"])

        with self._timed("verifying"):
            final = evaluate(converted, val_loader, self.precision, keep_logits=False, reporter=self.reporter)
            self.metrics["final_accuracy"] = final.accuracy
            self.metrics["relative_error_decrease"] = relative_error_decrease(baseline.accuracy, final.accuracy)
            self.report["final"] = final.to_dict()
            self.report["predictions"] = {"val_correct": final.correct_bits()}
            if test_loader is not None:
                self.report["final"]["test_accuracy"] = evaluate(
                    converted, test_loader, self.precision, reporter=self.reporter).accuracy
            self.report["activation_stats"]["after"] = self._stats(converted, data)
            self.report["parameter_stats"]["final"] = parameter_stats(converted, conversion.sites)

        with self._timed("exporting"):
            self._export(converted, conversion, data, val_loader)
        result = self._finish("succeeded")
        result.model = converted
        return result

    def _save_original(self, baseline) -> None:
        """What every child of the compare reuses: the measurement (report.json) and the logits
        the at-init check compares against."""
        from safetensors.torch import save_file

        self.report["predictions"] = {"val_correct": baseline.correct_bits()}
        save_file({"val": baseline.logits.contiguous()}, str(self.out_dir / ORIGINAL_LOGITS))
        self.artifacts.append(ORIGINAL_LOGITS)

    def _reuse_original(self, data: DataBundle):
        """The original's measurement, read from its folder; it must be of these very images."""
        import json

        from safetensors.torch import load_file

        from .evaluation import EvalResult

        report = json.loads((self.original_dir / REPORT_FILE).read_text())
        logits = load_file(str(self.original_dir / ORIGINAL_LOGITS))["val"]
        measured = report["baseline"]
        if measured["samples"] != len(data.val) or logits.shape[0] != len(data.val):
            raise InputError(f"the original was measured on {measured['samples']} validation images, this job has "
                             f"{len(data.val)}: not the same data split", "dataset")
        self.report["baseline"] = {**measured, "reused": True}  # measured once, by the compare's original
        self.report["activation_stats"] = {"before": report["activation_stats"]["before"], "after": None}
        bits = report["predictions"]["val_correct"]
        correct = torch.tensor([b == "1" for b in bits])
        return EvalResult(measured["loss"], measured["accuracy"], measured["samples"], logits, correct,
                          measured.get("confusion"))

    def _load(self) -> tuple[DataBundle, torch.nn.Module]:
        cfg = self.cfg
        data = load_data(cfg.dataset, self.work_dir, self.files, self.allowed_data_roots, self.download)
        self.report["data"] = data.describe()
        if cfg.model.num_classes is not None and cfg.model.num_classes != data.num_classes:
            raise InputError(
                f"model.num_classes is {cfg.model.num_classes} but the dataset {cfg.dataset.uri} has "
                f"{data.num_classes} classes", "model.num_classes")
        num_classes = cfg.model.num_classes or data.num_classes
        # Random weights (model.weights "none") come from a fixed seed, not train.seed: the jobs of a
        # compare differ only in training, so they must start from the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(MODEL_INIT_SEED)
            model = build(cfg.model.arch, num_classes, cfg.model.weights, self.files.get("weights")).eval()
        example = data.val[0][0][None]
        with torch.no_grad():
            outputs = model(example).shape[-1]
        if outputs != data.num_classes:
            raise InputError(
                f"the model has {outputs} outputs but the dataset {cfg.dataset.uri} has {data.num_classes} "
                "classes; set model.num_classes (and weights with a head of that size)", "model.num_classes")
        self.num_classes = num_classes
        self.report["model"] = {"arch": cfg.model.arch, "num_classes": num_classes, "weights": cfg.model.weights,
                                "parameters": sum(p.numel() for p in model.parameters())}
        return data, self._prepare(model)

    def _convert(self, model, data: DataBundle):
        from converters.conversion import convert
        from converters.strategy import needs_calibration, parse_strategy

        cfg, opts = self.cfg, self.cfg.activation_options
        example = data.val[0][0][None].to(self.device)
        calibration = None
        if needs_calibration(parse_strategy(cfg.strategy)):
            calibration = [x for i, (x, _) in enumerate(loader(data.val, cfg.train.batch_size, self.device))
                           if i < CALIBRATION_BATCHES]
        conversion = convert(
            model, cfg.activation, cfg.strategy, example_inputs=example, init=opts.init,
            granularity=opts.granularity, fallback=opts.fallback, calibration=calibration,
            convrelu_impl=opts.convrelu_impl, **opts.options,
        )
        self.metrics["sites_total"] = len(conversion.sites)
        self.metrics["sites_replaced"] = len(conversion.replaced)
        self.report["sites"] = [s.to_dict() for s in conversion.sites]
        self.report["added_parameters"] = conversion.added_parameters()
        if cfg.activation == "convrelu":
            self.report["convrelu_impl"] = self._convrelu_impl(opts.convrelu_impl)
        self.conversion = conversion
        if not conversion.replaced:
            reasons = sorted({s.skip_reason for s in conversion.sites if s.selected and s.skip_reason})
            raise InputError(
                f"strategy {cfg.strategy!r} replaced none of the {len(conversion.sites)} ReLU sites with "
                f"{cfg.activation}" + (f" ({'; '.join(reasons)})" if reasons else ""), "strategy")
        return conversion

    def _convrelu_impl(self, setting: str) -> dict:
        """Which ConvReLU form training runs: "auto" and "fused" depend on the device and dtype."""
        from converters.activations.convrelu import fused_unavailable, resolve_impl

        with self.precision.autocast():  # the kernels see the autocast dtype, as in training
            probe = torch.empty(1, 1, 1, 1, device=self.device)
            used, reason = resolve_impl(setting, probe), fused_unavailable(probe)
        if setting == "fused" and used != "fused":
            self.reporter.log(f"activation_options.convrelu_impl 'fused' runs as 'patches' here: {reason}", "warning")
        return {"setting": setting, "used": used}

    def _compare_at_init(self, baseline, at_init) -> dict:
        from converters.catalog import get_info

        info = get_info(self.cfg.activation)
        check = {"checked": info.function_preserving and self.cfg.activation_options.init == "identity",
                 **compare_predictions(baseline.logits, at_init.logits)}
        if not check["checked"]:
            why = "not function-preserving" if not info.function_preserving else "init is not identity"
            self.reporter.log(f"at-init check skipped: {self.cfg.activation} ({why}) changes the function")
        elif check["unexplained_mismatches"]:
            self.report["at_init"] = check
            raise ConversionCheckError(
                f"at identity init the converted model predicts differently from the original on "
                f"{check['unexplained_mismatches']} of {len(baseline.logits)} validation images (max |logit "
                f"difference| {check['max_abs_logit_diff']:.3g}): the conversion changed the function, which is a bug")
        return check

    def _export(self, converted, conversion, data: DataBundle, val_loader) -> None:
        cfg = self.cfg
        self.artifacts += save_conversion(
            self.out_dir, conversion, converted, arch=cfg.model.arch, num_classes=self.num_classes,
            example_input_shape=[1, 3, data.image_size, data.image_size],
            extra=conversion_context(cfg, data.classes, data.image_size, data.mean, data.std))
        # The saved artifacts must give back the model in memory.
        rebuilt, _ = load_conversion(self.out_dir, device=self.device)
        x, _ = next(iter(val_loader))
        converted.eval()
        with torch.no_grad(), self.precision.strict():
            x = x.to(self.device)
            ours, theirs = converted(self.precision.inputs(x)).float(), rebuilt(x).float()
            diff = float((theirs - ours).abs().max())
        self.report["reload_max_abs_diff"] = diff
        # On CUDA the rebuilt model (contiguous) and the trained one (maybe channels_last) may run
        # different convolution algorithms: allow float rounding relative to the output scale.
        tolerance = RELOAD_TOLERANCE if self.device.type == "cpu" else 1e-4 * max(1.0, float(ours.abs().max()))
        if diff > tolerance:
            raise ConversionCheckError(
                f"the model rebuilt from {CONVERSION_FILE} + {WEIGHTS_FILE} differs from the trained one "
                f"(max |difference| {diff:.3g} > {tolerance:.3g})")
        # model.onnx and model.pt2, verified against PyTorch on this validation batch before success.
        artifacts, exports = write_exports(converted, x, self.out_dir, cfg.export)
        self.artifacts += artifacts
        self.report["exports"] = exports
        if "onnx" in exports:
            self.metrics["onnx_max_abs_diff"] = exports["onnx"]["max_abs_diff"]

    def _training_record(self) -> dict:
        trainer = self.trainer
        return {"epochs_planned": trainer.epochs, "steps_planned": trainer.total_steps,
                "steps_per_epoch": trainer.steps_per_epoch, **trainer.history.to_dict()}

    def _finish(self, status: str, error: dict | None = None) -> JobResult:
        self.report["status"] = status
        self.report["error"] = error
        if self.trainer is not None and "training" not in self.report:
            self.report["training"] = self._training_record()
        write_json(self.out_dir / REPORT_FILE, self.report)
        artifacts = [*self.artifacts, REPORT_FILE]
        if not self.measure_only:  # the original of a compare is a measurement, not a result to look at
            artifacts += write_visual_report(self.report, self.out_dir, self._learned_parameters())
        if status == "succeeded":
            self.reporter.done()
        self.reporter.end(status)
        return JobResult(status, dict(self.metrics), self.out_dir, artifacts, error, self.report)

    def _learned_parameters(self) -> dict | None:
        """The replaced sites' parameters, for the report's shapes, histograms and threshold maps."""
        if self.converted is None or self.conversion is None:
            return None
        keys = {key for site in self.conversion.replaced for key in site.parameters}
        return {name: p.detach().float().cpu().numpy() for name, p in self.converted.named_parameters()
                if name in keys}


def peak_epoch(epochs: list[dict]) -> dict | None:
    """The epoch with the best validation accuracy (the first, on ties), as the papers report
    peak accuracy; with a test split, its test accuracy is the honest number."""
    if not epochs:
        return None
    best = max(epochs, key=lambda e: (e["val_accuracy"], -e["epoch"]))
    return {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"], "test_accuracy": best.get("test_accuracy")}


def run_job(
    config: dict | JobConfig,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    resume: bool = True,
    files: dict | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    allowed_data_roots=None,
    download: bool = True,
    progress_interval: float = 2.0,
    keep_checkpoints: bool = False,
    measure_only: bool = False,
    tracking_uri: str | None = None,
) -> JobResult:
    """Run one fine-tuning job; write its artifacts to out_dir.

    files: {"weights": path, "dataset": path} for config values "upload". checkpoint_dir (default
    out_dir/checkpoints) must survive a crash for the next attempt to resume; work_dir (default
    out_dir/work) receives extracted archives and is removed at the end. allowed_data_roots confines
    imagefolder:/archive: paths (the service sets it). The checkpoint is deleted after success unless
    keep_checkpoints. tracking_uri: where a job with tracking.mlflow logs (worker/tracking.py).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        cfg = parse_config(config)
    except ConfigError as err:
        error = {"code": "invalid_config", "message": str(err), "param": None}
        write_json(out_dir / REPORT_FILE, {"format": FORMAT, "status": "failed", "error": error, "config": config})
        return JobResult("failed", {}, out_dir, [REPORT_FILE], error, {"status": "failed", "error": error})
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir / "checkpoints"
    work_dir = Path(work_dir) if work_dir is not None else out_dir / "work"
    tracking = open_tracking(cfg, out_dir, progress, tracking_uri)
    reporter = Reporter(tracking or progress, should_cancel, progress_interval)
    job = _Job(cfg, out_dir, reporter, dict(files or {}), checkpoint_dir, work_dir, device, allowed_data_roots,
               download, measure_only)
    if tracking is not None:
        job.report["tracking"] = tracking.describe()
    try:
        result = job.run(resume)
        if not keep_checkpoints:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return result
    except JobCancelled as err:
        reporter.log(str(err))
        return job._finish("cancelled")
    except JobError as err:
        return job._finish("failed", err.to_dict())
    except (ValueError, FileNotFoundError) as err:  # bad input surfacing from the libraries
        return job._finish("failed", {"code": "invalid_input", "message": str(err), "param": None})
    finally:
        reporter.end("crashed")  # once: a no-op after _finish
        shutil.rmtree(work_dir, ignore_errors=True)
