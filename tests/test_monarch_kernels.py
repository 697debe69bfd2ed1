"""The permutation-free Monarch plan (monarch_kernels) and its Triton kernel against the plain
two-bmm path, plus the GPU variant of topk_svd. CPU parts run everywhere (float64); the Triton
parts need CUDA and are skipped without it."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from workbench.structures import MonarchLinear, monarch_multiply, topk_svd
from workbench.structures.purification import top_projector
from workbench.structures.monarch_kernels import (IMPLS, can_fold, choose_config, fold_rows,
                                                  group, monarch_multiply_fast, plan,
                                                  resolve_impl,
                                                  triton_available, two_level, unfold_rows,
                                                  use_cublas_stage1, use_cublas_stage2,
                                                  use_fold, use_pad)
from workbench.structures.monarch_plan import pad_sizes, padded_transpose, wants_padding

SHAPES = [(16, 16, 4), (64, 64, 8), (10, 7, 3), (7, 10, 3), (96, 384, 4), (384, 96, 4),
          (100, 30, 4), (5, 5, 64), (33, 65, 16), (128, 128, 1), (64, 64, 64), (17, 19, 2),
          (1024, 1024, 32)]
CUDA = torch.cuda.is_available() and triton_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="the Triton kernel needs a CUDA GPU and Triton")


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def forward_and_grads(layer, x, dy):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    return (y,) + torch.autograd.grad(y, (x, layer.w1, layer.w2), dy)


@pytest.mark.parametrize("i, o, b", SHAPES)
def test_torch_plan_matches_dense_and_plain_float64(i, o, b):
    torch.manual_seed(0)
    layer = MonarchLinear(i, o, b, dtype=torch.float64, impl="torch")
    x = torch.randn(2, 3, i, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ layer.to_dense().T + layer.bias, rtol=1e-12,
                               atol=1e-12)
    x, dy = torch.randn(7, i, dtype=torch.float64), torch.randn(7, o, dtype=torch.float64)
    layer.impl = "plain"
    want = forward_and_grads(layer, x, dy)
    for overrides in (None, {"store": "copy"}, {"gather": True}, {"stage2": "cublas"},
                      {"stage2": "cublas", "fold": False}, {"stage1": "cublas"},
                      {"stage1": "cublas", "stage2": "triton"},
                      {"stage1": "cublas", "fold": False},
                      {"stage1": "cublas", "fold": False, "stage2": "triton"},
                      {"pad": True}, {"pad": True, "copies": "torch"}, {"pad": False}):
        xi = x.clone().requires_grad_(True)
        y = monarch_multiply_fast(xi, layer.w1, layer.w2, o, impl="torch", overrides=overrides)
        got = (y,) + torch.autograd.grad(y, (xi, layer.w1, layer.w2), dy)
        for g, w_ in zip(got, (want[0] - layer.bias,) + want[1:]):
            torch.testing.assert_close(g, w_, rtol=1e-12, atol=1e-12)


FOLD_SHAPES = [(256, 256, 4), (63, 64, 2), (64, 63, 2), (512, 384, 4), (128, 128, 1),
               (1024, 1024, 4)]


@pytest.mark.parametrize("i, o, b", FOLD_SHAPES)
def test_fold_plan_matches_plain_float64(i, o, b):
    """The fold plan (first factor reading and writing the grouped middle through a two-level
    index) computes the same forward and gradients as the plain path."""
    torch.manual_seed(1)
    layer = MonarchLinear(i, o, b, dtype=torch.float64, impl="plain", bias=False)
    assert can_fold(layer.nblocks, layer.mid_block) and use_fold({"fold": True}, b,
                                                                 layer.mid_block)
    x, dy = torch.randn(9, i, dtype=torch.float64), torch.randn(9, o, dtype=torch.float64)
    want = forward_and_grads(layer, x, dy)
    for overrides in ({"fold": True}, {"fold": True, "stage2": "cublas"},
                      {"fold": True, "stage1": "cublas"},
                      {"fold": True, "stage1": "cublas", "stage2": "triton"},
                      {"fold": True, "stage1": "triton"}):
        xi = x.clone().requires_grad_(True)
        y = monarch_multiply_fast(xi, layer.w1, layer.w2, o, impl="torch", overrides=overrides)
        got = (y,) + torch.autograd.grad(y, (xi, layer.w1, layer.w2), dy)
        for g, w_ in zip(got, want):
            torch.testing.assert_close(g, w_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["torch", "plain", "dense"])
def test_zero_tokens_give_empty_output_and_zero_grads(impl):
    """A batch of no tokens: (0, out) output, zero weight gradients, on every CPU path."""
    layer = MonarchLinear(64, 48, 4, impl=impl)
    x = torch.randn(0, 64, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 48)
    y.sum().backward()
    assert x.grad.shape == (0, 64) and not layer.w1.grad.any() and not layer.w2.grad.any()
    assert group(torch.randn(0, 64), 4).shape == (0, 4, 16)


def test_fold_rows_round_trip_and_policy():
    w1 = torch.randn(4, 32, 5)
    w1p = fold_rows(w1)
    assert torch.equal(unfold_rows(w1p), w1)
    assert torch.equal(w1p[1, 2 * 8 + 3], w1[1, 3 * 4 + 2])  # w1p[k, l·q/b + r] = w1[k, r·b + l]
    assert not can_fold(4, 30) and not can_fold(16, 64) and can_fold(16, 128)
    assert not use_fold({"gather": True}, 4, 64) and not use_fold({"fold": False}, 4, 64)
    assert not use_fold({"store": "strided"}, 4, 64) and use_fold({"fold": True}, 4, 64)
    assert not use_fold({}, 4, 64)  # the copy plan is the default
    assert use_cublas_stage2({"stage2": "cublas"}) and not use_cublas_stage2({"stage2": "triton"})
    assert use_cublas_stage1({"stage1": "cublas"}, 16, 256)
    assert not use_cublas_stage1({"stage1": "triton"}, 4, 1024)
    assert use_cublas_stage1({}, 4, 1024) and not use_cublas_stage1({}, 4, 512)  # runs 256, 128
    assert use_cublas_stage1({}, 16, 64, fold=False)  # the copy plan: always
    assert use_cublas_stage1({"stage1": "cublas"}, 4, 1024, fold=False)
    with pytest.raises(ValueError, match="stage1"):
        use_cublas_stage1({"stage1": "cutlass"}, 4, 1024)
    with pytest.raises(ValueError, match="copies"):
        monarch_multiply_fast(torch.randn(2, 64), *MonarchLinear(64, 64, 4, bias=False).parameters(), 64,
                              impl="torch", overrides={"copies": "numpy"})
    assert not use_cublas_stage2({"stage2": "cublas", "gather": True})
    with pytest.raises(ValueError, match="stage2"):
        use_cublas_stage2({"stage2": "cutlass"})


def test_padding_policy_and_padded_transpose():
    """Odd block sizes of 32 or more take the padded plan by default (b = √n: 91 at n = 8192,
    46 at n = 2048), aligned or tiny ones do not; the padded transpose is the plain grouping
    where nothing is padded, keeps the logical elements where something is, and zeroes pads."""
    assert pad_sizes(91, 91, 91) == (96, 96, 96) and pad_sizes(46, 46, 40) == (48, 48, 40)
    assert wants_padding(91, 91, 91) and wants_padding(46, 46, 46)
    assert not wants_padding(64, 64, 64) and not wants_padding(25, 8, 8)
    assert use_pad({}, 91, 91, 91, 91) and not use_pad({}, 16, 64, 64, 64)
    assert use_pad({"pad": True}, 4, 8, 8, 8) and not use_pad({"pad": False}, 91, 91, 91, 91)
    assert not use_pad({"fold": True}, 4, 46, 64, 46)   # a fold plan keeps its own layout
    with pytest.raises(ValueError, match="pad must be"):
        use_pad({"pad": "yes"}, 4, 46, 46, 46)
    x = torch.randn(3, 35)
    assert torch.equal(padded_transpose(x, 7, 5).view(3, 5, 7), group(x, 5))
    src = F.pad(x.view(3, 5, 7), (0, 1)).reshape(3, 40)     # runs of 7 at a pitch of 8
    out = padded_transpose(src, 7, 5, src=(7, 8), dst=(7, 8)).view(3, 5, 8)
    assert torch.equal(out[..., :7], padded_transpose(x, 7, 5).view(3, 5, 7))
    assert torch.equal(out[..., 7], torch.zeros(3, 5))


def test_copies_policy():
    """"auto" copies: Triton for large copies, for those with no fast torch equivalent
    (numel None) and under CUDA-graph capture; torch's copy for small ones (host-bound)."""
    from workbench.structures.monarch_kernels import TORCH_COPIES_MAX, _triton_copies
    assert not _triton_copies({}, "torch", None)
    assert _triton_copies({}, "triton", None)
    assert _triton_copies({}, "triton", TORCH_COPIES_MAX + 1)
    assert not _triton_copies({}, "triton", 1024) or torch.cuda.is_current_stream_capturing()
    assert _triton_copies({"copies": "triton"}, "triton", 1024)
    assert not _triton_copies({"copies": "torch"}, "triton", None)
    with pytest.raises(ValueError, match="copies must be"):
        _triton_copies({"copies": "cuda"}, "triton", 1)


