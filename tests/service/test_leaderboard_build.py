"""service.leaderboard: build_leaderboard's numbers and verdicts on constructed data, and the writers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from service.leaderboard import (
    CSV_COLUMNS,
    Arm,
    ControlFailed,
    Original,
    SeedResult,
    build_leaderboard,
    write_leaderboard,
)
from service.leaderboard.statistics import holm

N_IMAGES = 400
SEEDS = (0, 1, 2)


def control_vector(seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).random(N_IMAGES) < 0.7


def shifted(ctrl: np.ndarray, gain: int, loss: int) -> np.ndarray:
    """The control's vector with `gain` wrong images made right and `loss` right images made wrong."""
    arm = ctrl.copy()
    arm[np.flatnonzero(~ctrl)[:gain]] = True
    arm[np.flatnonzero(ctrl)[:loss]] = False
    return arm


def run(seed: int, correct: np.ndarray, status: str = "succeeded") -> SeedResult:
    if status != "succeeded":
        return SeedResult(seed, status, child_id=f"c{seed}", error={"type": "Boom", "message": "x"})
    acc = float(np.mean(correct))
    return SeedResult(seed, status, child_id=f"c{seed}", final_accuracy=acc, test_accuracy=acc - 0.01 * seed,
                      peak_epoch=3 + seed, peak_val_accuracy=acc + 0.005, peak_test_accuracy=acc - 0.002 * seed,
                      correct=correct.tolist())


def arm(name: str, gain: int = 0, loss: int = 0, control: bool = False, statuses=None) -> Arm:
    """An arm whose seed s gains `gain + s` images over the control (none when gain is 0), loses `loss`."""
    statuses = statuses or {}
    seeds = tuple(run(s, shifted(control_vector(s), gain + s if gain else 0, loss), statuses.get(s, "succeeded"))
                  for s in SEEDS)
    activation, _, strategy = name.partition(" | ")
    return Arm(name, {"activation": activation, "strategy": strategy or "all", "trainable": ["bn", "act"],
                      "init": "relu"}, control, seeds)


ORIGINAL = Original(accuracy=0.66, test_accuracy=0.65, correct=[True] * N_IMAGES)


def control(**kw) -> Arm:
    return arm("relu", control=True, **kw)


def by_name(board: dict) -> dict[str, dict]:
    return {a["name"]: a for a in board["arms"]}


@pytest.fixture(scope="module")
def board() -> dict:
    arms = [control(), arm("pvlu | all", gain=40, loss=5), arm("frelu | all"),
            arm("prelu | last", loss=40), arm("dual | all", statuses={1: "failed"}, gain=3),
            arm("convrelu | all", statuses=dict.fromkeys(SEEDS, "failed"))]
    return build_leaderboard(arms, ORIGINAL)


def test_importing_the_package_does_not_import_torch():
    code = "import service.leaderboard, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_clear_gain_is_better_with_scipys_mcnemar_p(board):
    a = by_name(board)["pvlu | all"]
    b = sum(40 + s for s in SEEDS)  # every control-wrong image flipped is an arm win
    assert (a["mcnemar"]["b"], a["mcnemar"]["c"]) == (b, 15)
    assert [(s["mcnemar_b"], s["mcnemar_c"]) for s in a["seeds"]] == [(40, 5), (41, 5), (42, 5)]
    assert a["mcnemar"]["p"] == stats.binomtest(b, b + 15, 0.5).pvalue
    assert a["mcnemar"]["seeds"] == list(SEEDS)
    assert a["verdict"] == "better"
    assert board["winner"] == {"arm": "pvlu | all", "control": False, "mean_final_accuracy":
                               a["final_accuracy"]["mean"], "reason": board["winner"]["reason"]}


def test_identical_arm_is_no_difference_with_p_one(board):
    a = by_name(board)["frelu | all"]
    assert (a["mcnemar"]["b"], a["mcnemar"]["c"], a["mcnemar"]["p"]) == (0, 0, 1.0)
    assert a["mcnemar"]["p_holm"] == 1.0
    assert a["vs_control"]["p"] == 1.0 and a["vs_control"]["mean"] == 0.0
    assert a["verdict"] == "no_difference"


def test_clear_loss_is_worse(board):
    a = by_name(board)["prelu | last"]
    assert (a["mcnemar"]["b"], a["mcnemar"]["c"]) == (0, 120)
    assert a["verdict"] == "worse"


def test_holm_runs_over_the_tested_non_control_arms(board):
    tested = [a for a in board["arms"] if a["mcnemar"] is not None]
    assert {a["name"] for a in tested} == {"pvlu | all", "frelu | all", "prelu | last", "dual | all"}
    assert [a["mcnemar"]["p_holm"] for a in tested] == holm([a["mcnemar"]["p"] for a in tested])
    assert by_name(board)["relu"]["mcnemar"] is None


