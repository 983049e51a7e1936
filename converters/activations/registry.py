"""Name -> class registry of the activation modules, keyed by catalogue name."""

from __future__ import annotations

from torch import nn

from converters.catalog import CATALOG, UnknownActivationError, get_info

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(cls):
    """Class decorator: register `cls` under `cls.name`, which must be a catalogue name."""
    name = getattr(cls, "name", None)
    if name not in CATALOG:
        raise ValueError(
            f"{cls.__name__}.name {name!r} is not in the catalogue; accepted: {', '.join(CATALOG)}"
        )
    if name in _REGISTRY:
        raise ValueError(f"activation {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def activation_class(name: str) -> type[nn.Module]:
    get_info(name)  # UnknownActivationError for names outside the catalogue
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownActivationError(name) from None


def create_activation(
    name: str,
    channels: int,
    init: str = "identity",
    granularity: str | None = None,
    cap: float | None = None,
    **options,
) -> nn.Module:
    cls = activation_class(name)
    if get_info(name).kind == "conv":
        raise ValueError(f"{name} is built from a Conv2d: use ConvReLU2d.from_conv")
    return cls(channels, init=init, granularity=granularity, cap=cap, **options)


def registered_names() -> list[str]:
    """Registered names in catalogue order."""
    return [n for n in CATALOG if n in _REGISTRY]
