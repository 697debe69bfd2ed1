"""Spectra figures (ESD, per-layer summary, comparison) and spectra read from checkpoints."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from workbench.analysis.spectra import fit_power_law, spectra
from workbench.analysis.spectra_io import (checkpoint_matrices, layer_eigenvalues,
                                           spectra_from_checkpoint)
from workbench.checkpoint import save_checkpoint
from workbench.structures import LowRankLinear, MonarchLinear
from workbench.viz.spectra import esd_figure, spectra_comparison_figure, spectra_summary_figure


class Tiny(nn.Module):
    """Embedding, linear, Monarch, low-rank and a head tied to the embedding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 24)
        self.fc = nn.Linear(24, 48)
        self.mon = MonarchLinear(48, 32, nblocks=4)
        self.low = LowRankLinear(32, 24, rank=4)
        self.head = nn.Linear(24, 50, bias=False)
        self.head.weight = self.emb.weight


@pytest.fixture(scope="module")
def model():
    return Tiny()


@pytest.fixture(scope="module")
def frame(model):
    return spectra(model, progress=False)


def band_shapes(fig):
    return [s for s in fig.layout.shapes if s.type == "rect" and (s.x0, s.x1) == (2, 6)]


def test_summary_one_trace_per_type_in_model_order_with_alpha_band(frame):
    fig = spectra_summary_figure(frame)
    assert [t.name for t in fig.data] == ["embedding", "linear", "MonarchLinear", "LowRankLinear"]
    assert list(fig.layout.yaxis.categoryarray) == list(frame["layer"])
    assert len(band_shapes(fig)) == 1
    assert "without a value" in fig.layout.title.text       # the tied head has no numbers
    other = spectra_summary_figure(frame, metric="stable_rank")
    assert not band_shapes(other) and other.layout.xaxis.title.text == "stable_rank"


def test_comparison_two_traces_and_changed_only(frame):
    other = frame.copy()
    other.loc[other["layer"] == "fc", "alpha"] += 1.0
    fig = spectra_comparison_figure(frame, other, names=("before", "after"))
    assert [t.name for t in fig.data] == ["before", "after"] and len(band_shapes(fig)) == 1
    assert list(fig.data[0].y) == list(frame["layer"])
    changed = spectra_comparison_figure(frame, other, changed_only=True)
    assert list(changed.data[1].y) == ["fc"]
    assert changed.data[1].x[0] == pytest.approx(frame.set_index("layer").alpha["fc"] + 1)
    with pytest.raises(ValueError, match="no layer"):
        spectra_comparison_figure(frame, frame, changed_only=True)


def test_esd_figure_draws_histogram_fit_and_xmin():
    rng = np.random.default_rng(0)
    evals = np.concatenate([rng.random(300) + 0.1, (1 - rng.random(200)) ** (-1 / 1.5)])
    fit = fit_power_law(torch.tensor(evals)[None])
    fig = esd_figure(evals, fit, layer="synthetic")
    assert len(fig.data) == 2 and fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    assert [s.x0 for s in fig.layout.shapes] == [pytest.approx(fit["xmin"].item())]
    assert f"α = {fit['alpha'].item():.3g}" in fig.layout.title.text
    assert fig.data[0].x[-1] >= evals.max() and fig.data[0].y[-1] > 0   # largest λ drawn
    assert len(esd_figure(evals).data) == 2                       # fitted on the spot
    few = esd_figure([0.0, 1.0, 2.0, 3.0], {"alpha": math.nan, "xmin": math.nan})
    assert len(few.data) == 1 and "1 λ ≤ 0 not drawn" in few.layout.title.text


def test_esd_from_a_spectra_row_matches_layer_eigenvalues(model, frame):
    row = frame.set_index("layer").loc["fc"]
    lam = layer_eigenvalues(model, "fc")
    expected = torch.linalg.svdvals(model.fc.weight.detach().double()).square().flip(0)
    torch.testing.assert_close(lam, expected)
    assert len(esd_figure(lam, row, layer="fc").data) == (2 if math.isfinite(row.alpha) else 1)


def test_missing_columns_and_bad_inputs_are_named(frame):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['alpha'\]"):
        spectra_summary_figure(frame.drop(columns="alpha"))
    with pytest.raises(ValueError, match="'nope'"):
        spectra_comparison_figure(frame, frame, metric="nope")
    with pytest.raises(ValueError, match="not numeric"):
        spectra_summary_figure(frame, metric="reason")
    with pytest.raises(ValueError, match="empty"):
        spectra_summary_figure(frame.iloc[:0])
    with pytest.raises(TypeError, match="DataFrame"):
        spectra_summary_figure(frame.to_dict())
    with pytest.raises(ValueError, match="lacks"):
        esd_figure([1.0, 2.0], {"alpha": 2.0})
    with pytest.raises(ValueError, match="finite"):
        esd_figure([1.0, math.nan])


def test_spectra_from_checkpoint_matches_the_model(model, frame, tmp_path):
    path = save_checkpoint(model, tmp_path / "tiny.pt")
    df = spectra_from_checkpoint(path, progress=False)
    assert list(df["layer"]) == list(frame["layer"]) == ["emb", "fc", "mon", "low", "head"]
    assert list(df["type"]) == ["tensor", "tensor", "MonarchLinear", "LowRankLinear", "tensor"]
    numbers = ["M", "N", "alpha", "D", "xmin", "lambda_max", "stable_rank", "log_norm",
               "alpha_weighted", "entropy", "effective_rank", "skipped"]
    pd.testing.assert_frame_equal(df[numbers], frame[numbers])
    assert df["shape"].tolist() == frame["shape"].tolist()
    assert df.set_index("layer").reason["head"] == "same tensor as emb (tied weights)"
    torch.testing.assert_close(layer_eigenvalues(path, "mon"), layer_eigenvalues(model, "mon"))
    small = spectra_from_checkpoint(save_checkpoint(model, tmp_path / "s.pt",
                                                    structured_only=True), progress=False)
    assert list(small["layer"]) == ["mon", "low"]


def test_checkpoint_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        spectra_from_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        spectra_from_checkpoint(tmp_path / "junk.pt")
    path = save_checkpoint(model, tmp_path / "tiny.pt")
    assert set(checkpoint_matrices(path)[1]) == {"mon", "low"}
    with pytest.raises(KeyError, match="no matrix 'nope'"):
        layer_eigenvalues(path, "nope")
    with pytest.raises(KeyError, match="no layer 'nope'"):
        layer_eigenvalues(model, "nope")
