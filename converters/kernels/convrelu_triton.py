"""Triton kernels for ConvReLU: implicit-GEMM convolutions that threshold input tiles as they load.

    out[n,d,i,j] = bias[d] + sum_{c in group(d), ky, kx} W[d,c,ky,kx] * max(xpad[n,c,i*s+ky*dil,j*s+kx*dil], theta[c,ky,kx])

Three kernels, each a GEMM whose "A" operand is the thresholded patch matrix, never materialised:
- forward:  rows = output pixels (n, i, j), columns = output channels of a group, reduction over
  (ky, kx, c): the x tile is loaded (zeros where the tap lands in the padding) and max'ed with theta.
- dgrad:    rows = padded input pixels, columns = input channels of a group, reduction over
  (ky, kx, d). Each (ky, kx) gives a partial gradient of the thresholded value; where x > theta it
  flows to x, elsewhere to theta (summed over the rows and added atomically). Padded pixels have
  x = 0 and feed theta only, which is why rows cover the padded extent.
- wgrad:    rows = output channels, columns = (c) at one (ky, kx), reduction over output pixels, split
  into SPLIT chunks whose partial sums are written (not accumulated) and added by the caller.

Gradient convention at ties (x == theta): the gradient goes to theta, as ReLU's goes nowhere at 0;
with theta = 0 the input gradient is exactly that of conv(relu(x)).

Strides of every tensor are passed, so NCHW and channels_last inputs both work (channels_last gives
coalesced loads along c). Offsets that scale with the batch are int64. Under TRITON_INTERPRET=1 the
kernels run on CPU tensors (one small config, no autotuning): that is how CI checks them.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Triton 3.8's interpreter multiplies bfloat16 tiles as raw bits (numpy has no bfloat16): there the
# operands are widened to float32 first. Compiled kernels feed 16-bit tiles to the tensor cores.
_WIDEN_DOT = tl.constexpr(INTERPRET)


def _configs(shapes: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    """(BM, BN, BK, warps, stages) tuples as Configs; a single small one under the interpreter."""
    if INTERPRET:
        return [triton.Config({"BM": 16, "BN": 16, "BK": 16}, num_warps=1, num_stages=1)]
    return [triton.Config({"BM": m, "BN": n, "BK": k}, num_warps=w, num_stages=s) for m, n, k, w, s in shapes]


# Tile shapes for H100/H200-class GPUs; the autotuner picks one per (shape, dtype) key.
_GEMM_SHAPES = [
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
    (128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (64, 64, 64, 4, 3), (32, 64, 32, 4, 4),
]
_KEY = ["M", "DG", "CG", "KH", "KW", "SH", "SW", "DH", "DW"]


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    if _WIDEN_DOT:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _split_rows(rm, HH, WW):
    """Row index of an (N, HH, WW) pixel grid -> (n as int64, row, column)."""
    return (rm // (WW * HH)).to(tl.int64), (rm // WW) % HH, rm % WW


@triton.jit
def _inside(ok, ih, iw, H, W):
    """Rows whose input pixel (ih, iw) lies in the unpadded image (elsewhere x reads as 0)."""
    return ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)


@triton.autotune(configs=_configs(_GEMM_SHAPES), key=_KEY)
@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, b_ptr, t_ptr, o_ptr,
    M, H, W, HO, WO, CG, DG,
    sxn, sxc, sxh, sxw,
    swd, swc, swy, swx,
    stc, sty, stx,
    son, soc, soh, sow,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    m_ok, n_ok = rm < M, rn < DG
    n, oh, ow = _split_rows(rm, HO, WO)
    x_row = x_ptr + n * sxn + (g * CG).to(tl.int64) * sxc
    w_col = w_ptr + (g * DG + rn).to(tl.int64) * swd
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    # One flat loop over (ky, kx, channel tile) so Triton can software-pipeline all of it; nested
    # loops would pipeline only the CG / BK iterations of each kernel position.
    c_tiles = tl.cdiv(CG, BK)
    for it in range(KH * KW * c_tiles):
        kk, c0 = it // c_tiles, (it % c_tiles) * BK
        ky, kx = kk // KW, kk % KW
        ih = oh * SH - PH + ky * DH
        iw = ow * SW - PW + kx * DW
        inside = _inside(m_ok, ih, iw, H, W)
        rc = c0 + tl.arange(0, BK)
        c_ok = rc < CG
        x = tl.load((x_row + ih * sxh + iw * sxw)[:, None] + rc[None, :] * sxc,
                    mask=inside[:, None] & c_ok[None, :], other=0.0)
        th = tl.load(t_ptr + (g * CG + rc) * stc + ky * sty + kx * stx, mask=c_ok, other=0.0)
        # Padded taps load 0 and become max(0, theta), as eq. 8 says; columns past CG stay 0.
        a = tl.where(c_ok[None, :], tl.maximum(x, th[None, :].to(x.dtype)), 0.0).to(x.dtype)
        wt = tl.load(w_col[None, :] + rc[:, None] * swc + ky * swy + kx * swx,
                     mask=c_ok[:, None] & n_ok[None, :], other=0.0).to(x.dtype)
        acc = _dot(a, wt, acc, PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + g * DG + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    o = o_ptr + n[:, None] * son + (g * DG + rn)[None, :].to(tl.int64) * soc + (oh * soh + ow * sow)[:, None]
    tl.store(o, acc.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=_configs(_GEMM_SHAPES), key=_KEY, reset_to_zero=["gt_ptr"])
@triton.jit
def _dgrad_kernel(
    g_ptr, x_ptr, w_ptr, t_ptr, gx_ptr, gt_ptr,
    M, H, W, HP, WP, HO, WO, CG, DG,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    swd, swc, swy, swx,
    stc, sty, stx,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    NEED_X: tl.constexpr, NEED_THETA: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # Rows: padded input pixels (n, ip, jp), M = N * HP * WP. Columns: input channels of group g.
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rc = pid_n * BN + tl.arange(0, BN)
    m_ok, c_ok = rm < M, rc < CG
    n, ip, jp = _split_rows(rm, HP, WP)
    ih, iw = ip - PH, jp - PW
    inside = _inside(m_ok, ih, iw, H, W)
    cx = (g * CG + rc).to(tl.int64)
    x_at = x_ptr + n[:, None] * sxn + cx[None, :] * sxc + (ih * sxh + iw * sxw)[:, None]
    x = tl.load(x_at, mask=inside[:, None] & c_ok[None, :], other=0.0)  # 0 in the padding
    g_row = g_ptr + n * sgn + (g * DG).to(tl.int64) * sgc
    gx = tl.zeros((BM, BN), dtype=tl.float32)
    for kk in range(KH * KW):
        ky, kx = kk // KW, kk % KW
        # The output pixel whose tap (ky, kx) reads this padded pixel, if the stride lands on it.
        ty, tx = ip - ky * DH, jp - kx * DW
        oh, ow = ty // SH, tx // SW
        hit = m_ok & (ty >= 0) & (tx >= 0) & (ty % SH == 0) & (tx % SW == 0) & (oh < HO) & (ow < WO)
        g_pix = g_row + oh * sgh + ow * sgw
        part = tl.zeros((BM, BN), dtype=tl.float32)
        for d0 in range(0, DG, BK):
            rd = d0 + tl.arange(0, BK)
            d_ok = rd < DG
            go = tl.load(g_pix[:, None] + rd[None, :] * sgc, mask=hit[:, None] & d_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + (g * DG + rd)[:, None].to(tl.int64) * swd + rc[None, :] * swc + ky * swy + kx * swx,
                         mask=d_ok[:, None] & c_ok[None, :], other=0.0).to(go.dtype)
            part = _dot(go, wt, part, PRECISION)
        th = tl.load(t_ptr + (g * CG + rc) * stc + ky * sty + kx * stx, mask=c_ok, other=0.0)
        active = x > th[None, :].to(x.dtype)
        if NEED_X:
            gx += tl.where(active, part, 0.0)
        if NEED_THETA:
            # Rows that no output reads have part == 0 (their loads were masked).
            gth = tl.sum(tl.where(active, 0.0, part), axis=0)
            tl.atomic_add(gt_ptr + (g * CG + rc) * (KH * KW) + kk, gth, mask=c_ok)
    if NEED_X:
        # gx is contiguous NCHW-or-channels_last like x: same strides.
        gx_at = gx_ptr + n[:, None] * sxn + cx[None, :] * sxc + (ih * sxh + iw * sxw)[:, None]
        tl.store(gx_at, gx.to(gx_ptr.dtype.element_ty), mask=inside[:, None] & c_ok[None, :])


@triton.autotune(configs=_configs(_GEMM_SHAPES), key=_KEY + ["SPLIT"])
@triton.jit
def _wgrad_kernel(
    g_ptr, x_ptr, t_ptr, gw_ptr,
    M, H, W, HO, WO, CG, DG, M_PER_SPLIT, S_SPLIT, SPLIT,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    stc, sty, stx,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # Output tile: BM output channels x BN input channels at one (ky, kx); reduction over output
    # pixels [split * M_PER_SPLIT, +M_PER_SPLIT) in chunks of BK. gw is (SPLIT, D, CG, KH, KW) fp32.
    pid_d, pid_k, pid_gs = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g, split = pid_gs // SPLIT, pid_gs % SPLIT
    c_tiles = tl.cdiv(CG, BN)
    kk, ct = pid_k // c_tiles, pid_k % c_tiles
    ky, kx = kk // KW, kk % KW
    rd = pid_d * BM + tl.arange(0, BM)
    rc = ct * BN + tl.arange(0, BN)
    d_ok, c_ok = rd < DG, rc < CG
    th = tl.load(t_ptr + (g * CG + rc) * stc + ky * sty + kx * stx, mask=c_ok, other=0.0)
    cx = (g * CG + rc).to(tl.int64)
    dg = (g * DG + rd).to(tl.int64)
    m_start = split * M_PER_SPLIT
    m_end = tl.minimum(M, m_start + M_PER_SPLIT)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for m0 in range(m_start, m_end, BK):
        rm = m0 + tl.arange(0, BK)
        m_ok = rm < m_end
        n, oh, ow = _split_rows(rm, HO, WO)
        ih = oh * SH - PH + ky * DH
        iw = ow * SW - PW + kx * DW
        inside = _inside(m_ok, ih, iw, H, W)
        x = tl.load(x_ptr + (n * sxn + ih * sxh + iw * sxw)[:, None] + cx[None, :] * sxc,
                    mask=inside[:, None] & c_ok[None, :], other=0.0)
        a = tl.where(m_ok[:, None], tl.maximum(x, th[None, :].to(x.dtype)), 0.0).to(x.dtype)
        go = tl.load(g_ptr + (n * sgn + oh * sgh + ow * sgw)[:, None] + dg[None, :] * sgc,
                     mask=m_ok[:, None] & d_ok[None, :], other=0.0).to(x.dtype)
        acc = _dot(tl.trans(go), a, acc, PRECISION)
    # gw[split, g*DG + d, c, ky, kx]; S_SPLIT = D * CG * KH * KW
    gw_at = gw_ptr + split.to(tl.int64) * S_SPLIT + dg[:, None] * (CG * KH * KW) + rc[None, :] * (KH * KW) + kk
    tl.store(gw_at, acc, mask=d_ok[:, None] & c_ok[None, :])
