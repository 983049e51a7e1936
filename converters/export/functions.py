"""Model-local ONNX functions that define each custom op from standard ops.

Every converted site is ONE node in the domain `reluswap`; the file carries one FunctionProto per
op type, so a runtime that knows the domain can use its own kernel and stock onnxruntime inlines
the body. Bodies build their constants with CastLike/EyeLike/ConstantOfShape so they follow the
input dtype (fp16 works), and reshape (C,) parameters to (C, 1, ...) themselves, because a (C,)
tensor does not broadcast against NCHW.

One attribute-driven body per op type: onnx's ReferenceEvaluator ignores function overloads.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, FunctionProto, helper

DOMAIN = "reluswap"
VERSION = 1


class _Body:
    """A small builder for function bodies: fresh names, node list."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._count += 1
        out = f"_{op_type.lower()}{self._count}"
        refs = {k: v for k, v in attrs.items() if isinstance(v, AttributeProto)}
        plain = {k: v for k, v in attrs.items() if not isinstance(v, AttributeProto)}
        node = helper.make_node(op_type, list(inputs), [out], **plain)
        node.attribute.extend(refs.values())
        self.nodes.append(node)
        return out

    def const_like(self, value: float, like: str) -> str:
        return self.op("CastLike", self.op("Constant", value_float=value), like)

    def int64s(self, values: list[int]) -> str:
        return self.op("Constant", value_ints=values)

    def channel_view(self, param: str, x: str) -> str:
        """Reshape a (C,) or (1,) parameter to (C, 1, ..., 1) so it broadcasts over dim 1 of x."""
        rank = self.op("Size", self.op("Shape", x))
        ones = self.op(
            "ConstantOfShape",
            self.op("Reshape", self.op("Sub", rank, self.op("Constant", value_int=2)), self.int64s([1])),
            value=helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1]),
        )
        shape = self.op("Concat", self.int64s([-1]), ones, axis=0)
        return self.op("Reshape", param, shape)

    def rectify(self, x: str) -> str:
        """max(x, 0), capped at the `cap` attribute (+inf for a plain ReLU site)."""
        cap = self.op("CastLike", self.op("Constant", value_float=helper.make_attribute_ref("value_float", AttributeProto.FLOAT, ref_attr_name="cap")), x)
        return self.op("Clip", x, self.const_like(0.0, x), cap)

    def finish(self, name: str, inputs: list[str], result: str, attributes: list[str], opset: int, doc: str) -> FunctionProto:
        self.nodes.append(helper.make_node("Identity", [result], ["Y"]))
        return helper.make_function(
            DOMAIN, name, inputs, ["Y"], self.nodes, [helper.make_opsetid("", opset)],
            attributes=attributes, doc_string=doc,
        )


def _pvlu(opset: int) -> FunctionProto:
    b = _Body()
    alpha, beta = b.channel_view("alpha", "X"), b.channel_view("beta", "X")
    wave = b.op("Mul", alpha, b.op("Sin", b.op("Mul", beta, "X")))
    return b.finish("PVLU", ["X", "alpha", "beta"], b.op("Add", b.rectify("X"), wave), ["cap"], opset,
                    "Y = min(max(X, 0), cap) + alpha * sin(beta * X); alpha, beta per channel (C,) or per layer (1,)")


def _frelu(opset: int) -> FunctionProto:
    b = _Body()
    out = b.op("Add", b.rectify("X"), b.channel_view("b", "X"))
    return b.finish("FReLU", ["X", "b"], out, ["cap"], opset, "Y = min(max(X, 0), cap) + b")


def _two_slopes(b: _Body) -> str:
    positive = b.op("GreaterOrEqual", "X", b.const_like(0.0, "X"))
    a, c = b.channel_view("a", "X"), b.channel_view("c", "X")
    return b.op("Where", positive, b.op("Mul", a, "X"), b.op("Mul", c, "X"))


def _dprelu(opset: int) -> FunctionProto:
    b = _Body()
    return b.finish("DPReLU", ["X", "a", "c"], _two_slopes(b), [], opset, "Y = a * X if X >= 0 else c * X")


