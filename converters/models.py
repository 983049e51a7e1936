"""Model references: `torchvision:<name>` and `timm:<name>`, built with the libraries' own factories."""

from __future__ import annotations

from torch import nn

from .references import ModelReferenceError, parse_model_ref

__all__ = ["ModelReferenceError", "build_model", "parse_model_ref"]


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_model(ref: str, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build an architecture by reference. pretrained=True loads the library's default weights
    (needs the network); otherwise weights are random."""
    source, name = parse_model_ref(ref)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if source == "torchvision":
        import torchvision

        names = _torchvision_names()
        if name not in names:
            raise ModelReferenceError(f"unknown torchvision classification model {name!r}; accepted: {', '.join(names)}")
        if name in ("googlenet", "inception_v3") and not pretrained:
            kwargs.setdefault("init_weights", True)  # silences torchvision's warning about the default
        weights = "DEFAULT" if pretrained else None
        if pretrained and num_classes is not None:
            # Pretrained heads have 1000 classes; build with those, then the user's head.
            model = torchvision.models.get_model(name, weights=weights, **{k: v for k, v in kwargs.items() if k != "num_classes"})
            return _replace_head(model, num_classes)
        return torchvision.models.get_model(name, weights=weights, **kwargs)
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:20]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ModelReferenceError(f"unknown timm model {name!r}{hint}")
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    for attr in ("fc", "classifier", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return model
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return model
    raise ModelReferenceError(f"cannot find a Linear classifier head to resize to {num_classes} classes")
