"""N:M sparsity: mask compliance, SR-STE gradients, the method, the semi-structured path."""
import itertools

import pytest
import torch

from workbench.methods import apply_method
from workbench.methods.nm import freeze, to_semi_structured
from workbench.models import build_model
from workbench.structures import nm_mask
from workbench.structures.nm import NMLinear, srste_weight
from workbench.structures.semi_structured import to_semi_structured as layer_to_semi_structured


@pytest.mark.parametrize("n, m", [(1, 4), (2, 4), (4, 8), (3, 6), (0, 2), (5, 5)])
def test_nm_mask_keeps_the_n_largest_of_every_group(n, m):
    w = torch.randn(7, 4 * m, dtype=torch.float64)
    mask = nm_mask(w, n, m)
    for r, g in itertools.product(range(7), range(4)):
        group = w[r, g * m:(g + 1) * m].abs().tolist()
        largest = sorted(range(m), key=lambda j: -group[j])[:n]  # slow reference
        assert mask[r, g * m:(g + 1) * m].nonzero().flatten().tolist() == sorted(largest)
    assert mask.float().mean() == n / m


@pytest.mark.parametrize("n, m, match", [(0, 0, "m >= 1"), (2, 8, "in_features=12 is not div")])
def test_nm_mask_errors_beyond_the_inspector_tests(n, m, match):
    with pytest.raises(ValueError, match=match):
        nm_mask(torch.randn(4, 12), n, m)


def test_srste_gradient_is_straight_through_plus_refine_term():
    torch.manual_seed(0)
    w = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 8, dtype=torch.float64)
    mask = nm_mask(w, 2, 4)
    (x @ srste_weight(w, mask, 0.1).T).sin().sum().backward()
    dense = (w * mask).detach().requires_grad_()
    (x @ dense.T).sin().sum().backward()  # the gradient at the sparse weight, reference
    expected = dense.grad + 0.1 * w.detach() * ~mask
    torch.testing.assert_close(w.grad, expected, rtol=1e-12, atol=1e-12)


def test_srste_layer_recomputes_its_mask_and_freeze_fixes_it():
    torch.manual_seed(0)
    layer = NMLinear(16, 4, n=2, m=4, refine=True)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 16))
    layer(torch.randn(2, 16))
    assert torch.equal(layer.weight_mask, nm_mask(layer.weight, 2, 4))
    assert (layer.weight[~layer.weight_mask] != 0).all()  # dense weights live on
    layer.freeze_()
    assert not layer.refine and (layer.weight[~layer.weight_mask] == 0).all()


def test_set_mask_refuses_a_mask_that_is_not_nm():
    layer = NMLinear(8, 2, n=1, m=4)
    with pytest.raises(ValueError, match="keeps 2 > n=1"):
        layer.set_mask(torch.tensor([[True, True, False, False] * 2] * 2))


def test_method_modes_and_layer_errors(blobs, text):
    model = build_model("mlp", blobs, width=32, depth=2, seed=0)
    report = apply_method("nm", model, n=2, m=4, mode="srste")
    assert all(layer.refine for layer in report.layers.values())
    assert freeze(model) == 3 and not any(layer.refine for layer in report.layers.values())
    assert report.sparsity == 0.5
    gpt = build_model("gpt", text, width=36, depth=1, seed=0)
    with pytest.raises(ValueError, match="'blocks.0.attn.qkv' has in_features=36, not divisible"):
        apply_method("nm", gpt, n=2, m=8)


def test_semi_structured_needs_cuda_and_half_precision():
    layer = NMLinear.from_dense(torch.randn(64, 128), n=2, m=4)
    with pytest.raises(ValueError, match="need a CUDA device"):
        layer_to_semi_structured(layer)
    wide = NMLinear.from_dense(torch.randn(64, 128), n=4, m=8)
    wide.weight_mask[:, :4] = True  # a 4:8 mask may put 3-4 of them in one group of 4
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="not 2:4"):
            layer_to_semi_structured(wide.cuda().half())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured kernels need CUDA")
def test_semi_structured_matches_the_masked_layer_on_cuda(blobs):
    model = build_model("mlp", blobs, width=128, depth=2, seed=0)
    apply_method("nm", model, n=2, m=4, include="layers.1")
    model = model.cuda().half()
    x = torch.randn(64, 128, device="cuda", dtype=torch.half)
    layer = model.layers[1]
    expected = layer(x)
    report = to_semi_structured(model)
    assert [r.name for r in report.replaced] == ["layers.1"]
    torch.testing.assert_close(model.layers[1](x), expected, rtol=1e-2, atol=1e-2)


def test_semi_structured_benchmark_shapes_and_cpu_refusal(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "semi_structured.py"
    spec = importlib.util.spec_from_file_location("semi_structured_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shapes = {(model, layer): shape for model, layer, shape in bench.all_shapes()}
    assert shapes[("gpt width 512", "mlp.fc")] == (2048, 512)  # (out, in) from the real model
    assert shapes[("MiniLM", "output.dense (FFN out)")] == (384, 1536)
    assert all(inp % 4 == 0 for _, inp in shapes.values())
    if not torch.cuda.is_available():
        assert bench.main(["--out", "unused.json"]) == 2
        assert "need a CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured kernels need CUDA")
def test_semi_structured_timing_on_cuda():
    from workbench.structures.semi_structured import semi_structured_timing
    row = semi_structured_timing(256, 512, tokens=512, min_run_time=0.05)
    assert row["ms_dense"] > 0 and row["ms_2_4"] > 0 and row["err_2_4"] < 2e-2


def test_semi_structured_results_import_as_runs(tmp_path):
    import json
    from workbench.runs.benchmarks import benchmark_records
    row = {"model": "MiniLM", "layer": "output.dense (FFN out)", "out_features": 384,
           "in_features": 1536, "tokens": 16384, "dtype": "bfloat16", "ms_dense": 0.2,
           "ms_2_4": 0.25, "speedup": 0.8, "err_dense": 1e-3, "err_2_4": 2e-3}
    refused = {"model": "x", "layer": "y", "out_features": 8, "in_features": 8, "error": "no"}
    path = tmp_path / "semi.json"
    path.write_text(json.dumps({"benchmark": "semi_structured", "rows": [row, refused],
                                "environment": {"device_name": "GPU", "torch": "2.x"}}))
    dense, sparse = benchmark_records(path)
    assert (dense.method, sparse.method) == ("dense", "nm")
    assert sparse.metrics["speedup_vs_dense"] == pytest.approx(0.8)
    assert sparse.cost["nonzeros"] == 384 * 1536 // 2 and sparse.cost["latency_ms"] == 0.25
    assert [r.run_id for r in benchmark_records(path)] == [dense.run_id, sparse.run_id]
    path.write_text(json.dumps({"benchmark": "semi_structured"}))
    with pytest.raises(ValueError, match="not a semi-structured benchmark result"):
        benchmark_records(path)
