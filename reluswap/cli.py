"""The `reluswap` command line."""

from __future__ import annotations

import argparse
import sys

from .commands import ALL as COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reluswap",
        description="Swap the ReLUs of a pretrained CNN for learnable activations and fine-tune them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"reluswap {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
