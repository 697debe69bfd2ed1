"""Mask inspectors: reference mask makers, statistics, evolution, schedule and figures."""
import math
import time

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from workbench.analysis.masks import (block_density, cubic_schedule, global_magnitude_masks,
                                      magnitude_mask, mask_evolution, mask_iou, mask_stats,
                                      masks_from_model, nm_compliance, nm_mask_of,
                                      weights_from_model)
from workbench.viz.masks import (block_structure_figure, mask_evolution_figure, mask_figures,
                                 mask_heatmap, nm_compliance_figure, schedule_figure,
                                 sparsity_bars)


def _mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (0, 2), (3, 3)])
def test_nm_mask_is_exactly_compliant_and_keeps_the_largest(n, m):
    w = torch.randn(16, 24, generator=torch.Generator().manual_seed(n * 10 + m))
    mask = nm_mask_of(w, n, m)
    counts, fraction = nm_compliance(mask, n, m)
    assert counts.shape == (16, 24 // m) and (counts == n).all() and fraction == 1.0
    groups, kept = w.abs().view(16, -1, m), mask.view(16, -1, m)
    if 0 < n < m:  # every kept |w| is at least every dropped |w| in its group
        low = groups.masked_fill(~kept, math.inf).amin(-1)
        high = groups.masked_fill(kept, -math.inf).amax(-1)
        assert (low >= high).all()
    assert nm_mask_of(torch.ones(1, 8), 2, 4).tolist() == [[True, True, False, False] * 2]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_sparsity_is_exact_even_with_ties(sparsity):
    tied = torch.randint(0, 3, (40, 50), generator=torch.Generator().manual_seed(0)).float()
    for w in (tied, torch.ones(40, 50), torch.randn(40, 50)):
        mask = magnitude_mask(w, sparsity)
        assert int(mask.sum()) == 2000 - round(sparsity * 2000)
        if 0 < sparsity < 1:
            assert w.abs()[mask].min() >= w.abs()[~mask].max()
    assert magnitude_mask(torch.ones(1, 4), 0.5).tolist() == [[True, True, False, False]]


def test_global_magnitude_masks_share_one_threshold():
    g = torch.Generator().manual_seed(1)
    weights = {"small": torch.randn(8, 8, generator=g) * 0.1,
               "big": torch.randn(16, 8, generator=g)}
    masks = global_magnitude_masks(weights, 0.5)
    stats = mask_stats(masks).set_index("layer")
    assert stats["nonzeros"].sum() == 96 and stats.loc["small", "sparsity"] > 0.9
    kept = torch.cat([weights[k].abs()[masks[k]] for k in weights])
    dropped = torch.cat([weights[k].abs()[~masks[k]] for k in weights])
    assert kept.min() >= dropped.max()


def test_masks_from_model_honours_prune_buffers_state_dicts_and_paths(tmp_path):
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 4), nn.LayerNorm(4))
    prune.l1_unstructured(model[0], "weight", amount=0.25)
    with torch.no_grad():
        model[2].weight[0] = 0
    masks = masks_from_model(model)
    assert list(masks) == ["0", "2"] and all(m.dtype == torch.bool for m in masks.values())
    assert masks["0"].equal(model[0].weight_mask.bool()) and int(masks["0"].sum()) == 24
    assert int(masks["2"].sum()) == 12
    from_state = masks_from_model(model.state_dict())
    assert all(from_state[k].equal(masks[k]) for k in masks)
    assert list(masks_from_model(model, include="2")) == ["2"]
    w = weights_from_model(model)["0"]
    assert w.shape == (4, 8) and w.ne(0).equal(masks["0"])
    torch.save(masks, tmp_path / "masks.pt")
    assert masks_from_model(tmp_path / "masks.pt")["2"].equal(masks["2"])
    with pytest.raises(TypeError, match="expected an nn.Module"):
        masks_from_model(42)


def test_stats_compliance_and_blocks_by_hand():
    mask = _mask([[1, 1, 1, 0, 1, 0, 0, 0],
                  [0, 0, 0, 0, 1, 1, 0, 1]])
    row = mask_stats({"x": mask}).iloc[0]
    assert (row["shape"], row["nonzeros"], row["sparsity"]) == ((2, 8), 7, 9 / 16)
    counts, fraction = nm_compliance(mask, 2, 4)
    assert counts.tolist() == [[3, 1], [0, 3]] and fraction == 0.5
    dens = block_density(mask, (2, 3))  # edge blocks average their real entries only
    assert torch.allclose(dens, torch.tensor([[3 / 6, 3 / 6, 1 / 4]]))
    assert block_density(mask, 1).equal(mask.float())


