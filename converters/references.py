"""Model references, `<source>:<name>`: parsed here, torch-free, so the job config checks them too."""

from __future__ import annotations

from .vocabulary import MODEL_SOURCES, accepted


class ModelReferenceError(ValueError):
    """A model reference that does not name a known architecture."""


def parse_model_ref(ref: str) -> tuple[str, str]:
    """'torchvision:resnet18' -> ('torchvision', 'resnet18'); a clear error otherwise."""
    source, sep, name = ref.partition(":")
    if not sep or source not in MODEL_SOURCES or not name:
        raise ModelReferenceError(
            f"model reference {ref!r} must be '<source>:<name>' with source one of {accepted(MODEL_SOURCES)} "
            "(e.g. torchvision:resnet18, timm:resnet50)"
        )
    return source, name
