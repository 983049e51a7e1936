"""ONNX export on real models: one custom node per replaced site, one function per op type,
onnxruntime equal to PyTorch, the inlined file too; ConvReLU over every configuration; fp16;
model.pt2 without reluswap; tampered files are caught."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_helpers import randomize
from torch import nn

from converters import convert
from converters.activations import ConvReLU2d, LearnableActivation
from converters.catalog import CATALOG
from converters.export import export_onnx, export_pt2, inline, to_onnx, verify_onnx

MODELS = ["torchvision:resnet18", "torchvision:resnet50", "torchvision:densenet121", "torchvision:googlenet", "torchvision:vgg16_bn"]
ACTIVATIONS = list(CATALOG)  # relu and leaky_relu export as standard ops; the others as reluswap nodes
SIZE = 32  # smaller than the conversion tests: export time grows with the graph, not the image


def _session(proto_or_path) -> ort.InferenceSession:
    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _ort(proto_or_path, x: torch.Tensor) -> np.ndarray:
    session = _session(proto_or_path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _rel(got: np.ndarray, want: torch.Tensor) -> float:
    want = want.detach().numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def _expected_nodes(model: nn.Module) -> dict[str, int]:
    """Custom nodes the export must contain: one per activation module, one per fused conv."""
    counts: dict[str, int] = {}
    for m in model.modules():
        op = "ConvReLU" if isinstance(m, ConvReLU2d) else (m.info.onnx_op if isinstance(m, LearnableActivation) else None)
        if op:
            counts[op] = counts.get(op, 0) + 1
    return counts


@pytest.mark.parametrize("ref", MODELS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_export_matches_pytorch(filled_model, ref, activation):
    model = filled_model(ref)
    x1 = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    x7 = torch.randn(7, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    conversion = convert(model, activation, example_inputs=x1)
    randomize(conversion, low=-0.1, high=0.4)  # negative thresholds and slopes too
    net = conversion.model.eval()
    proto = to_onnx(net, x1)
    onnx.checker.check_model(proto, full_check=True)

    custom = [n for n in proto.graph.node if n.domain == "reluswap"]
    found: dict[str, int] = {}
    for n in custom:
        found[n.op_type] = found.get(n.op_type, 0) + 1
    assert found == _expected_nodes(net)
    if CATALOG[activation].onnx_op is None:
        fused = 0  # standard Relu / Clip / LeakyRelu
    elif activation == "convrelu":
        fused = sum(len(s.convrelu_convs) for s in conversion.replaced)  # one node per fused conv
    else:
        fused = len(conversion.replaced)
    assert len(custom) == fused
    assert (fused > 0) == (CATALOG[activation].onnx_op is not None)
    assert sorted(f.name for f in proto.functions) == sorted(found)
    # Parameters keep their state_dict names and shapes.
    inits = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    for site in conversion.replaced:
        for key in site.parameters:
            assert inits[key] == tuple(dict(net.named_parameters())[key].shape)

    flat = inline(proto)
    onnx.checker.check_model(flat, full_check=True)
    assert not [n for n in flat.graph.node if n.domain == "reluswap"] and not flat.functions
    sessions = [_session(proto), _session(flat)]  # one session each: loading dominates on vgg16_bn
    with torch.no_grad():
        for x in (x1, x7):
            want = net(x)
            for session in sessions:
                got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
                assert _rel(got, want) <= 1e-4


CONFIGS = list(itertools.product((1, 3), (1, 2), (0, 1), (1, 2), (1, 2), (True, False)))


class _EveryConvReLU(nn.Module):
    """All 64 configurations side by side on one input: one export covers them all."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        layers = []
        for kernel, stride, padding, dilation, groups, bias in CONFIGS:
            conv = nn.Conv2d(4, 6, kernel, stride, padding, dilation, groups, bias)
            layer = ConvReLU2d.from_conv(conv, impl="unfold")
            with torch.no_grad():
                layer.theta.copy_(torch.rand(layer.theta.shape, generator=gen) - 0.5)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        return tuple(layer(x) for layer in self.layers)


