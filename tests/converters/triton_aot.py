"""Compile the ConvReLU Triton kernels ahead of time for a GPU architecture, without a GPU.

    python tests/converters/triton_aot.py [--arch 90]    # prints one JSON line per kernel and dtype

The interpreter (TRITON_INTERPRET=1) checks what the kernels compute but not that they compile:
this runs Triton's real pipeline down to ptxas, so type errors, unsupported ops and layout problems
surface in CI, which has no GPU. Must run without TRITON_INTERPRET (the kernels would be interpreted).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from converters.kernels import convrelu_triton as kernels

# A resnet50-like 3x3 geometry and the largest tile shape in the autotuning list.
GEOMETRY = dict(KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, DH=1, DW=1, BM=128, BN=128, BK=32)
FP32_OUTPUTS = {"gt_ptr", "gw_ptr"}  # accumulators kept in float32 whatever the input dtype


def compile_kernel(autotuner, dtype: str, flags: dict, target: GPUTarget) -> dict:
    fn = autotuner.fn
    constexprs = {**GEOMETRY, **flags, "PRECISION": "tf32" if dtype == "fp32" else "ieee"}
    signature = {}
    for p in fn.params:
        if p.name in constexprs:
            signature[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            signature[p.name] = "*fp32" if p.name in FP32_OUTPUTS else f"*{dtype}"
        else:
            signature[p.name] = "i32"
    started = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, signature, {k: v for k, v in constexprs.items() if k in signature}),
                              target=target, options={"num_warps": 8, "num_stages": 3})
    ptx = compiled.asm["ptx"]
    return {"kernel": fn.__name__, "dtype": dtype, "seconds": round(time.perf_counter() - started, 2),
            "cubin_bytes": len(compiled.asm["cubin"]), "shared_bytes": compiled.metadata.shared,
            "tensor_cores": "wgmma" in ptx or "mma.sync" in ptx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    args = parser.parse_args()
    if kernels.INTERPRET:
        raise SystemExit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    target = GPUTarget("cuda", args.arch, 32)
    for dtype in ("bf16", "fp32"):
        for kernel, flags in [(kernels._fwd_kernel, {"HAS_BIAS": True}),
                              (kernels._dgrad_kernel, {"NEED_X": True, "NEED_THETA": True}),
                              (kernels._wgrad_kernel, {})]:
            print(json.dumps(compile_kernel(kernel, dtype, flags, target)), flush=True)


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    main()
