"""The Monarch multiply's plan: every product's sizes and strides, the "fold" layout helpers and
the hand-set Triton tile configs (pure functions of the shapes; ``monarch_kernels`` runs them).

Notation as in ``monarch.py``: tokens ``T``, ``b`` blocks, w1 (b, q, p), w2 (b, s, q), padded
input x (T, b·p), middle h (T, b·q) in its natural order ``j = k·q + i``, output y (T, b·s).
"""
from __future__ import annotations

import functools

import torch


# ---- the plan: (G, M, N, K, A strides, B strides, C strides) per product --------------------
def plan(name: str, tokens: int, b: int, p: int, q: int, s: int):
    """Sizes and (batch, row, col) strides of A (G, M, K), B (G, K, N) and C (G, M, N) for one
    of the products. Activations are contiguous: x, dx (T, b·p); h, dh (T, b·q) in the natural
    order j = k·q + i; m (T, b, q) = h grouped by second-factor block (m[t, l, r] = h[t, r·b+l]);
    y, dy (T, b·s); dy_g (T, b, s) = dy grouped (dy_g[t, l, t'] = dy[t, t'·b + l]).
    Stage-2 products read grouped operands (contiguous) and write their natural-order output
    through a stride-b store ("...>nat"), or a grouped output that is copied after ("...>grp").
    Weights contiguous (b, q, p), (b, s, q)."""
    T, P, H, Y = tokens, b * p, b * q, b * s
    plans = {
        # forward
        "h=x@w1": (b, T, q, p, (p, P, 1), (q * p, 1, p), (q, H, 1)),
        "y=m@w2>nat": (b, T, s, q, (q, H, 1), (s * q, 1, q), (1, Y, b)),
        "y=m@w2>grp": (b, T, s, q, (q, H, 1), (s * q, 1, q), (s, Y, 1)),
        # backward of stage 2
        "dh=dy@w2>nat": (b, T, q, s, (s, Y, 1), (s * q, q, 1), (1, H, b)),
        "dh=dy@w2>grp": (b, T, q, s, (s, Y, 1), (s * q, q, 1), (q, H, 1)),
        "dw2=dy'm": (b, s, q, T, (s, 1, Y), (q, H, 1), (s * q, q, 1)),
        # backward of stage 1
        "dx=dh@w1": (b, T, p, q, (q, H, 1), (q * p, p, 1), (p, P, 1)),
        "dw1=dh'x": (b, q, p, T, (q, 1, H), (p, P, 1), (q * p, p, 1)),
        # "fold": the first factor with w1's rows permuted (w1p[k, l·c + r'] = w1[k, r'·b + l],
        # c = q/b) reads and writes the middle activation in the grouped layout m directly:
        # its column / reduction / row index n' = l·c + r' sits at l·q + k·c + r' (two-level)
        "m=x@w1p": (b, T, q, p, (p, P, 1), (q * p, 1, p), (q // b, H, 1)),
        "dx=dm@w1p": (b, T, p, q, (q // b, H, 1), (q * p, p, 1), (p, P, 1)),
        "dw1p=dm'x": (b, q, p, T, (q // b, 1, H), (p, P, 1), (q * p, p, 1)),
        # the first version's stage 2, on natural-order operands (stride-b gathers, BL > 1)
        "y=h@w2": (b, T, s, q, (1, H, b), (s * q, 1, q), (1, Y, b)),
        "dh=dy@w2": (b, T, q, s, (1, Y, b), (s * q, q, 1), (1, H, b)),
        "dw2=dy'h": (b, s, q, T, (1, b, Y), (1, H, b), (s * q, q, 1)),
    }
    return plans[name]


TWO_LEVEL = {"m=x@w1p": 3, "dx=dm@w1p": 2, "dw1p=dm'x": 1}   # C's cols, A's K, A's rows


def two_level(name: str, tokens: int, b: int, p: int, q: int, s: int):
    """``(which, cs, s_hi)`` for the products whose index ``which`` (1: A's rows, 2: A's
    reduction index, 3: C's columns) is addressed as ``(i // cs)·s_hi + (i % cs)·stride``, else
    None. For the fold products: runs of ``cs = q/b`` elements, ``q`` apart."""
    if name not in TWO_LEVEL:
        return None
    return TWO_LEVEL[name], q // b, q


def can_fold(b: int, q: int) -> bool:
    """The fold plan needs b | q and runs of q/b >= 8 elements (16-byte vectors)."""
    return q % b == 0 and (q // b) % 8 == 0


def fold_rows(w1: torch.Tensor) -> torch.Tensor:
    """w1 (b, q, p) -> w1p with w1p[k, l·(q/b) + r'] = w1[k, r'·b + l] (contiguous copy)."""
    b, q, p = w1.shape
    return w1.view(b, q // b, b, p).transpose(1, 2).reshape(b, q, p)


def unfold_rows(w1p: torch.Tensor) -> torch.Tensor:
    """The inverse of ``fold_rows``."""
    b, q, p = w1p.shape
    return w1p.view(b, b, q // b, p).transpose(1, 2).reshape(b, q, p)


def group(t: torch.Tensor, b: int) -> torch.Tensor:
    """(T, c·b) natural order [t, r·b + l] -> contiguous grouped (T, b, c) [t, l, r]."""
    return t.reshape(t.shape[0], t.shape[1] // b, b).transpose(1, 2).contiguous()


def ungroup(t: torch.Tensor) -> torch.Tensor:
    """(T, b, c) grouped -> (T, c·b) natural order (copy)."""
    return t.transpose(1, 2).reshape(t.shape[0], -1)


STAGE2_GATHER = ("y=h@w2", "dh=dy@w2", "dw2=dy'h")
WEIGHT_GRADS = ("dw2=dy'h", "dw2=dy'm", "dw1=dh'x", "dw1p=dm'x")


def _pow2(n: int, lo: int, hi: int) -> int:
    v = lo
    while v < n and v < hi:
        v *= 2
    return v


def choose_config(name: str, G: int, M: int, N: int, K: int, sms: int = 132,
                  overrides: dict | None = None) -> dict:
    """Tile sizes for one product (hand-set from H200 measurements, see benchmarks/NOTES.md)."""
    stage2 = name in STAGE2_GATHER
    BL = min(16, _pow2(G, 1, 16)) if stage2 else 1
    if BL == 1:
        BM = _pow2(M, 16, 128)
        BN = _pow2(N, 16, 128)
        BK = _pow2(K, 16, 64)
        warps, stages = (8, 3) if BM * BN >= 128 * 128 else (4, 4)
        if name.startswith("dx=dm") and BM == 128 and N >= 256:  # tile sweep, NOTES.md v5
            BN = 256
    else:
        BM = _pow2(M, 16, 64 if BL >= 8 else 128)
        BN = _pow2(N, 16, 32 if BL >= 8 else 64)
        BK = _pow2(K, 16, 32)
        warps, stages = 4, 3
    cfg = dict(BL=BL, BM=BM, BN=BN, BK=BK, SPLIT_K=1, GROUP_M=8,
               num_warps=warps, num_stages=stages)
    mine = (overrides or {}).get(name, {})
    cfg.update(mine)
    if name in WEIGHT_GRADS and "SPLIT_K" not in mine:
        tiles = -(-M // cfg["BM"]) * -(-N // cfg["BN"]) * -(-G // cfg["BL"])
        split = 1
        while tiles * split < 2 * sms and K // (split * 2) >= 8 * cfg["BK"]:
            split *= 2
        cfg["SPLIT_K"] = split
    return cfg


# ---- block padding: odd block sizes (b = √n, e.g. 91 at n = 8192) rounded up to 8 -------------
PAD_ALIGN = 8     # elements: 16 bytes in bfloat16, what cuBLAS's fast kernels need of strides
PAD_MIN = 32      # smallest block padded (below it the pads would add a quarter or more)


def pad_sizes(p: int, q: int, s: int) -> tuple:
    """(p, q, s) each rounded up to a multiple of ``PAD_ALIGN``."""
    return tuple(-(-v // PAD_ALIGN) * PAD_ALIGN for v in (p, q, s))


def wants_padding(p: int, q: int, s: int) -> bool:
    """Whether the padded plan pays by default: a block size is not a multiple of 8 and none
    is below ``PAD_MIN``. On the H200 at b=91 (p=91) a stage-1 batched GEMM took 0.466 ms and
    at p=96 0.198 ms; at b=45 (p=46) 0.124 against 0.057 at p=48
    (benchmarks/results/monarch_align_h200.json)."""
    return any(v % PAD_ALIGN for v in (p, q, s)) and min(p, q, s) >= PAD_MIN


def padded_index(u: torch.Tensor, c: int, pitch: int) -> torch.Tensor:
    """Where logical element u of a block-padded row sits: runs of c at a pitch of ``pitch``."""
    return u // c * pitch + u % c


@functools.lru_cache(maxsize=256)
def transpose_index(A: int, B: int, src=None, dst=None, limit: int | None = None,
                    cut: int | None = None) -> torch.Tensor:
    """The gather map (CPU, int64) of a per-row transpose: for each element of out's row, the
    position in x's row it copies (-1 for out's pads), where out[j·A + i] = x[i·B + j] on
    logical indices and x's / out's rows are block-padded as (c, pitch) = ``src`` / ``dst``
    (None: not padded). ``limit``: x's row holds only the first ``limit`` logical elements
    (the rest read as zero: an unpadded input of fewer features than b·p); ``cut``: out keeps
    its first ``cut`` elements only (an output of fewer features than b·s)."""
    cin, pin = src or (A * B, A * B)
    cout, pout = dst or (A * B, A * B)
    i, j = torch.arange(A)[None, :], torch.arange(B)[:, None]           # o = j·A + i
    u = (i * B + j).reshape(-1)
    index = torch.full((A * B // cout * pout,), -1, dtype=torch.int64)
    index[padded_index((j * A + i).reshape(-1), cout, pout)] = torch.where(
        u < (A * B if limit is None else limit), padded_index(u, cin, pin), -1)
    return index if cut is None else index[:cut].clone()


@functools.lru_cache(maxsize=256)
def pad_index(n: int, c: int, pitch: int, blocks: int) -> torch.Tensor:
    """The gather map of ``blocks`` blocks of c taken from a row of n <= blocks·c elements
    (zero beyond n) and padded to ``pitch`` each (zero pads): x (T, n) -> (T, blocks·pitch)."""
    u = torch.arange(blocks * c)
    index = torch.full((blocks * pitch,), -1, dtype=torch.int64)
    index[padded_index(u, c, pitch)] = torch.where(u < n, u, -1)
    return index


@functools.lru_cache(maxsize=256)
def unpad_index(n: int, c: int, pitch: int) -> torch.Tensor:
    """The inverse of ``pad_index``: the first n logical elements of block-padded rows."""
    return padded_index(torch.arange(n), c, pitch)


def gather_index(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (T, m) -> (T, len(index)): out[:, o] = x[:, index[o]], 0 where index[o] < 0, by torch
    indexing (any device and dtype; ``monarch_triton.gather_columns`` is the GPU kernel)."""
    index = index.to(x.device)
    out = x[:, index.clamp_min(0)]
    out[:, index < 0] = 0
    return out


def padded_transpose(x: torch.Tensor, A: int, B: int, src=None, dst=None) -> torch.Tensor:
    """The per-row transpose of ``transpose_index`` by torch indexing (any device and dtype):
    out[t, j·A + i] = x[t, i·B + j] on logical indices; out's pads are zero."""
    return gather_index(x, transpose_index(A, B, src, dst))
