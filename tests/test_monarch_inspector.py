"""Monarch fit inspector: numbers against independent computations, figures' structure."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.analysis.monarch_fit import (model_projection_errors, projection_error_curve,
                                            sub_block_spectra)
from workbench.structures import LowRankLinear, MonarchLinear
from workbench.viz import monarch as viz


def weight(out, inp, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(out, inp, generator=gen, dtype=dtype)


@pytest.mark.parametrize("out, inp, b", [(24, 36, 4), (10, 7, 3), (16, 16, 16)])
def test_spectra_equal_svdvals_of_each_sub_block(out, inp, b):
    w = weight(out, inp)
    df = sub_block_spectra(w, b)
    p, s = math.ceil(inp / b), math.ceil(out / b)
    assert list(df.columns) == ["l", "k", "index", "sigma", "kept", "energy_fraction"]
    assert len(df) == b * b * min(p, s)
    ranks = MonarchLinear.from_dense(w, b).fit.ranks
    for (l, k), g in df.groupby(["l", "k"]):
        block = w[l::b, k * p:(k + 1) * p]            # the real (unpadded) rows and columns
        expected = torch.zeros(min(p, s), dtype=w.dtype)
        if block.numel():
            sv = torch.linalg.svdvals(block)
            expected[:len(sv)] = sv
        np.testing.assert_allclose(g["sigma"].to_numpy(), expected.numpy(), atol=1e-10)
        assert g["kept"].sum() == ranks[l, k]
        assert g["kept"].iloc[:int(ranks[l, k])].all()
        if block.square().sum() > 0:
            assert g["energy_fraction"].sum() == pytest.approx(1.0)


def test_error_curve_against_project_and_lowrank_svd():
    w = weight(32, 32, seed=1)
    curve = projection_error_curve(w, (1, 2, 4, 8))
    assert curve.loc[0, "relative_error"] == pytest.approx(0.0, abs=1e-7)  # b=1: full rank
    sigma = torch.linalg.svdvals(w)
    for row in curve.itertuples():
        layer = MonarchLinear.from_dense(w, row.nblocks)
        assert row.relative_error == pytest.approx(layer.fit.relative_error, abs=1e-6)
        direct = float((w - layer.to_dense()).norm() / w.norm())
        assert row.relative_error == pytest.approx(direct, abs=1e-6)
        assert row.params == MonarchLinear(32, 32, row.nblocks, bias=False).num_params()
        assert row.param_fraction == pytest.approx(row.params / 32 ** 2)
        assert row.rank == min(32, row.params // 64) and row.lowrank_params <= row.params
        tail = math.sqrt(float(sigma[row.rank:].square().sum() / sigma.square().sum()))
        assert row.lowrank_relative_error == pytest.approx(tail, abs=1e-9)
        lowrank = LowRankLinear.from_dense(w, int(row.rank))
        assert row.lowrank_relative_error == pytest.approx(lowrank.relative_error, abs=1e-9)


def test_error_curve_skips_too_many_blocks_with_a_note():
    curve = projection_error_curve(weight(6, 40), (2, 4, 8, 64), include_lowrank=False)
    assert list(curve["nblocks"]) == [2, 4, 8, 64]
    assert "lowrank_relative_error" not in curve
    skipped = curve[curve["nblocks"] > 6]
    assert skipped["relative_error"].isna().all()
    assert skipped["note"].str.startswith("skipped").all()
    assert curve.loc[1, "note"].startswith("zero-padded")   # 6 rows -> 8 at b=4
    assert curve.loc[:1, "relative_error"].between(0, 1).all()


def test_model_projection_errors_rows_per_layer_and_nblocks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    df = model_projection_errors(model, (2, 4), progress=False)
    assert len(df) == 4 and list(df["layer"]) == ["0", "0", "2", "2"]
    assert list(df["shape"]) == ["32 x 16"] * 2 + ["8 x 32"] * 2
    for row in df.itertuples():
        w = model.get_submodule(row.layer).weight
        fit = MonarchLinear.from_dense(w.double(), row.nblocks).fit
        assert row.relative_error == pytest.approx(fit.relative_error, abs=1e-5)
    only = model_projection_errors(model, (2,), include="2", progress=False)
    assert list(only["layer"]) == ["2"]


# ---- figures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    w = weight(40, 24, seed=2, dtype=torch.float32)
    return w, MonarchLinear.from_dense(w, 4)


def test_weight_heatmaps_three_panels_one_colour_scale(fitted):
    w, layer = fitted
    fig = viz.weight_heatmaps(w, layer)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    np.testing.assert_allclose(fig.data[2].z, (w - layer.to_dense()).numpy(), atol=1e-6)
    assert fig.layout.template.layout.to_plotly_json() != {}   # plotly_white applied
    assert "downsampled" not in fig.layout.title.text


def test_large_heatmaps_are_downsampled():
    w = weight(2048, 2048, dtype=torch.float32)
    layer = MonarchLinear(2048, 2048, nblocks=32)
    fig = viz.weight_heatmaps(w, layer)
    assert all(np.shape(t.z) == (256, 256) for t in fig.data)
    assert "8×8" in fig.layout.title.text
    z, factors = viz.downsample(w[:1000, :999], max_size=256)   # uneven edges
    assert factors == (4, 4) and z.shape == (250, 250)
    assert z[-1, -1] == pytest.approx(float(w[996:1000, 996:999].double().mean()), abs=1e-6)
    perm = viz.permutation_figure(layer)
    assert np.shape(perm.data[0].z) == (256, 256) and np.sum(perm.data[0].z) == 2048


def test_block_residual_and_spectra_figures(fitted):
    w, layer = fitted
    fig = viz.block_residual_heatmap(layer.fit)
    fit = layer.fit
    np.testing.assert_allclose(fig.data[0].z, (fit.block_residual_sq / fit.block_norm_sq)
                               .sqrt().numpy(), rtol=1e-6)
    assert np.array_equal(np.asarray(fig.data[0].customdata)[..., 0], fit.ranks.numpy())
    spectra = viz.sub_block_spectra_figure(sub_block_spectra(w, 4), max_blocks=5)
    assert len(spectra.data) == 5 and "5 of 16" in spectra.layout.title.text
    assert spectra.layout.yaxis.type == "log"
    assert len(spectra.layout.shapes) >= 1                      # the kept-rank line
    symbols = spectra.data[0].marker.symbol
    assert symbols[0] == "circle" and symbols[-1] == "circle-open"


def test_curve_model_factor_and_permutation_figures(fitted):
    w, layer = fitted
    assert len(viz.projection_error_figure(projection_error_curve(w, (1, 2, 4))).data) == 2
    one = viz.projection_error_figure(projection_error_curve(w, (2, 64), include_lowrank=False),
                                      x="nblocks")
    assert len(one.data) == 1 and list(one.data[0].x) == [2]      # skipped row left out
    model = nn.Sequential(nn.Linear(8, 12), nn.Linear(12, 8))
    heat = viz.model_projection_figure(model_projection_errors(model, (1, 2, 4), progress=False))
    assert np.shape(heat.data[0].z) == (2, 3)
    factors = viz.factor_heatmaps(layer)
    b, p, q, s = layer.nblocks, layer.in_block, layer.mid_block, layer.out_block
    assert np.shape(factors.data[0].z) == (b * q, b * p)
    assert np.shape(factors.data[1].z) == (b * s, b * q)
    small = MonarchLinear(6, 6, nblocks=2)                         # b=2, q=3
    lines = viz.permutation_figure(small)
    assert len(lines.data) == 2
    ends = [y for t in lines.data for y in np.asarray(t.y, float)[1::3]]
    assert ends == [0, 3, 1, 4, 2, 5]                              # j -> (j % b)·q + j // b
    matrix = viz.permutation_figure(small, mode="matrix").data[0].z
    assert np.array_equal(np.argmax(matrix, 0), [0, 3, 1, 4, 2, 5])


def test_figures_work_in_panel(fitted):
    pn = pytest.importorskip("panel")
    pane = pn.pane.Plotly(viz.block_residual_heatmap(fitted[1].fit))
    assert pane.object is not None


def test_bad_inputs_raise_clear_errors(fitted, tmp_path, monkeypatch):
    w, layer = fitted
    with pytest.raises(ValueError, match="does not match"):
        viz.weight_heatmaps(w.T, layer)
    with pytest.raises(TypeError, match="MonarchLinear"):
        viz.factor_heatmaps(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="MonarchFit"):
        viz.block_residual_heatmap({"residual": 1})
    with pytest.raises(ValueError, match="lacks columns"):
        viz.sub_block_spectra_figure(projection_error_curve(w, (2,)))
    with pytest.raises(ValueError, match="every row was skipped"):
        viz.projection_error_figure(projection_error_curve(w, (64,)))
    with pytest.raises(ValueError, match="positive int"):
        sub_block_spectra(w, 0)
    with pytest.raises(ValueError, match="2-D"):
        projection_error_curve(torch.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        projection_error_curve(torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="no linear"):
        model_projection_errors(nn.ReLU(), (2,), progress=False)
    fig = viz.block_residual_heatmap(layer.fit)
    with pytest.raises(ValueError, match="must end in"):
        viz.export_figure(fig, tmp_path / "fig.gif")
    assert viz.export_figure(fig, tmp_path / "a.html", include_plotlyjs="cdn")[0].exists()
    monkeypatch.setattr(viz, "_has_kaleido", lambda: False)
    with pytest.raises(RuntimeError, match="kaleido"):
        viz.export_figure(fig, tmp_path / "b.png", include_plotlyjs="cdn")
    assert (tmp_path / "b.html").exists()
