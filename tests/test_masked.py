"""MaskedLinear and the model-level mask helpers: the mask holds, costs are effective, I/O works."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.analysis.cost import count_flops, count_parameters
from workbench.analysis.masks import masks_from_model
from workbench.data import load_dataset
from workbench.models import build_model
from workbench.structures import (MaskedLinear, Sparsifier, apply_masks, magnitude_mask,
                                  mask_linears, masked_layers)
from workbench.train import train


def random_mask(shape, density=0.3, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


def test_forward_matches_float64_reference_and_dropped_grads_are_zero():
    torch.manual_seed(0)
    dense = nn.Linear(12, 8).double()
    mask = random_mask((8, 12))
    layer = MaskedLinear.from_dense(dense, mask)
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    expected = x @ (dense.weight * mask).T + dense.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    layer(x).square().sum().backward()
    assert layer.weight.grad[~mask].abs().max() == 0
    assert layer.weight.grad[mask].abs().min() > 0
    assert layer.nnz == int(mask.sum()) and layer.sparsity == pytest.approx(1 - mask.float().mean())
    torch.testing.assert_close(layer.to_dense(), dense.weight.detach() * mask)
    torch.testing.assert_close(layer.to_linear()(x), expected, rtol=1e-12, atol=1e-12)


def test_mask_holds_through_adamw_even_after_a_mask_change():
    torch.manual_seed(0)
    layer = MaskedLinear(16, 16)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(32, 16)

    def steps(n, hook=None):
        for t in range(n):
            opt.zero_grad()
            layer(x).sin().sum().backward()
            opt.step()
            if hook:
                hook(t + 1)
    layer.set_mask(random_mask((16, 16), 0.5))
    steps(5)
    assert (layer.weight[~layer.weight_mask] == 0).all()  # zero grad, zero momentum
    layer.set_mask(random_mask((16, 16), 0.25, seed=1))  # now momentum is stale ...
    steps(3)
    assert (layer.weight[~layer.weight_mask] != 0).any()  # ... and moves dropped weights
    assert (layer.to_dense()[~layer.weight_mask] == 0).all()  # the function still holds
    layer.set_mask(layer.weight_mask.clone())
    steps(3, Sparsifier({"l": layer}).step)  # the sparsifier re-zeroes after every step
    assert (layer.weight[~layer.weight_mask] == 0).all()


def test_set_mask_errors_name_the_problem():
    layer = MaskedLinear(4, 3)
    with pytest.raises(ValueError, match="bool"):
        layer.set_mask(torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\) != weight shape \(3, 4\)"):
        layer.set_mask(torch.ones(4, 3, dtype=torch.bool))
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer.set_mask(torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="in_features"):
        MaskedLinear(0, 3)


def test_costs_are_effective_and_count_flops_uses_them():
    layer = MaskedLinear(32, 16, bias=True)
    layer.set_mask(random_mask((16, 32), 0.25))
    nnz = int(layer.weight_mask.sum())
    assert layer.num_params() == nnz + 16
    model = nn.Sequential(layer, nn.ReLU())
    assert count_flops(model, torch.randn(4, 7, 32)) == 4 * 7 * (2 * nnz + 16)
    assert count_parameters(model)["nonzeros"] == nnz + 16


def small_gpt(seed=0):
    return build_model("gpt", load_dataset("bytes", size="ci"), width=32, depth=1, seed=seed)


def test_mask_linears_state_dict_round_trip_and_inspectors_read_the_mask():
    model = small_gpt()
    report = mask_linears(model, include="*mlp.*", mask_fn=lambda n, w: magnitude_mask(w, 0.5))
    assert list(report.layers) == ["blocks.0.mlp.fc", "blocks.0.mlp.proj"]
    assert report.sparsity == 0.5 and list(masked_layers(model)) == list(report.layers)
    fresh = small_gpt(seed=1)
    mask_linears(fresh, include="*mlp.*")
    fresh.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (2, 8))
    torch.testing.assert_close(fresh(x), model(x))
    read = masks_from_model(model.state_dict(), include="*mlp.*")
    assert all(torch.equal(read[n], report.layers[n].weight_mask) for n in report.layers)


def test_apply_masks_on_plain_and_masked_layers():
    model = small_gpt()
    masks = {"blocks.0.mlp.fc": random_mask((128, 32)), "blocks.0.attn.proj": random_mask((32, 32))}
    report = apply_masks(model, masks)
    assert {r.name for r in report.replaced} == set(masks) == set(report.layers)
    assert all(torch.equal(model.get_submodule(n).weight_mask, m) for n, m in masks.items())
    flipped = ~masks["blocks.0.attn.proj"]
    again = apply_masks(model, {"blocks.0.attn.proj": flipped})
    assert not again.replaced and torch.equal(model.blocks[0].attn.proj.weight_mask, flipped)
    with pytest.raises(ValueError, match="no module 'nope'"):
        apply_masks(model, {"nope": flipped})
    with pytest.raises(ValueError, match="cannot mask 'lm_head': tied"):
        apply_masks(model, {"lm_head": random_mask((256, 32))})


def test_gpt2_conv1d_becomes_masked_linear_with_the_same_function():
    pytest.importorskip("transformers", reason="Hugging Face tests need `transformers`")
    from workbench.models.pretrained import tiny_gpt2

    gpt2 = tiny_gpt2().double()
    x = torch.randint(0, 100, (2, 6))
    before = gpt2(x).logits
    report = mask_linears(gpt2, include="*.mlp.*")
    assert {r.old_type for r in report.replaced} == {"Conv1D"} and report.sparsity == 0
    torch.testing.assert_close(gpt2(x).logits, before, rtol=1e-10, atol=1e-10)


def test_dense_grad_is_the_gradient_of_the_masked_weight():
    torch.manual_seed(0)
    layer = MaskedLinear(6, 4).double()
    layer.set_mask(random_mask((4, 6), 0.5))
    layer.track_dense_grad = True
    x = torch.randn(5, 6, dtype=torch.float64)
    w = layer.to_dense().requires_grad_()
    F.linear(x, w, layer.bias.detach()).square().sum().backward()
    layer(x).square().sum().backward()
    torch.testing.assert_close(layer.dense_grad, w.grad)
    assert (layer.dense_grad[~layer.weight_mask] != 0).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dtypes_keep_the_bool_mask(dtype):
    layer = MaskedLinear(8, 8)
    mask = random_mask((8, 8))
    layer.set_mask(mask)
    copy.deepcopy(layer)
    layer = layer.to(dtype)
    assert layer.weight_mask.dtype == torch.bool and torch.equal(layer.weight_mask, mask)
    y = layer(torch.randn(2, 8, dtype=dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    layer = MaskedLinear(16, 8)
    layer.set_mask(random_mask((8, 16)))
    x = torch.randn(4, 16)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), layer.cpu()(x))


def test_train_calls_on_step_after_every_optimizer_step(blobs):
    model = build_model("mlp", blobs, width=16, depth=1, seed=0)
    report = mask_linears(model, mask_fn=lambda n, w: random_mask(w.shape, 0.5))
    calls = []

    class Recorder(Sparsifier):
        def update(self, step):
            calls.append(step)
            return False
    train(model, blobs, steps=4, lr=1e-2, device="cpu", progress=False,
          on_step=Recorder(report.layers).step)
    assert calls == [1, 2, 3, 4]
    assert all((m.weight[~m.weight_mask] == 0).all() for m in report.layers.values())
