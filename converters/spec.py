"""The conversion spec: what a state_dict of a converted model needs to load back.

A state_dict alone cannot be loaded into a model converted with another spec, so the spec travels
with the weights in two ways: as conversion.json next to them, and as a small uint8 buffer
`reluswap_spec` inside the state_dict itself. A load-time hook compares the buffer with the
model's own and names the differences, so `load_state_dict(strict=True)` fails clearly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

SPEC_BUFFER = "reluswap_spec"
SPEC_FORMAT = 1


class ConversionMismatchError(RuntimeError):
    """Weights from one conversion spec offered to a model converted with another."""


@dataclass
class ConversionSpec:
    activation: str
    strategy: str = "all"
    init: str = "identity"
    granularity: str | None = None
    fallback: str | None = None
    options: dict = field(default_factory=dict)
    # (site name, activation used) for every replaced site, in execution order.
    replaced: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["replaced"] = [list(r) for r in self.replaced]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ConversionSpec:
        data = dict(data)
        data["replaced"] = [tuple(r) for r in data.get("replaced", [])]
        return cls(**data)

    def structure(self) -> dict:
        """What decides the parameter layout (init values do not)."""
        return {
            "format": SPEC_FORMAT,
            "activation": self.activation,
            "granularity": self.granularity,
            "options": self.options,
            "replaced": [list(r) for r in self.replaced],
        }

    def as_buffer(self) -> torch.Tensor:
        payload = json.dumps(self.structure(), sort_keys=True, separators=(",", ":")).encode()
        return torch.frombuffer(bytearray(payload), dtype=torch.uint8).clone()


def _decode(buffer: torch.Tensor) -> dict | None:
    try:
        return json.loads(bytes(buffer.detach().cpu().to(torch.uint8).tolist()).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def describe_differences(theirs: dict, ours: dict) -> list[str]:
    diffs = []
    for key in ("activation", "granularity", "options"):
        if theirs.get(key) != ours.get(key):
            diffs.append(f"{key}: weights have {theirs.get(key)!r}, this model has {ours.get(key)!r}")
    theirs_sites = {name: act for name, act in theirs.get("replaced", [])}
    ours_sites = {name: act for name, act in ours.get("replaced", [])}
    only_theirs = sorted(set(theirs_sites) - set(ours_sites))
    only_ours = sorted(set(ours_sites) - set(theirs_sites))
    if only_theirs:
        diffs.append(f"sites replaced only in the weights: {', '.join(only_theirs[:8])}" + (" ..." if len(only_theirs) > 8 else ""))
    if only_ours:
        diffs.append(f"sites replaced only in this model: {', '.join(only_ours[:8])}" + (" ..." if len(only_ours) > 8 else ""))
    changed = [n for n in theirs_sites if n in ours_sites and theirs_sites[n] != ours_sites[n]]
    if changed:
        diffs.append("sites replaced with another activation: " + ", ".join(f"{n} ({theirs_sites[n]} vs {ours_sites[n]})" for n in changed[:8]))
    return diffs


def check_spec_on_load(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """load_state_dict pre-hook of a converted model: compare the incoming spec with ours."""
    key = prefix + SPEC_BUFFER
    ours_buffer = getattr(module, SPEC_BUFFER, None)
    if ours_buffer is None or key not in state_dict:
        return
    theirs = _decode(state_dict[key])
    ours = _decode(ours_buffer)
    if theirs == ours:
        return
    diffs = describe_differences(theirs or {}, ours or {}) or ["the specs differ"]
    error_msgs.append(
        "these weights come from a different conversion spec: " + "; ".join(diffs)
        + ". Convert the model with the spec saved next to the weights (conversion.json)."
    )
    # Keep torch from adding a shape-mismatch message for the buffer itself.
    state_dict[key] = ours_buffer


def attach_spec(model: nn.Module, spec: ConversionSpec) -> None:
    model.register_buffer(SPEC_BUFFER, spec.as_buffer())
    model.register_load_state_dict_pre_hook(check_spec_on_load)


def load_converted_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """load_state_dict that raises ConversionMismatchError (not a bare RuntimeError) on a spec clash."""
    try:
        return model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:
        if "different conversion spec" in str(err):
            raise ConversionMismatchError(str(err)) from None
        raise