def _dualline(opset: int) -> FunctionProto:
    b = _Body()
    out = b.op("Add", _two_slopes(b), b.channel_view("m", "X"))
    return b.finish("DualLine", ["X", "a", "c", "m"], out, [], opset, "Y = (a * X if X >= 0 else c * X) + m")


def _adarelu(opset: int) -> FunctionProto:
    b = _Body()
    return b.finish("AdaReLU", ["X", "theta"], b.op("Max", "X", b.channel_view("theta", "X")), [], opset,
                    "Y = max(X, theta)")


def _prelu(opset: int) -> FunctionProto:
    b = _Body()
    return b.finish("PReLU", ["X", "a"], b.op("PRelu", "X", b.channel_view("a", "X")), [], opset,
                    "Y = X if X >= 0 else a * X, with a of shape (C,) or (1,)")


def _convrelu(opset: int) -> FunctionProto:
    """im2col in standard ops: a Conv with one-hot (K, 1, kh, kw) kernels gathers the K patch
    positions of every channel (zero padding, stride and dilation of the original conv), Max
    thresholds them with theta (C*K, 1, 1), and a grouped 1x1 Conv with W reshaped to
    (D, Cg*K, 1, 1) finishes the convolution."""
    b = _Body()
    ref = helper.make_attribute_ref
    x_shape = b.op("Shape", "X")
    w_shape = b.op("Shape", "W")
    n = b.op("Slice", x_shape, b.int64s([0]), b.int64s([1]))
    hw = b.op("Slice", x_shape, b.int64s([2]), b.int64s([4]))
    k_hw = b.op("Slice", w_shape, b.int64s([2]), b.int64s([4]))
    d = b.op("Slice", w_shape, b.int64s([0]), b.int64s([1]))
    k = b.op("ReduceProd", k_hw, keepdims=1)  # (1,) = kh * kw
    eye = b.op("EyeLike", b.op("ConstantOfShape", b.op("Concat", k, k, axis=0),
                                value=helper.make_tensor("z", onnx.TensorProto.FLOAT, [1], [0.0])))
    onehot = b.op("CastLike", b.op("Reshape", eye, b.op("Concat", k, b.int64s([1]), k_hw, axis=0)), "X")
    planes = b.op("Reshape", "X", b.op("Concat", b.int64s([-1, 1]), hw, axis=0))  # (N*C, 1, H, W)
    patches = b.op(
        "Conv", planes, onehot,
        strides=ref("strides", AttributeProto.INTS),
        pads=ref("pads", AttributeProto.INTS),
        dilations=ref("dilations", AttributeProto.INTS),
    )  # (N*C, K, Ho, Wo)
    out_hw = b.op("Slice", b.op("Shape", patches), b.int64s([2]), b.int64s([4]))
    cols = b.op("Reshape", patches, b.op("Concat", n, b.int64s([-1]), out_hw, axis=0))  # (N, C*K, Ho, Wo), c-major
    cols = b.op("Max", cols, b.op("Reshape", "theta", b.int64s([-1, 1, 1])))
    w1x1 = b.op("Reshape", "W", b.op("Concat", d, b.int64s([-1, 1, 1]), axis=0))  # (D, Cg*K, 1, 1)
    out = b.op("Conv", cols, w1x1, "B", group=ref("group", AttributeProto.INT))
    return b.finish(
        "ConvReLU", ["X", "W", "B", "theta"], out, ["strides", "pads", "dilations", "group"], opset,
        "Y = Conv(max(pad(X), theta[c, ky, kx]) per patch position, W, B); theta has shape (C_in, kH, kW)",
    )


BUILDERS = {
    "PVLU": _pvlu,
    "FReLU": _frelu,
    "DPReLU": _dprelu,
    "DualLine": _dualline,
    "AdaReLU": _adarelu,
    "PReLU": _prelu,
    "ConvReLU": _convrelu,
}


def function_proto(op_type: str, opset: int) -> FunctionProto:
    """The FunctionProto of `op_type`, importing the default domain at `opset` (the model's)."""
    return BUILDERS[op_type](opset)