def test_iou_and_evolution_against_hand_values():
    a, b = _mask([[1, 1, 0, 0]]), _mask([[1, 0, 1, 0]])
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 1
    c = _mask([[1, 0, 0, 0]])
    df = mask_evolution([{"L": a}, {"L": b}, {"L": c}], steps=[0, 5, 10])
    assert df["sparsity"].tolist() == [0.5, 0.5, 0.75]
    assert df["iou_prev"].iloc[1:].tolist() == pytest.approx([1 / 3, 1 / 2])
    assert df["iou_final"].tolist() == pytest.approx([1 / 2, 1 / 2, 1])
    assert df["flipped"].iloc[1:].tolist() == [0.5, 0.25] and math.isnan(df["flipped"].iloc[0])
    with pytest.raises(ValueError, match="lacks"):
        mask_evolution([{"L": a}, {"M": a}], steps=[0, 1])
    with pytest.raises(ValueError, match="one step per checkpoint"):
        mask_evolution([{"L": a}], steps=[0, 1])


def test_cubic_schedule_endpoints_clamping_and_monotonicity():
    kw = dict(s_i=0.1, s_f=0.9, t0=100, n=10, dt=50)
    assert cubic_schedule(0, **kw) == cubic_schedule(100, **kw) == pytest.approx(0.1)
    assert cubic_schedule(600, **kw) == cubic_schedule(10_000, **kw) == pytest.approx(0.9)
    assert cubic_schedule(150, **kw) == pytest.approx(0.9 - 0.8 * 0.9 ** 3)
    s = cubic_schedule(list(range(0, 800)), **kw)
    assert s.shape == (800,) and (s[1:] >= s[:-1]).all()
    steps = (s[101:601] - s[100:600])  # prunes fastest early, slowest late
    assert steps[0] > steps[250] > steps[-1] >= 0


def test_large_mask_heatmap_is_fast_and_downsampled():
    mask = torch.randint(0, 4, (8192, 8192), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0)) == 0
    start = time.perf_counter()
    fig = mask_heatmap(mask, max_size=512)
    elapsed = time.perf_counter() - start
    z = fig.data[0].z
    assert z.size <= 512 ** 2 and z.shape == (512, 512)
    assert "density per 16×16 cell" in fig.layout.title.text
    assert abs(float(z.mean()) - 0.25) < 0.01 and elapsed < 3, elapsed
    fig = nm_compliance_figure(mask, 2, 4, max_size=256)
    assert fig.data[0].z.size <= 256 ** 2
    fig = block_structure_figure(mask, 8, max_size=256)
    assert fig.data[0].z.size <= 256 ** 2


def test_small_figures_show_exact_values():
    mask = _mask([[1, 0, 1, 1], [0, 0, 0, 1]])
    assert mask_heatmap(mask).data[0].z.tolist() == mask.float().tolist()
    assert nm_compliance_figure(mask, 2, 4).data[1].y.tolist() == [0, 1, 0, 1, 0]
    df = mask_evolution([{"a": mask}, {"a": mask & _mask([[1] * 4, [0] * 4])}], [0, 1])
    assert len(mask_evolution_figure(df).data) == 6  # (layer + mean) × 3 panels
    fig = schedule_figure(0.0, 0.8, 10, 4, 5, 50, measured=df[["step", "sparsity"]])
    assert fig.data[1].x.tolist() == [10, 15, 20, 25, 30]
    assert sparsity_bars(mask_stats({"a": mask})).data[0].x.tolist() == [0.5]
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 16))
    figures = {title: build() for title, build in mask_figures(model, block=4).items()}
    assert len(figures) == 4 and "2:4 compliance: 1" in figures


def test_bad_inputs_fail_clearly():
    w = torch.randn(4, 6)
    with pytest.raises(ValueError, match="n=3 > m=2"):
        nm_mask_of(w, 3, 2)
    with pytest.raises(ValueError, match="not divisible by m=4"):
        nm_mask_of(w, 2, 4)
    with pytest.raises(ValueError, match="not divisible"):
        nm_compliance(w > 0, 1, 4)
    with pytest.raises(ValueError, match="bool tensor"):
        nm_compliance(w, 1, 2)
    with pytest.raises(ValueError, match="2-D"):
        mask_heatmap(torch.ones(2, 2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        mask_stats({"x": [[True]]})
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(w > 0, (w > 0).T)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, 1.5)
    with pytest.raises(ValueError, match="finite"):
        magnitude_mask(torch.full((2, 2), float("nan")), 0.5)
    with pytest.raises(ValueError, match="n >= 1"):
        cubic_schedule(0, 0, 0.5, 0, 0, 10)
    with pytest.raises(ValueError, match="block"):
        block_density(w > 0, (0, 2))
