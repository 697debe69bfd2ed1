"""Checkpoints that remember their structured layers, safe to load (``weights_only=True``).

``save_checkpoint(model, path)`` writes the state dict plus a manifest naming every structured
layer (Monarch, low-rank) with its constructor arguments. ``load_structured_layers(path)``
rebuilds those layers alone — enough for the inspectors, without the model's class or code.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .structures import LowRankLinear, MonarchLinear

FORMAT = "workbench-checkpoint-1"


def _describe(module: nn.Module) -> dict | None:
    if isinstance(module, MonarchLinear):
        return {"type": "MonarchLinear", "in_features": module.in_features,
                "out_features": module.out_features, "nblocks": module.nblocks,
                "bias": module.bias is not None}
    if isinstance(module, LowRankLinear):
        return {"type": "LowRankLinear", "in_features": module.in_features,
                "out_features": module.out_features, "rank": module.rank,
                "bias": module.bias is not None}
    return None


def save_checkpoint(model: nn.Module, path: str | os.PathLike, structured_only: bool = False,
                    **extra) -> Path:
    """Save ``model``'s weights and structure manifest to ``path``; returns the path.
    ``structured_only`` keeps just the structured layers' tensors (small files for big models)."""
    structure = {name: spec for name, m in model.named_modules()
                 if (spec := _describe(m)) is not None}
    state = model.state_dict()
    if structured_only:
        prefixes = tuple(f"{name}." for name in structure)
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "state_dict": state, "structure": structure,
                "extra": extra}, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The saved dict; clear errors for a missing file or a file of another kind."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or "state_dict" not in data:
        if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
            return {"format": "state_dict", "state_dict": data, "structure": {}, "extra": {}}
        raise ValueError(f"checkpoint {path} is neither a workbench checkpoint nor a state dict")
    return data


def load_structured_layers(path: str | os.PathLike) -> dict[str, nn.Module]:
    """``{module name: layer}`` for every structured layer recorded in the checkpoint."""
    data = load_checkpoint(path)
    layers = {}
    for name, spec in data["structure"].items():
        spec = dict(spec)
        kind = spec.pop("type")
        cls = {"MonarchLinear": MonarchLinear, "LowRankLinear": LowRankLinear}.get(kind)
        if cls is None:
            raise ValueError(f"checkpoint {path}: unknown layer type {kind!r} for {name}")
        layer = cls(**{k: v for k, v in spec.items() if k != "rank"},
                    **({"rank": spec["rank"]} if "rank" in spec else {}), device="meta")
        prefix = f"{name}." if name else ""
        state = {k[len(prefix):]: v for k, v in data["state_dict"].items()
                 if k.startswith(prefix) and "." not in k[len(prefix):]}
        layers[name] = layer.to_empty(device="cpu")
        layers[name].load_state_dict(state)
    return layers
