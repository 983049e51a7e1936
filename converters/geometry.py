"""Convolution geometry, written once for every ConvReLU form, the kernels and the ONNX export."""

from __future__ import annotations


def conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's and ONNX's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
