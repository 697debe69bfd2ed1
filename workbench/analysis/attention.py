"""Attention maps captured from a model, recomputed from its query and key projections.

Fused kernels (SDPA, flash) never materialise the attention matrix, so ``capture_attention``
hooks each selected attention module, takes the hidden states going in, and recomputes
``softmax(q kᵀ · scale + mask)`` for the selected layers and heads only; the model's own
forward pass is left untouched (no ``output_attentions``, no eager kernel). Supported:

* Hugging Face BERT-like self-attention (a module with ``query`` and ``key`` projections and
  ``num_attention_heads``: BERT, MiniLM, RoBERTa ...), padding masks included;
* the workbench GPT (``blocks.{i}.attn``: fused ``qkv`` projection, causal);
* anything else through ``qk_fn(module, args, kwargs) -> QK`` on the modules named in ``modules``.

Numbers only; figures are in ``workbench.viz.attention``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Any, Callable, NamedTuple

import pandas as pd
import torch
from torch import nn

from workbench.models.gpt import CausalSelfAttention


class QK(NamedTuple):
    """Queries (B, H, Lq, d) and keys (B, H, Lk, d) of one attention module. ``mask``: additive
    float or boolean (True = attend), broadcastable to (B, H, Lq, Lk); ``scale`` defaults to
    d^-1/2; ``causal`` masks keys after the query."""
    q: torch.Tensor
    k: torch.Tensor
    mask: torch.Tensor | None = None
    causal: bool = False
    scale: float | None = None


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, L, H·d) -> (B, H, L, d)."""
    B, L, C = x.shape
    return x.view(B, L, n_head, C // n_head).transpose(1, 2)


def bert_qk(module: nn.Module, args: tuple, kwargs: dict) -> QK:
    """QK of a Hugging Face BERT-style self-attention from its forward inputs."""
    h = args[0] if args else kwargs["hidden_states"]
    n = module.num_attention_heads
    return QK(_heads(module.query(h), n), _heads(module.key(h), n), kwargs.get("attention_mask"),
              bool(getattr(module, "is_causal", False)), getattr(module, "scaling", None))


def gpt_qk(module: CausalSelfAttention, args: tuple, kwargs: dict) -> QK:
    """QK of a workbench GPT attention: ``qkv`` packs [q | k | v] along features, heads
    contiguous within each (the split in ``CausalSelfAttention.forward``)."""
    x = args[0] if args else kwargs["x"]
    q, k, _ = module.qkv(x).split(x.shape[-1], dim=2)
    return QK(_heads(q, module.n_head), _heads(k, module.n_head), causal=True)


def attention_modules(model: nn.Module, qk_fn: Callable | None = None,
                      modules: Callable | list[str] | None = None) -> list[tuple[str, nn.Module,
                                                                                   Callable]]:
    """[(name, module, qk function)] of every attention module in model order. With ``qk_fn``,
    ``modules`` picks the modules: a list of names / fnmatch patterns or ``f(name, module)``."""
    if qk_fn is not None:
        if modules is None:
            raise ValueError("capture_attention: qk_fn needs `modules` (names, patterns or a "
                             "predicate f(name, module)) saying which modules to hook")
        pick = modules if callable(modules) else (
            lambda name, _: any(fnmatch.fnmatchcase(name, p) for p in modules))
        return [(n, m, qk_fn) for n, m in model.named_modules() if pick(n, m)]
    found = []
    for name, m in model.named_modules():
        if isinstance(m, CausalSelfAttention):
            found.append((name, m, gpt_qk))
        elif (all(hasattr(m, a) for a in ("query", "key", "num_attention_heads"))
              and "Cross" not in type(m).__name__):  # keys of cross-attention come from elsewhere
            found.append((name, m, bert_qk))
    return found


class _Done(Exception):
    """Raised from the last hook: the rest of the forward pass is not needed."""


def attention_probs(qk: QK, heads: list[int]) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) for ``heads`` -> (B, len(heads), Lq, Lk), in float64 for
    a float64 model, else float32."""
    dtype = torch.float64 if qk.q.dtype == torch.float64 else torch.float32
    q, k = qk.q[:, heads].to(dtype), qk.k[:, heads].to(dtype)
    scale = qk.scale if qk.scale is not None else q.shape[-1] ** -0.5
    scores = q @ k.transpose(-1, -2) * scale
    if qk.mask is not None:
        mask = qk.mask.to(scores.device)
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask.to(dtype))
    if qk.causal:
        Lq, Lk = scores.shape[-2:]
        future = torch.ones(Lq, Lk, dtype=torch.bool, device=scores.device).triu(Lk - Lq + 1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(-1).nan_to_num(0.0)  # a fully masked (padding) row -> zeros


@dataclasses.dataclass
class AttentionMaps:
    """``attn`` (layers, heads, L, L) float32 on CPU: row i is query token i's attention over
    the keys (rows sum to 1). ``layers``: attention-module index in model order per row of
    ``attn``; ``layer_names``: their module names; ``heads``: head indices kept. ``kind`` is
    "difference" for ``a.difference(b)`` (signed a − b)."""
    attn: torch.Tensor
    tokens: list[str]
    layer_names: list[str]
    layers: list[int]
    heads: list[int]
    kind: str = "attention"

    def map(self, layer: int, head: int) -> torch.Tensor:
        """The (L, L) map of model layer ``layer`` and head ``head`` (indices as captured)."""
        for what, value, kept in (("layer", layer, self.layers), ("head", head, self.heads)):
            if value not in kept:
                raise ValueError(f"{what} {value} was not captured (captured: {kept})")
        return self.attn[self.layers.index(layer), self.heads.index(head)]

    def head_summary(self) -> pd.DataFrame:
        """One row per (layer, head): ``entropy`` (nats, mean over queries of -Σ_j p log p),
        ``mean_distance`` (tokens, mean over queries of Σ_j p·|i − j|), ``first_token`` (mean
        attention to token 0), plus ``layer_name``."""
        if self.kind != "attention":
            raise ValueError("head_summary needs attention maps, not a difference")
        p = self.attn.double()
        L = p.shape[-1]
        idx = torch.arange(L, dtype=torch.float64)
        entropy = -(p * p.clamp_min(1e-300).log()).sum(-1).mean(-1)  # (layers, heads)
        distance = (p * (idx[:, None] - idx[None, :]).abs()).sum(-1).mean(-1)
        first = p[..., 0].mean(-1)
        rows = [dict(layer=l, layer_name=name, head=h, entropy=float(entropy[i, j]),
                     mean_distance=float(distance[i, j]), first_token=float(first[i, j]))
                for i, (l, name) in enumerate(zip(self.layers, self.layer_names))
                for j, h in enumerate(self.heads)]
        return pd.DataFrame(rows)

    def difference(self, other: AttentionMaps) -> AttentionMaps:
        """Signed ``self − other`` (same layers, heads and length), e.g. dense − compressed."""
        if not isinstance(other, AttentionMaps):
            raise TypeError(f"difference: expected AttentionMaps, got {type(other).__name__}")
        for what in ("layers", "heads"):
            if getattr(self, what) != getattr(other, what):
                raise ValueError(f"difference: {what} differ ({getattr(self, what)} vs "
                                 f"{getattr(other, what)})")
        if self.attn.shape != other.attn.shape:
            raise ValueError(f"difference: shapes differ ({tuple(self.attn.shape)} vs "
                             f"{tuple(other.attn.shape)})")
        return dataclasses.replace(self, attn=self.attn - other.attn, kind="difference")

    def tv_distance(self, other: AttentionMaps) -> torch.Tensor:
        """(layers, heads) float64: total-variation distance between the two models' attention
        rows, ½ Σ_j |a_ij − b_ij|, averaged over queries i (0 = same, 1 = disjoint)."""
        return 0.5 * self.difference(other).attn.double().abs().sum(-1).mean(-1)

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (torch.save of plain tensors and lists; ``load`` is weights-only)."""
        torch.save(dataclasses.asdict(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttentionMaps:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def _ids_and_call(inputs: Any) -> tuple[torch.Tensor | None, Callable]:
    if isinstance(inputs, torch.Tensor):
        return inputs, lambda m: m(inputs)
    if hasattr(inputs, "keys"):  # dict or BatchEncoding
        return inputs.get("input_ids"), lambda m: m(**inputs)
    raise TypeError(f"capture_attention: inputs must be a tensor of token ids (B, L) or a dict "
                    f"of model inputs, got {type(inputs).__name__}")


def capture_attention(model: nn.Module, inputs: Any, layers: list[int] | None = None,
                      heads: list[int] | None = None, *, tokens: list[str] | None = None,
                      tokenizer: Any = None, batch_index: int = 0, qk_fn: Callable | None = None,
                      modules: Callable | list[str] | None = None) -> AttentionMaps:
    """Attention of one sequence (``batch_index`` of ``inputs``) -> AttentionMaps.

    ``inputs``: token ids (B, L) or a dict such as a tokenizer's output (its ``attention_mask``
    (B, L) drops padding tokens from the maps). ``layers``: attention-module indices in model
    order (None = all; negative counts from the end); ``heads``: head indices (None = all).
    Token labels: ``tokens``, else ``tokenizer.convert_ids_to_tokens``, else the ids.
    """
    found = attention_modules(model, qk_fn, modules)
    if not found:
        raise ValueError(f"capture_attention: no attention modules found in "
                         f"{type(model).__name__}; pass qk_fn= and modules=")
    n = len(found)
    chosen = sorted({l % n for l in layers} if layers else range(n))
    bad = [l for l in (layers or []) if not -n <= l < n]
    if bad:
        raise ValueError(f"capture_attention: layers {bad} out of range; the model has {n}")
    ids, call = _ids_and_call(inputs)
    maps: dict[int, torch.Tensor] = {}
    head_ids: list[int] = []

    def hook(index: int, fn: Callable):
        def pre_hook(module, args, kwargs):
            qk = fn(module, args, kwargs)
            qk = qk if isinstance(qk, QK) else QK(*qk)
            if not head_ids:
                head_ids.extend(range(qk.q.shape[1]) if heads is None else heads)
                if not head_ids or not all(0 <= h < qk.q.shape[1] for h in head_ids):
                    raise ValueError(f"capture_attention: heads must be in 0..{qk.q.shape[1]-1}, "
                                     f"got {heads}")
            sel, mask = batch_index, qk.mask
            if not 0 <= sel < qk.q.shape[0]:
                raise ValueError(f"capture_attention: batch_index {sel} out of range for a "
                                 f"batch of {qk.q.shape[0]}")
            if mask is not None and mask.ndim == 4 and mask.shape[0] > 1:
                mask = mask[sel:sel + 1]  # (B, H or 1, Lq, Lk): this sequence's rows
            qk = QK(qk.q[sel:sel + 1], qk.k[sel:sel + 1], mask, qk.causal, qk.scale)
            maps[index] = attention_probs(qk, head_ids)[0].float().cpu()
            if len(maps) == len(chosen):
                raise _Done
        return pre_hook

    handles = [found[i][1].register_forward_pre_hook(hook(i, found[i][2]), with_kwargs=True)
               for i in chosen]
    try:
        with torch.no_grad():
            call(model)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(maps) != len(chosen):
        raise RuntimeError(f"capture_attention: layers {sorted(set(chosen) - set(maps))} never "
                           f"ran in the forward pass")
    attn = torch.stack([maps[i] for i in chosen])  # (layers, heads, L, L)
    keep = None
    if hasattr(inputs, "keys") and inputs.get("attention_mask") is not None:
        keep = inputs["attention_mask"][batch_index].bool().cpu()
        attn = attn[:, :, keep][:, :, :, keep]
    if tokens is None:
        if ids is None:
            tokens = [str(i) for i in range(attn.shape[-1])]
        else:
            row = ids[batch_index].cpu()
            row = row[keep] if keep is not None else row
            tokens = (tokenizer.convert_ids_to_tokens(row.tolist()) if tokenizer is not None
                      else [str(int(t)) for t in row])
    if len(tokens) != attn.shape[-1]:
        raise ValueError(f"capture_attention: {len(tokens)} tokens for maps of length "
                         f"{attn.shape[-1]}")
    return AttentionMaps(attn.contiguous(), list(tokens), [found[i][0] for i in chosen],
                         chosen, list(head_ids))


__all__ = ["QK", "AttentionMaps", "attention_modules", "attention_probs", "bert_qk",
           "capture_attention", "gpt_qk"]