def test_plan_strides_address_every_element_once():
    """Each product's C view covers its output tensor exactly once (no gaps, no overlap)."""
    T, b, p, q, s = 5, 3, 4, 4, 6
    sizes = {"h=x@w1": T * b * q, "y=h@w2": T * b * s, "dh=dy@w2": T * b * q,
             "dw2=dy'h": b * s * q, "dx=dh@w1": T * b * p, "dw1=dh'x": b * q * p,
             "y=m@w2>nat": T * b * s, "y=m@w2>grp": T * b * s, "dh=dy@w2>nat": T * b * q,
             "dh=dy@w2>grp": T * b * q, "dw2=dy'm": b * s * q}
    for name, numel in sizes.items():
        G, M, N, K, sa, sb, sc = plan(name, T, b, p, q, s)
        hits = torch.zeros(numel)
        hits.as_strided((G, M, N), sc).add_(1)  # adds through the view; duplicates would be 2
        assert G * M * N == numel and torch.equal(hits, torch.ones(numel)), name
    # the fold products: C's columns (m) or A's rows / reduction index (dm) are two-level
    T, b, p, q, s = 5, 2, 6, 8, 8
    for name, operand, numel in (("m=x@w1p", "c", T * b * q), ("dx=dm@w1p", "a", T * b * q),
                                 ("dw1p=dm'x", "a", T * b * q)):
        G, M, N, K, sa, sb, sc = plan(name, T, b, p, q, s)
        which, cs, hi = two_level(name, T, b, p, q, s)
        hits = torch.zeros(numel)
        if which == 3:
            hits.as_strided((G, M, N // cs, cs), (sc[0], sc[1], hi, sc[2])).add_(1)
        elif which == 2:
            hits.as_strided((G, M, K // cs, cs), (sa[0], sa[1], hi, sa[2])).add_(1)
        else:
            hits.as_strided((G, M // cs, cs, K), (sa[0], hi, sa[1], sa[2])).add_(1)
        assert torch.equal(hits, torch.ones(numel)), name


def test_dispatch():
    cpu = torch.randn(4, 8)
    assert resolve_impl("auto", cpu) == "plain"
    assert resolve_impl("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="impl"):
        resolve_impl("fastest", cpu)
    with pytest.raises(ValueError, match="impl"):
        MonarchLinear(8, 8, 2, impl="fastest")
    if not cpu.is_cuda:
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_impl("triton", cpu)
    assert set(IMPLS) == {"auto", "plain", "torch", "triton", "dense"}
    w1, w2 = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    torch.testing.assert_close(monarch_multiply_fast(cpu, w1, w2, 8, impl="auto"),
                               monarch_multiply(cpu, w1, w2, 8))


def test_configs_are_valid_tiles():
    for name in ("h=x@w1", "y=h@w2", "dh=dy@w2", "dw2=dy'h", "dx=dh@w1", "dw1=dh'x",
                 "y=m@w2>nat", "dh=dy@w2>nat", "dw2=dy'm", "m=x@w1p", "dx=dm@w1p", "dw1p=dm'x"):
        for sizes in ((16384, 4, 1024, 1024, 1024), (16384, 91, 91, 91, 91), (7, 3, 4, 4, 6)):
            G, M, N, K = plan(name, *sizes)[:4]
            cfg = choose_config(name, G, M, N, K)
            for key in ("BM", "BN", "BK"):
                assert cfg[key] >= 16 and cfg[key] & (cfg[key] - 1) == 0
            assert cfg["BL"] & (cfg["BL"] - 1) == 0 and cfg["SPLIT_K"] >= 1
            if name.startswith("dw") and sizes[0] == 16384:
                assert cfg["SPLIT_K"] > 1 or G * M * N >= 2 * 132 * cfg["BM"] * cfg["BN"]


@pytest.mark.parametrize("k", [1, 6])
def test_topk_svd_fast_variant_float64(k):
    torch.manual_seed(3)
    a = torch.randn(9, 50, 30, dtype=torch.float64)
    a[0] = 0  # a zero block must not produce NaN
    for mat in (a, a.mT):
        u, s, v = topk_svd(mat, k, method="randomized", variant="fast", tol=1e-12,
                           max_iters=500)
        torch.testing.assert_close(s, torch.linalg.svdvals(mat)[:, :k], rtol=1e-6, atol=1e-8)
        best = torch.linalg.svdvals(mat)[:, k:].square().sum()
        got = (mat - (u * s.unsqueeze(-2)) @ v.mT).square().sum()
        assert float((got - best) / best) < 1e-8
        assert torch.isfinite(u).all() and torch.isfinite(v).all()


@pytest.mark.parametrize("shape", [(9, 50, 30), (4, 96, 96), (3, 40, 120), (2, 300, 300)])
@pytest.mark.parametrize("k", [1, 6, 40])
def test_topk_svd_projector_variant_float64(shape, k):
    """The GPU default for k > 1 (purification Rayleigh-Ritz, range-form output) on the CPU:
    U orthonormal, ΣS² = ‖UᵀA‖², and the residual within the target of the optimum on flat,
    steep and slowly decaying spectra."""
    torch.manual_seed(7)
    batch, m, n = shape
    if k + max(8, k // 2) >= min(m, n):
        pytest.skip("falls back to the exact SVD")
    g = torch.randn(batch, m, n, dtype=torch.float64)
    u0 = torch.linalg.qr(torch.randn(batch, m, m, dtype=torch.float64)).Q[..., :min(m, n)]
    v0 = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64)).Q[..., :min(m, n)]
    i = torch.arange(1, min(m, n) + 1, dtype=torch.float64)
    for a in (g, (u0 * i.reciprocal()) @ v0.mT, (u0 * i.pow(-0.25)) @ v0.mT):
        a = a.clone()
        a[0] = 0  # a zero block must not produce NaN
        u, s, v = topk_svd(a, k, method="randomized", variant="projector", tol=1e-4,
                           generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(u).all() and torch.isfinite(s).all() and torch.isfinite(v).all()
        assert bool((s[:, :-1] >= s[:, 1:]).all())
        # the orthonormal factor is the taller side's: U for m >= n, V for m < n
        basis, side = (u, a) if m >= n else (v, a.mT)
        torch.testing.assert_close(basis[1:].mT @ basis[1:], torch.eye(k, dtype=a.dtype).expand(
            batch - 1, k, k), atol=1e-10, rtol=0)
        torch.testing.assert_close(s.square().sum(-1), (basis.mT @ side).square().sum((-2, -1)),
                                   rtol=1e-10, atol=1e-12)
        best = torch.linalg.svdvals(a[1:])[:, k:].square().sum(-1)
        got = (a[1:] - (u[1:] * s[1:].unsqueeze(-2)) @ v[1:].mT).square().sum((-2, -1))
        assert float(((got - best) / best).max()) < 1e-4


@pytest.mark.parametrize("k", [1, 7, 20])
def test_top_projector_against_eigh(k):
    """Purification's projector equals the projector onto eigh's top-k eigenvectors, a zero
    matrix included (then any rank-k projector is acceptable, but it must be finite)."""
    torch.manual_seed(k)
    y = torch.randn(4, 80, 32, dtype=torch.float64)
    y[:, :, 0] *= 30                                      # one dominant direction
    g = y.mT @ y
    g[0] = 0
    got = top_projector(g, k, fused=False)
    vec = torch.linalg.eigh(g[1:]).eigenvectors[..., -k:]
    torch.testing.assert_close(got[1:], vec @ vec.mT, atol=1e-12, rtol=0)
    assert torch.isfinite(got[0]).all()
    with pytest.raises(ValueError, match="B, w, w"):
        top_projector(g[0], k)


@pytest.mark.parametrize("skip_qr", [False, True])
def test_projector_with_and_without_skipped_qrs(skip_qr):
    """Skipping every other Cholesky-QR on flat spectra (and never on steep ones) keeps the
    result within the target of the optimum; a rank-deficient batch (a rank-3 block, whose
    Cholesky fails and is redone by Householder) stays finite."""
    from workbench.structures.topk_svd import _projector
    torch.manual_seed(11)
    flat = torch.randn(4, 200, 200, dtype=torch.float64)
    u0 = torch.linalg.qr(torch.randn(4, 200, 200, dtype=torch.float64)).Q
    steep = (u0 * torch.arange(1, 201, dtype=torch.float64).reciprocal()) @ u0.mT
    low = torch.randn(4, 200, 3, dtype=torch.float64) @ torch.randn(4, 3, 200,
                                                                     dtype=torch.float64)
    for a in (flat, steep, low):
        u, s, v = _projector(a, 24, 60, 1e-4, 36, torch.Generator().manual_seed(0),
                             skip_qr=skip_qr)
        assert torch.isfinite(u).all() and torch.isfinite(s).all() and torch.isfinite(v).all()
        best = torch.linalg.svdvals(a)[:, 24:].square().sum(-1)
        got = (a - (u * s.unsqueeze(-2)) @ v.mT).square().sum((-2, -1))
        excess = (got - best) / best.clamp_min(1e-300)
        assert float(excess.max()) < 1e-4 or float((got - best).max()) < 1e-20


def test_newton_schulz_and_spread():
    """The warm start's orthogonalisation keeps the span and brings the singular values near 1;
    the spread measure tells flat blocks (about 1-2) from steep ones."""
    tk = importlib.import_module("workbench.structures.topk_svd")
    torch.manual_seed(13)
    y = torch.randn(3, 200, 40, dtype=torch.float64) @ torch.diag(torch.logspace(0, -1.5, 40,
                                                                                 dtype=torch.float64))
    x = tk._newton_schulz(y)
    sv = torch.linalg.svdvals(x)
    assert float(sv.min()) > 0.6 and float(sv.max()) < 1.25
    basis = torch.linalg.qr(x).Q
    assert float((y - basis @ (basis.mT @ y)).norm() / y.norm()) < 1e-10
    flat = torch.linalg.qr(torch.randn(2, 200, 40, dtype=torch.float64)).Q
    steep = torch.randn(2, 200, 40, dtype=torch.float64) @ torch.diag(
        torch.arange(1, 41, dtype=torch.float64).reciprocal())
    assert tk._spread(flat) < 1.01 and tk._spread(steep) > tk.WARM_SPREAD
    assert tk._spread(torch.zeros(2, 50, 8, dtype=torch.float64)) == 1.0


@pytest.mark.parametrize("warm", [0, 6])
def test_projector_with_a_bfloat16_warm_start(warm):
    """Starting the float64 iteration from bfloat16 power steps (flat spectra) lands within the
    target on flat, slowly decaying and steep blocks, with a zero block in the batch."""
    tk = importlib.import_module("workbench.structures.topk_svd")
    torch.manual_seed(14)
    u0 = torch.linalg.qr(torch.randn(4, 160, 160, dtype=torch.float64)).Q
    i = torch.arange(1, 161, dtype=torch.float64)
    for a in (torch.randn(4, 160, 160, dtype=torch.float64), (u0 * i.pow(-0.25)) @ u0.mT,
              (u0 * i.reciprocal()) @ u0.mT):
        a[0] = 0
        u, s, v = tk._projector(a, 20, 60, 1e-4, 30, torch.Generator().manual_seed(0), warm=warm)
        assert torch.isfinite(u).all() and torch.isfinite(v).all()
        best = torch.linalg.svdvals(a[1:])[:, 20:].square().sum(-1)
        got = (a[1:] - (u[1:] * s[1:].unsqueeze(-2)) @ v[1:].mT).square().sum((-2, -1))
        assert float(((got - best) / best).max()) < 1e-4


def test_projector_redoes_a_failed_deferred_qr(monkeypatch):
    """A Cholesky-QR inside the iteration that reports failure (its q is garbage) is redone by
    Householder at the next sync: the result stays finite and within the target."""
    tk = importlib.import_module("workbench.structures.topk_svd")
    real, calls = tk._cholqr_deferred, []

    def failing(y):
        q, t, health = real(y)
        calls.append(1)
        if len(calls) == 3:
            return torch.full_like(q, float("nan")), t, torch.tensor([1.0, float("inf")],
                                                                      dtype=y.dtype)
        return q, t, health
    monkeypatch.setattr(tk, "_cholqr_deferred", failing)
    torch.manual_seed(12)
    a = torch.randn(3, 120, 120, dtype=torch.float64)
    u, s, v = tk._projector(a, 12, 60, 1e-4, 20, torch.Generator().manual_seed(0))
    assert len(calls) > 3 and torch.isfinite(u).all() and torch.isfinite(v).all()
    best = torch.linalg.svdvals(a)[:, 12:].square().sum(-1)
    got = (a - (u * s.unsqueeze(-2)) @ v.mT).square().sum((-2, -1))
    assert float(((got - best) / best).max()) < 1e-4


def test_topk_svd_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        topk_svd(torch.randn(2, 30, 20), 3, method="randomized", variant="nope")


# ---- GPU: the Triton kernel against the plain path -------------------------------------------
GPU_SHAPES = [(1024, 1024, 4, 4096), (1024, 1024, 32, 4096), (4096, 4096, 16, 2048),
              (4096, 4096, 64, 2048), (8192, 8192, "sqrt", 1024), (384, 1536, 4, 999),
              (1536, 384, 16, 1000), (100, 30, 4, 77), (33, 65, 16, 300), (768, 768, 12, 513),
              (4096, 4096, 4, 1000), (8192, 8192, 16, 513), (511, 512, 2, 300)]


@needs_cuda
@pytest.mark.parametrize("i, o, b, tokens", GPU_SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_matches_fp32_reference(i, o, b, tokens, dtype):
    torch.manual_seed(hash((i, o, str(b), tokens)) % 1000)
    dev = torch.device("cuda")
    layer = MonarchLinear(i, o, b, device=dev, dtype=dtype, impl="triton")
    ref = MonarchLinear(i, o, b, device=dev, dtype=torch.float32, impl="plain")
    ref.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
    x = torch.randn(tokens, i, device=dev, dtype=dtype)
    dy = torch.randn(tokens, o, device=dev, dtype=dtype)
    # poison the allocator's free blocks: an unwritten output element would read NaN
    torch.full((tokens * 4 * max(i, o),), float("nan"), device=dev, dtype=dtype)
    got = forward_and_grads(layer, x, dy)
    want = forward_and_grads(ref, x.float(), dy.float())
    layer.impl = "plain"
    plain = forward_and_grads(layer, x, dy)
    for name, g, w, p in zip(("y", "dx", "dw1", "dw2"), got, want, plain):
        assert torch.isfinite(g).all(), name
        err, err_plain = rel(g, w), rel(p, w)
        assert err < 1e-2 and err < 2 * err_plain + 1e-3, (name, err, err_plain)


@needs_cuda
@pytest.mark.parametrize("i, o, b", [(4096, 4096, 4), (4096, 4096, 16), (1024, 1024, 4),
                                     (511, 512, 2)])
def test_triton_fold_and_copy_plans_agree(i, o, b):
    """The fold plan, the copy plan (v3), both with stage 2 on cuBLAS, the fold with stage 1
    on cuBLAS too, and the plans with the Triton grouping copies give the same results on the
    GPU (bf16)."""
    torch.manual_seed(2)
    dev = torch.device("cuda")
    layer = MonarchLinear(i, o, b, device=dev, dtype=torch.bfloat16, bias=False)
    assert can_fold(layer.nblocks, layer.mid_block)
    x = torch.randn(777, i, device=dev, dtype=torch.bfloat16)
    dy = torch.randn(777, o, device=dev, dtype=torch.bfloat16)
    out = []
    for fold, stage2, stage1, copies in (
            (True, "triton", "triton", "torch"), (False, "triton", "triton", "torch"),
            (True, "cublas", "triton", "torch"), (False, "cublas", "triton", "torch"),
            (True, "cublas", "cublas", "torch"), (True, "cublas", "triton", "triton"),
            (False, "cublas", "triton", "triton"), (False, "triton", "triton", "triton"),
            (False, "cublas", "cublas", "triton")):
        torch.full((777 * 4 * max(i, o),), float("nan"), device=dev, dtype=torch.bfloat16)
        xi = x.clone().requires_grad_(True)
        y = monarch_multiply_fast(xi, layer.w1, layer.w2, o, impl="triton",
                                  overrides={"fold": fold, "stage2": stage2, "stage1": stage1,
                                             "copies": copies})
        out.append((y,) + torch.autograd.grad(y, (xi, layer.w1, layer.w2), dy))
    for other in out[1:]:
        for name, f, c in zip(("y", "dx", "dw1", "dw2"), other, out[0]):
            assert torch.isfinite(f).all(), name
            assert rel(f, c) < 1e-2, (name, rel(f, c))


@needs_cuda
def test_topk_svd_projector_on_cuda():
    torch.manual_seed(4)
    a = torch.randn(16, 512, 512, device="cuda")
    u, s, v = topk_svd(a, 128, method="randomized")        # auto: the projector variant
    best = torch.linalg.svdvals(a.double())[:, 128:].square().sum(-1)
    got = (a.double() - (u * s.unsqueeze(-2)).double() @ v.double().mT).square().sum((-2, -1))
    assert float(((got - best) / best).max()) < 1e-4


@needs_cuda
def test_fused_purification_on_cuda():
    torch.manual_seed(5)
    y = torch.randn(16, 1024, 384, device="cuda", dtype=torch.float64)
    g = y.mT @ y
    vec = torch.linalg.eigh(g).eigenvectors[..., -256:]
    got = top_projector(g, 256, fused=True)
    torch.testing.assert_close(got, vec @ vec.mT, atol=1e-9, rtol=0)
    torch.testing.assert_close(got, top_projector(g, 256, fused=False), atol=1e-12, rtol=0)


@needs_cuda
def test_auto_uses_triton_for_bf16_cuda_and_plain_for_fp32():
    x16 = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    assert resolve_impl("auto", x16) == "triton"
    assert resolve_impl("auto", x16.float()) == "plain"
    layer = MonarchLinear(64, 64, 4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x16.float())
    assert rel(y, x16.float() @ layer.to_dense().T + layer.bias) < 1e-2


@needs_cuda
def test_triton_fp32_is_tf32_accurate():
    layer = MonarchLinear(512, 512, 8, device="cuda", bias=False, impl="triton")
    x = torch.randn(1000, 512, device="cuda")
    ref = x.double() @ layer.to_dense().double().T
    assert rel(layer(x), ref) < 3e-3


@needs_cuda
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_triton_path_under_torch_compile(mode):
    """Inductor compiles a layer on the Triton path into one graph (the products are custom
    ops), also replayed as CUDA graphs, and matches eager in bf16, forward and gradients."""
    torch.manual_seed(5)
    torch._dynamo.reset()
    layer = MonarchLinear(1024, 1024, 4, device="cuda", dtype=torch.bfloat16, impl="triton")
    compiled = torch.compile(layer, mode=mode, fullgraph=True)

    def step(module, x):
        """One training-style step: forward, backward into .grad; copies of y and the grads
        (a CUDA-graph replay reuses its output memory)."""
        torch.compiler.cudagraph_mark_step_begin()
        layer.zero_grad(set_to_none=True)  # accumulating into a replayed graph's output fails
        x.grad = None
        y = module(x)
        y.float().square().sum().backward()
        return [t.detach().clone() for t in (y, x.grad, layer.w1.grad, layer.w2.grad)]

    for _ in range(3):  # warm-up, CUDA-graph recording, replay
        step(compiled, torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16,
                                   requires_grad=True))
    x = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = [step(module, x) for module in (compiled, layer)]
    for name, got, want in zip(("y", "dx", "dw1", "dw2"), *out):
        assert rel(got, want) < 1e-2, (name, rel(got, want))


# ---- the default plan as torch.library custom ops (monarch_op) -------------------------------
@pytest.mark.parametrize("i, o, b", [(64, 64, 4), (256, 256, 2), (100, 30, 4), (64, 64, 1),
                                     (100, 120, 3)])
def test_custom_ops_pass_opcheck(i, o, b):
    """Schema, fake (meta) shapes and strides, autograd registration and AOT dispatch of the
    two ops agree with their real implementations (torch.library.opcheck), on the torch plan."""
    from workbench.structures.monarch_op import monarch_backward, monarch_forward
    torch.manual_seed(i + o + b)
    layer = MonarchLinear(i, o, b, dtype=torch.float64, bias=False)
    x = F.pad(torch.randn(9, i, dtype=torch.float64), (0, layer.in_ext - i))
    w1 = layer.w1.detach().clone().requires_grad_(True)
    w2 = layer.w2.detach().clone().requires_grad_(True)
    torch.library.opcheck(monarch_forward, (x.requires_grad_(True), w1, w2, "torch"))
    y, mid = monarch_forward(x, w1, w2, "torch")
    for needs in ([True, True, True], [False, True, True], [True, False, False]):
        torch.library.opcheck(monarch_backward,
                              (torch.randn_like(y), x.detach(), w1.detach(), w2.detach(),
                               mid.detach(), "torch", needs))


def test_custom_op_gradients_match_plain_float64():
    """Gradients through the op equal the plain path's; an input that needs no gradient gets
    none, and an unknown back end is refused by name."""
    from workbench.structures.monarch_op import monarch_product
    torch.manual_seed(3)
    layer = MonarchLinear(128, 96, 4, dtype=torch.float64, bias=False)
    x = torch.randn(11, 128, dtype=torch.float64, requires_grad=True)
    y = monarch_product(x, layer.w1, layer.w2, "torch")[:, :96]
    want = monarch_multiply(x, layer.w1, layer.w2, 96)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.w1, layer.w2), dy)
    ref = torch.autograd.grad(want, (x, layer.w1, layer.w2), dy)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    frozen = monarch_product(x.detach(), layer.w1, layer.w2, "torch")
    (dw1,) = torch.autograd.grad(frozen.sum(), (layer.w1,))
    assert dw1.shape == layer.w1.shape
    with pytest.raises(ValueError, match="backend must be one of"):
        monarch_product(x, layer.w1, layer.w2, "cuda")


def test_model_with_monarch_layers_compiles_to_one_graph():
    """A whole GPT-style block stack with Monarch FFNs on the torch plan compiles with
    fullgraph=True (no graph break anywhere), and a training step's gradients equal eager."""
    from workbench.methods import apply_method
    from workbench.models import build_model
    from workbench.data import load_dataset
    from workbench.experiment import PATTERNS
    data = load_dataset("bytes", seed=0, size="ci")
    torch.manual_seed(0)
    net = build_model("gpt", data, width=32, depth=2, seed=0).double()
    apply_method("monarch", net, nblocks=4, init="fresh", include=PATTERNS["ffn"])
    layers = [m for m in net.modules() if isinstance(m, MonarchLinear)]
    assert layers
    for layer in layers:
        layer.impl = "torch"
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    tokens = torch.randint(0, 256, (2, 16))
    grads = []
    for module in (compiled, net):
        out = module(tokens)
        out = out[0] if isinstance(out, tuple) else out
        grads.append(torch.autograd.grad(out.double().square().mean(), layers[0].w1))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("i, o, b", SHAPES)
def test_dense_weight_and_dense_impl_float64(i, o, b):
    """monarch_weight (one einsum where b divides q) is the matrix the plain path multiplies
    by: it equals the identity pushed through monarch_multiply, and impl="dense" gives the
    plain path's outputs and gradients."""
    from workbench.structures import monarch_weight
    torch.manual_seed(i * o + b)
    layer = MonarchLinear(i, o, b, dtype=torch.float64)
    eye = torch.eye(i, dtype=torch.float64)
    reference = monarch_multiply(eye, layer.w1, layer.w2, o).T
    torch.testing.assert_close(monarch_weight(layer.w1, layer.w2, o, i), reference,
                               rtol=1e-12, atol=1e-12)
    x = torch.randn(2, 5, i, dtype=torch.float64)
    dy = torch.randn(2, 5, o, dtype=torch.float64)
    layer.impl = "plain"
    want = forward_and_grads(layer, x, dy)
    layer.impl = "dense"
    for g, w in zip(forward_and_grads(layer, x, dy), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@needs_cuda
def test_compiled_training_on_gpu_matches_eager():
    """A GPT with Monarch FFNs trains under reduce-overhead (Inductor + CUDA graphs) with the
    losses of eager training, to bf16 precision."""
    from workbench.data import load_dataset
    from workbench.experiment import PATTERNS
    from workbench.methods import apply_method
    from workbench.models import build_model
    from workbench.train import train
    data = load_dataset("bytes", seed=0, size="ci")
    losses = []
    for mode in ("none", "reduce-overhead"):
        torch._dynamo.reset()
        net = build_model("gpt", data, width=128, depth=2, seed=0)
        torch.manual_seed(0)
        apply_method("monarch", net, nblocks=4, init="fresh", include=PATTERNS["ffn"])
        result = train(net, data, steps=8, lr=1e-3, batch_size=8, device="cuda",
                       progress=False, eval_batches=1, compile=mode)
        losses.append([row["train_loss"] for row in result.history])
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
