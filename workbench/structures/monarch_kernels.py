"""Fast Monarch multiply: the six products of the forward and backward pass as batched GEMMs
on strided views (cuBLAS) or on one strided batched-GEMM Triton kernel (``monarch_triton``),
with P1 and P2 handled by strides and four grouping copies.

Notation as in ``monarch.py``: tokens ``T``, ``b`` blocks, w1 (b, q, p), w2 (b, s, q), padded
input x (T, b·p), middle h (T, b·q) in its natural order ``j = k·q + i``, output y (T, b·s):

    stage 1, batch k:  h[t, k·q + i]  = Σ_p x[t, k·p + p'] · w1[k, i, p']
    stage 2, batch l:  y[t, s'·b + l] = Σ_r h[t, r·b + l]  · w2[l, s', r]     (j = r·b + l)

Stage 1 and its gradients read and write contiguous rows of each block, so they are batched
GEMMs over the blocks k on strided views (``natural_stage1_bmm``). Stage 2's batch ``l`` is the
stride-1 index of h and y, and on the H200 every way of addressing that in place was slow
(3-D tiles: 25 TFLOP/s; stride-b stores: 0.1-0.2 TB/s; benchmarks/NOTES.md), so the default
plan (the "copy" plan) makes one grouping copy per pass — m[t, l, r] = h[t, r·b + l] forward,
dy grouped the same way backward — and copies each stage-2 output back to natural order: four
copies per forward+backward instead of the plain path's ~ten, all six GEMMs on contiguous
operands, run by cuBLAS (``STAGE2_DEFAULT``, ``use_cublas_stage1``), and the copies by a Triton
per-row transpose at the copy bandwidth, or for small layers outside CUDA graphs, where a
pass is host-bound, by torch's copy (``COPIES_DEFAULT``).
The "fold" plan (opt-in, ``overrides={"fold": True}``, where b divides q) removes the two
copies on the first factor's side: with w1's rows permuted within each block (``fold_rows``),
stage 1 writes m directly and its gradients read the grouped dh (dm) directly, through a
two-level index (runs of q/b contiguous elements) that only the Triton kernel can address.
It was the default until cuBLAS took over the copy plan's first factor (``use_fold``).
The "padded" plan (the default where a block size is not a multiple of 8, e.g. b = √n with
blocks of 91; ``use_pad``) is the copy plan on blocks rounded up to multiples of 8, so that
cuBLAS gets 16-byte aligned strides, with its copies as Triton row gathers that keep P1 and
P2 those of the unpadded sizes (``_padded_forward``).
``monarch_plan.plan`` lists every Triton product's strides. Back ends: ``"triton"`` (CUDA) and
``"torch"``, which runs the same plan with torch's copies and ``as_strided`` + ``matmul`` in
place of the Triton kernels (any device; it tests the plan).

``monarch_multiply_fast(x, w1, w2, out_features, impl)`` has ``monarch_multiply``'s interface;
``resolve_impl`` says which path ``"auto"`` takes: ``"triton"`` for float16/bfloat16 CUDA
tensors when Triton imports, else the plain two-bmm path.
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F

from .monarch_plan import (STAGE2_GATHER, TWO_LEVEL, WEIGHT_GRADS, can_fold,  # noqa: F401
                           choose_config, fold_rows, gather_index, group, pad_index, pad_sizes,
                           plan, transpose_index, two_level, unfold_rows, ungroup,
                           unpad_index, wants_padding)

IMPLS = ("auto", "plain", "torch", "triton", "dense")


_TRITON_IMPORTS: list = []  # the answer of triton_available, once known


@torch.compiler.assume_constant_result  # Dynamo calls it once while tracing and keeps the answer
def triton_available() -> bool:
    if not _TRITON_IMPORTS:
        try:
            from . import monarch_triton  # noqa: F401
            _TRITON_IMPORTS.append(True)
        except Exception:  # ImportError, or a Triton that cannot initialise
            _TRITON_IMPORTS.append(False)
    return _TRITON_IMPORTS[0]


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """The path ``impl`` takes for input ``x``: ``"plain"``, ``"torch"``, ``"triton"`` or
    ``"dense"``."""
    if impl not in IMPLS:
        raise ValueError(f"monarch: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        fast = (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and triton_available())
        return "triton" if fast else "plain"
    if impl == "triton" and not (x.is_cuda and triton_available()):
        raise RuntimeError("monarch: impl='triton' needs a CUDA tensor and an importable Triton")
    return impl


def run_product(name: str, a: torch.Tensor, b_: torch.Tensor, c: torch.Tensor, sizes: tuple,
                backend: str, overrides: dict | None = None) -> None:
    """C (=, or += for split weight gradients on Triton) the product ``name`` of a and b_."""
    G, M, N, K, sa, sb, sc = plan(name, *sizes)
    split = two_level(name, *sizes)
    if backend == "torch":
        which, cs, hi = split or (0, 1, 0)
        if which == 1:
            A = a.as_strided((G, M // cs, cs, K), (sa[0], hi, sa[1], sa[2])).reshape(G, M, K)
        elif which == 2:
            A = a.as_strided((G, M, K // cs, cs), (sa[0], sa[1], hi, sa[2])).reshape(G, M, K)
        else:
            A = a.as_strided((G, M, K), sa)
        B = b_.as_strided((G, K, N), sb)
        if which == 3:
            c.as_strided((G, M, N // cs, cs), (sc[0], sc[1], hi, sc[2])).copy_(
                torch.matmul(A, B).view(G, M, N // cs, cs))
        else:
            c.as_strided((G, M, N), sc).copy_(torch.matmul(A, B))
        return
    from .monarch_triton import launch
    if overrides and name in overrides:
        cfg = choose_config(name, G, M, N, K, _sms(a.device), overrides)
    else:
        cfg = _cached_config(name, G, M, N, K, _sms(a.device))
    launch(a, b_, c, G, M, N, K, sa, sb, sc, cfg, split)


@functools.lru_cache(maxsize=None)
def _sms(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if (
        device.type == "cuda") else 132


@functools.lru_cache(maxsize=4096)
def _cached_config(name, G, M, N, K, sms) -> dict:
    return choose_config(name, G, M, N, K, sms)


@dataclasses.dataclass
class ForwardPass:
    """What the backward needs to know about a forward: sizes (T, b, p, q, s), back end,
    overrides, the plan taken (fold, stage 2 on cuBLAS), and which of (x, w1, w2) need grads."""
    sizes: tuple
    backend: str
    overrides: dict
    fold: bool
    cublas: bool
    needs_input_grad: tuple = (True, True, True)
    pad: bool = False
    in_features: int | None = None   # x's width when the padded plan took it unpadded


def fast_forward(x, w1, w2, backend, overrides, out_features=None):
    """(x (T, b·p), w1 (b, q, p), w2 (b, s, q)) -> y (T, b·s) on padded sizes by the plan.

    Returns ``(y, saved, info)``: ``saved`` = (x, w1 as used (row-folded under "fold"), w2,
    the grouped middle (T, b, q) or h (T, b·q) under "gather") and ``info`` a ``ForwardPass``.
    The padded plan (``use_pad``) also takes x of fewer than b·p features and, given
    ``out_features``, returns y (T, out_features): it pads and cuts in its own row gathers.

    ``overrides["store"]``: ``"copy"`` (default: stage-2 outputs grouped, then one copy to
    natural order) or ``"strided"`` (written in natural order by a stride-b store: 5-30x slower
    on the H200, see benchmarks/NOTES.md); ``overrides["gather"]=True``
    runs the first version (stage 2 on natural-order operands, 3-D tiles, no grouping copies).
    """
    b, q, p = w1.shape
    s = w2.shape[1]
    T = x.shape[0]
    sizes = (T, b, p, q, s)
    ov = overrides or {}
    x = x.contiguous()
    w1c, w2c = w1.contiguous(), w2.contiguous()
    fold = use_fold(ov, b, q)
    cublas = use_cublas_stage2(ov)
    info = ForwardPass(sizes, backend, ov, fold, cublas)
    if use_pad(ov, b, p, q, s):  # the copy plan on block sizes rounded up to 8
        info.pad, info.in_features = True, x.shape[1]
        y, saved = _padded_forward(x, w1c, w2c, ov, backend, out_features)
        return y, saved, info
    if fold:  # stage 1 writes m (T, b, q) directly: no grouping copy
        w1c = fold_rows(w1c)
        if use_cublas_stage1(ov, b, q):
            mid = stage1_bmm(x, w1c, b)
        else:
            mid = x.new_empty(T, b, q)
            run_product("m=x@w1p", x, w1c, mid, sizes, backend, ov)
    else:
        if use_cublas_stage1(ov, b, q, fold=False) and not ov.get("gather"):
            h = natural_stage1_bmm(x, w1c, b)
        else:
            h = x.new_empty(T, b * q)
            run_product("h=x@w1", x, w1c, h, sizes, backend, ov)
        if cublas:
            mid = _group(h, b, ov, backend)
            del h
    if cublas:  # stage 2 as one strided batched GEMM (cuBLAS), output copied to P2 order
        return stage2_bmm(mid, w2c, ov, backend), (x, w1c, w2c, mid), info
    if fold:
        yg = x.new_empty(T, b, s)
        run_product("y=m@w2>grp", mid, w2c, yg, sizes, backend, ov)
        return _ungroup(yg, ov, backend), (x, w1c, w2c, mid), info
    if ov.get("gather"):
        y = x.new_empty(T, b * s)
        run_product("y=h@w2", h, w2c, y, sizes, backend, ov)
        return y, (x, w1c, w2c, h), info
    mid = _group(h, b, ov, backend)               # (T, b, q): the one forward copy
    del h
    if ov.get("store", "copy") == "copy":
        yg = x.new_empty(T, b, s)
        run_product("y=m@w2>grp", mid, w2c, yg, sizes, backend, ov)
        y = _ungroup(yg, ov, backend)
    else:
        y = x.new_empty(T, b * s)
        run_product("y=m@w2>nat", mid, w2c, y, sizes, backend, ov)
    return y, (x, w1c, w2c, mid), info


def fast_backward(info: ForwardPass, saved, dy):
    """Gradients (dx, dw1, dw2) of ``fast_forward`` (None where not needed)."""
    x, w1, w2, mid = saved
    sizes, backend, ov = info.sizes, info.backend, info.overrides
    T, b, p, q, s = sizes
    if info.pad:
        return _padded_backward(info, dy, x, w1, w2, mid)
    if info.cublas:
        return _cublas_backward(info, dy, x, w1, w2, mid)
    if info.fold:
        return _fold_backward(info, dy, x, w1, w2, mid)
    gather = bool(ov.get("gather"))
    dy = dy.contiguous() if gather else _group(dy, b, ov, backend)  # the one backward copy
    need_x, need_w1, need_w2 = info.needs_input_grad[:3]
    dx = dw1 = dw2 = None
    if need_w2:
        dw2 = _weight_grad("dw2=dy'h" if gather else "dw2=dy'm", dy, mid, w2, sizes,
                           backend, ov)
    if need_x or need_w1:
        dh = x.new_empty(T, b * q)
        if gather:
            run_product("dh=dy@w2", dy, w2, dh, sizes, backend, ov)
        elif ov.get("store", "copy") == "copy":
            dhg = x.new_empty(T, b, q)
            run_product("dh=dy@w2>grp", dy, w2, dhg, sizes, backend, ov)
            dh = _ungroup(dhg, ov, backend)
        else:
            run_product("dh=dy@w2>nat", dy, w2, dh, sizes, backend, ov)
        cublas1 = not gather and use_cublas_stage1(ov, b, q, fold=False)
        dx, dw1 = _natural_first_factor_grads(info, dh, x, w1, cublas1)
    return dx, dw1, dw2


def _natural_first_factor_grads(info, dh, x, w1, cublas):
    """(dx, dw1) of the first factor from the natural-order dh (T, b·q): one strided batched
    GEMM each on cuBLAS (``natural_stage1_backward``) or the Triton kernel (None where not
    needed)."""
    need_x, need_w1 = info.needs_input_grad[:2]
    if cublas:
        return natural_stage1_backward(dh, x, w1, need_x, need_w1)
    sizes, backend, ov = info.sizes, info.backend, info.overrides
    dx = dw1 = None
    if need_w1:
        dw1 = _weight_grad("dw1=dh'x", dh, x, w1, sizes, backend, ov)
    if need_x:
        dx = torch.empty_like(x)
        run_product("dx=dh@w1", dh, w1, dx, sizes, backend, ov)
    return dx, dw1


class _MonarchFunction(torch.autograd.Function):
    """(x (T, b·p), w1, w2) -> y (T, b·s) on padded sizes, any overrides (benchmarks and
    tests of the plan variants); the default plan runs as the custom op of ``monarch_op``."""

    @staticmethod
    def forward(ctx, x, w1, w2, backend, overrides, out_features=None):
        y, saved, ctx.info = fast_forward(x, w1, w2, backend, overrides, out_features)
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx, dy):
        ctx.info.needs_input_grad = ctx.needs_input_grad[:3]
        return fast_backward(ctx.info, ctx.saved_tensors, dy) + (None, None, None)


def _fold_backward(info, dy, x, w1p, w2, mid):
    """Backward of the fold plan: dy grouped once; dh stays grouped (dm), which is what the
    first factor's gradients read through their two-level index; dw1 un-permuted at the end."""
    sizes, backend, ov = info.sizes, info.backend, info.overrides
    T, b, p, q, s = sizes
    dy = _group(dy, b, ov, backend)
    need_x, need_w1, need_w2 = info.needs_input_grad[:3]
    dx = dw1 = dw2 = None
    if need_w2:
        dw2 = _weight_grad("dw2=dy'm", dy, mid, w2, sizes, backend, ov)
    if need_x or need_w1:
        dm = x.new_empty(T, b, q)
        run_product("dh=dy@w2>grp", dy, w2, dm, sizes, backend, ov)
        if need_w1:
            dw1 = unfold_rows(_fold_weight_grad(dm, x, w1p, sizes, backend, ov))
        if need_x:
            dx = torch.empty_like(x)
            run_product("dx=dm@w1p", dm, w1p, dx, sizes, backend, ov)
    return dx, dw1, dw2


