"""The activation catalogue: formulas, parameters, granularity and initial values.

Pure data with no torch import, so the API process can serve it (GET /activations) without
loading PyTorch. The modules in `converters.activations` read their initial values from here, so
the numbers live in one place (each entry cites its paper).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .vocabulary import GRANULARITIES, INITS, check_choice


class UnknownActivationError(ValueError):
    """An activation name that is not in the catalogue."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown activation {name!r}; accepted: {', '.join(CATALOG)}")


@dataclass(frozen=True)
class ParamInfo:
    name: str
    identity: float  # value that makes the activation compute ReLU exactly
    paper: float  # value the paper used when training from scratch
    doc: str


@dataclass(frozen=True)
class ActivationInfo:
    name: str
    title: str
    formula: str
    paper: str
    params: tuple[ParamInfo, ...] = ()
    granularities: tuple[str, ...] = ()  # empty: fixed shape (no choice)
    default_granularity: str | None = None
    # False where no parameter value reproduces ReLU (leaky_relu): conversion changes the function.
    function_preserving: bool = True
    # True where the activation has a form capped at 6 (so a ReLU6 site may take it).
    supports_cap: bool = False
    # "elementwise": replaces the ReLU call; "conv": fused into the consuming Conv2d (convrelu).
    kind: str = "elementwise"
    onnx_op: str | None = None  # op type in the custom ONNX domain `reluswap`
    options: dict = field(default_factory=dict)  # fixed hyper-parameters and their defaults
    notes: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def init_values(self, init: str) -> dict[str, float]:
        check_choice("init", init, INITS)
        return {p.name: getattr(p, init) for p in self.params}

    def check_granularity(self, granularity: str | None) -> str | None:
        """The granularity to use: the default when None; a clear error when not accepted."""
        if granularity is None:
            return self.default_granularity
        if granularity not in self.granularities:
            accepted = ", ".join(self.granularities) or "none (its parameter shapes are fixed)"
            raise ValueError(
                f"granularity {granularity!r} is not accepted by {self.name}; accepted: {accepted}"
            )
        return granularity

    def to_dict(self) -> dict:
        out = asdict(self)
        out["params"] = [asdict(p) for p in self.params]
        out["granularities"] = list(self.granularities)
        return out


_PAPER_COMPARING = "comparing-rectified-linearity (ReLU, LeakyReLU, PReLU; He et al. for PReLU)"

CATALOG: dict[str, ActivationInfo] = {
    info.name: info
    for info in (
        ActivationInfo(
            name="relu",
            title="ReLU",
            formula="y = max(x, 0)",
            paper="baseline",
            supports_cap=True,
            onnx_op=None,
            notes="A per-site ReLU module: the baseline, and a way to give every call site its own module.",
        ),
        ActivationInfo(
            name="leaky_relu",
            title="LeakyReLU",
            formula="y = x if x >= 0 else s * x",
            paper=_PAPER_COMPARING,
            function_preserving=False,
            onnx_op=None,
            options={"negative_slope": 0.01},
            notes="No learnable parameter and no identity init: converting changes the function.",
        ),
        ActivationInfo(
            name="prelu",
            title="PReLU",
            formula="y = x if x >= 0 else a * x",
            paper=_PAPER_COMPARING,
            params=(ParamInfo("a", 0.0, 0.25, "slope for x < 0"),),
            granularities=GRANULARITIES,
            default_granularity="channel",
            onnx_op="PReLU",
            notes="Slopes are trained without weight decay.",
        ),
        ActivationInfo(
            name="pvlu",
            title="PVLU (parametric variational linear unit)",
            formula="y = max(x, 0) + alpha * sin(beta * x)",
            paper="pvlu-parametric-variational-linear-units, sections 3, 3.1, 4.1",
            params=(
                ParamInfo("alpha", 0.0, 0.5, "amplitude of the sine term"),
                ParamInfo("beta", 1.0, 1.0, "frequency of the sine term"),
            ),
            granularities=GRANULARITIES,
            default_granularity="channel",
            supports_cap=True,
            onnx_op="PVLU",
        ),
        ActivationInfo(
            name="frelu",
            title="FReLU (flexible ReLU)",
            formula="y = max(x, 0) + b",
            paper="frelu-flexible-rectified-linear-units, sections 2.1 and 3",
            params=(ParamInfo("b", 0.0, -1.0, "bias added after the rectification"),),
            granularities=GRANULARITIES,
            default_granularity="layer",
            supports_cap=True,
            onnx_op="FReLU",
            notes="The authors advise layer-wise biases and warn that a positive bias harms training.",
        ),
        ActivationInfo(
            name="dprelu",
            title="DP ReLU (dual parametric ReLU)",
            formula="y = a * x if x >= 0 else c * x",
            paper="dual-line-dp-relu-learnable-parameter-activations, section 2.1",
            params=(
                ParamInfo("a", 1.0, 1.0, "slope for x >= 0"),
                ParamInfo("c", 0.0, 0.01, "slope for x < 0"),
            ),
            granularities=GRANULARITIES,
            default_granularity="layer",
            onnx_op="DPReLU",
        ),
        ActivationInfo(
            name="dualline",
            title="Dual Line",
            formula="y = a * x + m if x >= 0 else c * x + m",
            paper="dual-line-dp-relu-learnable-parameter-activations, section 2.2",
            params=(
                ParamInfo("a", 1.0, 1.0, "slope for x >= 0"),
                ParamInfo("c", 0.0, 0.01, "slope for x < 0"),
                ParamInfo("m", 0.0, -0.22, "mean shift"),
            ),
            granularities=GRANULARITIES,
            default_granularity="layer",
            onnx_op="DualLine",
        ),
        ActivationInfo(
            name="adarelu",
            title="AdaReLU (adaptive threshold)",
            formula="y = max(x, theta)",
            paper="convrelu-adaptive-convolutional-relus, eq. 4",
            params=(ParamInfo("theta", 0.0, 0.0, "rectification threshold"),),
            granularities=GRANULARITIES,
            default_granularity="channel",
            onnx_op="AdaReLU",
        ),
        ActivationInfo(
            name="convrelu",
            title="ConvReLU (threshold per input channel and kernel position)",
            formula=(
                "out[n,d,i,j] = bias[d] + sum_{c in group(d), ky, kx} W[d,c,ky,kx] * "
                "max(xpad[n,c,i*s+ky*dil,j*s+kx*dil], theta[c,ky,kx])"
            ),
            paper="convrelu-adaptive-convolutional-relus, eq. 7-8",
            params=(ParamInfo("theta", 0.0, 0.0, "threshold of shape (C_in, kH, kW), trained with L2"),),
            kind="conv",
            onnx_op="ConvReLU",
            notes=(
                "Replaces a (ReLU site -> Conv2d) pair; the conv reads the pre-activation. "
                "Sites with no eligible consuming Conv2d are skipped or fall back to adarelu."
            ),
        ),
    )
}


# The closed set of activation names, in the catalogue's order.
ACTIVATIONS: tuple[str, ...] = tuple(CATALOG)


def get_info(name: str) -> ActivationInfo:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownActivationError(name) from None