@pytest.mark.parametrize("dtype,runtime,tolerance", [(torch.float32, "onnxruntime", 1e-5), (torch.float64, "reference", 1e-12)])
def test_convrelu_alone_matches_the_unfold_reference(tmp_path, dtype, runtime, tolerance):
    """kernel 1/3, stride 1/2, padding 0/1, dilation 1/2, groups 1/2, bias or not."""
    net = _EveryConvReLU().to(dtype).eval()
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(8)).to(dtype)
    path = export_onnx(net, x, tmp_path / "convrelu.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert sum(n.op_type == "ConvReLU" for n in proto.graph.node) == len(CONFIGS)
    if runtime == "onnxruntime":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    else:
        from onnx.reference import ReferenceEvaluator

        outputs = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        for config, layer, got in zip(CONFIGS, net.layers, outputs):
            want = layer(x)  # the unfold reference
            assert got.shape == tuple(want.shape), config
            assert np.abs(got - want.numpy()).max() <= tolerance * max(1.0, float(want.abs().max())), config


def test_fp16_export_runs_in_onnxruntime(filled_model, tmp_path):
    import copy

    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    conversion = convert(filled_model("torchvision:resnet18"), "pvlu", example_inputs=x)
    randomize(conversion, low=-0.1, high=0.4)  # negative thresholds and slopes too
    with torch.no_grad():
        want = conversion.model(x)
    half = copy.deepcopy(conversion.model).half()
    path = export_onnx(half, x.half(), tmp_path / "half.onnx")
    got = _ort(path, x.half()).astype(np.float32)
    assert np.abs(got - want.numpy()).max() <= 1e-2 * max(1.0, float(want.abs().max()))


def test_single_file_and_dynamic_batch(filled_model, tmp_path):
    x = torch.randn(1, 3, SIZE, SIZE)
    conversion = convert(filled_model("torchvision:resnet18"), "frelu", example_inputs=x)
    path = export_onnx(conversion.model, x, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no .data sidecar
    with torch.no_grad():
        for batch in (1, 2, 5):
            xb = torch.randn(batch, 3, SIZE, SIZE)
            assert _rel(_ort(path, xb), conversion.model(xb)) <= 1e-4


def test_pt2_loads_without_reluswap(filled_model, tmp_path):
    x = torch.randn(3, 3, SIZE, SIZE)
    conversion = convert(filled_model("torchvision:resnet18"), "convrelu", example_inputs=x, fallback="adarelu")
    randomize(conversion, low=-0.1, high=0.4)  # negative thresholds and slopes too
    export_pt2(conversion.model, x, tmp_path / "model.pt2")
    with torch.no_grad():
        torch.save({"x": x, "y": conversion.model(x)}, tmp_path / "io.pt")
    script = (
        "import sys, torch\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
        f"program = torch.export.load({str(tmp_path / 'model.pt2')!r})\n"
        "y = program.module()(io['x'])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('converters', 'reluswap', 'worker')]\n"
        "print(float((y - io['y']).abs().max()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) <= 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    conversion = convert(model, "pvlu", example_inputs=x)
    randomize(conversion, low=-0.1, high=0.4)  # negative thresholds and slopes too
    path = export_onnx(conversion.model, x, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return conversion.model, x, path


def test_verify_accepts_a_good_file(exported):
    model, x, path = exported
    report = verify_onnx(path, model, x)
    assert report.ok and report.custom_nodes == 17 and report.functions == ["PVLU"]
    assert report.max_rel_diff <= 1e-5
    assert all(c.classes_agree for c in report.checks)


def test_verify_reports_a_truncated_file(exported, tmp_path):
    model, x, path = exported
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    report = verify_onnx(broken, model, x)
    assert not report.ok and report.errors


def test_verify_reports_tampered_weights(exported, tmp_path):
    model, x, path = exported
    proto = onnx.load(path)
    target = next(i for i in proto.graph.initializer if i.name == "layer2.0.relu.alpha")
    values = onnx.numpy_helper.to_array(target).copy() + 0.3
    target.CopyFrom(onnx.numpy_helper.from_array(values, target.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, tampered)
    report = verify_onnx(tampered, model, x)
    assert not report.ok and "differ from PyTorch" in report.errors[-1]


def test_verify_reports_a_tampered_function_body(exported, tmp_path):
    model, x, path = exported
    proto = onnx.load(path)
    body = proto.functions[0]
    sin = next(n for n in body.node if n.op_type == "Sin")
    sin.op_type = "Cos"
    tampered = tmp_path / "body.onnx"
    onnx.save(proto, tampered)
    report = verify_onnx(tampered, model, x)
    assert not report.ok


def test_verify_reports_an_invalid_graph(exported, tmp_path):
    model, x, path = exported
    proto = onnx.load(path)
    proto.graph.node[3].input[0] = "no_such_tensor"
    tampered = tmp_path / "invalid.onnx"
    onnx.save(proto, tampered)
    report = verify_onnx(tampered, model, x)
    assert not report.ok and "checker" in report.errors[0]
