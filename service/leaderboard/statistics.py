"""Pure statistics for compare jobs: summaries with Student-t intervals, the paired t-test, the exact
McNemar test stratified by seed, and the Holm correction.

Every function returns plain Python numbers (or None), never NaN or infinity, so its results can be
written as strict JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def finite(x) -> float | None:
    """x as a Python float, or None when it is missing, NaN or infinite (strict JSON has neither)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def relative_error_decrease(acc_reference: float | None, acc: float | None) -> float | None:
    """(e_ref - e) / e_ref with e = 1 - accuracy; None when e_ref is 0 (nothing left to decrease)."""
    if acc_reference is None or acc is None:
        return None
    e_ref, e = 1.0 - acc_reference, 1.0 - acc
    return None if e_ref <= 0 else finite((e_ref - e) / e_ref)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """{n, mean, std, ci}: std uses ddof=1; ci is the Student-t interval [low, high] of the mean.

    mean is None for n == 0; std and ci are None for n < 2. With no spread the interval is [mean, mean]
    (scipy cannot take scale 0).
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = float(np.mean(x))
    if n < 2:
        return {"n": n, "mean": finite(mean), "std": None, "ci": None}
    std = float(np.std(x, ddof=1))
    return {"n": n, "mean": finite(mean), "std": finite(std), "ci": t_interval(mean, std, n, confidence)}


def t_interval(mean: float, std: float, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """The Student-t confidence interval of a mean from n values with sample std (ddof=1)."""
    if n < 2 or not (math.isfinite(mean) and math.isfinite(std)):
        return None
    if std == 0:
        return [mean, mean]
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return [float(low), float(high)]


def paired_difference(arm: Sequence[float], control: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Arm minus control, paired by position: the summary of the differences plus a paired t-test.

    Returns summarize(differences) with "t" and "p" added. p is None for fewer than 2 pairs; it is 1.0
    when every difference is exactly 0 (scipy answers NaN there); otherwise it is scipy.stats.ttest_rel's,
    with NaN or infinity mapped to None.
    """
    if len(arm) != len(control):
        raise ValueError(f"paired samples differ in length: {len(arm)} != {len(control)}")
    a = np.asarray(arm, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    diff = a - c
    out = summarize(diff.tolist(), confidence)
    out["differences"] = [float(d) for d in diff]
    out["t"], out["p"] = None, None
    if diff.size < 2:
        return out
    if np.all(diff == 0):
        out["t"], out["p"] = 0.0, 1.0
        return out
    with warnings.catch_warnings():
        # Constant non-zero differences divide by a zero spread: scipy warns and answers t=inf, p=0.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, c)
    out["t"], out["p"] = finite(res.statistic), finite(res.pvalue)
    return out


def mcnemar_counts(arm_correct: Sequence[bool], control_correct: Sequence[bool]) -> tuple[int, int]:
    """(b, c): b = images the arm gets right and the control wrong; c = the reverse.

    Both vectors must list the same images in the same order; unequal lengths raise ValueError.
    """
    a = np.asarray(arm_correct, dtype=bool)
    c = np.asarray(control_correct, dtype=bool)
    if a.shape != c.shape or a.ndim != 1:
        raise ValueError(f"correct vectors differ in shape: {a.shape} != {c.shape}")
    return int(np.count_nonzero(a & ~c)), int(np.count_nonzero(~a & c))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c at 0.5; 1.0 if b + c == 0."""
    if b < 0 or c < 0:
        raise ValueError(f"McNemar counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)


def mcnemar_stratified(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]]) -> dict:
    """The exact McNemar test over several seeds: b and c are summed over the (arm, control) pairs.

    Returns {"b", "c", "per_seed": [[b, c], ...], "p"}.
    """
    per_seed = [mcnemar_counts(a, c) for a, c in pairs]
    b = sum(x for x, _ in per_seed)
    c = sum(y for _, y in per_seed)
    return {"b": b, "c": c, "per_seed": [list(x) for x in per_seed], "p": mcnemar_exact(b, c)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by m - i; a running maximum keeps
    the adjusted values in the same order as the raw ones, and they are capped at 1.
    """
    m = len(pvalues)
    for p in pvalues:
        if not (0.0 <= p <= 1.0):
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted
