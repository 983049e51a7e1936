"""docs/api.md is the REST contract: it must not drift from the app.

Conventions the document keeps (and this test relies on):
- every route is written in backticks as `METHOD /path`, with the path exactly as in the OpenAPI
  document (`GET /jobs/{job_id}`), in a heading or a table;
- every job-config field is written in backticks as its dotted path from the top of the config
  (`model.arch`, `train.epochs`, `activation_options.init`; top-level fields as `model`);
- every setting is written in backticks as its environment variable (`RELUSWAP_MAX_UPLOAD_BYTES`);
- every job status is written in backticks (`cancelling`).

No torch here: the service never imports it.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from service.app import create_app
from service.job_config import JobConfig
from service.queue import MemoryQueue
from service.schemas import JobStatus
from service.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ROUTE_REF = re.compile(r"`(" + "|".join(METHODS) + r") (/[^`\s]*)`")


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("apidoc"), api_keys=["doc:doc-key"], run_reaper=False)
    return create_app(settings, queue=MemoryQueue())


@pytest.fixture(scope="module")
def openapi(app) -> dict:
    return app.openapi()


def _operations(openapi: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in openapi["paths"].items() for method in ops
            if method.upper() in METHODS}


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (X, X | None, list[X], ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) or typing.get_args(annotation):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def config_fields(model: type[BaseModel] = JobConfig, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        out.append(dotted)
        for sub in _models(info.annotation):
            out += config_fields(sub, dotted + ".")
    return out


def test_config_fields_are_found_recursively():
    fields = config_fields()
    assert {"model.arch", "dataset.uri", "train.compile", "export.opset", "activation_options.init"} <= set(fields)


def test_every_route_is_documented(doc, openapi):
    documented = {f"{m} {p}" for m, p in ROUTE_REF.findall(doc)}
    missing = sorted(_operations(openapi) - documented)
    assert not missing, f"docs/api.md does not document (as `METHOD /path`): {missing}"


def test_every_documented_route_exists(doc, app, openapi):
    # FastAPI's own pages (/openapi.json, /docs, /redoc) are served but not in the OpenAPI paths.
    builtin = {f"GET {url}" for url in (app.openapi_url, app.docs_url, app.redoc_url) if url}
    stale = sorted({f"{m} {p}" for m, p in ROUTE_REF.findall(doc)} - _operations(openapi) - builtin)
    assert not stale, f"docs/api.md documents routes the app does not serve: {stale}"


def test_every_config_field_is_documented(doc):
    missing = [f for f in config_fields() if f"`{f}`" not in doc]
    assert not missing, f"docs/api.md does not document these job-config fields: {missing}"


def test_every_setting_is_documented(doc):
    names = [f"RELUSWAP_{name.upper()}" for name in Settings.model_fields]
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"docs/api.md does not document these settings: {missing}"


def test_every_job_status_is_documented(doc):
    missing = [s for s in typing.get_args(JobStatus) if f"`{s}`" not in doc]
    assert not missing, f"docs/api.md does not document these job statuses: {missing}"
