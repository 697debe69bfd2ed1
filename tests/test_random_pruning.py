"""Random pruning at initialization: ERK densities, exact budgets, reproducible masks."""
import pytest
import torch

from workbench.methods import apply_method
from workbench.methods.random_pruning import erk_densities, keep_counts, random_masks
from workbench.models import build_model

SHAPES = {"a": (256, 40), "b": (256, 256), "c": (10, 256)}


def bisect_erk(shapes, density):
    """Slow float64 reference: bisection for ε in Σ min(1, ε·raw)·n = density·N."""
    raw = {k: (o + i) / (o * i) for k, (o, i) in shapes.items()}
    size = {k: o * i for k, (o, i) in shapes.items()}
    lo, hi = 0.0, 1e9
    for _ in range(200):
        eps = (lo + hi) / 2
        kept = sum(min(1.0, eps * raw[k]) * size[k] for k in shapes)
        lo, hi = (eps, hi) if kept < density * sum(size.values()) else (lo, eps)
    return {k: min(1.0, lo * raw[k]) for k in shapes}


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5, 0.9])
def test_erk_densities_meet_the_budget_and_match_a_bisection(density):
    d = erk_densities(SHAPES, density)
    size = {k: o * i for k, (o, i) in SHAPES.items()}
    assert sum(d[k] * size[k] for k in SHAPES) == pytest.approx(density * sum(size.values()))
    assert all(0 < v <= 1 for v in d.values())
    ref = bisect_erk(SHAPES, density)
    assert d == pytest.approx(ref, abs=1e-9)


def test_erk_caps_small_layers_and_redistributes():
    d = erk_densities(SHAPES, 0.2)
    assert d["c"] == 1.0 and d["a"] < 1  # 10 x 256 alone would exceed 1
    raw = {k: (o + i) / (o * i) for k, (o, i) in SHAPES.items()}
    assert d["a"] / d["b"] == pytest.approx(raw["a"] / raw["b"])  # the free ones stay ∝ raw


def test_keep_counts_sum_exactly():
    sizes = {"a": 7, "b": 11, "c": 13}
    counts = keep_counts(sizes, {"a": 0.33, "b": 0.5, "c": 0.71}, 17)
    assert sum(counts.values()) == 17 and all(0 <= counts[k] <= sizes[k] for k in sizes)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_masks_exact_reproducible_and_seeded(distribution):
    masks = random_masks(SHAPES, 0.9, distribution, seed=3)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    if distribution == "uniform":
        assert all(int(m.sum()) == m.numel() - round(0.9 * m.numel()) for m in masks.values())
    else:
        assert kept == total - round(0.9 * total)
    again = random_masks(SHAPES, 0.9, distribution, seed=3)
    other = random_masks(SHAPES, 0.9, distribution, seed=4)
    assert all(torch.equal(masks[k], again[k]) for k in SHAPES)
    assert not all(torch.equal(masks[k], other[k]) for k in SHAPES)


def test_apply_gives_the_model_those_masks(blobs):
    model = build_model("mlp", blobs, width=64, depth=2, seed=0)
    report = apply_method("random_pruning", model, sparsity=0.7, distribution="erk", seed=5)
    shapes = {n: tuple(layer.weight.shape) for n, layer in report.layers.items()}
    expected = random_masks(shapes, 0.7, "erk", seed=5)
    assert all(torch.equal(report.layers[n].weight_mask, expected[n]) for n in shapes)
