"""`reluswap activations`: the catalogue."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def add(sub) -> None:
    p = sub.add_parser("activations", help="list the activation catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_activations)


def run_activations(args) -> int:
    from converters.catalog import CATALOG

    if args.json:
        print(json.dumps([info.to_dict() for info in CATALOG.values()], indent=2))
        return 0
    table = Table(title="reluswap activations")
    for col in ("name", "formula", "parameters (identity / paper)", "granularity", "paper"):
        table.add_column(col)
    for info in CATALOG.values():
        params = ", ".join(f"{p.name} ({p.identity:g} / {p.paper:g})" for p in info.params) or "-"
        gran = "/".join(info.granularities) + (f" (default {info.default_granularity})" if info.default_granularity else "")
        table.add_row(info.name, info.formula, params, gran or "fixed", info.paper)
    Console().print(table)
    return 0
