"""The Triton ConvReLU kernels compile for Hopper (sm_90) down to ptxas, on a machine without a GPU.

The interpreter tests (test_convrelu_fused.py) check the arithmetic; this checks the compiled path CI
cannot run: every kernel, bf16 and fp32, builds and uses tensor-core MMA instructions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


def test_kernels_compile_for_sm90_with_tensor_cores(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, not from a cache
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "converters" / "triton_aot.py"), "--arch", "90"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    built = {(r["kernel"], r["dtype"]) for r in rows}
    assert built == {(k, d) for k in ("_fwd_kernel", "_dgrad_kernel", "_wgrad_kernel") for d in ("bf16", "fp32")}
    assert all(r["tensor_cores"] and r["cubin_bytes"] > 0 for r in rows), rows
    assert all(r["shared_bytes"] <= 227 * 1024 for r in rows), rows  # H100's shared memory per block
