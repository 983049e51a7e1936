"""`reluswap compare` as a user runs it: two worker processes, the leaderboard table, and files whose
numbers recompute from the children's report.json."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

pytestmark = pytest.mark.slow


def test_compare_runs_children_and_writes_an_honest_leaderboard(reluswap_cli, tmp_path):
    out = tmp_path / "cmp"
    config = tmp_path / "compare.json"  # flags override it; exports have tests of their own (CI time)
    config.write_text(json.dumps({"export": {"onnx": False, "pt2": False}, "train": {"stats_batches": 1}}))
    done = reluswap_cli("compare", "--config", str(config), "--model", "torchvision:resnet18", "--data", "builtin:digits", "--image-size", "16",
                        "--activations", "pvlu", "--strategies", "all", "--seeds", "2", "--max-steps", "3",
                        "--batch-size", "32", "--jobs", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "leaderboard" in done.stdout and "pvlu | all" in done.stdout and "winner:" in done.stdout
    assert "[5/5]" in done.stderr  # the original, then 2 arms x 2 seeds, each reported as it ends

    board = json.loads((out / "leaderboard.json").read_text())
    original = json.loads((out / "children" / "original" / "report.json").read_text())
    assert board["original"]["accuracy"] == original["baseline"]["accuracy"]
    for arm in board["arms"]:
        slug = arm["name"].replace(" | ", "_")
        accs = [json.loads((out / "children" / f"{slug}-seed{i}" / "report.json").read_text())
                ["metrics"]["final_accuracy"] for i in (0, 1)]
        assert arm["final_accuracy"]["mean"] == pytest.approx(np.mean(accs), abs=1e-12)
        assert arm["final_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
        half = stats.t.ppf(0.975, 1) * np.std(accs, ddof=1) / np.sqrt(2)
        assert arm["final_accuracy"]["ci"] == pytest.approx([np.mean(accs) - half, np.mean(accs) + half], abs=1e-12)
    # Every child holds out the same test images and trains from the same starting network.
    seeds = [json.loads((out / "children" / f"pvlu_all-seed{i}" / "report.json").read_text()) for i in (0, 1)]
    assert seeds[0]["data"]["test_size"] == seeds[1]["data"]["test_size"] == original["data"]["test_size"] > 0
    assert seeds[0]["baseline"]["reused"] and seeds[0]["baseline"]["accuracy"] == original["baseline"]["accuracy"]
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 4  # one per arm x seed
    assert (out / "leaderboard.png").stat().st_size > 0
    assert (out / "weights.safetensors").is_file() and (out / "conversion.json").is_file()  # the winner's
