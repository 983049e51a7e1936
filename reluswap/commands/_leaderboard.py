"""A compare job's leaderboard as a terminal table (the CLI's compare and the demo print it)."""

from __future__ import annotations

from rich import box
from rich.table import Table

VERDICT_STYLE = {"better": "bold green", "worse": "red", "no_difference": "yellow", "failed": "red",
                 "control": "cyan"}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _mean(summary: dict | None) -> str:
    return "-" if not summary else _pct(summary.get("mean"))


def _mean_ci(summary: dict | None) -> str:
    """mean ± half-width of the 95% t-interval (symmetric), in %."""
    if not summary or summary.get("mean") is None:
        return "-"
    ci = summary.get("ci")
    return _pct(summary["mean"]) + (f"±{100 * (ci[1] - ci[0]) / 2:.2f}" if ci else "")


def leaderboard_table(leaderboard: dict) -> Table:
    """One row per arm, ranked; the original as a reference row. Accuracies in %. Compact enough
    for an 80-column terminal; numbers never fold."""
    table = Table(title=f"leaderboard (alpha {leaderboard['alpha']}, McNemar vs relu, Holm)", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False, caption="val %: mean ± half-width of the 95% CI over seeds")
    for name, justify in (("#", "right"), ("arm", "left"), ("verdict", "left"), ("val %", "right"),
                          ("test %", "right"), ("vs relu", "right"), ("b/c", "right"), ("p Holm", "right"),
                          ("seeds", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    original = leaderboard["original"]
    table.add_row("", "original", "reference", _pct(original["accuracy"]), _pct(original.get("test_accuracy")),
                  "", "", "", "")
    for arm in leaderboard["arms"]:
        verdict = arm["verdict"]
        vs = arm.get("vs_control") or {}
        mcnemar = arm.get("mcnemar") or {}
        diff = vs.get("mean")
        table.add_row(
            str(arm["rank"] or ""), arm["name"], f"[{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]",
            _mean_ci(arm.get("final_accuracy")), _mean(arm.get("test_accuracy")),
            "" if diff is None else f"{100 * diff:+.2f}",
            "" if not mcnemar else f"{mcnemar['b']}/{mcnemar['c']}",
            "" if mcnemar.get("p_holm") is None else f"{mcnemar['p_holm']:.3g}",
            f"{arm['n_succeeded']}/{arm['n_seeds']}",
        )
    return table


def winner_line(leaderboard: dict) -> str:
    winner = leaderboard["winner"]
    if winner["control"]:
        return f"[bold]winner: the ReLU control[/bold] ({winner['reason']})"
    return f"[bold green]winner: {winner['arm']}[/bold green] ({winner['reason']})"
