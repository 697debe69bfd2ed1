"""Methods, registered by name: each turns a model into a structured one.

``apply_method("monarch", model, nblocks=4, include="*mlp.fc")`` looks the method up, builds its
config dataclass from the keyword arguments (unknown ones raise) and returns the surgery report.
A new method is one module defining a config dataclass and ``apply(model, config)`` plus one
``register`` call here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from . import dynamic_sparse, gmp, lowrank, monarch, nm, random_pruning, sparse_ift

_REGISTRY: dict[str, tuple[type, Callable]] = {}


def register(name: str, config_class: type, apply: Callable) -> None:
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    _REGISTRY[name] = (config_class, apply)


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def make_config(name: str, **options: Any):
    """The config dataclass of method ``name`` built from ``options`` (checked)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(method_names())}")
    config_class = _REGISTRY[name][0]
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(options) - fields
    if unknown:
        raise ValueError(f"method {name!r} has no option {sorted(unknown)[0]!r}; options: "
                         f"{', '.join(sorted(fields))}")
    return config_class(**options)


def apply_method(name: str, model: nn.Module, **options: Any):
    """Apply method ``name`` to ``model`` in place; returns its SurgeryReport."""
    config = make_config(name, **options)
    return _REGISTRY[name][1](model, config)


register("monarch", monarch.MonarchConfig, monarch.apply)
register("lowrank", lowrank.LowRankConfig, lowrank.apply)
register("gmp", gmp.GMPConfig, gmp.apply)
register("random_pruning", random_pruning.RandomPruningConfig, random_pruning.apply)
register("nm", nm.NMConfig, nm.apply)
register("dynamic_sparse", dynamic_sparse.DynamicSparseConfig, dynamic_sparse.apply)
register("sparse_ift", sparse_ift.SparseIFTConfig, sparse_ift.apply)

__all__ = ["apply_method", "make_config", "method_names", "register"]