def use_pad(overrides: dict, b: int, p: int, q: int, s: int) -> bool:
    """Whether the padded copy plan runs (``_padded_forward``): ``overrides["pad"]`` if given
    (True / False), else where ``monarch_plan.wants_padding`` (odd block sizes of 32 or more);
    only in the default copy plan (cuBLAS products, no fold, gather or strided store)."""
    choice = overrides.get("pad", "auto")
    if choice not in ("auto", True, False):
        raise ValueError(f"monarch: pad must be 'auto', True or False, got {choice!r}")
    if (overrides.get("gather") or overrides.get("store", "copy") != "copy"
            or use_fold(overrides, b, q) or not use_cublas_stage2(overrides)
            or overrides.get("stage1", "auto") == "triton"):
        return False
    return wants_padding(p, q, s) if choice == "auto" else choice


def _gather(x: torch.Tensor, map_name: str, args: tuple, overrides: dict, backend: str):
    """x (T, m) gathered by the index map ``monarch_plan.<map_name>(*args)``: by the Triton
    row gather (``gather_columns``) or torch indexing (``gather_index``), as the copies go."""
    if _triton_copies(overrides, backend):
        from .monarch_triton import gather_columns
        return gather_columns(x.contiguous(), _device_index(map_name, args, x.device))
    return gather_index(x, _INDEX_MAPS[map_name](*args))


