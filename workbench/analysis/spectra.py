"""Weight spectra, WeightWatcher-style: one row per weight matrix of a model or a state dict.

ESD: eigenvalues λ = σ² of WᵀW, W as stored. No normalisation, as WeightWatcher's default (it
dropped ``normalize`` in 0.6.5); its default ``conv2d_norm`` rescaling of Conv2d weights
(λ·slices/2 per slice, λ/2 when pooled) is *not* applied. Columns, with WeightWatcher's names
and definitions where they match (``layer`` is its ``longname``):
  layer, type, shape    qualified name (or state-dict key); linear | hf_conv1d | embedding |
                        conv1d | conv2d | conv3d | parameter | tensor | a structured class name;
                        the stored weight's shape ((out, in) for linears, HF Conv1D included)
  M, N                  min and max dimension of one matrix (of one kernel slice for a conv)
  num_evals             M, or M·kernel size for a pooled conv (all slices in one ESD)
  alpha, D, xmin        power-law tail fit, see :func:`fit_power_law`
  sigma, num_pl_spikes  (α-1)/√n_tail, and #λ ≥ xmin
  lambda_max            λ_max = σ_max²
  stable_rank           Σλ / λ_max
  log_norm              log10 Σλ = log10 ‖W‖_F² (WW's log_norm: log10 of the *squared* norm)
  log_spectral_norm     log10 λ_max (= 2·log10 σ_max)
  alpha_weighted        α · log10 λ_max
  matrix_rank           #σ > σ_max·N·eps (numpy's rule, as WW; eps of ``dtype``). With
                        ``method="gram"`` #λ > λ_max·N·eps: a Gram solve resolves λ only down to
                        ~eps·λ_max, so in float32 tiny σ are not counted (WW, in float64, does)
  entropy               -Σ p log p / log(matrix_rank), p = λ/Σλ (WW's entropy; NaN if rank < 2)
  effective_rank        exp(-Σ p log p) (Roy & Vetterli 2007)
  skipped, reason       skipped rows carry no numbers; reason also says why α is missing
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..surgery import CONV1D, Pattern, _is_type, _matcher

try:  # CPU fast path: BLAS syrk (one triangle of the Gram: half a matmul) + LAPACK syevd
    from scipy.linalg import blas as _blas, eigh as _eigh
except ImportError:  # pragma: no cover - scipy comes with scikit-learn
    _blas = None
try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - comes with scikit-learn
    threadpool_limits = None

FIT_THRESHOLD = 1e-5  # only λ > 1e-5 enter the tail fit, as WeightWatcher's EVALS_THRESH
MIN_FIT_EVALS = 10    # fewer fitted eigenvalues: no α (WeightWatcher skips such layers)
_STACK_ELEMS = 2**28  # elements stacked into one eigen-solve call (1 GiB in float32)
_FIT_ELEMS = 2**24    # elements of one (rows, candidates, tail) block of the KS table
COLUMNS = ["layer", "type", "shape", "M", "N", "num_evals", "alpha", "D", "xmin", "sigma",
           "num_pl_spikes", "lambda_max", "stable_rank", "log_norm", "log_spectral_norm",
           "alpha_weighted", "matrix_rank", "entropy", "effective_rank", "skipped", "reason"]


def fit_power_law(evals: torch.Tensor, threshold: float = FIT_THRESHOLD) -> dict[str, torch.Tensor]:
    """Power-law tail fit of each row of ``evals`` (B, n), all xmin candidates at once.

    Clauset, Shalizi & Newman (2009), as WeightWatcher's default fit: over λ > ``threshold``
    sorted ascending, each candidate xmin = λ_i (all but the largest) has the MLE
    α_i = 1 + n_i / Σ_{j≥i} log(λ_j/λ_i), n_i = #{j ≥ i}, and the KS distance
    D_i = max_{j≥i} |1 - (λ_j/λ_i)^(1-α_i) - (j-i)/n_i| (the powerlaw package's empirical CDF);
    the smallest D wins (ties: the smallest xmin). α_i for all i from one reversed cumulative
    sum; the D table is filled in blocks of candidates only to bound memory.
    Returns float64 (B,) tensors alpha, D, xmin, sigma, num_pl_spikes (NaN: no fit), n_fit.
    """
    x = evals.double().sort(dim=-1).values
    B, n = x.shape
    valid = x > threshold
    logx = torch.where(valid, x, 1.0).log()
    idx = torch.arange(n, device=x.device)
    m = (n - idx).double()                                     # tail sizes n_i
    tail = logx.flip(-1).cumsum(-1).flip(-1)                   # Σ_{j≥i} log λ_j
    alpha = 1 + m / (tail - m * logx)                          # (B, n)
    n_fit = valid.sum(-1)
    cand = (idx >= (n - n_fit)[:, None]) & (idx < n - 1) & torch.isfinite(alpha)
    D = torch.full((B, n), math.inf, dtype=torch.float64, device=x.device)
    block = max(1, min(128, _FIT_ELEMS // max(1, B * n)))
    for c0 in range(0, n - 1, block):                          # blocks of candidates
        c1 = min(c0 + block, n - 1)
        rank = idx[c0:] - idx[c0:c1, None]                     # (C, n-c0): j - i
        table = logx[:, None, c0:] - logx[:, c0:c1, None]      # (B, C, n-c0): log(λ_j/λ_i)
        table.mul_(1 - alpha[:, c0:c1, None]).exp_().neg_().add_(1)   # fitted CDF at λ_j
        table.sub_(rank / m[c0:c1, None]).abs_().masked_fill_(rank < 0, 0)
        D[:, c0:c1] = table.amax(-1)
    D = D.masked_fill(~cand | D.isnan(), math.inf)
    best = D.argmin(-1, keepdim=True)
    ok = torch.isfinite(D.gather(-1, best)).squeeze(-1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.where(ok, t.expand(B, n).gather(-1, best).squeeze(-1), math.nan)
    a, xmin = pick(alpha), pick(x)
    return {"alpha": a, "D": pick(D), "xmin": xmin, "sigma": (a - 1) / pick(m).sqrt(),
            "num_pl_spikes": torch.where(ok, (x >= xmin[:, None]).sum(-1).double(), math.nan),
            "n_fit": n_fit.double()}


def _esd_stats(lam: torch.Tensor, N: torch.Tensor, eps: float, on_lambda: bool) -> dict:
    """Norm and entropy columns from ascending eigenvalues ``lam`` (B, n) float64, N (B,)."""
    total, lmax = lam.sum(-1), lam[:, -1]
    if on_lambda:
        rank = (lam > (lmax * N * eps)[:, None]).sum(-1)
    else:
        rank = (lam.sqrt() > (lmax.sqrt() * N * eps)[:, None]).sum(-1)
    p = lam / total[:, None]
    H = -torch.special.xlogy(p, p).sum(-1)
    return {"lambda_max": lmax, "stable_rank": total / lmax, "log_norm": total.log10(),
            "log_spectral_norm": lmax.log10(), "matrix_rank": rank.double(),
            "entropy": torch.where(rank > 1, H / rank.double().log(), math.nan),
            "effective_rank": H.exp()}


@contextlib.contextmanager
def _exact_float32_matmul():
    """No TF32 shortcut in float32 matmuls: the Gram matrix needs full precision."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _torch_eigenvalues(ws: list[torch.Tensor], device, dtype, method: str) -> torch.Tensor:
    """[(k, out, in)] same shapes -> (Σk, M) eigenvalues of WᵀW, ascending, float64, NaN rows
    for non-finite matrices: one batched ``eigvalsh`` (of Gram matrices) or ``svdvals`` call."""
    def operand(w: torch.Tensor) -> torch.Tensor:  # one upcast at a time (bf16 7B layers)
        w = w.to(device, dtype)
        w = w.mT if w.shape[-2] < w.shape[-1] else w                      # tall
        return w.mT @ w if method == "gram" else w

    with _exact_float32_matmul():
        A = torch.cat([operand(w) for w in ws])
    finite = torch.isfinite(A).flatten(1).all(1)
    A = A if finite.all() else torch.where(finite[:, None, None], A, 0)
    lam = torch.linalg.eigvalsh(A).clamp_min(0).double() if method == "gram" \
        else torch.linalg.svdvals(A).double().square().flip(-1)
    return lam.masked_fill(~finite[:, None], math.nan)


def _one_blas_thread():
    """SciPy's OpenBLAS threads and torch's OpenMP threads, both spinning for work, can slow
    each other down 50x on a small machine; one BLAS thread per solve avoids it."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def _lapack_eigenvalues(w: torch.Tensor) -> torch.Tensor:
    """CPU (k, out, in) float32/64 -> (k, M) like :func:`_torch_eigenvalues`, via syrk + syevd
    (torch's batched CPU eigvalsh is a loop of LAPACK calls too; this is ~1.4x faster)."""
    syrk = _blas.ssyrk if w.dtype == torch.float32 else _blas.dsyrk
    rows = []
    for m in w.numpy():                                        # m.T is Fortran-ordered
        gram = syrk(1.0, m.T, trans=0 if m.shape[0] >= m.shape[1] else 1)   # upper triangle
        ok = np.isfinite(gram).all()
        rows.append(_eigh(gram, lower=False, eigvals_only=True, check_finite=False,
                          overwrite_a=True, driver="evd") if ok else np.full(len(gram), np.nan))
    return torch.from_numpy(np.stack(rows)).double().clamp_min(0)


@dataclass
class _Item:
    layer: str
    type: str
    shape: tuple                                   # of the stored weight
    matrix: tuple                                  # (out, in) of each of the k matrices
    get: Callable[[], torch.Tensor] | None = None  # -> (k, out, in): the k matrices of one ESD
    k: int = 1
    source: torch.Tensor | None = None             # the stored tensor (ties, dtype checks)
    part: int | None = None                        # kernel slice, for conv="slices"
    reason: str = ""


def _module_items(name: str, module: nn.Module, conv: str) -> list[_Item]:
    w = module.weight.detach()
    if _is_type(module, (CONV1D,)):  # transformers' Conv1D stores (in, out)
        return [_Item(name, "hf_conv1d", w.T.shape, w.T.shape, lambda: w.T[None], source=w)]
    if w.ndim == 2:
        kind = "linear" if isinstance(module, nn.Linear) else "embedding"
        return [_Item(name, kind, tuple(w.shape), tuple(w.shape), lambda: w[None], source=w)]
    kind, slices = f"conv{w.ndim - 2}d", w.flatten(2).permute(2, 0, 1)   # (kernel, out, in)
    matrix = tuple(w.shape[:2])
    if conv == "pooled":
        return [_Item(name, kind, tuple(w.shape), matrix, lambda: slices, len(slices), w)]
    return [_Item(f"{name}[{s}]", kind, matrix, matrix, lambda s=s: slices[s:s + 1], source=w,
                  part=s) for s in range(len(slices))]


def _tensor_item(name: str, t: torch.Tensor, kind: str) -> _Item:
    item = _Item(name, kind, tuple(t.shape), tuple(t.shape[-2:]), lambda: t[None], source=t)
    if t.ndim != 2:
        item.reason = f"{t.ndim}-D {kind}: pass the model, whose module says how to read it"
    return item


def _collect(model: nn.Module, include: Pattern, conv: str) -> list[_Item]:
    """Items in model order; a structured layer (with ``to_dense()``) stands for its factors."""
    match, items, structured = _matcher(include), [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in structured):
            continue
        own = dict(module.named_parameters(recurse=False))
        if callable(getattr(module, "to_dense", None)):
            structured.append(f"{name}." if name else "")
            if match(name, module):
                shape = (module.out_features, module.in_features) \
                    if hasattr(module, "in_features") else tuple(module.to_dense().shape)
                items.append(_Item(name or type(module).__name__, type(module).__name__, shape,
                                   shape, lambda m=module: m.to_dense().detach()[None]))
            continue
        if isinstance(module, (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)) \
                or _is_type(module, (CONV1D,)):
            own.pop("weight", None)
            if match(name, module):
                items += _module_items(name or type(module).__name__, module, conv)
        for pname, p in own.items():  # loose matrices, e.g. MultiheadAttention.in_proj_weight
            full = f"{name}.{pname}" if name else pname
            if p.ndim >= 2 and match(full, module):
                items.append(_tensor_item(full, p.detach(), "parameter"))
    return items


def _check(item: _Item, max_size: int | None, seen: dict) -> None:
    """Sets ``item.reason`` when the item is to be skipped."""
    t = item.source
    if t is not None and not item.reason:
        key = (t.device, t.data_ptr(), tuple(t.shape), tuple(t.stride()), item.part)
        if t.numel() and key in seen:
            item.reason = f"same tensor as {seen[key]} (tied weights)"
        seen.setdefault(key, item.layer)
        if not t.is_floating_point() and not item.reason:
            item.reason = f"{t.dtype} weights: not a real floating-point matrix"
    if not item.reason and min(item.matrix) == 0:
        item.reason = "empty matrix"
    if not item.reason and max_size is not None and max(item.matrix) > max_size:
        item.reason = f"largest dimension {max(item.matrix)} > max_size={max_size}"


def _solve(chunk: list[int], items: list[_Item], device, dtype, solver: str, evals: dict) -> None:
    """Eigenvalues of the chunk's same-shape matrices into ``evals[i]`` (num_evals,) ascending.
    ``solver``: "lapack" (CPU Gram), "gram" or "svd" (torch, batched)."""
    try:
        if solver == "lapack":
            parts = [_lapack_eigenvalues(items[i].get().to("cpu", dtype)) for i in chunk]
        else:
            ws = [items[i].get() for i in chunk]
            parts = _torch_eigenvalues(ws, device, dtype, solver).split([len(w) for w in ws])
    except (torch.linalg.LinAlgError, np.linalg.LinAlgError) as err:
        if len(chunk) == 1:
            items[chunk[0]].reason = f"eigen-solver failed: {err}"
        for i in chunk if len(chunk) > 1 else []:   # find the culprit, keep the rest
            _solve([i], items, device, dtype, solver, evals)
        return
    for i, lam in zip(chunk, parts):
        if lam.isnan().any():
            items[i].reason = "non-finite weights (NaN or inf)"
        else:
            evals[i] = lam.flatten().sort().values


def _rows(items: list[_Item], evals: dict, eps: float, method: str, fit: bool) -> list[dict]:
    stats, by_n = {}, defaultdict(list)
    for i, lam in evals.items():
        by_n[len(lam)].append(i)
    for idx in by_n.values():                          # one vectorised pass per ESD size
        lam = torch.stack([evals[i] for i in idx])     # (B, n)
        N = torch.tensor([max(items[i].matrix) for i in idx], dtype=lam.dtype, device=lam.device)
        cols = _esd_stats(lam, N, eps, on_lambda=method == "gram")
        cols.update(fit_power_law(lam) if fit else {})
        cols = {k: v.cpu().tolist() for k, v in cols.items()}
        stats.update({i: {k: v[r] for k, v in cols.items()} for r, i in enumerate(idx)})
    rows = []
    for i, it in enumerate(items):
        row = dict.fromkeys(COLUMNS, math.nan)
        row.update(layer=it.layer, type=it.type, shape=tuple(it.shape), M=min(it.matrix),
                   N=max(it.matrix), num_evals=it.k * min(it.matrix), reason=it.reason)
        s = stats.get(i, {})
        row.update({k: v for k, v in s.items() if k in row})
        if s and s["lambda_max"] == 0:
            row["reason"] = "all-zero matrix"
        elif fit and s and s["n_fit"] < MIN_FIT_EVALS:
            row.update(dict.fromkeys(["alpha", "D", "xmin", "sigma", "num_pl_spikes"], math.nan))
            row["reason"] = (f"only {int(s['n_fit'])} eigenvalues > {FIT_THRESHOLD:g}: "
                             f"no power-law fit (needs {MIN_FIT_EVALS})")
        row["alpha_weighted"] = row["alpha"] * row["log_spectral_norm"]
        row["skipped"] = i not in stats
        rows.append(row)
    return rows


def spectra(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], include: Pattern = None,
            max_size: int | None = None, device: str | torch.device = "auto",
            dtype: torch.dtype = torch.float32, progress: bool = True, fit: bool = True,
            conv: str = "pooled", method: str = "gram") -> pd.DataFrame:
    """One row per weight matrix, in model order (columns: see the module docstring).

    Reads nn.Linear, transformers' Conv1D, nn.Embedding, ConvNd (``conv="pooled"``: one ESD of
    all kernel slices (out, in/groups), WW's default; ``"slices"``: a row per slice), layers
    with ``to_dense()`` (MonarchLinear, LowRankLinear: not their factors) and other 2-D
    parameters (type ``parameter``); from a state dict, its 2-D tensors. ``include``: surgery's
    patterns on the name (glob, ``"re:..."``, a list, or ``(name, module or tensor) -> bool``).
    Skipped rows say why (tied weights, ``max_size`` on the largest dimension, non-finite or
    integer weights, N-D state-dict tensors); nothing is dropped silently.
    Same-shape matrices share one batched eigen-solve on ``device`` ("auto": CUDA if present)
    in ``dtype`` (float32 or float64; bf16/fp16 weights are upcast one at a time).
    ``method="gram"``: eigenvalues of the smaller Gram matrix (fast; absolute error ~eps·λ_max,
    so in float32 only λ above ~1e-6·λ_max are accurate); ``"svd"``: ``svdvals`` (slower,
    σ accurate to eps·σ_max). ``fit=False`` skips the power-law fit.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if conv not in ("pooled", "slices") or method not in ("gram", "svd"):
        raise ValueError(f"conv must be 'pooled' or 'slices' (got {conv!r}), "
                         f"method 'gram' or 'svd' (got {method!r})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(model_or_state_dict, nn.Module):
        items = _collect(model_or_state_dict, include, conv)
    elif isinstance(model_or_state_dict, Mapping):
        match = _matcher(include)
        items = [_tensor_item(k, v.detach(), "tensor") for k, v in model_or_state_dict.items()
                 if torch.is_tensor(v) and v.ndim >= 2 and match(k, v)]
    else:
        raise TypeError(f"expected an nn.Module or a state dict, got {type(model_or_state_dict)}")
    seen: dict = {}
    for item in items:
        _check(item, max_size, seen)
    groups, evals = defaultdict(list), {}
    for i, item in enumerate(items):
        if not item.reason:
            groups[item.matrix].append(i)
    lapack = method == "gram" and torch.device(device).type == "cpu" and _blas is not None
    solver = "lapack" if lapack else method
    with torch.no_grad(), _one_blas_thread() if lapack else contextlib.nullcontext(), \
            tqdm(total=sum(map(len, groups.values())), desc="spectra", unit="matrix",
                 disable=not progress) as bar:
        for (rows, cols), idx in groups.items():
            size = min(rows, cols) ** 2 if method == "gram" else rows * cols
            chunk, count = [], 0
            for i in idx + [None]:                     # chunks of at most _STACK_ELEMS
                if chunk and (i is None or (count + items[i].k) * size > _STACK_ELEMS):
                    _solve(chunk, items, device, dtype, solver, evals)
                    bar.update(len(chunk))
                    chunk, count = [], 0
                if i is not None:
                    chunk.append(i)
                    count += items[i].k
        table = _rows(items, evals, torch.finfo(dtype).eps, method, fit)
    return pd.DataFrame(table, columns=COLUMNS)
