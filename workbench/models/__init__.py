"""Small reference models, built for a :class:`~workbench.data.Dataset` by name."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from workbench.data import Dataset
from workbench.models.feedforward import FeedForward
from workbench.models.gpt import GPT, GPTConfig
from workbench.models.mixer import Mixer1D
from workbench.models.mlp import MLP

# name -> (task it needs, default width, default depth)
MODELS: dict[str, tuple[str, int, int]] = {
    "mlp": ("classification", 256, 2),
    "gpt": ("lm", 128, 4),
    "mixer": ("classification", 64, 4),
}


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed the CPU RNG inside the block and restore it afterwards; no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(
    name: str,
    dataset: Dataset,
    width: int | None = None,
    depth: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Model ``name`` sized for ``dataset``'s inputs and outputs.

    ``width``: hidden units (mlp), embedding size (gpt) or channels (mixer); ``depth``: hidden
    layers, transformer blocks or mixer blocks (None picks the model's default). ``seed``, when
    given, makes the initialisation reproducible without touching the global RNG. Extra
    keyword arguments go to the model (gpt: any :class:`GPTConfig` field; mixer: ``patch_size``,
    ``token_hidden``, ``channel_hidden``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    task, default_width, default_depth = MODELS[name]
    if dataset.task != task:
        raise ValueError(
            f"model {name!r} needs a {task} dataset, but {dataset.name!r} is a {dataset.task} "
            f"dataset; models for {dataset.task}: "
            + ", ".join(m for m, spec in MODELS.items() if spec[0] == dataset.task)
        )
    width = default_width if width is None else width
    depth = default_depth if depth is None else depth
    with _seeded(seed):
        if name == "mlp":
            return MLP(dataset.input_dim, width, depth, dataset.n_classes, **kwargs)
        if name == "mixer":
            return Mixer1D(dataset.input_dim, dataset.n_classes, width=width, depth=depth, **kwargs)
        cfg = GPTConfig(vocab_size=dataset.vocab_size, block_size=dataset.block_size,
                        n_embd=width, n_layer=depth, **kwargs)
        return GPT(cfg)


__all__ = ["FeedForward", "GPT", "GPTConfig", "MLP", "MODELS", "Mixer1D", "build_model"]
