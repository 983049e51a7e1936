"""Which sites to replace: a small grammar of clauses, each filtering the previous result.

Parsing is pure (no torch), so the API validates a strategy before a job is queued.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .blocks import Blocks
from .vocabulary import SITE_KINDS, accepted

GRAMMAR = """\
strategy := clause (';' clause)*   each clause filters the sites left by the previous one,
                                   in execution order
  all                     every site
  first:N | last:N        the first / last N sites (N >= 0)
  fraction:F[@last]       the first (or, with @last, the last) round(F*n) sites, 0 <= F <= 1
  block:P[,P...]          sites whose calling scope is P or lies under P (e.g. block:layer1,layer2)
  block:first|last|K      a detected block: K counts from 1 in execution order, -1 is the last
  names:GLOB[,GLOB...]    sites whose name matches a glob (e.g. names:layer4.*)
  kind:relu[,relu6]       sites of these kinds
  dead:R                  sites where at least a fraction R (0 < R <= 1) of the units never
                          activate on the calibration data"""


class StrategyError(ValueError):
    """A strategy that does not parse or cannot be applied; the message carries the grammar."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"{problem}\n{GRAMMAR}")


@dataclass(frozen=True)
class Clause:
    op: str  # all, first, last, fraction, block, names, kind, dead
    values: tuple = ()
    from_end: bool = False  # fraction:F@last

    def __str__(self) -> str:
        if self.op == "all":
            return "all"
        if self.op == "fraction":
            return f"fraction:{self.values[0]:g}" + ("@last" if self.from_end else "")
        return f"{self.op}:" + ",".join(str(v) for v in self.values)


def _number(text: str, kind: type, clause: str):
    try:
        return kind(text)
    except ValueError:
        raise StrategyError(f"in clause {clause!r}: {text!r} is not a{'n integer' if kind is int else ' number'}") from None


def _parse_clause(text: str) -> Clause:
    op, sep, arg = text.partition(":")
    op, arg = op.strip(), arg.strip()
    if op == "all":
        if sep:
            raise StrategyError(f"clause 'all' takes no argument, got {text!r}")
        return Clause("all")
    if not sep or not arg:
        known = "all, first, last, fraction, block, names, kind, dead"
        if op in known.split(", "):
            raise StrategyError(f"clause {op!r} needs an argument ({op}:...)")
        raise StrategyError(f"unknown clause {text!r}; accepted: {known}")
    if op in ("first", "last"):
        n = _number(arg, int, text)
        if n < 0:
            raise StrategyError(f"in clause {text!r}: N must be >= 0")
        return Clause(op, (n,))
    if op == "fraction":
        value, at, where = arg.partition("@")
        if at and where != "last":
            raise StrategyError(f"in clause {text!r}: only '@last' may follow the fraction")
        f = _number(value, float, text)
        if not 0.0 <= f <= 1.0:
            raise StrategyError(f"in clause {text!r}: F must be between 0 and 1")
        return Clause("fraction", (f,), from_end=bool(at))
    if op in ("block", "names", "kind"):
        items = tuple(part.strip() for part in arg.split(","))
        if any(not item for item in items):
            raise StrategyError(f"in clause {text!r}: empty item in the list")
        if op == "kind":
            bad = [k for k in items if k not in SITE_KINDS]
            if bad:
                raise StrategyError(f"in clause {text!r}: unknown kind {bad[0]!r}; accepted: {accepted(SITE_KINDS)}")
        if op == "block":
            for item in items:
                if item not in ("first", "last") and _is_int(item) and int(item) == 0:
                    raise StrategyError(f"in clause {text!r}: block numbers count from 1 (or -1 for the last)")
        return Clause(op, items)
    if op == "dead":
        r = _number(arg, float, text)
        if not 0.0 < r <= 1.0:
            raise StrategyError(f"in clause {text!r}: R must be in (0, 1]")
        return Clause("dead", (r,))
    raise StrategyError(f"unknown clause {text!r}; accepted: all, first, last, fraction, block, names, kind, dead")


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def parse_strategy(text: str) -> list[Clause]:
    """Parse a strategy string; raises StrategyError (with the grammar) on any mistake."""
    if not isinstance(text, str) or not text.strip():
        raise StrategyError("the strategy is empty")
    parts = [p.strip() for p in text.split(";")]
    if any(not p for p in parts):
        raise StrategyError(f"empty clause in {text!r}")
    return [_parse_clause(p) for p in parts]


def needs_calibration(clauses: Sequence[Clause]) -> bool:
    return any(c.op == "dead" for c in clauses)


def _resolve_block(item: str, blocks: Blocks) -> str:
    if item not in ("first", "last") and not _is_int(item):
        return item  # an explicit scope prefix
    if not blocks:
        raise StrategyError(
            f"block:{item} needs a detected block structure (numbered scopes such as layer1..layer4), "
            "and this model has none; name scope prefixes instead (block:features.3)"
        )
    prefixes = blocks.prefixes
    if item == "first":
        return prefixes[0]
    if item == "last":
        return prefixes[-1]
    k = int(item)
    index = k - 1 if k > 0 else len(prefixes) + k
    if not 0 <= index < len(prefixes):
        raise StrategyError(f"block:{item} is out of range: this model has {len(prefixes)} blocks ({', '.join(prefixes)})")
    return prefixes[index]


def select_sites(
    sites: Sequence,
    strategy: str | Sequence[Clause],
    blocks: Blocks | None = None,
    dead_fractions: Callable[[], dict[str, float]] | None = None,
) -> list:
    """Apply the clauses in order; returns the selected sites in execution order.

    `dead_fractions` is called (once, lazily) for dead:R and maps site names to the fraction of
    their units that never activated on calibration data.
    """
    clauses = parse_strategy(strategy) if isinstance(strategy, str) else list(strategy)
    blocks = blocks if blocks is not None else Blocks(())
    current = list(sites)
    dead: dict[str, float] | None = None
    for clause in clauses:
        n = len(current)
        if clause.op == "all":
            continue
        if clause.op == "first":
            current = current[: clause.values[0]]
        elif clause.op == "last":
            k = clause.values[0]
            current = current[n - k :] if k else []
        elif clause.op == "fraction":
            k = min(n, math.floor(clause.values[0] * n + 0.5))
            current = (current[n - k :] if k else []) if clause.from_end else current[:k]
        elif clause.op == "block":
            prefixes = [_resolve_block(item, blocks) for item in clause.values]
            current = [s for s in current if any(s.in_block(p) for p in prefixes)]
        elif clause.op == "names":
            current = [s for s in current if any(fnmatch.fnmatchcase(s.name, g) for g in clause.values)]
        elif clause.op == "kind":
            current = [s for s in current if s.kind in clause.values]
        elif clause.op == "dead":
            if dead is None:
                if dead_fractions is None:
                    raise StrategyError("dead:R needs calibration data (calibration=... / --calibration-batches)")
                dead = dead_fractions()
            current = [s for s in current if dead.get(s.name, 0.0) >= clause.values[0]]
    return current
