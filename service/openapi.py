"""The OpenAPI document: FastAPI's, plus what it cannot see by itself.

- POST /finetune reads its body by hand (to stream multipart uploads), so JobConfig's models are
  added to the components here.
- The config's name checks are validators in service.job_config; the closed sets among them are
  written into the schema as enums and patterns, so clients and fuzzers see them.
- FastAPI documents its own 422 body; ours is ErrorBody (errors.py).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from converters.catalog import ACTIVATIONS
from converters.vocabulary import MODEL_SOURCES, TRAINABLE_MODES

from .compare_config import CompareConfig
from .contract import BUILTIN_DATASETS, DATASET_SCHEMES, DATASET_UPLOAD, PATH_SCHEMES, WEIGHTS_SOURCES
from .job_config import JobConfig

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def _closed_sets(components: dict) -> None:
    def prop(model: str, name: str) -> dict:
        return components[model]["properties"][name]

    prop("JobConfig", "activation")["enum"] = list(ACTIVATIONS)
    prop("ModelConfig", "arch")["pattern"] = f"^({'|'.join(MODEL_SOURCES)}):.+$"
    prop("ModelConfig", "weights")["enum"] = list(WEIGHTS_SOURCES)
    prop("TrainConfig", "trainable")["enum"] = list(TRAINABLE_MODES)
    named = "|".join(s for s in DATASET_SCHEMES if s in PATH_SCHEMES or s == "torchvision")
    assert {"builtin", "synthetic"} | set(named.split("|")) == set(DATASET_SCHEMES), "a scheme has no pattern"
    prop("DatasetConfig", "uri")["pattern"] = (
        f"^({DATASET_UPLOAD}|builtin:({'|'.join(BUILTIN_DATASETS)})|({named}):.+|synthetic:[0-9]+x[0-9]+)$"
    )


def _own_validation_errors(schema: dict) -> None:
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            resp = op.get("responses", {}).get("422")
            if resp:
                resp["content"] = _ERROR
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def build_openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        config_schema = JobConfig.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(config_schema.pop("$defs", {}))
        components["JobConfig"] = config_schema
        compare_schema = CompareConfig.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(compare_schema.pop("$defs", {}))
        components["CompareConfig"] = compare_schema
        _closed_sets(components)
        _own_validation_errors(schema)
        app.openapi_schema = schema
    return app.openapi_schema
