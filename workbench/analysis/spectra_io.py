"""Weight spectra from where the weights are: a saved checkpoint or one layer of a model.

``spectra_from_checkpoint(path)`` reads a ``workbench.checkpoint`` file (or a plain state dict)
without the model's class: every 2-D tensor is one matrix, and each structured layer in the
checkpoint's manifest (Monarch, low-rank) is one matrix, its ``to_dense()``, not its factors —
the same rows, numbers and names as ``spectra(model)`` on the model that was saved. Only the
``type`` column knows less: a state dict does not say whether a matrix was a linear or an
embedding, so those rows read ``tensor`` (structured rows keep their class name).

``layer_eigenvalues(source, layer)`` gives one matrix's eigenvalues, for ``esd_figure``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from ..checkpoint import load_checkpoint, load_structured_layers
from .spectra import spectra

Source = nn.Module | Mapping | str | os.PathLike


def _matrix_name(key: str) -> str:
    """State-dict key -> the name ``spectra(model)`` gives the matrix: the module's name for a
    ``.weight`` (``blocks.0.mlp.fc.weight`` -> ``blocks.0.mlp.fc``), the key otherwise."""
    return key.removesuffix(".weight") if key.endswith(".weight") else key


def checkpoint_matrices(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``({name: tensor}, {name: structured class name})`` in state-dict (model) order: the
    checkpoint's tensors of 2 or more dimensions, structured layers as ``to_dense()``.
    Tied tensors stay one storage, so ``spectra`` marks the second as tied, as for the model.
    FileNotFoundError / ValueError from ``load_checkpoint`` for a missing or unreadable file."""
    data = load_checkpoint(path)
    layers = load_structured_layers(path) if data["structure"] else {}
    prefixes = {name: f"{name}." if name else "" for name in layers}
    matrices: dict[str, torch.Tensor] = {}
    for key, tensor in data["state_dict"].items():
        owner = next((name for name, p in prefixes.items() if key.startswith(p)), None)
        if owner is not None:                       # a factor of a structured layer
            if owner not in matrices:
                with torch.no_grad():
                    matrices[owner] = layers[owner].to_dense().detach()
            continue
        if torch.is_tensor(tensor) and tensor.ndim >= 2:
            name = _matrix_name(key)
            matrices[name if name not in matrices else key] = tensor
    kinds = {name: type(layer).__name__ for name, layer in layers.items()}
    return matrices, kinds


def spectra_from_checkpoint(path: str | os.PathLike, **options) -> pd.DataFrame:
    """``spectra`` of a checkpoint's weights (see the module docstring); ``options`` go to
    :func:`workbench.analysis.spectra.spectra` (include, max_size, device, dtype, fit, ...)."""
    matrices, kinds = checkpoint_matrices(path)
    df = spectra(matrices, **options)
    structured = df["layer"].isin(kinds)
    df.loc[structured, "type"] = df.loc[structured, "layer"].map(kinds)
    return df


def _module_matrix(model: nn.Module, layer: str) -> torch.Tensor:
    modules = dict(model.named_modules())
    module = modules.get(layer)
    if module is not None and callable(getattr(module, "to_dense", None)):
        return module.to_dense()
    if module is not None and isinstance(getattr(module, "weight", None), torch.Tensor):
        return module.weight
    params = dict(model.named_parameters())
    if layer in params:
        return params[layer]
    names = [n for n, m in modules.items()
             if n and (hasattr(m, "weight") or hasattr(m, "to_dense"))]
    raise KeyError(f"no layer {layer!r} in the model; layers with weights: {names[:20]}"
                   + (" ..." if len(names) > 20 else ""))


def layer_eigenvalues(source: Source, layer: str) -> torch.Tensor:
    """Ascending float64 eigenvalues λ = σ² of WᵀW (min(out, in) of them) of ``layer`` in
    ``source``: a model (a module name, ``to_dense()`` for structured layers, or a parameter
    name), a state dict or a checkpoint path (names as in ``spectra_from_checkpoint``). Solved
    in float64 on the smaller Gram matrix, as ``spectra`` defines the ESD."""
    if isinstance(source, nn.Module):
        w = _module_matrix(source, layer)
    else:
        matrices = checkpoint_matrices(source)[0] if isinstance(source, (str, os.PathLike)) \
            else {_matrix_name(k): v for k, v in source.items()}
        if layer not in matrices:
            raise KeyError(f"no matrix {layer!r}; matrices: {list(matrices)[:20]}"
                           + (" ..." if len(matrices) > 20 else ""))
        w = matrices[layer]
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(f"layer {layer!r}: expected a non-empty 2-D weight, got "
                         f"{tuple(w.shape)}")
    w = w.detach().to("cpu", torch.float64)
    gram = w.mT @ w if w.shape[0] >= w.shape[1] else w @ w.mT
    return torch.linalg.eigvalsh(gram).clamp_min(0)