_INDEX_MAPS = {"transpose": transpose_index, "pad": pad_index, "unpad": unpad_index}


@functools.lru_cache(maxsize=256)
def _device_index(map_name: str, args: tuple, device):
    return _INDEX_MAPS[map_name](*args).to(device=device, dtype=torch.int32)


def _padded_operands(x, w1, w2, blocks: tuple, overrides: dict, backend: str):
    """x (T, n) with n <= b·p, w1 (b, q, p), w2 (b, s, q) -> x8 (T, b·p8), w1_8 (b, q8, p8),
    w2_8 (b, s8, q8), zero-padded (``pad_sizes``); operands already padded pass unchanged."""
    b, p, q, s = blocks
    p8, q8, s8 = pad_sizes(p, q, s)
    if x.shape[1] != b * p8:
        x = _gather(x, "pad", (x.shape[1], p, p8, b), overrides, backend)
    if w1.shape[1:] != (q8, p8):
        w1 = F.pad(w1, (0, p8 - p, 0, q8 - q))
    if w2.shape[1:] != (s8, q8):
        w2 = F.pad(w2, (0, q8 - q, 0, s8 - s))
    return x, w1, w2


def _padded_forward(x, w1, w2, overrides, backend, out_features=None):
    """The copy plan on block sizes rounded up to multiples of 8, (p, q, s) -> (p8, q8, s8)
    (``pad_sizes``): x's blocks and the weights zero-padded, so that every batched GEMM has
    16-byte aligned strides (cuBLAS's fast kernels), while P1 and P2 stay those of (b, q):
    the copies are row gathers by index maps that read and write the middle block-padded (runs
    of q at a pitch of q8). x (T, n_in) with n_in <= b·p (padded here, in the same gather);
    returns (y (T, out_features or b·s), saved = (x8, w1_8, w2_8, mid (T, b, q8), pads 0))."""
    T = x.shape[0]
    (b, q, p), s = w1.shape, w2.shape[1]
    q8, s8 = pad_sizes(p, q, s)[1:]
    x8, w1, w2 = _padded_operands(x, w1, w2, (b, p, q, s), overrides, backend)
    h = natural_stage1_bmm(x8, w1, b)                   # (T, b·q8): h[t, k·q + i] at k·q8 + i
    mid = _gather(h, "transpose", (q, b, (q, q8), (q, q8)), overrides, backend).view(T, b, q8)
    yg = bmm_into_grouped(mid.transpose(0, 1), w2.transpose(1, 2))   # (T, b, s8)
    y = _gather(yg.view(T, b * s8), "transpose", (b, s, (s, s8), None, None, out_features),
                overrides, backend)
    return y, (x8, w1, w2, mid)


