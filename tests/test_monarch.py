"""MonarchLinear against its own dense matrix in float64, and the optimal projection."""
import math

import pytest
import torch
from torch import nn

from workbench.structures import MonarchLinear, topk_svd
from workbench.structures.monarch_fit import sub_block_ranks, sub_blocks

SHAPES = [(16, 16, 4), (64, 64, 8), (10, 7, 3), (7, 10, 3), (96, 384, 4), (384, 96, 4),
          (100, 30, 4), (5, 5, 64), (33, 65, 16), (128, 128, 1), (64, 64, 64), (17, 19, 2)]


def random_monarch(i, o, b, seed=0):
    torch.manual_seed(seed)
    layer = MonarchLinear(i, o, b, bias=False, dtype=torch.float64)
    return layer


@pytest.mark.parametrize("i, o, b", SHAPES)
def test_layer_matches_to_dense_float64(i, o, b):
    layer = MonarchLinear(i, o, b, dtype=torch.float64)
    x = torch.randn(3, 5, i, dtype=torch.float64)
    dense = layer.to_dense()
    assert dense.shape == (o, i)
    expected = x @ dense.T + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_random_shapes_against_slow_reference():
    """A slow per-entry reference built from the definition (P1, P2 as index maps)."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        i, o = (int(v) for v in torch.randint(1, 50, (2,), generator=gen))
        b = int(torch.randint(1, 12, (1,), generator=gen))
        layer = MonarchLinear(i, o, b, bias=False, dtype=torch.float64)
        p, q, s = layer.in_block, layer.mid_block, layer.out_block
        ref = torch.zeros(b * s, b * p, dtype=torch.float64)
        for j in range(b * q):  # middle unit j: block k, row i1 -> block l, column r
            k, i1, l, r = j // q, j % q, j % b, j // b
            for t in range(s):
                ref[t * b + l, k * p:(k + 1) * p] += layer.w2[l, t, r] * layer.w1[k, i1]
        torch.testing.assert_close(layer.to_dense(), ref[:o, :i].detach(), rtol=0, atol=1e-12)


def test_param_and_flop_counts():
    layer = MonarchLinear(1024, 1024, nblocks=4, bias=False)
    assert layer.num_params() == 2 * 1024 * 1024 // 4  # 50% of dense at b=4
    assert layer.flops((8, 16)) == 128 * 2 * layer.num_params()
    canonical = MonarchLinear(1024, 1024, nblocks="sqrt", bias=False)
    assert canonical.nblocks == 32 and canonical.w1.shape == (32, 32, 32)
    odd = MonarchLinear(100, 30, nblocks=4, bias=True)
    assert odd.num_params() == min(100, 32) * (100 + 32) // 4 + 30


@pytest.mark.parametrize("bad", [dict(in_features=0, out_features=4), dict(
    in_features=4, out_features=4, nblocks=0), dict(in_features=4, out_features=4, init="x")])
def test_bad_configuration(bad):
    with pytest.raises(ValueError):
        MonarchLinear(**bad)


def test_wrong_input_width():
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 8\)"):
        MonarchLinear(8, 8, 2)(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 8\) inputs, got \(\)"):
        MonarchLinear(8, 8, 2)(torch.tensor(1.0))  # was IndexError: tuple index out of range


def test_variance_matched_init_vs_linear_and_reference():
    torch.manual_seed(0)
    x = torch.randn(4096, 1024)
    def out_var(layer):
        with torch.no_grad():
            return (layer(x) - (layer.bias if layer.bias is not None else 0)).var().item()
    dense = out_var(nn.Linear(1024, 1024))
    matched = out_var(MonarchLinear(1024, 1024, 4))
    reference = out_var(MonarchLinear(1024, 1024, 4, init="reference"))
    assert matched == pytest.approx(dense, rel=0.1)
    assert dense / reference == pytest.approx(3.0, rel=0.15)  # ~sqrt(3) quieter in std


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtypes(dtype):
    layer = MonarchLinear(48, 80, 4, dtype=dtype)
    y = layer(torch.randn(6, 48, dtype=dtype))
    assert y.dtype == dtype and y.shape == (6, 80)
    y.float().sum().backward()
    assert layer.w1.grad is not None and layer.w2.grad is not None


def test_to_linear_same_function():
    layer = MonarchLinear(20, 12, 4, dtype=torch.float64)
    x = torch.randn(5, 20, dtype=torch.float64)
    torch.testing.assert_close(layer.to_linear()(x), layer(x))


# ---- projection --------------------------------------------------------------------------

@pytest.mark.parametrize("i, o, b", SHAPES)
def test_projection_recovers_monarch_exactly(i, o, b):
    target = random_monarch(i, o, b).to_dense()
    fit = MonarchLinear.from_dense(target, b)
    torch.testing.assert_close(fit.to_dense(), target, rtol=0, atol=1e-10)
    assert fit.fit.residual_sq <= 1e-12 * fit.fit.norm_sq  # report: ‖W‖² − Σ kept σ²


@pytest.mark.parametrize("i, o, b", SHAPES)
def test_residual_is_sum_of_discarded_singular_values(i, o, b):
    torch.manual_seed(2)
    w = torch.randn(o, i, dtype=torch.float64)
    layer = MonarchLinear.from_dense(w, b, method="exact")
    residual = (w - layer.to_dense()).square().sum()
    ranks = sub_block_ranks(layer.nblocks, layer.mid_block)
    blocks = sub_blocks(w, layer.nblocks)
    discarded = sum(torch.linalg.svdvals(blocks[l, k])[int(ranks[l, k]):].square().sum()
                    for l in range(layer.nblocks) for k in range(layer.nblocks))
    torch.testing.assert_close(residual, discarded, rtol=1e-9, atol=1e-12)
    assert layer.fit.residual_sq == pytest.approx(float(residual), rel=1e-8, abs=1e-10)


def test_never_worse_than_random_monarch_or_gradient_steps():
    torch.manual_seed(3)
    w = torch.randn(40, 24, dtype=torch.float64)
    best = (w - MonarchLinear.from_dense(w, 4).to_dense()).norm()
    for seed in range(5):
        torch.manual_seed(seed)
        assert best <= (w - random_monarch(24, 40, 4, seed).to_dense()).norm()
    # gradient descent from the optimum cannot find anything better
    layer = MonarchLinear.from_dense(w, 4)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        loss = (w - _dense(layer)).square().sum()
        loss.backward()
        opt.step()
    assert (w - _dense(layer)).norm() >= best - 1e-9


def _dense(layer):
    eye = torch.eye(layer.in_features, dtype=layer.w1.dtype)
    return (layer(eye) - (layer.bias if layer.bias is not None else 0)).T


def test_canonical_case_is_rank_one_per_sub_block():
    torch.manual_seed(4)
    n = 64
    w = torch.randn(n, n, dtype=torch.float64)
    layer = MonarchLinear.from_dense(w, "sqrt")
    assert layer.nblocks == 8 and bool((layer.fit.ranks == 1).all())
    blocks = sub_blocks(w, 8).reshape(64, 8, 8)
    sv = torch.linalg.svdvals(blocks)
    rank1 = sum((sv[:, 1:] ** 2).sum(-1))
    assert layer.fit.residual_sq == pytest.approx(float(rank1), rel=1e-9)


@pytest.mark.parametrize("i, o, b", [(256, 256, 4), (512, 128, 8), (200, 300, 16), (256, 256, 16)])
def test_randomized_matches_exact_optimum(i, o, b):
    torch.manual_seed(5)
    w = torch.randn(o, i)
    w = w + 3 * torch.randn(o, 4) @ torch.randn(4, i)  # some structure, like real weights
    exact = MonarchLinear.from_dense(w, b, method="exact")
    fast = MonarchLinear.from_dense(w, b, method="randomized",
                                    generator=torch.Generator().manual_seed(0))
    res_exact = (w - exact.to_dense()).square().sum()
    res_fast = (w - fast.to_dense()).square().sum()
    assert (res_fast - res_exact) / res_exact < 1e-4


def test_topk_svd_against_full_svd():
    torch.manual_seed(6)
    a = torch.randn(7, 60, 40, dtype=torch.float64)
    for method in ("exact", "randomized"):
        u, s, v = topk_svd(a, 5, method=method, tol=1e-12, max_iters=500)
        full = torch.linalg.svdvals(a)[:, :5]
        torch.testing.assert_close(s, full, rtol=1e-6, atol=1e-8)
        assert u.shape == (7, 60, 5) and v.shape == (7, 40, 5)
        torch.testing.assert_close(u.mT @ u, torch.eye(5, dtype=a.dtype).expand(7, 5, 5),
                                   atol=1e-8, rtol=0)


def test_projection_errors_and_bias():
    with pytest.raises(ValueError, match=r"\(out, in\)"):
        MonarchLinear.from_dense(torch.randn(4, 4, 4), 2)
    w = torch.randn(8, 8)
    w[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MonarchLinear.from_dense(w, 2)
    bias = torch.randn(6)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\), got \(1,\)"):
        MonarchLinear.from_dense(torch.randn(6, 10), 2, bias=bias[:1])  # was broadcast
    with pytest.raises(ValueError, match="bias contains NaN"):
        MonarchLinear.from_dense(torch.randn(6, 10), 2, bias=bias / 0 * 0)  # was kept
    layer = MonarchLinear.from_dense(torch.randn(6, 10), 2, bias=bias)
    assert torch.equal(layer.bias.detach(), bias) and layer.w1.dtype == torch.float32


def test_projection_keeps_dtype_and_bf16():
    w = torch.randn(64, 64, dtype=torch.bfloat16)
    layer = MonarchLinear.from_dense(w, 4)
    assert layer.w1.dtype == torch.bfloat16
    assert layer.fit.relative_error < 1.0


@pytest.mark.parametrize("impl", ["plain", "torch"])
def test_works_under_torch_compile(impl):
    """Dynamo + AOTAutograd trace the layer in one graph (the plan's products are custom ops,
    ``monarch_op``) and the compiled forward and gradients equal eager ones in float64.
    ("aot_eager": Inductor's C++ build takes most of a minute on a CPU; the GPU test compiles
    with Inductor.)"""
    torch.manual_seed(0)
    layer = MonarchLinear(100, 30, 4, dtype=torch.float64, impl=impl)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 7, 100, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (compiled, layer):
        y = module(x)
        grads.append((y.detach(),) + torch.autograd.grad(y.square().sum(), (x, layer.w1)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_fit_report_of_an_exact_float32_fit_is_near_zero():
    """The residual was ‖W‖² − Σ kept σ², which cancels: a float32 projection of a Monarch
    matrix (true error ~1e-7) reported relative errors of 2e-4 to 5e-4."""
    torch.manual_seed(7)
    for i, o, b in [(384, 1536, 4), (256, 256, 16), (64, 64, 1)]:
        target = MonarchLinear(i, o, b, bias=False).to_dense()
        fit = MonarchLinear.from_dense(target, b)
        true = float((target - fit.to_dense()).norm() / target.norm())
        assert true < 1e-5
        assert fit.fit.relative_error == pytest.approx(true, rel=0.05, abs=1e-6)


def test_impl_reaches_projected_and_surgery_layers():
    """``impl`` chosen at projection or surgery time ends up on the layers (it was only
    settable afterwards), and an unknown one is refused by name."""
    from workbench.methods import apply_method
    weight = torch.randn(32, 48, dtype=torch.float64)
    layer = MonarchLinear.from_dense(weight, 4, impl="dense")
    assert layer.impl == "dense"
    torch.testing.assert_close(layer.to_dense(), MonarchLinear.from_dense(weight, 4).to_dense())
    for init in ("fresh", "project"):
        model = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 16))
        apply_method("monarch", model, nblocks=4, init=init, impl="dense")
        assert [m.impl for m in model if isinstance(m, MonarchLinear)] == ["dense", "dense"]
    with pytest.raises(ValueError, match="impl must be one of"):
        apply_method("monarch", nn.Sequential(nn.Linear(8, 8)), impl="fast")
