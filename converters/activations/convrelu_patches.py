"""ConvReLU "patches": an exact CPU fast path as one autograd.Function (see convrelu.py for the formula).

    out[n,d,i,j] = bias[d] + sum_{c in group(d), ky, kx} W[d,c,ky,kx] * max(xpad[n,c,i*s+ky*dil,j*s+kx*dil], theta[c,ky,kx])

Forward, per chunk of output positions (a few whole images, or a band of output rows of one image):
  P = max(xpad patches, theta)      one strided gather + threshold pass (torch.maximum out= a buffer)
  out = W @ P + bias                one (grouped) GEMM, written straight into the output
Backward recomputes the patches per chunk instead of keeping them (saved: the padded input only; the
full patch tensor is kH*kW times the input and allocating it costs more than rebuilding it):
  Q = relu(xpad patches - theta)    P = theta + Q, so the mask x > theta is Q > 0
  gP = W^T @ gOut;  gPm = gP * (Q > 0)           (aten.threshold_backward in place: one fused pass)
  gW = sum gOut @ Q^T + gOut.sum() (x) theta      (the rank-1 term turns Q back into P)
  gtheta = W^T @ gOut.sum() - rowsum(gPm)         (= the sum of gP where x <= theta; rowsum(gP) is
                                                   W^T @ rowsum(gOut), so it needs no pass over gP)
  gx = the adjoint of the gather: kH*kW strided adds of gPm into gx, clipped to the unpadded input
Chunks keep every temporary a few MiB (in cache, and reused by the allocator instead of freshly
mapped pages) while a chunk's GEMM still has hundreds of columns.

Two chunk layouts, same arithmetic:
- "nchw": P is (C*kH*kW, positions), rows ordered (c, ky, kx) like theta; the gather's inner loop runs
  along an output row (Wo elements). Any groups.
- "nhwc": P is (positions, kH*kW*C) from a channels-last copy of the padded input; the inner loop runs
  along C (and kx when dilation is 1), which is much faster when rows are short (late stages), and the
  natural one for channels_last inputs. groups == 1 only.
LAYOUT = "auto" picks nhwc when groups == 1 and (x is channels_last or C >= 2 * Wo), else nchw.

Ties (x == theta, including padded zeros with theta == 0): the whole gradient goes to theta and none
to x, the convention of torch.relu (relu'(0) = 0): the mask is x > theta strictly. torch.maximum's
autograd (the "unfold" reference) splits a tie half and half instead; away from ties they agree.
Low-precision inputs (bf16, fp16): the GEMMs accumulate as torch.mm does; gW, gtheta, gbias and gx
are summed in float32 across chunks and kernel positions, then cast back.
The output (and gx) are channels_last when x is, else contiguous, like Conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from converters.geometry import conv_out_size

# Target size of one chunk's patch buffer per thread (torch.get_num_threads(), at most 8 counted):
# small enough to stay in cache and below glibc's mmap threshold; a chunk has at least MIN_POSITIONS
# output positions (GEMM columns) per thread all the same. Each elementwise op on a chunk is split
# across the threads, so the per-thread working set stays the same and there are fewer parallel regions.
CHUNK_BYTES = 2 << 20
MIN_POSITIONS = 512
LAYOUT = "auto"  # "auto", "nchw" or "nhwc" (nhwc needs groups == 1; else nchw is used)


def _is_channels_last(x: Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _Geometry:
    def __init__(self, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
        (self.sh, self.sw), (self.ph, self.pw) = _pair(stride), _pair(padding)
        self.dh, self.dw = _pair(dilation)
        self.n, self.c, self.h, self.w = x.shape
        self.d, self.cg, self.kh, self.kw = weight.shape
        self.groups = groups
        if self.c != self.cg * groups or self.d % groups:
            raise ValueError(
                f"convrelu_patches: input has {self.c} channels, weight {tuple(weight.shape)}, groups {groups}"
            )
        self.ho = conv_out_size(self.h, self.kh, self.sh, self.ph, self.dh)
        self.wo = conv_out_size(self.w, self.kw, self.sw, self.pw, self.dw)
        if self.ho <= 0 or self.wo <= 0:
            raise ValueError(f"convrelu_patches: input {tuple(x.shape)} is smaller than the dilated kernel")
        self.kk = self.kh * self.kw
        self.k = self.c * self.kk  # patch length
        self.l = self.ho * self.wo
        self.channels_last_io = _is_channels_last(x)
        if LAYOUT not in ("auto", "nchw", "nhwc"):
            raise ValueError(f"convrelu_patches.LAYOUT must be auto, nchw or nhwc, got {LAYOUT!r}")
        auto = self.channels_last_io or self.c >= 2 * self.wo
        self.nhwc = groups == 1 and (LAYOUT == "nhwc" or (LAYOUT == "auto" and auto))

    def chunks(self, itemsize: int) -> list[tuple[int, int, int, int]]:
        """(n0, n1, i0, i1): images n0:n1 and output rows i0:i1; rows are split only when n1 - n0 == 1."""
        threads = max(1, min(torch.get_num_threads(), 8))
        per_row = self.k * self.wo * itemsize
        rows = max(1, CHUNK_BYTES * threads // per_row, -(-MIN_POSITIONS * threads // self.wo))
        if rows < self.ho:
            band = -(-self.ho // -(-self.ho // rows))  # equal bands
            return [
                (n, n + 1, i, min(i + band, self.ho)) for n in range(self.n) for i in range(0, self.ho, band)
            ]
        images = max(1, rows // self.ho)
        return [(n, min(n + images, self.n), 0, self.ho) for n in range(0, self.n, images)]

    def padded_input(self, x: Tensor) -> Tensor:
        """xpad, contiguous: (N, C, Hp, Wp) for nchw, (N, Hp, Wp, C) for nhwc."""
        if self.nhwc:
            if not (self.ph or self.pw):
                return x.permute(0, 2, 3, 1).contiguous()  # a view when x is channels_last
            ph, pw = self.ph, self.pw
            xp = x.new_empty((self.n, self.h + 2 * ph, self.w + 2 * pw, self.c))
            for border in (
                xp[:, :ph],
                xp[:, ph + self.h :],
                xp[:, ph : ph + self.h, :pw],
                xp[:, ph : ph + self.h, pw + self.w :],
            ):
                border.zero_()
            xp[:, ph : ph + self.h, pw : pw + self.w].copy_(x.permute(0, 2, 3, 1))
            return xp
        xp = F.pad(x, (self.pw, self.pw, self.ph, self.ph)) if (self.ph or self.pw) else x
        return xp.contiguous()

    def chunk_shape(self, nc: int, rows: int) -> tuple[int, ...]:
        if self.nhwc:
            return (nc, rows, self.wo, self.kh, self.kw, self.c)
        return (self.c, self.kh, self.kw, nc, rows, self.wo)

    def theta_view(self, theta: Tensor) -> Tensor:
        """theta broadcastable against chunk_shape."""
        if self.nhwc:
            return theta.permute(1, 2, 0).contiguous()  # (kH, kW, C): C innermost, like the patches
        return theta.reshape(self.c, self.kh, self.kw, 1, 1, 1)

    def patches(self, xp: Tensor, n0: int, n1: int, i0: int, i1: int) -> Tensor:
        """Strided view of padded_input(x) of shape chunk_shape(n1 - n0, i1 - i0): no copy."""
        if self.nhwc:
            s_n, s_h, s_w, s_c = xp.stride()
            size = (n1 - n0, i1 - i0, self.wo, self.kh, self.kw, self.c)
            stride = (s_n, self.sh * s_h, self.sw * s_w, self.dh * s_h, self.dw * s_w, s_c)
        else:
            s_n, s_c, s_h, s_w = xp.stride()
            size = (self.c, self.kh, self.kw, n1 - n0, i1 - i0, self.wo)
            stride = (s_c, self.dh * s_h, self.dw * s_w, s_n, self.sh * s_h, self.sw * s_w)
        return xp.as_strided(size, stride, xp.storage_offset() + n0 * s_n + i0 * self.sh * s_h)

    def tap_range(self, i0: int, i1: int, k: int, s: int, p: int, d: int, size: int) -> tuple[int, int]:
        """Output indices in [i0, i1) whose input index i*s + k*d - p lies inside [0, size)."""
        lo = max(i0, -(-(p - k * d) // s))
        hi = min(i1, (size - 1 + p - k * d) // s + 1)
        return lo, max(lo, hi)

    def scatter_plan(self, nc: int, i0: int, i1: int) -> list[tuple]:
        """The strided adds that scatter a chunk's patch gradient into a contiguous gx buffer:
        (N, C, H, W) for nchw, (N, H, W, C) for nhwc.

        One (size, dst_stride, dst_offset, src_stride, src_offset) per kernel position that reads
        the unpadded input; dst_offset is relative to image n0; the source is the chunk's contiguous
        buffer of shape chunk_shape(nc, i1 - i0). Clipping keeps the padding out."""
        rows = i1 - i0
        plan = []
        for ky in range(self.kh):
            lo_i, hi_i = self.tap_range(i0, i1, ky, self.sh, self.ph, self.dh, self.h)
            for kx in range(self.kw):
                lo_j, hi_j = self.tap_range(0, self.wo, kx, self.sw, self.pw, self.dw, self.w)
                if lo_i >= hi_i or lo_j >= hi_j:
                    continue
                r0, c0 = lo_i * self.sh + ky * self.dh - self.ph, lo_j * self.sw + kx * self.dw - self.pw
                tap = ky * self.kw + kx
                if self.nhwc:
                    g_n, g_h, g_w = self.h * self.w * self.c, self.w * self.c, self.c
                    size = (nc, hi_i - lo_i, hi_j - lo_j, self.c)
                    dst = ((g_n, self.sh * g_h, self.sw * g_w, 1), r0 * g_h + c0 * g_w)
                    k = self.k
                    src = (
                        (rows * self.wo * k, self.wo * k, k, 1),
                        ((lo_i - i0) * self.wo + lo_j) * k + tap * self.c,
                    )
                else:
                    g_n, g_c, g_h = self.c * self.h * self.w, self.h * self.w, self.w
                    size = (nc, self.c, hi_i - lo_i, hi_j - lo_j)
                    dst = ((g_n, g_c, self.sh * g_h, self.sw), r0 * g_h + c0)
                    p_tap, p_c = nc * rows * self.wo, self.kk * nc * rows * self.wo
                    src = ((rows * self.wo, p_c, self.wo, 1), tap * p_tap + (lo_i - i0) * self.wo + lo_j)
                plan.append((size, *dst, *src))
        return plan

    def to_input_layout(self, t: Tensor) -> Tensor:
        """An (N, C, H, W) result: channels_last if x was, else contiguous."""
        fmt = torch.channels_last if self.channels_last_io else torch.contiguous_format
        return t.contiguous(memory_format=fmt)


class ConvReLUPatchesFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, theta, stride, padding, dilation, groups):
        geo = _Geometry(x, weight, stride, padding, dilation, groups)
        xp = geo.padded_input(x)
        g, dg, kg = groups, geo.d // groups, geo.cg * geo.kk
        th = geo.theta_view(theta)
        # The weight as (groups, D/g, patch length) in the patch order: (c, ky, kx) for nchw (a view),
        # (ky, kx, c) for nhwc (a copy, kept for backward in place of the weight).
        if geo.nhwc:
            wmat = weight.permute(0, 2, 3, 1).reshape(1, geo.d, geo.k)
        else:
            wmat = weight.reshape(g, dg, kg)
        bias_col = None if bias is None else bias.unsqueeze(1)
        chunks = geo.chunks(x.element_size())
        m_max = max(((n1 - n0) * (i1 - i0) * geo.wo for n0, n1, i0, i1 in chunks), default=0)
        buf = torch.empty(geo.k * m_max, dtype=x.dtype, device=x.device)
        if geo.nhwc:
            wt = wmat[0].t()  # (K, D)
            out = torch.empty((geo.n, geo.ho, geo.wo, geo.d), dtype=x.dtype, device=x.device)
            out_rows = out.view(geo.n * geo.l, geo.d)
            for n0, n1, i0, i1 in chunks:
                nc, rows = n1 - n0, i1 - i0
                m = nc * rows * geo.wo
                cols = buf[: geo.k * m]
                torch.maximum(geo.patches(xp, n0, n1, i0, i1), th, out=cols.view(geo.chunk_shape(nc, rows)))
                start = n0 * geo.l + i0 * geo.wo  # a chunk's output rows are contiguous
                res = out_rows[start : start + m]
                if bias is None:
                    torch.mm(cols.view(m, geo.k), wt, out=res)
                else:
                    torch.addmm(bias, cols.view(m, geo.k), wt, out=res)
            out = geo.to_input_layout(out.permute(0, 3, 1, 2))
        else:
            w3 = wmat
            out = torch.empty((geo.n, geo.d, geo.ho, geo.wo), dtype=x.dtype, device=x.device)
            out_l = out.view(geo.n, geo.d, geo.l)
            res_buf = None
            for n0, n1, i0, i1 in chunks:
                nc, rows = n1 - n0, i1 - i0
                m = nc * rows * geo.wo
                cols = buf[: geo.k * m]
                torch.maximum(geo.patches(xp, n0, n1, i0, i1), th, out=cols.view(geo.chunk_shape(nc, rows)))
                cols = cols.view(geo.k, m)
                if nc == 1:  # straight into the output: (D, rows * Wo) with row stride L
                    res = out_l[n0, :, i0 * geo.wo : i1 * geo.wo]
                else:  # columns ordered (image, position): into a buffer, then transposed into place
                    if res_buf is None:
                        res_buf = torch.empty(geo.d * m_max, dtype=x.dtype, device=x.device)
                    res = res_buf[: geo.d * m].view(geo.d, m)
                if g == 1 and bias is None:
                    torch.mm(w3[0], cols, out=res)
                elif g == 1:
                    torch.addmm(bias_col, w3[0], cols, out=res)
                else:
                    torch.bmm(w3, cols.view(g, kg, m), out=res.view(g, dg, m))
                    if bias is not None:
                        res.add_(bias_col)
                if nc > 1:
                    out_l[n0:n1].transpose(0, 1).copy_(res.view(geo.d, nc, geo.l))
            out = geo.to_input_layout(out)
        ctx.geo = geo
        ctx.has_bias = bias is not None
        ctx.weight_shape = weight.shape
        ctx.save_for_backward(xp, wmat, theta)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xp, wm, theta = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        need_x, need_w, need_b, need_t = ctx.needs_input_grad[:4]
        need_b = need_b and ctx.has_bias
        gx = gw = gb = gt = None
        dtype, device, g = xp.dtype, xp.device, geo.groups
        dg, kg = geo.d // g, geo.cg * geo.kk
        acc = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        if geo.nhwc:  # (N*L, D) rows; a view when grad_out is channels_last
            go_all = grad_out.permute(0, 2, 3, 1).reshape(geo.n * geo.l, geo.d)
            gsum = go_all.sum(0, dtype=acc)
        else:  # (N, D, L)
            go_all = grad_out.contiguous().view(geo.n, geo.d, geo.l)
            gsum = go_all.sum((0, 2), dtype=acc)
        # gsum (D,): gbias, and the theta terms of gW and gtheta.
        if need_b:
            gb = gsum.to(dtype)
        if not (need_x or need_w or need_t):
            return gx, gw, gb, gt, None, None, None, None
        th = geo.theta_view(theta)
        th_flat = th.reshape(g, 1, kg)  # in the patch order
        need_mask = need_x or need_t
        if need_w:
            # sum gOut @ P^T = sum gOut @ Q^T + gOut.sum() (x) theta, per group: start from the latter.
            gw_acc = gsum.view(g, dg, 1) * th_flat.to(acc)
            gw_acc0 = gw_acc[0]
        chunks = geo.chunks(xp.element_size())
        if need_t:
            gt_parts = torch.empty((len(chunks), geo.k), dtype=acc, device=device)
        if need_x:
            gx_shape = (geo.n, geo.h, geo.w, geo.c) if geo.nhwc else (geo.n, geo.c, geo.h, geo.w)
            gx_acc = torch.zeros(gx_shape, dtype=acc, device=device)
            plans: dict[tuple[int, int, int], list[tuple]] = {}
            image_stride = geo.c * geo.h * geo.w
        m_max = max(((n1 - n0) * (i1 - i0) * geo.wo for n0, n1, i0, i1 in chunks), default=0)
        qbuf = torch.empty(geo.k * m_max, dtype=dtype, device=device)
        gbuf = torch.empty(geo.k * m_max, dtype=dtype, device=device) if need_mask else None
        for index, (n0, n1, i0, i1) in enumerate(chunks):
            nc, rows = n1 - n0, i1 - i0
            m = nc * rows * geo.wo
            # Q = relu(patches - theta) = P - theta; Q > 0 exactly where x > theta.
            q = qbuf[: geo.k * m]
            torch.sub(geo.patches(xp, n0, n1, i0, i1), th, out=q.view(geo.chunk_shape(nc, rows)))
            q.relu_()
            gp = gbuf[: geo.k * m] if need_mask else None
            if geo.nhwc:  # q, gp: (m, K); go: (m, D)
                q = q.view(m, geo.k)
                start = n0 * geo.l + i0 * geo.wo
                go = go_all[start : start + m]
                if need_w and acc == dtype:
                    gw_acc0.addmm_(go.t(), q)
                elif need_w:
                    gw_acc0.add_(torch.mm(go.t(), q))
                if need_mask:
                    gp = gp.view(m, geo.k)
                    torch.mm(go, wm[0], out=gp)
            else:  # q, gp: (K, m); go: (D, m)
                q = q.view(geo.k, m)
                if nc == 1:
                    go = go_all[n0, :, i0 * geo.wo : i1 * geo.wo]
                else:
                    go = go_all[n0:n1].transpose(0, 1).reshape(geo.d, m)
                if need_w:
                    if g == 1 and acc == dtype:
                        gw_acc0.addmm_(go, q.t())
                    elif g == 1:
                        gw_acc0.add_(torch.mm(go, q.t()))
                    elif acc == dtype:
                        gw_acc.baddbmm_(go.view(g, dg, m), q.view(g, kg, m).transpose(1, 2))
                    else:
                        gw_acc.add_(torch.bmm(go.view(g, dg, m), q.view(g, kg, m).transpose(1, 2)))
                if need_mask:
                    gp = gp.view(geo.k, m)
                    if g == 1:
                        torch.mm(wm[0].t(), go, out=gp)
                    else:
                        torch.bmm(wm.transpose(1, 2), go.view(g, dg, m), out=gp.view(g, kg, m))
            if not need_mask:
                continue
            torch.ops.aten.threshold_backward.grad_input(gp, q, 0, grad_input=gp)  # gP * (x > theta)
            if need_t:
                torch.sum(gp, 0 if geo.nhwc else 1, dtype=acc, out=gt_parts[index])
            if need_x:
                plan = plans.get((nc, i0, i1))
                if plan is None:
                    plan = plans[(nc, i0, i1)] = geo.scatter_plan(nc, i0, i1)
                base = n0 * image_stride
                for size, dst_stride, dst_offset, src_stride, src_offset in plan:
                    gx_acc.as_strided(size, dst_stride, base + dst_offset).add_(
                        gp.as_strided(size, src_stride, src_offset)
                    )
        if need_w:
            gw = gw_acc.to(dtype)
            if geo.nhwc:
                gw = gw.view(geo.d, geo.kh, geo.kw, geo.c).permute(0, 3, 1, 2)
            gw = gw.reshape(ctx.weight_shape).contiguous()
        if need_t:
            # theta gets what the mask took from x: rowsum(gP) - rowsum(gP * mask), where
            # rowsum(gP) = W^T @ rowsum(gOut) needs no pass over gP.
            total = torch.bmm(gsum.view(g, 1, dg), wm.to(acc)).view(geo.k)
            gt = (total - gt_parts.sum(0)).to(dtype)
            if geo.nhwc:
                gt = gt.view(geo.kh, geo.kw, geo.c).permute(2, 0, 1)
            gt = gt.reshape(theta.shape).contiguous()
        if need_x:
            gx = gx_acc.to(dtype)
            gx = geo.to_input_layout(gx.permute(0, 3, 1, 2) if geo.nhwc else gx)
        return gx, gw, gb, gt, None, None, None, None


def convrelu_patches(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """Thresholded patches and one grouped GEMM per chunk, with a hand-written backward (4-D x)."""
    if not (x.dtype == weight.dtype == theta.dtype and (bias is None or bias.dtype == x.dtype)):
        raise TypeError("convrelu_patches: x, weight, bias and theta must have one dtype")
    return ConvReLUPatchesFunction.apply(x, weight, bias, theta, stride, padding, dilation, groups)


__all__ = ["CHUNK_BYTES", "LAYOUT", "MIN_POSITIONS", "ConvReLUPatchesFunction", "convrelu_patches"]
