"""Sparse-IFT: each variant equals its to_dense weight, and costs exactly the dense FLOPs."""
import copy
import math

import pytest
import torch
from torch import nn

from workbench.analysis.cost import count_flops
from workbench.data import load_dataset
from workbench.methods import apply_method
from workbench.methods.sparse_ift import linear_rows, wide_width
from workbench.models import build_model
from workbench.structures import MaskedLinear, masked_layers
from workbench.structures.sparse_ift import (VARIANTS, SparseDopedLinear, SparseFactorizedLinear,
                                             SparseParallelLinear, doped_rank, factorized_hidden,
                                             parallel_branches, split_count)

SPARSITIES = [0.0, 0.5, 0.75, 0.9]
SHAPES = [(64, 48), (16, 96), (7, 3)]  # (in, out)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_module_equals_its_dense_weight_at_exactly_dense_flops(variant, sparsity, shape):
    d_in, d_out = shape
    torch.manual_seed(0)
    layer = VARIANTS[variant](d_in, d_out, sparsity).double()
    x = torch.randn(4, 3, d_in, dtype=torch.float64)
    expected = x @ layer.to_dense().T + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)
    dense_flops = 12 * (2 * d_in * d_out + d_out)
    assert layer.flops((4, 3)) == dense_flops  # iso-FLOP: kept weights add up to d_in·d_out
    assert layer.nonzeros == d_in * d_out and layer.num_params() == d_in * d_out + d_out
    assert count_flops(nn.Sequential(layer), x) == dense_flops  # the cost meter asks the layer


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_sizes_follow_the_paper_and_pieces_sit_near_the_sparsity(sparsity):
    d_in, d_out = 256, 128
    k = 1 / (1 - sparsity)
    assert parallel_branches(sparsity) == round(k)
    h = factorized_hidden(d_in, d_out, sparsity)
    assert h - 1 < d_in * d_out * k / (d_in + d_out) <= h
    r = doped_rank(d_in, d_out, sparsity)
    assert r <= sparsity * d_in * d_out / (d_in + d_out) < r + 1
    torch.manual_seed(0)
    for layer in (SparseParallelLinear(d_in, d_out, sparsity),
                  SparseFactorizedLinear(d_in, d_out, sparsity),
                  SparseDopedLinear(d_in, d_out, sparsity)):
        pieces = [p for p in layer.modules() if isinstance(p, MaskedLinear)]
        slack = (d_in + d_out) / min(p.weight.numel() for p in pieces)  # from rounding h or r
        for p in pieces:
            assert abs(p.sparsity - sparsity) <= slack + 1e-9, (type(layer).__name__, p)
    doped = SparseDopedLinear(d_in, d_out, sparsity)
    assert doped.lowrank.rank == r and doped.sparse.nnz == d_in * d_out - r * (d_in + d_out)


def test_split_count_is_exact_and_bounded():
    assert split_count(10, [4, 4, 4]) == [4, 3, 3]
    assert sum(split_count(97, [50, 30, 20])) == 97
    assert split_count(7, [2, 100]) == [0, 7]  # largest remainders: 0.14 vs 0.86
    assert split_count(6, [1, 5]) == [1, 5]
    with pytest.raises(ValueError, match="do not fit"):
        split_count(11, [5, 5])


def test_initial_output_scale_matches_a_dense_linear():
    torch.manual_seed(0)
    x = torch.randn(4096, 128)
    dense = nn.Linear(128, 128)(x).std()
    for cls in VARIANTS.values():
        for s in (0.5, 0.9):
            ratio = cls(128, 128, s)(x).std() / dense
            assert 0.7 < ratio < 1.4, (cls.__name__, s, float(ratio))


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist1d", size="ci")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_apply_replaces_the_ffn_at_equal_model_flops(variant, mnist):
    dense = build_model("mixer", mnist, width=16, depth=2, seed=0)
    model = copy.deepcopy(dense)
    report = apply_method("sparse_ift", model, variant=variant, sparsity=0.75,
                          include=r"re:mlp\.(fc|proj)$")
    assert len(report.replaced) == 8
    assert all(isinstance(model.get_submodule(r.name), VARIANTS[variant]) for r in report.replaced)
    assert report.layers and all(model.get_submodule(n) is m for n, m in report.layers.items())
    assert set(report.layers.values()) == set(masked_layers(model).values())
    x = mnist.x_test[:8]
    assert count_flops(model, x) == count_flops(dense, x)  # bias adds counted on both sides
    assert torch.isfinite(model(x)).all()
    again = build_model("mixer", mnist, width=16, depth=2, seed=0)
    apply_method("sparse_ift", again, variant=variant, sparsity=0.75, include=r"re:mlp\.(fc|proj)$")
    for a, b in zip(masked_layers(model).values(), masked_layers(again).values()):
        assert torch.equal(a.weight_mask, b.weight_mask)  # seeded


@pytest.mark.parametrize("name", ["mlp", "mixer"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_sparse_wide_matches_the_reference_flops(name, sparsity, mnist):
    width = 32
    dense = build_model(name, mnist, width=width, depth=2, seed=0)
    wide = build_model(name, mnist, width=wide_width(width, sparsity), depth=2, seed=1)
    x = mnist.x_test[:16]
    rows, ref_rows = linear_rows(wide, x), linear_rows(dense, x)
    report = apply_method("sparse_ift", wide, variant="wide", sparsity=sparsity, reference=dense,
                          example=x)
    assert report.replaced and all(isinstance(m, MaskedLinear) for m in report.layers.values())
    assert not report.skipped  # every linear grew: its FLOPs are matched
    rounding = sum(rows[n] for n in report.layers)  # half a weight per layer, 2 FLOPs per row
    assert abs(count_flops(wide, x) - count_flops(dense, x)) <= rounding
    both_sides = 0
    for name, m in report.layers.items():
        ref = dense.get_submodule(name)
        grown = m.in_features * m.out_features / (ref.in_features * ref.out_features)
        bias_share = 1 / ref.in_features  # bias adds per row against 2·d_in·d_out
        assert m.sparsity == pytest.approx(1 - ref_rows[name] / rows[name] / grown,
                                           abs=bias_share)
        if m.in_features > ref.in_features and m.out_features > ref.out_features \
                and rows[name] == ref_rows[name]:  # hidden-to-hidden: density 1 - s
            assert m.sparsity == pytest.approx(sparsity, abs=0.05)
            both_sides += 1
    assert both_sides
    assert wide_width(64, 0.75) == 128 and wide_width(100, 0.0) == 100


def test_configuration_errors_name_the_problem(mnist):
    model = build_model("mlp", mnist, width=16, depth=1)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        apply_method("sparse_ift", model, sparsity=1.0)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        SparseParallelLinear(8, 8, -0.1)
    with pytest.raises(ValueError, match="variant must be one of"):
        apply_method("sparse_ift", model, variant="narrow")
    with pytest.raises(ValueError, match="needs reference"):
        apply_method("sparse_ift", model, variant="wide")
    with pytest.raises(ValueError, match="for variant 'wide' only"):
        apply_method("sparse_ift", model, variant="doped", reference=model)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        SparseFactorizedLinear(0, 8, 0.5)
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 8\) inputs"):
        SparseDopedLinear(8, 4, 0.5)(torch.randn(2, 9))
    assert math.isclose(wide_width(10, 0.5), round(10 * math.sqrt(2)))
