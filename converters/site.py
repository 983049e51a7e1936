"""The record of one ReLU call site."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Where a converted GraphModule keeps its site records and spec (GraphModule.meta survives
# deepcopy; plain attributes do not).
META_KEY = "reluswap"


@dataclass
class Site:
    index: int  # position in execution order
    name: str  # deterministic: calling scope + attribute, `_k` for the k-th repeat
    kind: str  # one of vocabulary.SITE_KINDS
    # How the site is called: module, function, method, or "inner" (an nn.ReLU inside a leaf
    # module that fx does not enter; timm's BatchNormAct2d keeps its activation in `.act`).
    call: str
    scope: str  # the module whose forward makes the call ("" for the root)
    module: str | None  # path of the nn.ReLU / nn.ReLU6 module called (None for functional calls)
    inplace: bool
    channels: int | None = None  # size of dim 1 of the input on the example inputs
    shape: tuple[int, ...] | None = None  # input shape on the example inputs
    block: str | None = None  # detected block (see blocks.py), if the model has that structure
    convrelu: bool = False  # whether ConvReLU can take this site
    convrelu_reason: str | None = None  # why not, when it cannot
    convrelu_convs: list[str] = field(default_factory=list)  # consuming Conv2d modules it would fuse into
    # Under convrelu the ReLU stays for consumers that are not eligible convs (a residual add, a pool).
    convrelu_keeps_relu: bool = False
    # Filled by convert():
    selected: bool = False
    replaced: bool = False
    replacement: str | None = None  # activation actually used ("adarelu" on convrelu fallback)
    skip_reason: str | None = None
    parameters: list[str] = field(default_factory=list)  # state_dict keys of the new parameters
    # fx bookkeeping, stable while the graph is only edited by this package.
    node: str = ""  # the call's node name
    input_node: str = ""  # the node holding the pre-activation

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape) if self.shape is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Site:
        data = dict(data)
        if data.get("shape") is not None:
            data["shape"] = tuple(data["shape"])
        return cls(**data)

    def in_block(self, prefix: str) -> bool:
        """Site s is in block P when its calling scope is P or lies under P."""
        return self.scope == prefix or self.scope.startswith(prefix + ".")