def _padded_backward(info, dy, x, w1, w2, mid):
    """Gradients of ``_padded_forward``: dy (T, out) with out <= b·s, dx (T, n_in). x, w1, w2
    may come padded (saved by the autograd function) or not (the custom op saves its inputs):
    padded here where needed."""
    T, b, p, q, s = info.sizes
    p8, q8, s8 = pad_sizes(p, q, s)
    ov, backend = info.overrides, info.backend
    n_in = info.in_features or b * p
    x, w1, w2 = _padded_operands(x, w1, w2, (b, p, q, s), ov, backend)
    need_x, need_w1, need_w2 = info.needs_input_grad[:3]
    dyg = _gather(dy, "transpose", (s, b, None, (s, s8), dy.shape[1]), ov, backend)
    dyT = dyg.view(T, b, s8).transpose(0, 1)            # (b, T, s8) [l, t, s'], pads zero
    dx = dw1 = dw2 = None
    if need_w2:
        dw2 = torch.bmm(dyT.transpose(1, 2), mid.transpose(0, 1))[:, :s, :q].contiguous()
    if need_x or need_w1:
        dm = bmm_into_grouped(dyT, w2)                  # (T, b, q8)
        dh = _gather(dm.view(T, b * q8), "transpose", (b, q, (q, q8), (q, q8)), ov, backend)
        dx8, dw1 = natural_stage1_backward(dh, x, w1, need_x, need_w1)
        if dx8 is not None:
            dx = _gather(dx8, "unpad", (n_in, p, p8), ov, backend)
        if dw1 is not None:
            dw1 = dw1[:, :q, :p].contiguous()
    return dx, dw1, dw2


