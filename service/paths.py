"""Path containment: every path the service or a worker opens on a user's behalf must resolve
(symlinks followed) inside a configured root. One definition, used by storage, validation, the
archive extractor and the data loader."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Lexically: `path` is `root` or lies under it (both already resolved by the caller)."""
    return Path(path).is_relative_to(root)


def resolve_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path | None:
    """`path` resolved (symlinks followed), when that lies inside one of the resolved `roots`; else None."""
    resolved = Path(path).resolve()
    if any(is_inside(resolved, Path(root).resolve()) for root in roots):
        return resolved
    return None
