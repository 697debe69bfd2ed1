import copy

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from workbench.analysis import count_flops, count_parameters, measure_cost, measure_latency
from workbench.methods import apply_method
from workbench.models import build_model
from workbench.structures import LowRankLinear, MaskedLinear, MonarchLinear


class Halved(nn.Module):
    """A layer that knows its own cost: claims half of its dense matmul."""

    def __init__(self, n):
        super().__init__()
        self.inner = nn.Linear(n, n, bias=False)

    def forward(self, x):
        return self.inner(x)

    def flops(self, batch_shape):
        rows = torch.Size(batch_shape).numel()
        return rows * self.inner.in_features * self.inner.out_features  # 2*m*n*k / 2


def test_linear_flops_match_formula():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert count_flops(model, torch.randn(8, 64)) == 2 * 8 * (64 * 32 + 32 * 10) + 8 * (32 + 10)


def test_self_costing_module_overrides_counter():
    model = nn.Sequential(nn.Linear(16, 16), Halved(16))
    x = torch.randn(4, 3, 16)  # batch_shape (4, 3) -> 12 rows
    assert count_flops(model, x) == 12 * (2 * 16 * 16 + 16) + 12 * 16 * 16  # + bias adds


def test_parameters_and_nonzeros():
    model = nn.Linear(10, 10)
    with torch.no_grad():
        model.weight[:5] = 0
    counts = count_parameters(model)
    assert counts == {"params": 110, "nonzeros": 50 + int((model.bias != 0).sum())}


def test_pruned_module_counts_masked_weight():
    model = nn.Linear(8, 8, bias=False)
    prune.l1_unstructured(model, "weight", amount=0.75)
    assert count_parameters(model) == {"params": 64, "nonzeros": 16}


def test_latency_statistics():
    calls = []
    timing = measure_latency(lambda: calls.append(1), warmup=2, repeats=9)
    assert len(calls) == 11 and timing["latency_ms"] >= 0 and timing["latency_ms_iqr"] >= 0


def test_measure_cost_fields_and_errors():
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 5))
    cost = measure_cost(model, torch.randn(16, 20), repeats=5)
    assert cost["params"] == 20 * 40 + 40 + 40 * 5 + 5
    assert cost["flops_per_sample"] == 2 * (20 * 40 + 40 * 5) + 40 + 5
    assert cost["throughput_per_s"] == pytest.approx(16 / (cost["latency_ms"] / 1e3))
    assert cost["peak_memory_mb"] > 0 and cost["device"].startswith("CPU")
    assert model.training  # restored
    with pytest.raises(ValueError, match="batched"):
        measure_cost(model, torch.tensor(1.0))
    with pytest.raises(ValueError, match="is on meta"):
        measure_cost(model, torch.randn(2, 20, device="meta"))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x", [torch.randn(6, 24), torch.randn(2, 3, 24),
                               torch.randn(3, 2, 24).transpose(0, 1)],  # last: mm + add path
                         ids=["2d", "3d", "strided"])
def test_fully_kept_masked_linear_costs_what_the_linear_it_replaces_does(bias, x):
    dense = nn.Linear(24, 10, bias=bias)
    rows = x.numel() // 24
    expected = rows * (2 * 24 * 10 + (10 if bias else 0))
    assert count_flops(dense, x) == expected
    assert count_flops(MaskedLinear.from_dense(dense), x) == expected


def test_gpt2_conv1d_counts_its_bias_like_nn_linear():
    from transformers.pytorch_utils import Conv1D
    conv = Conv1D(10, 24)  # nf=out, nx=in; always has a bias
    dense = nn.Linear(24, 10)
    x = torch.randn(2, 3, 24)
    assert count_flops(conv, x) == count_flops(dense, x) == 6 * (2 * 24 * 10 + 10)
    assert count_flops(conv, x) == count_flops(MaskedLinear.from_dense(conv), x)


@pytest.mark.parametrize("make", [lambda b: MonarchLinear(24, 16, nblocks=1, bias=b),
                                  lambda b: LowRankLinear(24, 16, rank=4, bias=b)],
                         ids=["monarch1", "lowrank"])
def test_structured_layers_count_the_bias_as_nn_linear_does(make):
    x = torch.randn(5, 24)
    linear_bias = count_flops(nn.Linear(24, 16), x) - count_flops(nn.Linear(24, 16, bias=False), x)
    assert linear_bias == 5 * 16
    assert count_flops(make(True), x) - count_flops(make(False), x) == linear_bias


def test_monarch_with_one_block_is_two_dense_factors_not_one():
    """nblocks=1: w1 (1, q, in) and w2 (1, out, q) with q = min(in, out), so a row costs
    2·q·(in + out): twice a square dense layer, never less than dense."""
    x = torch.randn(5, 24)
    for out in (16, 24, 40):
        q = min(24, out)
        monarch = MonarchLinear(24, out, nblocks=1)
        assert count_flops(monarch, x) == 5 * (2 * q * (24 + out) + out)
        assert count_flops(monarch, x) > count_flops(nn.Linear(24, out), x)


@pytest.mark.parametrize("name", ["mlp", "mixer"])
def test_model_pruned_at_zero_sparsity_costs_as_much_as_dense(name, blobs):
    dense = build_model(name, blobs, width=32, depth=2, seed=0)
    x = blobs.x_test[:8]
    for method, options in [("random_pruning", {"sparsity": 0.0}),
                            ("gmp", {"final_sparsity": 0.0})]:
        model = copy.deepcopy(dense)
        report = apply_method(method, model, **options)
        assert report.replaced and all(isinstance(model.get_submodule(r.name), MaskedLinear)
                                       for r in report.replaced)
        assert count_flops(model, x) == count_flops(dense, x)


def test_monarch_flops_follow_the_product_it_runs():
    """A Monarch layer costs its two factor products; run as one dense GEMM (impl="dense") it
    costs what the nn.Linear of the same shape does, as the counter measures."""
    layer = MonarchLinear(96, 64, 4)
    x = torch.randn(3, 5, 96)
    structured = count_flops(layer, x)
    assert structured == 15 * (2 * (layer.w1.numel() + layer.w2.numel()) + 64)
    layer.impl = "dense"
    assert count_flops(layer, x) == count_flops(nn.Linear(96, 64), x) > structured
