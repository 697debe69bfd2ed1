import pytest
import torch

from workbench.structures import LowRankLinear, MonarchLinear, rank_for_params


def test_layer_matches_to_dense_float64():
    layer = LowRankLinear(30, 20, 5, dtype=torch.float64)
    x = torch.randn(4, 7, 30, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ layer.to_dense().T + layer.bias)
    assert layer.num_params() == 5 * 50 + 20
    assert layer.flops((4, 7)) == 28 * (2 * 5 * 50 + 20)


def test_from_dense_is_truncated_svd_optimum():
    torch.manual_seed(0)
    w = torch.randn(40, 25, dtype=torch.float64)
    layer = LowRankLinear.from_dense(w, 6)
    s = torch.linalg.svdvals(w)
    residual = (w - layer.to_dense()).square().sum()
    torch.testing.assert_close(residual, s[6:].square().sum())
    assert layer.relative_error == pytest.approx(float((residual / w.square().sum()).sqrt()))
    exact = LowRankLinear.from_dense(layer.to_dense(), 6)
    torch.testing.assert_close(exact.to_dense(), layer.to_dense())


def test_rank_for_params_matches_monarch_budget():
    monarch = MonarchLinear(384, 1536, 4, bias=False)
    rank = rank_for_params(384, 1536, monarch.num_params())
    assert rank * (384 + 1536) <= monarch.num_params() < (rank + 1) * (384 + 1536)


def test_variance_matched_init():
    torch.manual_seed(0)
    x = torch.randn(4096, 512)
    with torch.no_grad():
        dense = torch.nn.Linear(512, 512, bias=False)(x).var().item()
        low = LowRankLinear(512, 512, 64, bias=False)(x).var().item()
    assert low == pytest.approx(dense, rel=0.15)


def test_errors():
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(4, 4, 0)
    with pytest.raises(ValueError, match="expects"):
        LowRankLinear(4, 4, 2)(torch.randn(3, 5))
    w = torch.ones(3, 3)
    w[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        LowRankLinear.from_dense(w, 2)
