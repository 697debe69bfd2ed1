import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from workbench.analysis import count_flops, count_parameters, measure_cost, measure_latency


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
    assert count_flops(model, torch.randn(8, 64)) == 2 * 8 * (64 * 32 + 32 * 10)


def test_self_costing_module_overrides_counter():
    model = nn.Sequential(nn.Linear(16, 16), Halved(16))
    x = torch.randn(4, 3, 16)  # batch_shape (4, 3) -> 12 rows
    assert count_flops(model, x) == 2 * 12 * 16 * 16 + 12 * 16 * 16


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
    assert cost["flops_per_sample"] == 2 * (20 * 40 + 40 * 5)
    assert cost["throughput_per_s"] == pytest.approx(16 / (cost["latency_ms"] / 1e3))
    assert cost["peak_memory_mb"] > 0 and cost["device"].startswith("CPU")
    assert model.training  # restored
    with pytest.raises(ValueError, match="batched"):
        measure_cost(model, torch.tensor(1.0))
    with pytest.raises(ValueError, match="is on meta"):
        measure_cost(model, torch.randn(2, 20, device="meta"))
