"""One Triton kernel for every product in a Monarch layer: a strided batched matrix product.

``C[g, m, n] (+)= Σ_k A[g, m, k] · B[g, k, n]`` where each operand is addressed through its own
strides, ``A: base + g·sag + m·sam + k·sak`` (likewise B and C). Monarch's permutations P1 and
P2 are strides (see ``monarch_kernels.plan``), so no activation is ever copied to permute it.

Two tilings, picked by ``BL`` (a compile-time constant):
- ``BL == 1``: one batch per program, a 2-D tile (BM, BN) — the usual GEMM, used where rows
  are contiguous (the first factor and its gradients);
- ``BL > 1``: ``BL`` neighbouring batches per program as a 3-D tile (BL, BM, BN). The second
  factor's batch index ``l`` is the innermost (stride-1) feature index of both the middle
  activation (``j = r·b + l``) and the output (``o = t·b + l``), so loading BL batches at once
  makes every load and store contiguous runs of BL elements instead of stride-b gathers.
``SPLIT_K > 1`` splits the reduction over programs that add into a float32 ``C`` atomically
(weight gradients reduce over all tokens but have few output tiles).
``TWO_LEVEL`` addresses one index (A's rows, A's reduction index or C's columns) as
``(i // cs)·s_hi + (i % cs)·stride``: runs of ``cs`` contiguous elements, which is how the first
factor reads and writes the middle activation in the grouped layout the second factor needs
(``monarch_kernels``, "fold"), with contiguity hints so the runs load and store as vectors.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def strided_bmm_kernel(a_ptr, b_ptr, c_ptr, G, M, N, K,
                       sag, sam, sak, sbg, sbk, sbn, scg, scm, scn, cs, s_hi,
                       BL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                       BK: tl.constexpr, SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr,
                       TWO_LEVEL: tl.constexpr = 0, RUN: tl.constexpr = 1):
    pid = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_k = tl.program_id(2)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    # grouped order: GROUP_M row tiles share their B tiles in L2
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_size = min(num_m - first_m, GROUP_M)
    pm = first_m + (pid % per_group) % group_size
    pn = (pid % per_group) // group_size

    rm = (pm * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pn * BN + tl.arange(0, BN)).to(tl.int64)
    rk = (pid_k * BK + tl.arange(0, BK)).to(tl.int64)
    step = BK * SPLIT_K
    if BL == 1:
        g = pid_g.to(tl.int64)
        # TWO_LEVEL: one index is addressed as (i // cs)·s_hi + (i % cs)·stride (runs of cs
        # contiguous elements): 1 = A's rows, 2 = A's reduction index, 3 = C's columns
        if TWO_LEVEL == 1:
            am = (rm // cs) * s_hi + (rm % cs) * sam
            am = tl.max_contiguous(tl.multiple_of(am, RUN), RUN)
        else:
            am = rm * sam
        a_row = a_ptr + g * sag + am[:, None]
        a_ptrs = a_row + rk[None, :] * sak
        b_ptrs = b_ptr + g * sbg + rk[:, None] * sbk + rn[None, :] * sbn
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for it in range(0, tl.cdiv(K, step)):
            kk = pid_k * BK + it * step + tl.arange(0, BK)
            if TWO_LEVEL == 2:
                k64 = kk.to(tl.int64)
                ak = (k64 // cs) * s_hi + (k64 % cs) * sak
                ak = tl.max_contiguous(tl.multiple_of(ak, RUN), RUN)
                a_ptrs = a_row + ak[None, :]
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            b = tl.load(b_ptrs, mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
            acc = tl.dot(a, b, acc)
            a_ptrs += step * sak
            b_ptrs += step * sbk
        if TWO_LEVEL == 3:
            cn = (rn // cs) * s_hi + (rn % cs) * scn
            cn = tl.max_contiguous(tl.multiple_of(cn, RUN), RUN)
        else:
            cn = rn * scn
        c_ptrs = c_ptr + g * scg + rm[:, None] * scm + cn[None, :]
        c_mask = (rm[:, None] < M) & (rn[None, :] < N)
    else:
        rg = (pid_g * BL + tl.arange(0, BL)).to(tl.int64)
        g_ok = rg[:, None, None] < G
        a_ptrs = (a_ptr + rg[:, None, None] * sag + rm[None, :, None] * sam
                  + rk[None, None, :] * sak)
        b_ptrs = (b_ptr + rg[:, None, None] * sbg + rk[None, :, None] * sbk
                  + rn[None, None, :] * sbn)
        acc = tl.zeros((BL, BM, BN), dtype=tl.float32)
        for it in range(0, tl.cdiv(K, step)):
            kk = pid_k * BK + it * step + tl.arange(0, BK)
            a = tl.load(a_ptrs, mask=g_ok & (rm[None, :, None] < M) & (kk[None, None, :] < K),
                        other=0.0)
            b = tl.load(b_ptrs, mask=g_ok & (kk[None, :, None] < K) & (rn[None, None, :] < N),
                        other=0.0)
            acc = tl.dot(a, b, acc)
            a_ptrs += step * sak
            b_ptrs += step * sbk
        c_ptrs = (c_ptr + rg[:, None, None] * scg + rm[None, :, None] * scm
                  + rn[None, None, :] * scn)
        c_mask = g_ok & (rm[None, :, None] < M) & (rn[None, None, :] < N)
    if SPLIT_K == 1:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
    else:
        tl.atomic_add(c_ptrs, acc, mask=c_mask)


def launch(a, b, c, G, M, N, K, sa, sb, sc, cfg, two_level=None) -> None:
    """Run ``strided_bmm_kernel``; ``cfg`` holds BL, BM, BN, BK, SPLIT_K, GROUP_M, num_warps,
    num_stages (see ``monarch_kernels.choose_config``); ``two_level`` is ``(which, cs, s_hi)``
    (see the kernel) or None."""
    grid = (triton.cdiv(M, cfg["BM"]) * triton.cdiv(N, cfg["BN"]),
            triton.cdiv(G, cfg["BL"]), cfg["SPLIT_K"])
    which, cs, s_hi = two_level or (0, 1, 0)
    tile = {0: 1, 1: cfg["BM"], 2: cfg["BK"], 3: cfg["BN"]}[which]
    run = 1
    while which and cs % (2 * run) == 0 and 2 * run <= tile:
        run *= 2
    strided_bmm_kernel[grid](a, b, c, G, M, N, K, *sa, *sb, *sc, cs, s_hi,
                             BL=cfg["BL"], BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"],
                             SPLIT_K=cfg["SPLIT_K"], GROUP_M=cfg["GROUP_M"],
                             TWO_LEVEL=which, RUN=run,
                             num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


@triton.jit
def row_transpose_kernel(x_ptr, out_ptr, T, A, B, BT: tl.constexpr, BA: tl.constexpr,
                         BB: tl.constexpr, FLAT_IN: tl.constexpr, FLAT_OUT: tl.constexpr):
    """out[t, j·A + i] = x[t, i·B + j]: each row, read as an (A, B) matrix, written transposed.
    A (BT, BA, BB) tile is loaded with B contiguous and stored with A contiguous (Triton moves
    it between the two layouts through shared memory). ``FLAT_IN`` (the tile spans all of B)
    loads it as BA·B contiguous elements per row, ``FLAT_OUT`` (the tile spans all of A) stores
    BB·A contiguous elements per row: one long run instead of runs of B or A elements."""
    rt = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    row = rt * (A * B)
    t_ok = rt < T
    if FLAT_IN:
        rf = tl.program_id(1) * (BA * BB) + tl.arange(0, BA * BB)
        tile = tl.load(x_ptr + row[:, None] + rf[None, :],
                       mask=t_ok[:, None] & (rf[None, :] < A * B))
        tile = tl.reshape(tile, (BT, BA, BB))
    else:
        ri = tl.program_id(1) * BA + tl.arange(0, BA)
        rj = tl.program_id(2) * BB + tl.arange(0, BB)
        mask = t_ok[:, None, None] & (ri[None, :, None] < A) & (rj[None, None, :] < B)
        tile = tl.load(x_ptr + row[:, None, None] + ri[None, :, None] * B + rj[None, None, :],
                       mask=mask)
    tile = tl.permute(tile, (0, 2, 1))                                   # (BT, BB, BA)
    if FLAT_OUT:
        rf = tl.program_id(2) * (BB * BA) + tl.arange(0, BB * BA)
        tl.store(out_ptr + row[:, None] + rf[None, :], tl.reshape(tile, (BT, BB * BA)),
                 mask=t_ok[:, None] & (rf[None, :] < A * B))
    else:
        ri = tl.program_id(1) * BA + tl.arange(0, BA)
        rj = tl.program_id(2) * BB + tl.arange(0, BB)
        mask = t_ok[:, None, None] & (rj[None, :, None] < B) & (ri[None, None, :] < A)
        tl.store(out_ptr + row[:, None, None] + rj[None, :, None] * A + ri[None, None, :], tile,
                 mask=mask)


def transpose_config(T: int, A: int, B: int) -> dict:
    """Tile of ``row_transpose`` for rows of (A, B): BA, BB up to 128, BT rows to fill 4096
    elements, flat loads / stores where the tile spans all of B / all of A. On the H200 this
    tile ran within 4% of the best of 36-48 tiles at every Monarch shape from n=1024 to 8192,
    b in {4, 16, 64} (benchmarks/monarch_copies.py); without the flat stores the b=4 copy back
    to natural order took 3.3x as long (0.233 vs 0.071 ms at n=4096)."""
    BA = min(triton.next_power_of_2(A), 128)
    BB = min(triton.next_power_of_2(B), 128)
    BT = max(1, min(16, 4096 // (BA * BB)))
    return {"BT": BT, "BA": BA, "BB": BB, "num_warps": 4, "flat": True}


def row_transpose(x, A: int, B: int, config: dict | None = None):
    """x (T, A·B) contiguous -> (T, B·A) with out[t, j·A + i] = x[t, i·B + j].
    ``config``: BT, BA, BB (powers of two), num_warps, flat (use the flat loads / stores where
    the tile spans all of B / all of A); default ``transpose_config``."""
    T = x.shape[0]
    out = x.new_empty(T, A * B)
    cfg = config or transpose_config(T, A, B)
    BT, BA, BB = cfg["BT"], cfg["BA"], cfg["BB"]
    flat_in = bool(cfg.get("flat")) and BB == B
    flat_out = bool(cfg.get("flat")) and BA == A
    grid = (triton.cdiv(T, BT), triton.cdiv(A, BA), triton.cdiv(B, BB))
    row_transpose_kernel[grid](x, out, T, A, B, BT=BT, BA=BA, BB=BB, FLAT_IN=flat_in,
                               FLAT_OUT=flat_out, num_warps=cfg["num_warps"])
    return out


@triton.jit
def gather_columns_kernel(x_ptr, idx_ptr, out_ptr, T, row_in, row_out,
                          BT: tl.constexpr, BO: tl.constexpr):
    """out[t, o] = x[t, idx[o]] (0 where idx[o] < 0): a (BT, BO) tile of out per program,
    stored contiguously; its loads are gathers within BT rows of x (L1 / L2 hits)."""
    rt = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    ro = tl.program_id(1) * BO + tl.arange(0, BO)
    o_ok = ro < row_out
    src = tl.load(idx_ptr + ro, mask=o_ok, other=-1)
    t_ok = rt[:, None] < T
    vals = tl.load(x_ptr + rt[:, None] * row_in + src[None, :], mask=t_ok & (src[None, :] >= 0),
                   other=0.0)
    tl.store(out_ptr + rt[:, None] * row_out + ro[None, :], vals, mask=t_ok & o_ok[None, :])


def gather_columns(x, idx, config: dict | None = None):
    """x (T, row_in) contiguous, idx (row_out,) int32 on x's device -> out (T, row_out) with
    out[:, o] = x[:, idx[o]], and 0 where idx[o] < 0 (``monarch_plan.transpose_index``).
    ``config``: BT rows and BO columns per program, num_warps; default BO = row_out rounded up
    to a power of two, at most 2048, BT = 4096 / BO, 8 warps: on the H200 at b = 91 (rows of
    8736) a copy took 0.32-0.46 ms against 1.06-1.61 with (8, 512, 4 warps) and 2.0-3.4 with
    (32, 128) (``benchmarks/results/monarch_align_h200.json``)."""
    T, row_out = x.shape[0], idx.shape[0]
    BO = min(2048, triton.next_power_of_2(row_out))
    cfg = {"BT": max(1, 4096 // BO), "BO": BO, "num_warps": 8, **(config or {})}
    out = x.new_empty(T, row_out)
    grid = (triton.cdiv(T, cfg["BT"]), triton.cdiv(row_out, cfg["BO"]))
    gather_columns_kernel[grid](x, idx, out, T, x.shape[1], row_out, BT=cfg["BT"], BO=cfg["BO"],
                                num_warps=cfg["num_warps"])
    return out