def test_summaries_recomputed_from_raw_values(board):
    a = by_name(board)["pvlu | all"]
    acc = np.array([np.mean(shifted(control_vector(s), 40 + s, 5)) for s in SEEDS])
    fin = a["final_accuracy"]
    assert fin["n"] == 3 and fin["mean"] == float(np.mean(acc)) and fin["std"] == float(np.std(acc, ddof=1))
    assert fin["ci"] == list(map(float, stats.t.interval(0.95, 2, loc=np.mean(acc), scale=stats.sem(acc))))
    rel = ((1 - 0.66) - (1 - acc)) / (1 - 0.66)
    assert a["relative_error_decrease"]["mean"] == pytest.approx(float(np.mean(rel)), rel=1e-12)
    assert [s["relative_error_decrease"] for s in a["seeds"]] == pytest.approx(rel.tolist(), rel=1e-12)
    test_acc = acc - 0.01 * np.arange(3)
    assert a["test_accuracy"]["mean"] == pytest.approx(float(np.mean(test_acc)), rel=1e-12)
    assert a["test_accuracy"]["std"] == pytest.approx(float(np.std(test_acc, ddof=1)), rel=1e-12)
    assert a["peak_test_accuracy"]["n"] == 3


def test_paired_t_test_equals_scipy(board):
    a, c = by_name(board)["pvlu | all"], by_name(board)["relu"]
    arm_acc = [s["final_accuracy"] for s in a["seeds"]]
    ctrl_acc = [s["final_accuracy"] for s in c["seeds"]]
    ref = stats.ttest_rel(arm_acc, ctrl_acc)
    vs = a["vs_control"]
    assert vs["seeds"] == list(SEEDS)
    assert vs["t"] == float(ref.statistic) and vs["p"] == float(ref.pvalue)
    assert [s["diff_to_control"] for s in a["seeds"]] == vs["differences"]
    assert vs["differences"] == (np.array(arm_acc) - np.array(ctrl_acc)).tolist()


def test_failed_seed_is_listed_but_excluded(board):
    a = by_name(board)["dual | all"]
    assert [s["status"] for s in a["seeds"]] == ["succeeded", "failed", "succeeded"]
    assert a["n_seeds"] == 3 and a["n_succeeded"] == 2 and a["final_accuracy"]["n"] == 2
    failed = a["seeds"][1]
    assert failed["final_accuracy"] is None and failed["diff_to_control"] is None
    assert failed["mcnemar_b"] is None and failed["error"] == {"type": "Boom", "message": "x"}
    assert a["vs_control"]["seeds"] == [0, 2] and a["mcnemar"]["seeds"] == [0, 2]
    assert (a["mcnemar"]["b"], a["mcnemar"]["c"]) == (3 + 5, 0)
    ok = [s["final_accuracy"] for s in a["seeds"] if s["status"] == "succeeded"]
    assert a["final_accuracy"]["mean"] == float(np.mean(ok))


def test_all_failed_arm_is_failed_and_last(board):
    a = by_name(board)["convrelu | all"]
    assert a["verdict"] == "failed" and a["final_accuracy"]["mean"] is None
    assert board["arms"][-1] is a and a["rank"] == len(board["arms"])
    assert a["mcnemar"] is None and a["vs_control"] is None


def test_ranking_by_mean_with_controls_marked(board):
    means = [a["final_accuracy"]["mean"] for a in board["arms"][:-1]]
    assert means == sorted(means, reverse=True)
    assert [a["rank"] for a in board["arms"]] == list(range(1, 7))
    assert board["arms"][0]["name"] == "pvlu | all"
    kinds = {r["arm"]: r["kind"] for r in board["ranking"]}
    assert kinds["relu"] == "relu_control" and kinds["original"] == "original" and kinds["frelu | all"] == "arm"
    assert by_name(board)["relu"]["control"] and by_name(board)["relu"]["verdict"] == "control"
    # The original (0.66) sits above the first arm it beats.
    names = [r["arm"] for r in board["ranking"]]
    orig_at = names.index("original")
    assert all(r["mean_final_accuracy"] >= 0.66 for r in board["ranking"][:orig_at])
    assert board["ranking"][orig_at + 1]["mean_final_accuracy"] in (None, *[m for m in means if m < 0.66])


def test_top_level_keys_and_strict_json(board):
    assert set(board) == {"format", "alpha", "confidence", "original", "control", "arms", "ranking",
                          "winner", "methods"}
    assert board["original"] == {"accuracy": 0.66, "test_accuracy": 0.65, "n_images": N_IMAGES}
    assert board["control"] == "relu" and board["alpha"] == 0.05
    text = json.dumps(board, allow_nan=False)
    assert "correct" not in json.loads(text)["arms"][0]["seeds"][0]


