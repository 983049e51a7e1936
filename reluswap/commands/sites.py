"""`reluswap sites`: the ReLU call-site table of a model."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def add(sub) -> None:
    p = sub.add_parser("sites", help="list every ReLU call site of a model")
    p.add_argument("--model", required=True, help="torchvision:<name> or timm:<name>")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--image-size", type=int, default=224, help="side of the example input (default 224)")
    p.add_argument("--strategy", default=None, help="also mark the sites this strategy selects")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run_sites)


def run_sites(args) -> int:
    import torch

    from converters.blocks import detect_blocks
    from converters.models import build_model
    from converters.sites import find_sites
    from converters.strategy import select_sites

    model = build_model(args.model, num_classes=args.num_classes).eval()
    example = torch.randn(1, 3, args.image_size, args.image_size)
    sites = find_sites(model, example)
    selected = None
    if args.strategy:
        blocks = detect_blocks([s.scope for s in sites])
        selected = {s.name for s in select_sites(sites, args.strategy, blocks)}
    if args.json:
        rows = []
        for s in sites:
            row = {k: v for k, v in s.to_dict().items() if k in _SITE_FIELDS}
            if selected is not None:
                row["selected"] = s.name in selected
            rows.append(row)
        print(json.dumps({"model": args.model, "sites": rows}, indent=2))
        return 0
    table = Table(title=f"{args.model}: {len(sites)} ReLU call sites")
    for col in ("#", "name", "kind", "call", "channels", "block", "convrelu") + (("selected",) if selected is not None else ()):
        table.add_column(col)
    for s in sites:
        convrelu = "yes -> " + ", ".join(s.convrelu_convs) if s.convrelu else f"no: {s.convrelu_reason}"
        row = [str(s.index), s.name, s.kind, s.call, str(s.channels), s.block or "-", convrelu]
        if selected is not None:
            row.append("x" if s.name in selected else "")
        table.add_row(*row)
    Console().print(table)
    return 0


_SITE_FIELDS = ("index", "name", "kind", "call", "scope", "module", "inplace", "channels", "shape", "block",
                "convrelu", "convrelu_reason", "convrelu_convs")
