"""The leaderboard of a compare job, built from the results of its arms.

A compare job trains a grid of arms over several seeds next to two controls: the original (unconverted)
model, measured once, and the ReLU control arm (same training, only BatchNorm re-fit). Each arm is
judged against the ReLU control with the exact McNemar test on the validation images, stratified by
seed (b and c summed over the seeds both ran), Holm-corrected over the non-control arms.

build_leaderboard() returns a plain dict, ready for strict JSON (no NaN, no infinity, no per-image
vectors: only their lengths and the McNemar counts they produce):

    format, alpha, confidence
    original    {accuracy, test_accuracy, n_images}
    control     the ReLU control arm's name
    arms        ranked; each {name, control, config, rank, n_seeds, n_succeeded,
                seeds: [{seed, status, child_id, final_accuracy, test_accuracy, peak_epoch,
                         peak_val_accuracy, peak_test_accuracy, relative_error_decrease,
                         diff_to_control, n_images, mcnemar_b, mcnemar_c, error}],
                final_accuracy, relative_error_decrease, test_accuracy, peak_test_accuracy
                    (each {n, mean, std, ci} over succeeded seeds; relative_error_decrease is None
                     when the original makes no error),
                vs_control {seeds, differences, n, mean, std, ci, t, p} (None for the control and
                    failed arms),
                mcnemar {seeds, b, c, p, p_holm} (None without paired per-image results),
                verdict: better | worse | no_difference | failed | control}
    ranking     [{rank, arm, kind: arm | relu_control | original, mean_final_accuracy, ci, verdict}]
    winner      {arm, control, mean_final_accuracy, reason}
    methods     one line per statistic, for readers of the JSON
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.contract import ENDED_STATUSES
from service.leaderboard import statistics as st

FORMAT = 1
VERDICTS = ("better", "worse", "no_difference", "failed", "control")


class ControlFailed(RuntimeError):
    """The ReLU control has no succeeded seed, so no arm can be judged: the compare job fails."""


@dataclass(frozen=True)
class SeedResult:
    """One training run (a child job) of an arm."""

    seed: int
    status: str  # "succeeded" | "failed" | "cancelled"
    child_id: str | None = None
    final_accuracy: float | None = None  # final model, validation split
    test_accuracy: float | None = None  # final model, held-out test split
    peak_epoch: int | None = None  # epoch with the best validation accuracy
    peak_val_accuracy: float | None = None
    peak_test_accuracy: float | None = None  # test accuracy of the model at peak_epoch
    # Per validation image, in the same order for every child: is the final model right?
    correct: Sequence[bool] | None = field(default=None, repr=False, compare=False)
    error: dict | None = None


@dataclass(frozen=True)
class Arm:
    """One cell of the grid (or the ReLU control, control=True) with its runs, one per seed."""

    name: str  # readable unique key, e.g. "pvlu | all"
    config: dict  # {"activation", "strategy", "trainable", "init", ...}
    control: bool
    seeds: tuple[SeedResult, ...]


@dataclass(frozen=True)
class Original:
    """The unconverted model, measured once."""

    accuracy: float  # validation
    test_accuracy: float | None = None
    correct: Sequence[bool] | None = field(default=None, repr=False, compare=False)


def build_leaderboard(arms: Sequence[Arm], original: Original, alpha: float = 0.05) -> dict:
    """The leaderboard dict: every arm with its per-seed results, statistics and verdict, ranked by
    mean final (validation) accuracy with failed arms last, plus the original, alpha and the winner.

    Raises ValueError for malformed input (no or several control arms, duplicate names or seeds, an
    unknown status, a succeeded seed without a final accuracy, `correct` vectors of unequal lengths)
    and ControlFailed when the ReLU control has no succeeded seed.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    control = _validate(arms, original)
    ctrl_ok = _succeeded(control)
    if not ctrl_ok:
        raise ControlFailed(
            f"the ReLU control arm {control.name!r} has no succeeded seed "
            f"({len(control.seeds)} run, none succeeded): no arm can be judged against it"
        )
    entries = [_arm_entry(arm, control, ctrl_ok, original) for arm in arms]
    _judge(entries, alpha)
    entries = _rank(entries)
    return {
        "format": FORMAT,
        "alpha": alpha,
        "confidence": st.CONFIDENCE,
        "original": _original_entry(original),
        "control": control.name,
        "arms": entries,
        "ranking": _ranking(entries, original),
        "winner": _winner(entries, control.name, alpha),
        "methods": {
            "summary": "over succeeded seeds: mean, std (ddof=1), Student-t 95% CI of the mean",
            "relative_error_decrease": "(e_original - e_arm) / e_original with e = 1 - accuracy",
            "vs_control": "final accuracy minus the control's, paired by seed; paired t-test (ttest_rel)",
            "mcnemar": "exact two-sided McNemar test against the control on validation images, "
            "b and c summed over paired seeds",
            "correction": "Holm over the non-control arms with a McNemar p-value",
            "verdict": "better / worse when the Holm-adjusted p < alpha and b > c / b < c",
        },
    }


