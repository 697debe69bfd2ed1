"""Helpers that keep notebooks short: train one model variant, measure it, tabulate variants.

``measure_variant(name, model, data, ...)`` trains ``model`` with :func:`workbench.train.train`,
evaluates it, runs the cost meter on a real input batch and returns a flat dict (one table row).
``compare(rows, reference="dense")`` adds ratios against the reference row, side by side.
``width_for_params`` sizes a dense model to a parameter budget (small-dense baselines).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .analysis import measure_cost
from .data import Dataset
from .train import resolve_device, train

# Quality metric per task, and whether higher is better.
QUALITY = {"classification": ("accuracy", True), "lm": ("bits_per_byte", False)}
PATTERNS = {"ffn": r"re:mlp\.(fc|proj)$", "all": None}


def example_batch(data: Dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """A held-out input batch: (B, input_dim) features or (B, block_size) byte windows."""
    if data.task == "lm":
        tokens = data.x_test[: batch_size * data.block_size].long()
        return tokens.view(-1, data.block_size)[:batch_size].to(device)
    return data.x_test[:batch_size].to(device)


def measure_variant(name: str, model: nn.Module, data: Dataset, *, steps: int, lr: float,
                    batch_size: int, device: str = "auto", seed: int = 0, repeats: int = 20,
                    progress: bool = True, **train_options: Any) -> dict[str, Any]:
    """Train, evaluate and cost one model; returns a row with metrics, cost and wall time."""
    dev = resolve_device(device)
    warm_up(model, data, batch_size, dev)
    result = train(model, data, steps=steps, lr=lr, batch_size=batch_size, device=dev,
                   seed=seed, progress=progress, **train_options)
    return measure_trained(name, model, data, result.metrics, result.history,
                           result.wall_time_s, steps, batch_size, dev, repeats)


def measure_trained(name: str, model: nn.Module, data: Dataset, metrics: dict[str, Any],
                    history: list[dict], train_time_s: float, steps: int, batch_size: int,
                    device: torch.device, repeats: int = 20) -> dict[str, Any]:
    """The table row of a model already trained (e.g. in several phases)."""
    cost = measure_cost(model, example_batch(data, batch_size, device), repeats=repeats)
    cost["train_time_s"] = train_time_s
    cost["train_step_ms"] = 1e3 * train_time_s / max(steps, 1)
    steady = steady_step_ms(history)
    if steady is not None:
        cost["train_step_ms_steady"] = steady
    return {"variant": name, "metrics": metrics, "cost": cost, "history": history}


def steady_step_ms(history: list[dict]) -> float | None:
    """Median milliseconds per step over the second half of training, from the history's
    ``time_s`` stamps (compilation and warm-up, which fall in the first steps, left out, and
    the gaps that include an evaluation); None with fewer than 4 such gaps."""
    gaps = [b["time_s"] - a["time_s"] for a, b in zip(history, history[1:])
            if "time_s" in a and "time_s" in b and b["time_s"] > a["time_s"]
            and not any(key.startswith("eval_") for key in a)]
    gaps = sorted(gaps[len(gaps) // 2:])
    return 1e3 * gaps[len(gaps) // 2] if len(gaps) >= 2 else None


def warm_up(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> None:
    """One forward and backward pass, gradients discarded, so one-time costs (allocator,
    thread pools, kernel selection) do not land in the first variant's timing."""
    model.to(device).train()
    x, y = data.to(device).get_batch("train", batch_size, torch.Generator().manual_seed(0))
    logits = model(x)
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                      y.reshape(-1)).backward()
    model.zero_grad(set_to_none=True)


def width_for_params(build: Callable[[int], nn.Module], params: int, max_width: int) -> int:
    """The width in 1..max_width whose model ``build(width)`` stores the parameter count
    closest to ``params`` (bisection: counts grow with width), e.g. the small dense model with
    as many weights as a sparse model has nonzeros."""
    def count(width: int) -> int:
        return sum(p.numel() for p in build(width).parameters())
    low, high = 1, max_width
    while low < high:  # the smallest width holding at least params
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < params else (low, mid)
    return min({max(low - 1, 1), low}, key=lambda w: (abs(count(w) - params), w))


def compare(rows: list[dict[str, Any]], task: str, reference: str = "dense"):
    """A pandas table of variants with quality, cost and ratios against ``reference``."""
    import pandas as pd
    metric, _ = QUALITY[task]
    table = pd.DataFrame([{
        "variant": r["variant"], metric: r["metrics"][metric],
        "params": r["cost"]["params"], "flops_per_sample": r["cost"]["flops_per_sample"],
        "train_time_s": r["cost"]["train_time_s"], "latency_ms": r["cost"]["latency_ms"],
    } for r in rows]).set_index("variant")
    if reference in table.index:
        ref = table.loc[reference]
        table["flop_ratio"] = ref["flops_per_sample"] / table["flops_per_sample"]
        table["train_speedup"] = ref["train_time_s"] / table["train_time_s"]
        table["latency_speedup"] = ref["latency_ms"] / table["latency_ms"]
        table[f"{metric}_change"] = table[metric] - ref[metric]
    return table
