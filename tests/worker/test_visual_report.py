"""The visual report (worker/visual) on real report.json files of tiny digits jobs."""

from __future__ import annotations

import base64
import copy
import csv
import io
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from converters.catalog import get_info
from worker.pipeline import run_job
from worker.visual import (
    activation_shapes,
    activation_stats,
    confusion,
    convrelu_thresholds,
    metrics_csv,
    parameter_histograms,
    write_visual_report,
)

XSS = "<script>alert(1)</script>"
CLASSES = 10
STEPS = 5


def _job(tmp_path_factory, activation: str, strategy: str, name: str):
    """A tiny job: random resnet18, 16 px digits, STEPS training steps, CPU."""
    config = {
        "model": {"arch": "torchvision:resnet18"},
        "dataset": {"uri": "builtin:digits", "image_size": 16, "val_split": 0.2},
        "activation": activation,
        "strategy": strategy,
        "train": {"epochs": 1, "max_steps": STEPS, "batch_size": 32, "stats_batches": 2, "seed": 0},
        "export": {"onnx": False, "pt2": False},
        "metadata": {"note": XSS},
    }
    result = run_job(config, tmp_path_factory.mktemp(name), device="cpu")
    assert result.status == "succeeded", result.error
    # The job itself wrote its visual report next to report.json.
    assert {"report.html", "metrics.csv", "training_curves.png", "confusion.png"} <= set(result.artifacts)
    report = copy.deepcopy(result.report)
    for when in ("baseline", "final"):  # the confusion matrices recompute the measured accuracies
        matrix = np.array(report[when]["confusion"])
        assert matrix.shape == (CLASSES, CLASSES) and matrix.sum() == report[when]["samples"]
        assert np.trace(matrix) == round(report[when]["accuracy"] * report[when]["samples"])
    keys = {k for s in report["sites"] for k in s["parameters"]}
    params = {k: v.detach().cpu().numpy() for k, v in result.model.named_parameters() if k in keys}
    assert params.keys() == keys
    out = tmp_path_factory.mktemp(name + "-visual")
    names = write_visual_report(report, out, params)
    return {"report": report, "params": params, "model": result.model, "out": out, "names": names}


@pytest.fixture(scope="module")
def pvlu_job(tmp_path_factory):
    return _job(tmp_path_factory, "pvlu", "all", "pvlu")


@pytest.fixture(scope="module")
def convrelu_job(tmp_path_factory):
    return _job(tmp_path_factory, "convrelu", "block:first", "convrelu")


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_writes_every_artifact(pvlu_job, convrelu_job):
    common = ["training_curves.png", "activation_stats.png", "parameter_histograms.png", "confusion.png",
              "metrics.csv", "report.html"]
    assert sorted(pvlu_job["names"]) == sorted([*common, "activation_shapes.png"])
    # ConvReLU has no elementwise curve, but a threshold map.
    assert sorted(convrelu_job["names"]) == sorted([*common, "convrelu_thresholds.png"])
    for job in (pvlu_job, convrelu_job):
        assert sorted(p.name for p in job["out"].iterdir()) == sorted(job["names"])


def test_every_png_decodes_and_is_not_blank(pvlu_job, convrelu_job):
    for job in (pvlu_job, convrelu_job):
        for name in job["names"]:
            if name.endswith(".png"):
                pixels = _pixels((job["out"] / name).read_bytes())
                assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
                assert pixels.std() > 0, name


def test_no_pyplot_figures_left_open(pvlu_job):
    if "matplotlib.pyplot" in sys.modules:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()


def test_sparsity_bars_are_the_report_values_in_execution_order(pvlu_job):
    report = pvlu_job["report"]
    figure = activation_stats(report)
    before = sorted(report["activation_stats"]["before"], key=lambda s: s["index"])
    after = {s["name"]: s for s in report["activation_stats"]["after"]}
    assert figure.data["sites"] == [s["name"] for s in before]
    assert [s["index"] for s in before] == list(range(len(before)))
    for key in ("lifetime_sparsity", "dispersion", "dead_fraction"):
        assert figure.data[key]["before"] == [s[key] for s in before]
        assert figure.data[key]["after"] == [after[s["name"]][key] for s in before]
    assert all(figure.data["replaced"])  # strategy all


