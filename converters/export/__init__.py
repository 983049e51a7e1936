"""ONNX export with custom ops, its verification, and the torch.export artifact."""

from .functions import DOMAIN, VERSION, function_proto
from .onnx_export import export_onnx, inline, to_onnx
from .pt2 import export_pt2
from .verify import VerifyReport, verify_onnx

__all__ = ["DOMAIN", "VERSION", "VerifyReport", "export_onnx", "export_pt2", "function_proto", "inline", "to_onnx", "verify_onnx"]
