"""`reluswap export`: a saved conversion (conversion.json + weights.safetensors) to ONNX."""

from __future__ import annotations

import json


def add(sub) -> None:
    p = sub.add_parser("export", help="export a saved conversion to ONNX (custom ops + functions) and verify it")
    p.add_argument("--conversion", required=True, help="directory with conversion.json and weights.safetensors")
    p.add_argument("--out", required=True, help="path of the .onnx file to write")
    p.add_argument("--inline", action="store_true", help="write standard ops only (functions inlined)")
    p.add_argument("--opset", type=int, default=18, help="default-domain opset (default 18)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the verification input")
    p.add_argument("--pt2", default=None, help="also write a torch.export program to this path")
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from converters.export import export_onnx, export_pt2, verify_onnx
    from converters.saved import load_conversion

    model, record = load_conversion(args.conversion)
    shape = list(record["example_input_shape"])
    x = torch.randn([args.batch, *shape[1:]], generator=torch.Generator().manual_seed(0))
    path = export_onnx(model, x[:1], args.out, opset=args.opset, inline=args.inline)
    report = verify_onnx(path, model, x)
    if args.pt2:
        export_pt2(model, x[:1], args.pt2)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        status = "verified" if report.ok else "FAILED verification"
        print(f"{path}: {status}; {report.custom_nodes} reluswap nodes, functions {', '.join(report.functions) or '-'}; "
              f"max relative difference to PyTorch {report.max_rel_diff:.2e}")
        for error in report.errors:
            print(f"  {error}")
    return 0 if report.ok else 1