def test_metrics_csv_has_a_row_per_step_and_per_epoch(pvlu_job):
    training = pvlu_job["report"]["training"]
    text = (pvlu_job["out"] / "metrics.csv").read_text()
    assert text == metrics_csv(pvlu_job["report"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["kind", "epoch", "step", "loss", "lr", "val_accuracy", "images_per_s"]
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(training["steps"]) == STEPS and len(training["epochs"]) == 1
    assert len(rows) == len(training["steps"]) + len(training["epochs"])
    assert [float(r["loss"]) for r in steps] == [s["loss"] for s in training["steps"]]
    assert [int(r["step"]) for r in steps] == [s["step"] for s in training["steps"]]
    assert [float(r["lr"]) for r in steps] == [s["lr"] for s in training["steps"]]
    assert all(r["val_accuracy"] == "" and r["images_per_s"] == "" for r in steps)
    assert [float(r["loss"]) for r in epochs] == [e["train_loss"] for e in training["epochs"]]
    assert [float(r["val_accuracy"]) for r in epochs] == [e["val_accuracy"] for e in training["epochs"]]
    assert [float(r["images_per_s"]) for r in epochs] == [e["images_per_s"] for e in training["epochs"]]
    assert [r["kind"] for r in rows] == ["step"] * STEPS + ["epoch"]


def test_metrics_rows_put_each_epoch_after_its_steps():
    report = {"training": {
        "epochs": [{"epoch": 1, "steps": 2, "train_loss": 1.5, "lr": 0.1, "val_accuracy": 0.5, "images_per_s": 9.0},
                   {"epoch": 2, "steps": 1, "train_loss": 0.5, "lr": 0.0, "val_accuracy": None, "images_per_s": 8.0}],
        "steps": [{"step": 1, "epoch": 1, "loss": 2.0, "lr": 0.1}, {"step": 2, "epoch": 1, "loss": 1.0, "lr": 0.1},
                  {"step": 3, "epoch": 2, "loss": 0.5, "lr": 0.05}]}}
    assert metrics_csv(report).splitlines() == [
        "kind,epoch,step,loss,lr,val_accuracy,images_per_s",
        "step,1,1,2.0,0.1,,",
        "step,1,2,1.0,0.1,,",
        "epoch,1,2,1.5,0.1,0.5,9.0",
        "step,2,3,0.5,0.05,,",
        "epoch,2,3,0.5,0.0,,8.0",
    ]


def test_training_curves_plot_the_report(pvlu_job):
    from worker.visual import training_curves

    training = pvlu_job["report"]["training"]
    data = training_curves(pvlu_job["report"]).data
    assert data["step_loss"] == [s["loss"] for s in training["steps"]]
    assert data["epoch_val_accuracy"] == [e["val_accuracy"] for e in training["epochs"]]
    assert data["epoch_end_step"] == [STEPS]


def _identity_params(report: dict, params: dict) -> dict:
    init = get_info(report["config"]["activation"]).init_values("identity")
    return {k: np.full(v.shape, init[k.rsplit(".", 1)[-1]], dtype=np.float32) for k, v in params.items()}


def test_shape_at_identity_init_is_relu(pvlu_job):
    figure = activation_shapes(pvlu_job["report"], _identity_params(pvlu_job["report"], pvlu_job["params"]))
    assert len(figure.data) == 4
    for entry in figure.data.values():
        np.testing.assert_array_equal(entry["relu"], np.maximum(entry["x"], 0).astype(np.float32))
        assert np.abs(entry["mean"] - entry["relu"]).max() <= 1e-6
        assert entry["channels"]
        for curve in entry["channels"].values():
            assert np.abs(curve - entry["relu"]).max() <= 1e-6


def test_shape_at_trained_params_is_the_module_output(pvlu_job):
    figure = activation_shapes(pvlu_job["report"], pvlu_job["params"])
    moved = 0.0
    for name, entry in figure.data.items():
        assert entry["source"] == "learned"
        module = pvlu_job["model"].get_submodule(name)
        channels = module.alpha.numel()
        with torch.no_grad():
            x = torch.as_tensor(entry["x"], dtype=torch.float32)[:, None].expand(-1, channels)
            expected = module(x).double().numpy()
        for c, curve in entry["channels"].items():
            np.testing.assert_allclose(curve, expected[:, c], rtol=0, atol=1e-6)
        np.testing.assert_allclose(entry["mean"], expected.mean(axis=1), rtol=0, atol=1e-6)
        moved = max(moved, float(np.abs(expected - entry["relu"][:, None]).max()))
    assert moved > 0  # training changed the shapes, so the check above is not ReLU against ReLU


def test_shapes_fall_back_to_the_report_means(pvlu_job):
    figure = activation_shapes(pvlu_job["report"], None)
    stats = pvlu_job["report"]["parameter_stats"]["final"]
    for name, entry in figure.data.items():
        assert entry["source"] == "parameter means"
        alpha = entry["parameters"]["alpha"]
        assert np.all(alpha == stats[name][f"{name}.alpha"]["mean"])


def test_parameter_histograms_hold_every_learned_value(pvlu_job):
    figure = parameter_histograms(pvlu_job["report"], pvlu_job["params"])
    assert set(figure.data) == {"alpha", "beta"}
    alphas = [v for k, v in pvlu_job["params"].items() if k.endswith(".alpha")]
    np.testing.assert_array_equal(figure.data["alpha"]["values"], np.concatenate(alphas).astype(np.float64))
    assert figure.data["alpha"]["init"] == 0.0 and figure.data["beta"]["init"] == 1.0
    assert parameter_histograms(pvlu_job["report"], None) is None


def test_convrelu_threshold_maps(convrelu_job, pvlu_job):
    figure = convrelu_thresholds(convrelu_job["report"], convrelu_job["params"])
    assert 1 <= len(figure.data) <= 4
    for key, entry in figure.data.items():
        theta = convrelu_job["params"][key]
        assert theta.ndim == 3 and entry["matrix"].shape == (theta.shape[0], theta.shape[1] * theta.shape[2])
        np.testing.assert_array_equal(entry["matrix"], theta.reshape(theta.shape[0], -1))
    assert convrelu_thresholds(pvlu_job["report"], pvlu_job["params"]) is None


def test_confusion_plots_the_fields_and_is_skipped_without_them(pvlu_job):
    report = pvlu_job["report"]
    figure = confusion(report)
    np.testing.assert_array_equal(figure.data["baseline"], report["baseline"]["confusion"])
    np.testing.assert_array_equal(figure.data["final"], report["final"]["confusion"])
    bare = copy.deepcopy(report)
    del bare["baseline"]["confusion"], bare["final"]["confusion"]
    assert confusion(bare) is None


def test_html_is_self_contained(pvlu_job, convrelu_job):
    for job in (pvlu_job, convrelu_job):
        html = (job["out"] / "report.html").read_text()
        for name in job["names"]:
            if name.endswith(".png"):
                encoded = base64.b64encode((job["out"] / name).read_bytes()).decode()
                assert f'src="data:image/png;base64,{encoded}"' in html, name
        sources = re.findall(r'src="([^"]*)"', html)
        assert len(sources) == sum(n.endswith(".png") for n in job["names"])
        assert all(s.startswith("data:image/png;base64,") for s in sources)
        assert not re.search(r"https?://", html)
        assert "<script" not in html.lower()
        for text in ("Summary", "Training curves", "Activation statistics", "Confusion matrices",
                     "torchvision:resnet18", "builtin:digits", job["report"]["config"]["strategy"]):
            assert text in html
    assert "ConvReLU thresholds" in (convrelu_job["out"] / "report.html").read_text()
    assert "ConvReLU thresholds" not in (pvlu_job["out"] / "report.html").read_text()


def test_report_strings_are_escaped(pvlu_job, tmp_path):
    report = copy.deepcopy(pvlu_job["report"])
    report["model"]["arch"] = XSS
    report["error"] = {"code": "x", "message": XSS, "param": None}
    write_visual_report(report, tmp_path)
    for html in (tmp_path / "report.html").read_text(), (pvlu_job["out"] / "report.html").read_text():
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # metadata in both, arch/error in one
        assert XSS not in html


def test_a_failed_job_renders(tmp_path):
    result = run_job({"model": {"arch": "torchvision:resnet18"}, "dataset": {"uri": "builtin:digits"},
                      "activation": "no-such-activation"}, tmp_path / "job")
    assert result.status == "failed" and "training" not in result.report
    report = {**result.report, "config": {"activation": "no-such-activation", "model": {"arch": XSS}}}
    names = write_visual_report(report, tmp_path / "visual")
    assert names == ["metrics.csv", "report.html"]
    html = (tmp_path / "visual" / "report.html").read_text()
    assert "failed" in html and "invalid_config" in html and "Not in this report" in html
    assert XSS not in html
    assert (tmp_path / "visual" / "metrics.csv").read_text().splitlines() == [
        "kind,epoch,step,loss,lr,val_accuracy,images_per_s"]


def test_a_job_failed_during_training_renders_what_exists(pvlu_job, tmp_path):
    report = copy.deepcopy(pvlu_job["report"])
    report["status"] = "failed"
    report["error"] = {"code": "training_diverged", "message": "loss is NaN", "param": None}
    for key in ("training", "final"):
        del report[key]
    report["activation_stats"]["after"] = None
    report["parameter_stats"]["final"] = None
    report["baseline"]["confusion"] = None
    names = write_visual_report(report, tmp_path, pvlu_job["params"])
    assert "training_curves.png" not in names and "confusion.png" not in names
    assert {"activation_stats.png", "activation_shapes.png", "report.html"} <= set(names)
    assert activation_stats(report).data["lifetime_sparsity"]["after"] is None
    html = (tmp_path / "report.html").read_text()
    assert "loss is NaN" in html and "Could not be drawn" not in html


def test_sizes_grow_with_the_number_of_sites(pvlu_job):
    report = pvlu_job["report"]
    site = report["activation_stats"]["before"][0]
    many = {"activation_stats": {"before": [{**site, "index": i, "name": f"site{i}"} for i in range(60)],
                                 "after": None}}
    small, large = activation_stats(report), activation_stats(many)
    assert _pixels(large.png).shape[0] > 2 * _pixels(small.png).shape[0]
    assert len(large.data["sites"]) == 60