def bmm_into_grouped(a: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a (b, T, k), b_ (b, k, n))`` written by cuBLAS straight into the grouped
    layout (T, b, n) (output row stride b·n, batch stride n): no copy."""
    out = a.new_empty(a.shape[1], a.shape[0], b_.shape[2])
    torch.bmm(a, b_, out=out.transpose(0, 1))
    return out


def stage2_bmm(mid: torch.Tensor, w2: torch.Tensor, overrides: dict | None = None,
               backend: str = "torch") -> torch.Tensor:
    """Stage 2 on the grouped middle m (T, b, q) by one batched GEMM (cuBLAS reads m's
    batches with a row stride b·q, no copy): Y (b, T, s), then one copy to P2's order,
    y[t, s'·b + l] = Y[l, t, s'] -> (T, b·s). With the Triton copies, cuBLAS writes Y grouped
    (T, b, s) through strides and the copy is a per-row transpose."""
    if _triton_copies(overrides or {}, backend, mid.shape[0] * mid.shape[1] * w2.shape[1]):
        yg = bmm_into_grouped(mid.transpose(0, 1), w2.transpose(1, 2))  # (T, b, s)
        return _ungroup(yg, overrides, backend)
    Y = torch.bmm(mid.transpose(0, 1), w2.transpose(1, 2))
    return Y.permute(1, 2, 0).reshape(mid.shape[0], -1)


# The grouping copies (m from h, dy grouped, outputs back to natural order) by a Triton per-row
# transpose ("triton", ``row_transpose``: 3.8-3.9 TB/s at n >= 4096 on the H200, within 6% of
# a plain clone of the same bytes) or by torch's strided copy ("torch": 1.4-1.9 TB/s at b <= 16,
# 0.9 at b = 64). benchmarks/results/monarch_copies_h200.json has the sweep.
# "auto" (the default) takes torch's copy for copies of at most TORCH_COPIES_MAX elements
# outside CUDA-graph capture: there a fwd+bwd is host-bound, and one C++ launch costs less than
# Triton's Python launcher. H200, eager fwd+bwd ms side by side, Triton copies / "auto":
# 1.204 / 0.646 at (1024, 4), 1.210 / 0.968 at (1024, 16), 1.264 / 0.986 at (2048, 4),
# 1.390 / 0.843 at (2048, 16); under CUDA graphs both take Triton's (0.226, 0.208, 0.501,
# 0.382), which beats torch's there (0.209 / 0.288 at (1024, 16), v12); from n = 4096 Triton's
# wins eager too (results/monarch_h200_v13_copies.json, monarch_h200_v12.json).
COPIES_DEFAULT = "auto"
TORCH_COPIES_MAX = 1 << 25        # elements (16384 tokens x 2048 features)


def _triton_copies(overrides: dict, backend: str, numel: int | None = None) -> bool:
    """Whether a grouping copy of ``numel`` elements runs on Triton (``overrides["copies"]``,
    else ``COPIES_DEFAULT``); ``numel=None``: a copy that has no torch equivalent as fast."""
    choice = overrides.get("copies", COPIES_DEFAULT)
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"monarch: copies must be 'auto', 'torch' or 'triton', got {choice!r}")
    if backend != "triton":
        return False
    if choice == "auto":
        return (numel is None or numel > TORCH_COPIES_MAX
                or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()))
    return choice == "triton"


def _group(t: torch.Tensor, b: int, overrides: dict, backend: str) -> torch.Tensor:
    """``group`` (T, c·b) [t, r·b + l] -> (T, b, c) [t, l, r], by the chosen copy."""
    if not _triton_copies(overrides, backend, t.numel()):
        return group(t, b)
    from .monarch_triton import row_transpose
    c = t.shape[1] // b
    return row_transpose(t.contiguous(), c, b).view(t.shape[0], b, c)


def _ungroup(t: torch.Tensor, overrides: dict, backend: str) -> torch.Tensor:
    """``ungroup`` (T, b, c) -> (T, c·b) natural order, by the chosen copy."""
    if not _triton_copies(overrides, backend, t.numel()):
        return ungroup(t)
    from .monarch_triton import row_transpose
    T, b, c = t.shape
    return row_transpose(t.contiguous().view(T, b * c), b, c)


def _cublas_backward(info, dy, x, w1, w2, mid):
    """Backward with stage 2 on cuBLAS: dy grouped once (T, b, s), read batch-major as dyT
    (b, T, s) through strides (row stride b·s; a batch-major copy was 3.5x slower at b=16);
    dw2 = dyTᵀ·m, and dm = dyT·w2 written by cuBLAS straight into the grouped layout
    (T, b, q) (output row stride b·q, batch stride q). The first factor's products read dm
    through the two-level index (fold), or after one copy to natural order."""
    sizes, backend, ov = info.sizes, info.backend, info.overrides
    T, b, p, q, s = sizes
    dyT = _group(dy, b, ov, backend).transpose(0, 1)               # (b, T, s) [l, t, s']
    need_x, need_w1, need_w2 = info.needs_input_grad[:3]
    dx = dw1 = dw2 = None
    if need_w2:
        dw2 = torch.bmm(dyT.transpose(1, 2), mid.transpose(0, 1))  # (b, s, q)
    if need_x or need_w1:
        dm = bmm_into_grouped(dyT, w2)                             # dm[t, l, r]
        if not info.fold:  # natural order dh[t, r·b + l] = dm[t, l, r]
            dh = _ungroup(dm, ov, backend)
            cublas1 = use_cublas_stage1(ov, b, q, fold=False)
            return _natural_first_factor_grads(info, dh, x, w1, cublas1) + (dw2,)
        if need_w1:
            dw1 = unfold_rows(_fold_weight_grad(dm, x, w1, sizes, backend, ov))
        if need_x:
            dx = torch.empty_like(x)
            run_product("dx=dm@w1p", dm, w1, dx, sizes, backend, ov)
    return dx, dw1, dw2


# Stage 2 on cuBLAS ("cublas") or on the strided Triton kernel ("triton"), see stage2_bmm.
# cuBLAS: 0.19 ms vs 0.27 ms per product at n=4096, b=4 and 0.08 vs 0.12 ms at b=16 (H200,
# benchmarks/NOTES.md, v5).
STAGE2_DEFAULT = "cublas"


def use_cublas_stage2(overrides: dict) -> bool:
    """Whether stage 2 runs as cuBLAS batched GEMMs: ``overrides["stage2"]`` if given, else
    ``STAGE2_DEFAULT``; never with "gather" or "strided" (those test the Triton stage 2)."""
    if overrides.get("gather") or overrides.get("store", "copy") != "copy":
        return False
    choice = overrides.get("stage2", STAGE2_DEFAULT)
    if choice not in ("triton", "cublas"):
        raise ValueError(f"monarch: stage2 must be 'triton' or 'cublas', got {choice!r}")
    return choice == "cublas"


# The fold plan (first factor on the two-level Triton kernel, two copies fewer) is opt-in
# (overrides={"fold": True}) since the copy plan's first factor moved to cuBLAS: on the H200
# (fwd+bwd, eager / CUDA graphs, ms) the copy plan with cuBLAS stage 1 against the fold took
# 0.75 / 0.74 vs 0.86 / 0.84 at (4096, 16), 1.91 / 1.86 vs 2.06 / 2.04 at (8192, 16),
# 1.51 / 1.54 vs 1.56 / 1.61 at (4096, 4), 0.66 / 0.38 vs 0.93 / 0.68 at (2048, 16) and
# 0.66 / 0.22 vs 1.04 / 0.24 at (1024, 4) (benchmarks/results/monarch_plans_h200.json).
# Forced where its runs q/b are short, it is slow: runs of 8 (16 B) made its products
# 1.2-3.8x slower than a plain product plus a copy (n=2048, b=16).


def use_fold(overrides: dict, b: int, q: int) -> bool:
    """Whether the fold plan runs: only when asked (``overrides["fold"]``) and where it
    applies (b divides q); never with "gather" or "strided"."""
    if overrides.get("gather") or overrides.get("store", "copy") != "copy":
        return False
    return bool(overrides.get("fold")) and can_fold(b, q)


# The fold's stage-1 forward and weight gradient on cuBLAS ("cublas": per middle group l one
# batched GEMM over the blocks k, reading / writing the grouped middle through strides) or on
# the two-level Triton kernel ("triton"). Its GEMMs are (T x p) @ (p x q/b), so cuBLAS wins
# where the runs q/b are long: on the H200 (v7, fwd+bwd) 1.72 vs 1.84 ms at (4096, 4) and
# 5.70 vs 6.39 at (8192, 4) (runs of 256 and 512), but 1.37 vs 1.06 at (2048, 4) (128) and
# 2.2 vs 1.0 at (4096, 16) (16). Default: cuBLAS where q/b >= STAGE1_CUBLAS_MIN_RUN.
STAGE1_CUBLAS_MIN_RUN = 256


def use_cublas_stage1(overrides: dict, b: int, q: int, fold: bool = True) -> bool:
    """Whether the first factor's products run on cuBLAS: ``overrides["stage1"]`` if given,
    else always in the copy plan (``fold=False``: all three as one batched GEMM each,
    ``natural_stage1_bmm``; the default plan) and, in the fold plan, where q/b >=
    ``STAGE1_CUBLAS_MIN_RUN`` (its forward and weight gradient; dx stays on Triton)."""
    choice = overrides.get("stage1", "auto")
    if choice not in ("auto", "triton", "cublas"):
        raise ValueError(f"monarch: stage1 must be 'auto', 'triton' or 'cublas', got {choice!r}")
    if choice == "auto":
        return not fold or q // b >= STAGE1_CUBLAS_MIN_RUN
    return choice == "cublas"


def natural_stage1_bmm(x: torch.Tensor, w1: torch.Tensor, b: int) -> torch.Tensor:
    """Stage 1 of the copy plan as one batched GEMM over the blocks k: x (T, b·p), w1
    (b, q, p) -> h (T, b·q) natural order, h[t, k·q + i] = x[t, k-block]·w1[k, i]; cuBLAS
    reads x and writes h batch-major through strides (row stride b·p, b·q), no copy."""
    T, (_, q, p) = x.shape[0], w1.shape
    h = x.new_empty(T, b * q)
    torch.bmm(x.view(T, b, p).transpose(0, 1), w1.transpose(1, 2),
              out=h.view(T, b, q).transpose(0, 1))
    return h


def natural_stage1_backward(dh, x, w1, need_x=True, need_w1=True):
    """Gradients of ``natural_stage1_bmm``: dx (T, b·p) = dh·w1 per block and dw1 (b, q, p) =
    Σ_t dh[t, k-block]ᵀ x[t, k-block], each one batched GEMM on strided views."""
    T, (b, q, p) = x.shape[0], w1.shape
    dhk = dh.view(T, b, q).transpose(0, 1)                               # (b, T, q)
    dx = dw1 = None
    if need_x:
        dx = torch.empty_like(x)
        torch.bmm(dhk, w1, out=dx.view(T, b, p).transpose(0, 1))
    if need_w1:
        dw1 = torch.bmm(dhk.transpose(1, 2), x.view(T, b, p).transpose(0, 1))
    return dx, dw1


def stage1_bmm(x: torch.Tensor, w1p: torch.Tensor, b: int) -> torch.Tensor:
    """The fold's stage 1 by b batched GEMMs: x (T, b·p), w1p (b, q, p) row-folded ->
    m (T, b, q) with m[t, l, k·c + r] = x[t, k-block] · w1p[k, l·c + r] (c = q/b)."""
    T, (_, q, p) = x.shape[0], w1p.shape
    c = q // b
    m = x.new_empty(T, b, q)
    xk = x.view(T, b, p).transpose(0, 1)                                 # (b, T, p)
    for l in range(b):
        out = m[:, l].view(T, b, c).transpose(0, 1)                      # (b, T, c)
        torch.bmm(xk, w1p[:, l * c:(l + 1) * c].transpose(1, 2), out=out)
    return m


def stage1_weight_grad_bmm(dm: torch.Tensor, x: torch.Tensor, b: int) -> torch.Tensor:
    """Gradient of w1p (b, q, p) from dm (T, b, q) and x (T, b·p) by b batched GEMMs:
    dw1p[k, l·c + r] = sum_t dm[t, l, k·c + r] x[t, k-block]."""
    T, q = dm.shape[0], dm.shape[2]
    p, c = x.shape[1] // b, q // b
    dw1p = x.new_empty(b, q, p)
    xk = x.view(T, b, p).transpose(0, 1)                                 # (b, T, p)
    for l in range(b):
        a = dm[:, l].view(T, b, c).permute(1, 2, 0)                      # (b, c, T)
        torch.bmm(a, xk, out=dw1p[:, l * c:(l + 1) * c])
    return dw1p


def _fold_weight_grad(dm, x, w1p, sizes, backend, overrides):
    """dw1p, row-folded (b, q, p), from the grouped dm: cuBLAS or the Triton kernel."""
    if use_cublas_stage1(overrides, sizes[1], sizes[3]):
        return stage1_weight_grad_bmm(dm, x, sizes[1]).to(w1p.dtype)
    return _weight_grad("dw1p=dm'x", dm, x, w1p, sizes, backend, overrides)


def _weight_grad(name, a, b_, weight, sizes, backend, overrides):
    if backend == "torch":
        out = torch.empty_like(weight)
        run_product(name, a, b_, out, sizes, backend, overrides)
        return out
    out = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
    run_product(name, a, b_, out, sizes, backend, overrides)
    return out.to(weight.dtype)


def monarch_multiply_fast(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                          out_features: int, impl: str = "auto",
                          overrides: dict | None = None) -> torch.Tensor:
    """``monarch_multiply`` through the strided plan: x (T, in) -> (T, out_features).

    The weights are used in ``x``'s dtype. Padded sizes (in or out not a multiple of b) pad x
    and slice y around the permutation-free core.
    """
    from .monarch import monarch_multiply, monarch_weight
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        x = x.to(torch.get_autocast_dtype("cuda"))
    backend = resolve_impl(impl, x)
    if x.shape[0] == 0:  # no tokens: nothing to launch (the plain path gives zero gradients)
        backend = "plain"
    if backend == "plain":
        return monarch_multiply(x, w1, w2, out_features)
    if backend == "dense":
        weight = monarch_weight(w1, w2, out_features, x.shape[1])
        return x @ weight.to(x.dtype).T
    b, q, p = w1.shape
    op = torch.compiler.is_compiling() and not overrides
    # the padded plan (odd block sizes) pads x and cuts y in its own gathers: no F.pad copy
    direct = not op and use_pad(overrides or {}, b, p, q, w2.shape[1])
    if x.shape[1] < b * p and not direct:
        x = F.pad(x, (0, b * p - x.shape[1]))
    w1, w2 = w1.to(x.dtype), w2.to(x.dtype)
    if op:
        # the default plan as a custom op: one graph under torch.compile (the autograd function
        # breaks it); eager calls skip the op's dispatch (60-100 us per fwd+bwd on a CPU host)
        from .monarch_op import monarch_product
        y = monarch_product(x, w1, w2, backend)
    else:
        y = _MonarchFunction.apply(x, w1, w2, backend, overrides,
                                   out_features if direct else None)
    return y if y.shape[1] == out_features else y[:, :out_features]
