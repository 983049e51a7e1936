"""Blocks detected from calling scopes: layer1..layer4 in ResNets, the dense blocks in DenseNet.

A block family is a set of sibling scopes whose last name part is a common stem plus a number
(`layer1`, `layer2`; `denseblock1`; `features.0`, `features.1`; `Mixed_5b`). The family used is
the shallowest one with at least two members that contain sites; ties go to the family with more
members, then to the one reached first in execution order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# stem (letters and underscores only), then a number, then at most one letter: layer1, 0, Mixed_5b
_NUMBERED = re.compile(r"([A-Za-z_]*?)(\d+)([a-z]?)")


@dataclass(frozen=True)
class Blocks:
    prefixes: tuple[str, ...]  # in execution order

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def block_of(self, scope: str) -> str | None:
        for prefix in self.prefixes:
            if scope == prefix or scope.startswith(prefix + "."):
                return prefix
        return None

    def assign(self, sites) -> list[str | None]:
        return [self.block_of(site.scope) for site in sites]


def detect_blocks(scopes: list[str]) -> Blocks:
    """Detect the block structure from site scopes given in execution order."""
    families: dict[tuple[str, str], list[str]] = {}
    first_seen: dict[tuple[str, str], int] = {}
    for order, scope in enumerate(scopes):
        if not scope:
            continue
        parts = scope.split(".")
        for depth, part in enumerate(parts):
            match = _NUMBERED.fullmatch(part)
            if match is None:
                continue
            key = (".".join(parts[:depth]), match.group(1))
            members = families.setdefault(key, [])
            first_seen.setdefault(key, order)
            prefix = ".".join(parts[: depth + 1])
            if prefix not in members:
                members.append(prefix)
    candidates = [key for key, members in families.items() if len(members) >= 2]
    if not candidates:
        return Blocks(())

    def rank(key: tuple[str, str]):
        parent = key[0]
        depth = parent.count(".") + 1 if parent else 0
        return (depth, -len(families[key]), first_seen[key])

    best = min(candidates, key=rank)
    return Blocks(tuple(families[best]))
