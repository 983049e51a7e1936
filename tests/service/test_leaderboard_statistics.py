"""service.leaderboard.statistics: every number checked against numpy/scipy computed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from service.leaderboard import statistics as st

VALUES = [0.712, 0.741, 0.693, 0.734]


def test_summarize_matches_numpy_and_scipy():
    x = np.asarray(VALUES)
    out = st.summarize(VALUES)
    assert out["n"] == 4
    assert out["mean"] == float(np.mean(x))
    assert out["std"] == float(np.std(x, ddof=1))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(x), scale=stats.sem(x))
    assert out["ci"] == [float(low), float(high)]
    assert out["ci"][0] < out["mean"] < out["ci"][1]


def test_summarize_small_samples():
    assert st.summarize([]) == {"n": 0, "mean": None, "std": None, "ci": None}
    assert st.summarize([0.5]) == {"n": 1, "mean": 0.5, "std": None, "ci": None}
    # No spread: scipy cannot take scale 0, the interval is the mean itself.
    assert st.summarize([0.5, 0.5, 0.5]) == {"n": 3, "mean": 0.5, "std": 0.0, "ci": [0.5, 0.5]}


def test_relative_error_decrease():
    # errors 0.25 -> 0.20: a fifth of the error is gone
    assert st.relative_error_decrease(0.75, 0.80) == pytest.approx(0.2, abs=1e-15)
    assert st.relative_error_decrease(0.75, 0.70) == pytest.approx(-0.2, abs=1e-15)
    assert st.relative_error_decrease(1.0, 0.9) is None
    assert st.relative_error_decrease(0.75, None) is None


def test_paired_difference_matches_ttest_rel():
    arm, ctrl = [0.74, 0.71, 0.78, 0.70], [0.70, 0.705, 0.72, 0.69]
    out = st.paired_difference(arm, ctrl)
    diff = np.asarray(arm) - np.asarray(ctrl)
    ref = stats.ttest_rel(arm, ctrl)
    assert out["differences"] == diff.tolist()
    assert out["n"] == 4
    assert out["mean"] == float(np.mean(diff))
    assert out["std"] == float(np.std(diff, ddof=1))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(diff), scale=stats.sem(diff))
    assert out["ci"] == [float(low), float(high)]
    assert out["t"] == float(ref.statistic)
    assert out["p"] == float(ref.pvalue)


def test_paired_difference_degenerate_cases_are_never_nan():
    one = st.paired_difference([0.7], [0.6])
    assert one["p"] is None and one["t"] is None and one["mean"] == pytest.approx(0.1)
    zero = st.paired_difference([0.7, 0.6, 0.5], [0.7, 0.6, 0.5])
    assert zero["p"] == 1.0 and zero["t"] == 0.0
    # Constant non-zero differences: scipy says t=inf, p=0; inf is not JSON, so t is None.
    const = st.paired_difference([0.75, 0.5, 0.25], [0.5, 0.25, 0.0])
    assert const["t"] is None and const["p"] == 0.0
    for out in (one, zero, const):
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in out.values())
    with pytest.raises(ValueError):
        st.paired_difference([0.1, 0.2], [0.1])


def test_mcnemar_counts_and_exact_p():
    arm = [True, True, False, True, False, True]
    ctrl = [False, True, True, False, False, False]
    assert st.mcnemar_counts(arm, ctrl) == (3, 1)  # images 0, 3, 5 vs image 2
    assert st.mcnemar_exact(3, 1) == stats.binomtest(3, 4, 0.5).pvalue
    assert st.mcnemar_exact(40, 12) == stats.binomtest(40, 52, 0.5).pvalue
    assert st.mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError, match="differ"):
        st.mcnemar_counts([True, False], [True])


def test_mcnemar_stratified_sums_counts_over_seeds():
    pairs = [([True, True, False], [False, True, False]), ([True, False, False], [False, False, True])]
    out = st.mcnemar_stratified(pairs)
    assert out["per_seed"] == [[1, 0], [1, 1]]
    assert (out["b"], out["c"]) == (2, 1)
    assert out["p"] == stats.binomtest(2, 3, 0.5).pvalue


def test_holm_hand_computed_example():
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> raised to 0.06 to stay monotone
    assert st.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], abs=1e-15)


def test_holm_order_monotonicity_and_cap():
    raw = [0.2, 0.001, 0.04, 0.03, 0.5]
    adj = st.holm(raw)
    # m = 5: 0.005, 0.12, 0.12 (0.04*3 = 0.12 >= 0.03*4), 0.4, 0.5
    assert adj == pytest.approx([0.4, 0.005, 0.12, 0.12, 0.5], abs=1e-15)
    by_raw = sorted(range(5), key=raw.__getitem__)
    assert [adj[i] for i in by_raw] == sorted(adj)  # adjusted keep the raw order
    assert all(a >= r for a, r in zip(adj, raw, strict=True))
    assert st.holm([0.6, 0.7]) == [1.0, 1.0]
    assert st.holm([]) == []
    assert st.holm([0.02]) == [0.02]
    with pytest.raises(ValueError):
        st.holm([float("nan")])
