"""Checks on a job config before it is queued: the schema (service.job_config), the data roots,
and that uploaded parts and `upload` references agree. Failures are ApiError 422 naming the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .compare_config import ChildPlan, CompareConfig, child_count, plan_children
from .errors import ApiError
from .job_config import ConfigError, JobConfig, validation_message
from .paths import is_inside
from .settings import Settings


def _param(loc: tuple) -> str | None:
    return ".".join(str(p) for p in loc) or None


def _model_level_param(message: str) -> str | None:
    # Whole-model checks (activation_options against the chosen activation) carry no location.
    if "granularity" in message:
        return "activation_options.granularity"
    if "fallback" in message:
        return "activation_options.fallback"
    if "activation_options" in message:
        return "activation_options"
    return None


def check_config(data: Any, schema: type[BaseModel] = JobConfig, what: str = "job config"):
    if not isinstance(data, dict):
        raise ApiError(422, f"the {what} must be a JSON object", "invalid_config", "config")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        # the same message the CLI prints: one line per problem, with the accepted values
        message = f"invalid {what}:\n  " + validation_message(err)
        param = _param(first["loc"]) or _model_level_param(first["msg"])
        raise ApiError(422, message, "invalid_config", param) from None




def check_data_roots(cfg: JobConfig, settings: Settings) -> None:
    scheme, _, rest = cfg.dataset.uri.partition(":")
    if scheme not in ("imagefolder", "archive"):
        return
    roots = [Path(os.path.realpath(r)) for r in settings.allowed_data_roots]
    where = ", ".join(str(r) for r in roots) or "none configured (RELUSWAP_ALLOWED_DATA_ROOTS)"
    if not os.path.isabs(rest):
        raise ApiError(422, f"dataset.uri: {scheme}: needs an absolute path under an allowed data root: "
                            f"{where}", "invalid_config", "dataset.uri")
    real = Path(os.path.realpath(rest))  # resolves .. and symlinks before the check
    if not any(is_inside(real, r) for r in roots):
        raise ApiError(422, f"dataset.uri: {rest!r} is not under an allowed data root; allowed: {where}",
                       "invalid_config", "dataset.uri")


def check_uploads(cfg: JobConfig, parts: set[str]) -> None:
    """`upload` references need their file part, and a file part needs its `upload` reference."""
    wants = {"weights": cfg.model.weights == "upload", "dataset": cfg.dataset.uri == "upload"}
    field = {"weights": "model.weights", "dataset": "dataset.uri"}
    for part, wanted in wants.items():
        if wanted and part not in parts:
            raise ApiError(422, f"{field[part]} is 'upload': send a multipart/form-data request with a "
                                f"'{part}' file part", "missing_upload", field[part])
        if part in parts and not wanted:
            raise ApiError(422, f"a '{part}' file was sent but {field[part]} is not 'upload'",
                           "unexpected_upload", part)


def validate_compare(data: Any, settings: Settings, parts: set[str]) -> tuple[dict, list[ChildPlan]]:
    """The normalized compare config and its children, or ApiError 422 (a grid over
    settings.max_children names its count)."""
    cfg = check_config(data, CompareConfig, "compare config")
    count = child_count(cfg)
    if count > settings.max_children:
        raise ApiError(422, f"the grid makes {count} child jobs (1 original + {cfg.seeds} seeds x "
                            f"{(count - 1) // cfg.seeds} arms, the relu control included); at most {settings.max_children} "
                            "are accepted (RELUSWAP_MAX_CHILDREN): fewer activations, strategies or seeds",
                       "too_many_children", "seeds")
    try:
        plans = plan_children(cfg)
    except ConfigError as err:
        raise ApiError(422, str(err), "invalid_config", "activations") from None
    first = JobConfig.model_validate(plans[0].config)
    check_data_roots(first, settings)
    check_uploads(first, parts)
    return cfg.model_dump(mode="json"), plans


def validate_job(data: Any, settings: Settings, parts: set[str]) -> dict:
    """The normalized config to store (defaults filled in), or ApiError 422."""
    cfg = check_config(data)
    check_data_roots(cfg, settings)
    check_uploads(cfg, parts)
    return cfg.model_dump(mode="json")
