"""The "fused" Monarch plan: each pass's two stages and its permutation in one Triton kernel.

Notation as in ``monarch_kernels``: tokens ``T``, ``b`` blocks, w1 (b, q, p), w2 (b, s, q),
x (T, b·p), the middle in grouped order m (T, b, q) with m[t, l, r] = h[t, r·b + l], and
y (T, b·s) with y[t, s'·b + l] = Σ_r m[t, l, r]·w2[l, s', r]. Write c = q/b (b must divide q).

One program owns a tile of BT tokens and runs, for those rows, what the copy plan runs as
five launches over the whole activation:

forward (``forward_kernel``)
    1. stage 1, block k: m[t, l, k·c + r'] = Σ_p x[t, k·p + p]·w1[k, r'·b + l, p] — w1's rows
       are read in "fold" order (l, r'), so each output column lands in the grouped middle;
    2. stage 2, block l: yg[t, l, s'] = Σ_r m[t, l, r]·w2[l, s', r] (contiguous rows);
    3. P2: y[t, s'·b + l] = yg[t, l, s'], a (BT, b, BS) tile transposed in registers.
backward of the data path (``backward_kernel``)
    1. P2ᵀ: dyg[t, l, s'] = dy[t, s'·b + l];
    2. stage 2ᵀ, block l: dm[t, l, r] = Σ_s' dyg[t, l, s']·w2[l, s', r];
    3. stage 1ᵀ, block k: dhf[t, k·q + l·c + r'] = dm[t, l, k·c + r'] (the middle gradient in
       fold order, stored for dw1) and dx[t, k·p + p] = Σ_j dhf[t, k·q + j]·w1[k, row(j), p].
Steps of one program are ordered by a CTA barrier; each step re-reads what the previous step
of the same program just wrote, so those reads come from L2. The weight gradients
(dw2 = dygᵀ·m, dw1 from dhfᵀ·x) are one cuBLAS batched GEMM each (``fused_weight_grads``).

HBM traffic of a forward+backward in activations of T·n elements: forward x, m, yg, y (4);
backward dy, dyg, dm, dhf, dx (5); weight gradients 4: 13 against the copy plan's 20.
Applies where b, p, q, s are powers of two, p, q, s >= 16 and b divides q (``can_fuse``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def can_fuse(b: int, p: int, q: int, s: int) -> bool:
    """Whether the fused kernels apply: powers of two, tiles of >= 16 and b | q."""
    def pow2(v: int) -> bool:
        return v > 0 and v & (v - 1) == 0
    return all(pow2(v) for v in (b, p, q, s)) and min(p, q, s) >= 16 and q % b == 0


def fused_config(b: int, p: int, q: int, s: int, overrides: dict | None = None) -> dict:
    """Tiles: BT tokens per program, BN output columns and BK reduction per ``tl.dot``, BS
    output features per P2 transpose step (BS·b elements per row)."""
    cfg = {"BT": 64, "BN": min(128, q, s, p), "BK": min(64, p, q, s),
           "BS": max(1, min(s, 2048 // b)), "num_warps": 4, "num_stages": 3}
    cfg.update(overrides or {})
    return cfg


@triton.jit
def forward_kernel(x_ptr, w1_ptr, w2_ptr, m_ptr, yg_ptr, y_ptr, T,
                   B: tl.constexpr, P: tl.constexpr, Q: tl.constexpr, S: tl.constexpr,
                   BT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BS: tl.constexpr):
    C: tl.constexpr = Q // B
    rt = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    t_ok = rt[:, None] < T
    x_row = x_ptr + rt[:, None] * (B * P)
    m_row = m_ptr + rt[:, None] * (B * Q)
    yg_row = yg_ptr + rt[:, None] * (B * S)
    # 1. stage 1 into the grouped middle: column j = l·C + r' of block k is m[t, l, k·C + r']
    for k in range(B):
        for n0 in range(0, Q, BN):
            j = n0 + tl.arange(0, BN)
            ll, rr = j // C, j % C
            w_col = w1_ptr + k * (Q * P) + (rr * B + ll)[None, :] * P       # w1 row r'·B + l
            acc = tl.zeros((BT, BN), dtype=tl.float32)
            for k0 in range(0, P, BK):
                kk = k0 + tl.arange(0, BK)
                a = tl.load(x_row + k * P + kk[None, :], mask=t_ok, other=0.0)
                acc = tl.dot(a, tl.load(w_col + kk[:, None]), acc)
            tl.store(m_row + (ll * Q + k * C + rr)[None, :], acc.to(m_ptr.dtype.element_ty),
                     mask=t_ok)
    tl.debug_barrier()
    # 2. stage 2 on contiguous rows of the middle
    for l in range(B):
        for n0 in range(0, S, BN):
            so = n0 + tl.arange(0, BN)
            acc = tl.zeros((BT, BN), dtype=tl.float32)
            for k0 in range(0, Q, BK):
                kk = k0 + tl.arange(0, BK)
                a = tl.load(m_row + l * Q + kk[None, :], mask=t_ok, other=0.0)
                w = tl.load(w2_ptr + l * (S * Q) + so[None, :] * Q + kk[:, None])
                acc = tl.dot(a, w, acc)
            tl.store(yg_row + l * S + so[None, :], acc.to(yg_ptr.dtype.element_ty), mask=t_ok)
    tl.debug_barrier()
    # 3. P2: y[t, s'·B + l] = yg[t, l, s'], BS features (BS·B contiguous outputs) per step
    rl = tl.arange(0, B)
    for s0 in range(0, S, BS):
        rs = s0 + tl.arange(0, BS)
        tile = tl.load(yg_row[:, :, None] + rl[None, :, None] * S + rs[None, None, :],
                       mask=t_ok[:, :, None])
        tile = tl.reshape(tl.permute(tile, (0, 2, 1)), (BT, BS * B))
        f = s0 * B + tl.arange(0, BS * B)
        tl.store(y_ptr + rt[:, None] * (B * S) + f[None, :], tile, mask=t_ok)


@triton.jit
def backward_kernel(dy_ptr, w1_ptr, w2_ptr, dyg_ptr, dm_ptr, dhf_ptr, dx_ptr, T,
                    B: tl.constexpr, P: tl.constexpr, Q: tl.constexpr, S: tl.constexpr,
                    BT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BS: tl.constexpr):
    C: tl.constexpr = Q // B
    rt = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    t_ok = rt[:, None] < T
    dyg_row = dyg_ptr + rt[:, None] * (B * S)
    dm_row = dm_ptr + rt[:, None] * (B * Q)
    dhf_row = dhf_ptr + rt[:, None] * (B * Q)
    # 1. P2ᵀ: dyg[t, l, s'] = dy[t, s'·B + l]
    rl = tl.arange(0, B)
    for s0 in range(0, S, BS):
        f = s0 * B + tl.arange(0, BS * B)
        tile = tl.load(dy_ptr + rt[:, None] * (B * S) + f[None, :], mask=t_ok)
        tile = tl.permute(tl.reshape(tile, (BT, BS, B)), (0, 2, 1))             # (BT, B, BS)
        rs = s0 + tl.arange(0, BS)
        tl.store(dyg_row[:, :, None] + rl[None, :, None] * S + rs[None, None, :], tile,
                 mask=t_ok[:, :, None])
    tl.debug_barrier()
    # 2. stage 2ᵀ: dm[t, l, r] = Σ_s' dyg[t, l, s'] w2[l, s', r]
    for l in range(B):
        for n0 in range(0, Q, BN):
            ro = n0 + tl.arange(0, BN)
            acc = tl.zeros((BT, BN), dtype=tl.float32)
            for k0 in range(0, S, BK):
                kk = k0 + tl.arange(0, BK)
                a = tl.load(dyg_row + l * S + kk[None, :], mask=t_ok, other=0.0)
                w = tl.load(w2_ptr + l * (S * Q) + kk[:, None] * Q + ro[None, :])
                acc = tl.dot(a, w, acc)
            tl.store(dm_row + l * Q + ro[None, :], acc.to(dm_ptr.dtype.element_ty), mask=t_ok)
    tl.debug_barrier()
    # 3. stage 1ᵀ: block k reads dm in fold order j = l·C + r' (stored as dhf for dw1)
    for k in range(B):
        for n0 in range(0, P, BN):
            po = n0 + tl.arange(0, BN)
            acc = tl.zeros((BT, BN), dtype=tl.float32)
            for k0 in range(0, Q, BK):
                j = k0 + tl.arange(0, BK)
                ll, rr = j // C, j % C
                a = tl.load(dm_row + (ll * Q + k * C + rr)[None, :], mask=t_ok, other=0.0)
                if n0 == 0:
                    tl.store(dhf_row + k * Q + j[None, :], a, mask=t_ok)
                w = tl.load(w1_ptr + k * (Q * P) + (rr * B + ll)[:, None] * P + po[None, :])
                acc = tl.dot(a, w, acc)
            tl.store(dx_ptr + rt[:, None] * (B * P) + k * P + po[None, :],
                     acc.to(dx_ptr.dtype.element_ty), mask=t_ok)


def _launch(kernel, T, b, p, q, s, cfg, *args):
    kernel[(triton.cdiv(T, cfg["BT"]),)](*args, T, B=b, P=p, Q=q, S=s, BT=cfg["BT"],
                                         BN=cfg["BN"], BK=cfg["BK"], BS=cfg["BS"],
                                         num_warps=cfg["num_warps"],
                                         num_stages=cfg["num_stages"])


def fused_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                  overrides: dict | None = None):
    """x (T, b·p), w1 (b, q, p), w2 (b, s, q), all contiguous -> (y (T, b·s), m (T, b, q)):
    the output and the grouped middle the backward needs."""
    b, q, p = w1.shape
    s, T = w2.shape[1], x.shape[0]
    m = x.new_empty(T, b, q)
    yg = x.new_empty(T, b, s)
    y = x.new_empty(T, b * s)
    cfg = fused_config(b, p, q, s, overrides)
    _launch(forward_kernel, T, b, p, q, s, cfg, x, w1, w2, m, yg, y)
    return y, m


def fused_backward_data(dy: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                        overrides: dict | None = None):
    """dy (T, b·s) contiguous -> (dx (T, b·p), dyg (T, b, s) grouped dy, dhf (T, b·q) the
    middle gradient in fold order, dhf[t, k·q + l·c + r'] = dh[t, k·q + r'·b + l])."""
    b, q, p = w1.shape
    s, T = w2.shape[1], dy.shape[0]
    dyg = dy.new_empty(T, b, s)
    dm = dy.new_empty(T, b, q)
    dhf = dy.new_empty(T, b * q)
    dx = dy.new_empty(T, b * p)
    cfg = fused_config(b, p, q, s, overrides)
    _launch(backward_kernel, T, b, p, q, s, cfg, dy, w1, w2, dyg, dm, dhf, dx)
    return dx, dyg, dhf


def fused_weight_grads(x, dyg, dhf, m, b: int, need_w1: bool = True, need_w2: bool = True):
    """dw1p (b, q, p) in fold row order (``monarch_plan.unfold_rows`` gives dw1) and dw2
    (b, s, q), each one cuBLAS batched GEMM over strided views (None where not needed):
    dw1p[k] = dhf[:, k]ᵀ·x[:, k], dw2[l] = dyg[:, l]ᵀ·m[:, l]."""
    T = x.shape[0]
    dw1p = dw2 = None
    if need_w1:
        dw1p = torch.bmm(dhf.view(T, b, -1).permute(1, 2, 0), x.view(T, b, -1).transpose(0, 1))
    if need_w2:
        dw2 = torch.bmm(dyg.permute(1, 2, 0), m.transpose(0, 1))
    return dw1p, dw2