def test_winner_is_the_control_when_nothing_is_better():
    board = build_leaderboard([arm("pvlu | all", gain=1, loss=1), control(), arm("frelu | all", loss=60)],
                              ORIGINAL, alpha=0.01)
    assert by_name(board)["pvlu | all"]["verdict"] == "no_difference"
    assert board["winner"]["arm"] == "relu" and board["winner"]["control"] is True
    assert board["winner"]["reason"] == "no arm is better than the ReLU control at alpha=0.01"


def test_control_without_a_succeeded_seed_raises():
    failed = control(statuses={0: "failed", 1: "cancelled", 2: "failed"})
    with pytest.raises(ControlFailed, match="relu.*no succeeded seed"):
        build_leaderboard([failed, arm("pvlu | all", gain=40)], ORIGINAL)


def test_mismatched_correct_length_names_the_arm_and_seed():
    bad = arm("pvlu | all", gain=40)
    short = SeedResult(1, "succeeded", final_accuracy=0.7, correct=[True] * (N_IMAGES - 1))
    bad = Arm(bad.name, bad.config, False, (bad.seeds[0], short, bad.seeds[2]))
    with pytest.raises(ValueError, match=r"'pvlu \| all' seed 1.*control"):
        build_leaderboard([control(), bad], Original(accuracy=0.66, test_accuracy=None, correct=None))
    with pytest.raises(ValueError, match=r"'pvlu \| all' seed 1.*original"):
        build_leaderboard([control(), bad], ORIGINAL)


def test_malformed_input_raises():
    with pytest.raises(ValueError, match="exactly one"):
        build_leaderboard([arm("pvlu | all")], ORIGINAL)
    with pytest.raises(ValueError, match="unique"):
        build_leaderboard([control(), arm("a"), arm("a")], ORIGINAL)
    nan_seed = Arm("x", {}, False, (SeedResult(0, "succeeded", final_accuracy=float("nan")),))
    with pytest.raises(ValueError, match="finite final accuracy"):
        build_leaderboard([control(), nan_seed], ORIGINAL)


def test_degenerate_inputs_stay_strict_json():
    # One seed, no per-image vectors, a perfect original: std/CI/p/relative decrease are None, not NaN.
    one = (SeedResult(0, "succeeded", final_accuracy=0.9),)
    board = build_leaderboard([Arm("relu", {}, True, one), Arm("x", {}, False, one)],
                              Original(accuracy=1.0, test_accuracy=None, correct=None))
    x = by_name(board)["x"]
    assert x["final_accuracy"]["std"] is None and x["final_accuracy"]["ci"] is None
    assert x["relative_error_decrease"] is None and x["vs_control"]["p"] is None
    assert x["mcnemar"] is None and x["verdict"] == "no_difference"
    json.dumps(board, allow_nan=False)


# ---- writers ----------------------------------------------------------------------------------


def _strict(s):
    raise ValueError(f"non-strict JSON constant {s}")


def test_writers_json_csv_png(board, tmp_path):
    from matplotlib import _pylab_helpers, image

    names = write_leaderboard(board, tmp_path)
    assert names == ["leaderboard.json", "leaderboard.csv", "leaderboard.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files left

    assert json.loads((tmp_path / "leaderboard.json").read_text(), parse_constant=_strict) == board

    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = [(a, s) for a in board["arms"] for s in a["seeds"]]
    assert len(rows) == len(expected) == 6 * 3
    for row, (a, s) in zip(rows, expected, strict=True):
        assert (row["arm"], row["seed"], row["status"], row["verdict"]) == (
            a["name"], str(s["seed"]), s["status"], a["verdict"])
        assert row["activation"] == a["config"]["activation"] and row["trainable"] == '["bn", "act"]'
        for key in ("final_accuracy", "test_accuracy", "peak_val_accuracy", "peak_test_accuracy",
                    "relative_error_decrease", "diff_to_control"):
            assert (float(row[key]) if row[key] else None) == s[key]
        for key in ("peak_epoch", "mcnemar_b", "mcnemar_c"):
            assert (int(row[key]) if row[key] else None) == s[key]

    png = image.imread(tmp_path / "leaderboard.png")
    assert png.ndim == 3 and png.shape[0] > 100 and float(png[..., :3].std()) > 0
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0


def test_png_with_twenty_arms_grows_with_the_arms(tmp_path):
    from matplotlib import image

    arms = [control()] + [arm(f"act{i} | all", gain=i * 3) for i in range(19)]
    board = build_leaderboard(arms, ORIGINAL)
    write_leaderboard(board, tmp_path)
    png = image.imread(tmp_path / "leaderboard.png")
    assert png.shape[0] >= 800 and float(png[..., :3].std()) > 0