# ---- validation -------------------------------------------------------------------------------


def _validate(arms: Sequence[Arm], original: Original) -> Arm:
    """Check the input; return the control arm."""
    controls = [a for a in arms if a.control]
    if len(controls) != 1:
        raise ValueError(f"a compare job needs exactly one ReLU control arm, got {len(controls)}")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    if not _is_accuracy(original.accuracy):
        raise ValueError(f"the original's accuracy must be a finite number, got {original.accuracy!r}")
    for arm in arms:
        _validate_seeds(arm)
    return controls[0]


def _validate_seeds(arm: Arm) -> None:
    seeds = [s.seed for s in arm.seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"arm {arm.name!r}: duplicate seeds in {seeds}")
    for s in arm.seeds:
        if s.status not in ENDED_STATUSES:  # a seed is a child job that has ended
            raise ValueError(f"arm {arm.name!r} seed {s.seed}: unknown status {s.status!r}")
        if s.status == "succeeded" and not _is_accuracy(s.final_accuracy):
            raise ValueError(
                f"arm {arm.name!r} seed {s.seed}: succeeded without a finite final accuracy "
                f"({s.final_accuracy!r})"
            )


def _is_accuracy(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _succeeded(arm: Arm) -> dict[int, SeedResult]:
    return {s.seed: s for s in arm.seeds if s.status == "succeeded"}


# ---- one arm ----------------------------------------------------------------------------------


def _arm_entry(arm: Arm, control: Arm, ctrl_ok: dict[int, SeedResult], original: Original) -> dict:
    ok = _succeeded(arm)
    paired = sorted(seed for seed in ok if seed in ctrl_ok)
    pairs = _correct_pairs(arm, ok, ctrl_ok, paired, original)
    mcnemar = st.mcnemar_stratified(list(pairs.values())) if pairs else None
    counts = dict(zip(pairs, map(tuple, mcnemar["per_seed"]), strict=True)) if mcnemar else {}
    seeds = [_seed_entry(s, ctrl_ok, counts, original, is_control=arm.control) for s in arm.seeds]
    entry = {
        "name": arm.name,
        "control": arm.control,
        "config": dict(arm.config),
        "rank": None,
        "n_seeds": len(arm.seeds),
        "n_succeeded": len(ok),
        "seeds": seeds,
        **_summaries(list(ok.values()), original),
        "vs_control": None,
        "mcnemar": None,
        "verdict": "control" if arm.control else ("failed" if not ok else None),
    }
    if not arm.control and ok:
        a = [ok[seed].final_accuracy for seed in paired]
        c = [ctrl_ok[seed].final_accuracy for seed in paired]
        entry["vs_control"] = {"seeds": paired, **st.paired_difference(a, c)}
        if mcnemar:
            entry["mcnemar"] = {"seeds": list(pairs), "b": mcnemar["b"], "c": mcnemar["c"],
                                "p": mcnemar["p"], "p_holm": None}
    return entry


def _summaries(ok: list[SeedResult], original: Original) -> dict:
    """Final, test and peak-test accuracy and the relative error decrease, over the succeeded seeds."""
    rel = [st.relative_error_decrease(original.accuracy, s.final_accuracy) for s in ok]
    return {
        "final_accuracy": st.summarize([s.final_accuracy for s in ok]),
        # No error left in the original: there is nothing to decrease, so no summary at all.
        "relative_error_decrease": None if any(r is None for r in rel) else st.summarize(rel),
        "test_accuracy": st.summarize([s.test_accuracy for s in ok if _is_accuracy(s.test_accuracy)]),
        "peak_test_accuracy": st.summarize(
            [s.peak_test_accuracy for s in ok if _is_accuracy(s.peak_test_accuracy)]
        ),
    }


def _correct_pairs(arm: Arm, ok: dict[int, SeedResult], ctrl_ok: dict[int, SeedResult],
                   paired: list[int], original: Original) -> dict[int, tuple[Sequence[bool], Sequence[bool]]]:
    """{seed: (arm's correct, control's correct)} for the paired seeds where both runs recorded
    per-image correctness; unequal lengths raise ValueError naming the arm and the seed.

    Every `correct` vector is also checked against the original's length, so a child that evaluated
    different images is caught even when it has no partner.
    """
    n_ref = None if original.correct is None else len(original.correct)
    for s in ok.values():
        if s.correct is not None and n_ref is not None and len(s.correct) != n_ref:
            raise ValueError(
                f"arm {arm.name!r} seed {s.seed}: {len(s.correct)} per-image results, "
                f"the original has {n_ref}"
            )
    if arm.control:
        return {}
    pairs = {}
    for seed in paired:
        mine, theirs = ok[seed].correct, ctrl_ok[seed].correct
        if mine is None or theirs is None:
            continue
        if len(mine) != len(theirs):
            raise ValueError(
                f"arm {arm.name!r} seed {seed}: {len(mine)} per-image results, "
                f"the control has {len(theirs)}"
            )
        pairs[seed] = (mine, theirs)
    return pairs


def _seed_entry(s: SeedResult, ctrl_ok: dict[int, SeedResult], counts: dict[int, tuple[int, int]],
                original: Original, is_control: bool) -> dict:
    ok = s.status == "succeeded"
    partner = ctrl_ok.get(s.seed) if ok and not is_control else None
    b, c = counts.get(s.seed, (None, None))
    return {
        "seed": s.seed,
        "status": s.status,
        "child_id": s.child_id,
        "final_accuracy": st.finite(s.final_accuracy),
        "test_accuracy": st.finite(s.test_accuracy),
        "peak_epoch": s.peak_epoch,
        "peak_val_accuracy": st.finite(s.peak_val_accuracy),
        "peak_test_accuracy": st.finite(s.peak_test_accuracy),
        "relative_error_decrease": st.relative_error_decrease(original.accuracy, s.final_accuracy)
        if ok else None,
        "diff_to_control": st.finite(s.final_accuracy - partner.final_accuracy) if partner else None,
        "n_images": None if s.correct is None else len(s.correct),
        "mcnemar_b": b,
        "mcnemar_c": c,
        "error": s.error,
    }


# ---- across arms ------------------------------------------------------------------------------


def _judge(entries: list[dict], alpha: float) -> None:
    """Holm-adjust the McNemar p-values of the non-control arms and set each arm's verdict."""
    tested = [e for e in entries if e["mcnemar"] is not None]
    for e, p_adj in zip(tested, st.holm([e["mcnemar"]["p"] for e in tested]), strict=True):
        e["mcnemar"]["p_holm"] = p_adj
    for e in entries:
        if e["verdict"] is not None:
            continue  # the control, or failed
        m = e["mcnemar"]
        if m is not None and m["p_holm"] < alpha and m["b"] != m["c"]:
            e["verdict"] = "better" if m["b"] > m["c"] else "worse"
        else:
            e["verdict"] = "no_difference"


def _mean(e: dict) -> float | None:
    return e["final_accuracy"]["mean"]


def _rank(entries: list[dict]) -> list[dict]:
    """Sort by mean final accuracy, highest first, failed arms last; ties keep the input order."""
    ranked = sorted(entries, key=lambda e: (_mean(e) is None, -(_mean(e) or 0.0)))
    for i, e in enumerate(ranked, start=1):
        e["rank"] = i
    return ranked


def _ranking(entries: list[dict], original: Original) -> list[dict]:
    """The compact table: every arm (the ReLU control marked) by rank, and the original (no rank: it
    is a reference, not a contestant) placed above the first arm it beats."""
    rows = [
        {
            "rank": e["rank"],
            "arm": e["name"],
            "kind": "relu_control" if e["control"] else "arm",
            "mean_final_accuracy": _mean(e),
            "ci": e["final_accuracy"]["ci"],
            "verdict": e["verdict"],
        }
        for e in entries
    ]
    acc = float(original.accuracy)
    orig = {"rank": None, "arm": "original", "kind": "original", "mean_final_accuracy": acc,
            "ci": None, "verdict": "original"}
    at = next((i for i, r in enumerate(rows)
               if r["mean_final_accuracy"] is None or r["mean_final_accuracy"] < acc), len(rows))
    rows.insert(at, orig)
    return rows


def _winner(entries: list[dict], control_name: str, alpha: float) -> dict:
    better = [e for e in entries if e["verdict"] == "better"]  # entries are ranked already
    if better:
        best = better[0]
        return {
            "arm": best["name"],
            "control": False,
            "mean_final_accuracy": _mean(best),
            "reason": f"highest mean final accuracy among the arms better than the ReLU control "
            f"(Holm-adjusted exact McNemar p < {alpha})",
        }
    ctrl = next(e for e in entries if e["control"])
    return {
        "arm": control_name,
        "control": True,
        "mean_final_accuracy": _mean(ctrl),
        "reason": f"no arm is better than the ReLU control at alpha={alpha}",
    }


def _original_entry(original: Original) -> dict:
    return {
        "accuracy": float(original.accuracy),
        "test_accuracy": st.finite(original.test_accuracy),
        "n_images": None if original.correct is None else len(original.correct),
    }
