"""Gradual magnitude pruning: the cubic schedule, exact sparsity, monotone magnitude pruning."""
import numpy as np
import pytest
import torch

from workbench.methods import apply_method, make_config
from workbench.models import build_model


def test_schedule_matches_the_formula_in_float64():
    cfg = make_config("gmp", initial_sparsity=0.1, final_sparsity=0.9, start_step=100,
                      end_step=600, frequency=100)
    t = np.arange(0, 800)
    progress = np.clip((t - 100) / 500, 0, 1)
    np.testing.assert_allclose(cfg.sparsity_at(t), 0.9 + (0.1 - 0.9) * (1 - progress) ** 3,
                               rtol=0, atol=1e-15)
    assert cfg.pruning_steps() == [100, 200, 300, 400, 500, 600]
    uneven = make_config("gmp", start_step=0, end_step=250, frequency=100)
    assert uneven.pruning_steps() == [0, 100, 200, 250]  # the end is always a pruning step


def mlp(blobs, seed=0):
    return build_model("mlp", blobs, width=32, depth=2, seed=seed)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruning_is_exact_monotone_and_by_magnitude(scope, blobs):
    model = mlp(blobs)
    cfg = dict(final_sparsity=0.8, start_step=1, end_step=5, frequency=2, scope=scope)
    report = apply_method("gmp", model, **cfg)
    layers, pruner = report.layers, report.sparsifier
    assert report.sparsity == 0
    previous = report.masks()
    for step in range(1, 7):
        before = {n: layer.weight.detach().abs().clone() for n, layer in layers.items()}
        pruner.step(step)
        target = make_config("gmp", **cfg).sparsity_at(step) if step in (1, 3, 5) else None
        masks = report.masks()
        assert all((masks[n] <= previous[n]).all() for n in masks)  # never revived
        if target is None:
            assert all(torch.equal(masks[n], previous[n]) for n in masks)
            continue
        groups = [[n] for n in layers] if scope == "layer" else [list(layers)]
        for group in groups:
            numel = sum(masks[n].numel() for n in group)
            assert sum(int(masks[n].sum()) for n in group) == numel - round(target * numel)
            newly = torch.cat([before[n][previous[n] & ~masks[n]] for n in group])
            kept = torch.cat([before[n][masks[n]] for n in group])
            assert newly.numel() == 0 or newly.max() <= kept.min()
        previous = masks
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    assert [s for s, _ in pruner.history] == [1, 3, 5]
    if scope == "global":
        assert len({round(layer.sparsity, 3) for layer in layers.values()}) > 1


def test_initial_sparsity_applies_at_once(blobs):
    report = apply_method("gmp", mlp(blobs), initial_sparsity=0.5, final_sparsity=0.9,
                          end_step=10, scope="layer")
    assert all(layer.sparsity == 0.5 for layer in report.layers.values())
