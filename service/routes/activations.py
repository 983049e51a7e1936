"""GET /activations: the catalogue, served from converters.catalog (pure data, no torch)."""

from __future__ import annotations

from fastapi import APIRouter

from converters.catalog import CATALOG

from ..schemas import ActivationList

router = APIRouter(tags=["catalogue"])


@router.get("/activations", response_model=ActivationList, summary="Activations a job may choose")
def list_activations() -> dict:
    return {"data": [info.to_dict() for info in CATALOG.values()]}
