"""ConvReLU "patches": an exact CPU fast path as one autograd.Function (see convrelu.py for the formula).

    out[n,d,i,j] = bias[d] + sum_{c in group(d), ky, kx} W[d,c,ky,kx] * max(xpad[n,c,i*s+ky*dil,j*s+kx*dil], theta[c,ky,kx])

Forward, per chunk of output columns (a few images, or a band of output rows of one image):
  P = max(xpad patches, theta)      one strided gather + threshold pass (torch.maximum out= a buffer)
  out = W @ P + bias                one (grouped) GEMM, written straight into the output
Backward recomputes the patches per chunk instead of keeping them (saved: the padded input only; the
full patch tensor is kH*kW times the input and allocating it costs more than rebuilding it):
  Q = relu(xpad patches - theta)    P = theta + Q, so the mask x > theta is Q > 0
  gP = W^T @ gOut;  gPm = gP * (Q > 0)           (aten.threshold_backward in place: one fused pass)
  gW = sum gOut @ Q^T + gOut.sum() (x) theta      (the rank-1 term turns Q back into P)
  gtheta = W^T @ gOut.sum() - rowsum(gPm)         (rowsum(gP) = W^T @ rowsum(gOut): no extra pass)
  gx = the adjoint of the gather: kH*kW strided adds of gPm into gx, clipped to the unpadded input
Chunks keep every temporary a few MiB (in cache, and reused by the allocator instead of freshly
mapped pages), while a chunk still has enough columns for an efficient GEMM.

Ties (x == theta, including padded zeros with theta == 0): the whole gradient goes to theta and none
to x, the convention of torch.relu (relu'(0) = 0): the mask is x > theta strictly. torch.maximum's
autograd (the "unfold" reference) splits a tie half and half instead; away from ties they agree.
Low-precision inputs (bf16, fp16): the GEMMs accumulate as torch.mm does; gW, gtheta, gbias and gx
are summed in float32 across chunks and kernel positions, then cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

# Target size of one chunk's patch buffer. Small enough to stay in cache and below glibc's mmap
# threshold, large enough that a chunk's GEMM has a few hundred columns or more.
CHUNK_BYTES = 2 << 20
MIN_COLUMNS = 256


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class _Geometry:
    def __init__(self, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
        (self.sh, self.sw), (self.ph, self.pw), (self.dh, self.dw) = (
            _pair(stride),
            _pair(padding),
            _pair(dilation),
        )
        self.n, self.c, self.h, self.w = x.shape
        self.d, self.cg, self.kh, self.kw = weight.shape
        self.groups = groups
        if self.c != self.cg * groups or self.d % groups:
            raise ValueError(
                f"convrelu_patches: input has {self.c} channels, weight {tuple(weight.shape)}, groups {groups}"
            )
        self.ho = _out_size(self.h, self.kh, self.sh, self.ph, self.dh)
        self.wo = _out_size(self.w, self.kw, self.sw, self.pw, self.dw)
        if self.ho <= 0 or self.wo <= 0:
            raise ValueError(f"convrelu_patches: input {tuple(x.shape)} is smaller than the dilated kernel")
        self.kk = self.kh * self.kw
        self.k = self.c * self.kk  # rows of the patch matrix, ordered (c, ky, kx) like theta
        self.l = self.ho * self.wo

    def chunks(self, itemsize: int) -> list[tuple[int, int, int, int]]:
        """(n0, n1, i0, i1): images n0:n1 and output rows i0:i1; rows are split only when n1 - n0 == 1."""
        per_row = self.k * self.wo * itemsize
        rows = max(1, CHUNK_BYTES // per_row, -(-MIN_COLUMNS // self.wo))
        if rows < self.ho:
            band = -(-self.ho // -(-self.ho // rows))  # equal bands
            return [
                (n, n + 1, i, min(i + band, self.ho)) for n in range(self.n) for i in range(0, self.ho, band)
            ]
        images = max(1, rows // self.ho)
        return [(n, min(n + images, self.n), 0, self.ho) for n in range(0, self.n, images)]

    def patches(self, xp: Tensor, n0: int, n1: int, i0: int, i1: int) -> Tensor:
        """Strided view of xp, shape (C, kH, kW, n1 - n0, i1 - i0, Wo): no copy."""
        s_n, s_c, s_h, s_w = xp.stride()
        return xp.as_strided(
            (self.c, self.kh, self.kw, n1 - n0, i1 - i0, self.wo),
            (s_c, self.dh * s_h, self.dw * s_w, s_n, self.sh * s_h, self.sw * s_w),
            xp.storage_offset() + n0 * s_n + i0 * self.sh * s_h,
        )

    def tap_range(self, i0: int, i1: int, k: int, s: int, p: int, d: int, size: int) -> tuple[int, int]:
        """Output indices in [i0, i1) whose input index i*s + k*d - p lies inside [0, size)."""
        lo = max(i0, -(-(p - k * d) // s))
        hi = min(i1, (size - 1 + p - k * d) // s + 1)
        return lo, max(lo, hi)


def _gemm(w3: Tensor, cols: Tensor, out: Tensor, bias: Tensor | None) -> None:
    """out (D, M) = W (g, D/g, K/g) @ cols (K, M) per group [+ bias]; out may be column-strided."""
    g = w3.shape[0]
    if g == 1:
        if bias is None:
            torch.mm(w3[0], cols, out=out)
        else:
            torch.addmm(bias.unsqueeze(1), w3[0], cols, out=out)
        return
    res = torch.bmm(w3, cols.view(g, -1, cols.shape[1]))
    res = res.view(out.shape)
    if bias is not None:
        res = res.add_(bias.unsqueeze(1))
    out.copy_(res)


class ConvReLUPatchesFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, theta, stride, padding, dilation, groups):
        geo = _Geometry(x, weight, stride, padding, dilation, groups)
        xp = F.pad(x, (geo.pw, geo.pw, geo.ph, geo.ph)) if (geo.ph or geo.pw) else x
        w3 = weight.reshape(groups, geo.d // groups, geo.cg * geo.kk)
        th = theta.reshape(geo.c, geo.kh, geo.kw, 1, 1, 1)
        out = torch.empty((geo.n, geo.d, geo.ho, geo.wo), dtype=x.dtype, device=x.device)
        out_l = out.view(geo.n, geo.d, geo.l)
        buf = None
        for n0, n1, i0, i1 in geo.chunks(x.element_size()):
            m = (n1 - n0) * (i1 - i0) * geo.wo
            if buf is None or buf.numel() < geo.k * m:
                buf = torch.empty(geo.k * m, dtype=x.dtype, device=x.device)
            cols = buf[: geo.k * m].view(geo.c, geo.kh, geo.kw, n1 - n0, i1 - i0, geo.wo)
            torch.maximum(geo.patches(xp, n0, n1, i0, i1), th, out=cols)
            cols = cols.view(geo.k, m)
            if n1 - n0 == 1:
                _gemm(w3, cols, out_l[n0, :, i0 * geo.wo : i1 * geo.wo], bias)
            else:
                res = torch.empty((geo.d, m), dtype=x.dtype, device=x.device)
                _gemm(w3, cols, res, bias)
                out_l[n0:n1].transpose(0, 1).copy_(res.view(geo.d, n1 - n0, geo.l))
        ctx.geo = geo
        ctx.has_bias = bias is not None
        ctx.save_for_backward(xp, weight, theta)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xp, weight, theta = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        need_x, need_w, need_b, need_t = ctx.needs_input_grad[:4]
        need_b = need_b and ctx.has_bias
        gx = gw = gb = gt = None
        if not (need_x or need_w or need_b or need_t):
            return None, None, None, None, None, None, None, None
        dtype, device, g = xp.dtype, xp.device, geo.groups
        acc = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        grad_out = grad_out.contiguous()
        go_l = grad_out.view(geo.n, geo.d, geo.l)
        gsum = grad_out.sum((0, 2, 3), dtype=acc)  # (D,): gbias, and the theta terms of gW, gtheta
        if need_b:
            gb = gsum.to(dtype)
        if need_x or need_w or need_t:
            w3 = weight.reshape(g, geo.d // g, geo.cg * geo.kk)
            w3t = w3.transpose(1, 2)
            th_flat = theta.reshape(geo.k)
            th = theta.reshape(geo.c, geo.kh, geo.kw, 1, 1, 1)
            if need_w:
                gw_acc = torch.zeros((g, geo.d // g, geo.cg * geo.kk), dtype=acc, device=device)
            if need_t:
                gt_acc = torch.zeros(geo.k, dtype=acc, device=device)
            if need_x:
                gx_acc = torch.zeros((geo.n, geo.c, geo.h, geo.w), dtype=acc, device=device)
            need_mask = need_x or need_t
            qbuf = gbuf = None
            for n0, n1, i0, i1 in geo.chunks(xp.element_size()):
                nc, rows = n1 - n0, i1 - i0
                m = nc * rows * geo.wo
                if qbuf is None or qbuf.numel() < geo.k * m:
                    qbuf = torch.empty(geo.k * m, dtype=dtype, device=device)
                    gbuf = torch.empty(geo.k * m, dtype=dtype, device=device) if need_mask else None
                q = qbuf[: geo.k * m].view(geo.c, geo.kh, geo.kw, nc, rows, geo.wo)
                torch.sub(geo.patches(xp, n0, n1, i0, i1), th, out=q)
                q = q.relu_().view(geo.k, m)
                if nc == 1:
                    go = go_l[n0, :, i0 * geo.wo : i1 * geo.wo]
                else:
                    go = go_l[n0:n1].transpose(0, 1).reshape(geo.d, m)
                go3 = go.view(g, geo.d // g, m)
                if need_w:
                    if g == 1 and acc == dtype:
                        gw_acc[0].addmm_(go, q.t())
                    elif g == 1:
                        gw_acc[0].add_(torch.mm(go, q.t()))
                    else:
                        q3 = q.view(g, geo.cg * geo.kk, m).transpose(1, 2)
                        if acc == dtype:
                            gw_acc.baddbmm_(go3, q3)
                        else:
                            gw_acc.add_(torch.bmm(go3, q3))
                if not need_mask:
                    continue
                gp = gbuf[: geo.k * m].view(g, geo.cg * geo.kk, m)
                if g == 1:
                    torch.mm(w3t[0], go, out=gp[0])
                else:
                    torch.bmm(w3t, go3, out=gp)
                gp = gp.view(geo.k, m)
                torch.ops.aten.threshold_backward.grad_input(gp, q, 0, grad_input=gp)
                if need_t:
                    gt_acc.add_(gp.sum(1, dtype=acc))
                if need_x:
                    _scatter_add(
                        gx_acc, gp.view(geo.c, geo.kh, geo.kw, nc, rows, geo.wo), geo, n0, n1, i0, i1
                    )
            if need_w:
                # sum gOut @ P^T = sum gOut @ Q^T + gOut.sum() (x) theta, per group.
                gw_acc.add_(gsum.view(g, geo.d // g, 1) * th_flat.to(acc).view(g, 1, geo.cg * geo.kk))
                gw = gw_acc.to(dtype).view(weight.shape)
            if need_t:
                # rowsum(gP) = W^T @ rowsum(gOut); theta gets what the mask took away from x.
                total = torch.bmm(w3t.to(acc), gsum.view(g, geo.d // g, 1)).view(geo.k)
                gt = (total - gt_acc).to(dtype).view(theta.shape)
            if need_x:
                gx = gx_acc if acc == dtype else gx_acc.to(dtype)
        return gx, gw, gb, gt, None, None, None, None


def _scatter_add(gx: Tensor, gp: Tensor, geo: _Geometry, n0: int, n1: int, i0: int, i1: int) -> None:
    """gx[n0:n1] += the adjoint of geo.patches for output rows i0:i1, clipped to the unpadded input."""
    for ky in range(geo.kh):
        lo_i, hi_i = geo.tap_range(i0, i1, ky, geo.sh, geo.ph, geo.dh, geo.h)
        if lo_i >= hi_i:
            continue
        r0 = lo_i * geo.sh + ky * geo.dh - geo.ph
        r1 = (hi_i - 1) * geo.sh + ky * geo.dh - geo.ph + 1
        for kx in range(geo.kw):
            lo_j, hi_j = geo.tap_range(0, geo.wo, kx, geo.sw, geo.pw, geo.dw, geo.w)
            if lo_j >= hi_j:
                continue
            c0 = lo_j * geo.sw + kx * geo.dw - geo.pw
            c1 = (hi_j - 1) * geo.sw + kx * geo.dw - geo.pw + 1
            src = gp[:, ky, kx, :, lo_i - i0 : hi_i - i0, lo_j:hi_j].transpose(0, 1)
            gx[n0:n1, :, r0 : r1 : geo.sh, c0 : c1 : geo.sw].add_(src)


def convrelu_patches(x, weight, bias, theta, stride, padding, dilation, groups) -> Tensor:
    """Thresholded patches and one grouped GEMM per chunk, with a hand-written backward (4-D x)."""
    if not (x.dtype == weight.dtype == theta.dtype and (bias is None or bias.dtype == x.dtype)):
        raise TypeError("convrelu_patches: x, weight, bias and theta must have one dtype")
    return ConvReLUPatchesFunction.apply(x, weight, bias, theta, stride, padding, dilation, groups)


__all__ = ["CHUNK_BYTES", "ConvReLUPatchesFunction", "convrelu_patches"]
