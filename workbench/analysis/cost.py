"""The cost meter: parameters, nonzeros, FLOPs, latency, peak memory and throughput of a model.

FLOPs count a multiply-add as 2 FLOPs and a bias add as 1 FLOP per output element, for every
layer alike (torch's FlopCounterMode counts only the matmuls, so a dense ``nn.Linear`` would
otherwise look cheaper than the same layer masked at 0% sparsity). A module that knows its own
cost defines ``flops(batch_shape) -> int`` for one forward call on an input whose leading
(non-feature) dimensions are ``batch_shape``; the meter uses that instead of what FlopCounterMode
sees inside it (structured layers whose kernels the counter cannot see through report honestly).
Dense linear-like layers (``nn.Linear``, GPT-2's ``Conv1D``) are costed by
:func:`dense_linear_flops`. Bias adds inside functional code (``F.linear`` called directly, as
``nn.MultiheadAttention`` does) are not seen.
"""
from __future__ import annotations

import contextlib
import math
import resource
import statistics
import sys
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..environment import device_name
from ..surgery import LINEAR_TYPES, _is_type, linear_bias, linear_shape


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``params``: stored parameter entries; ``nonzeros``: of those, the nonzero ones (after any
    mask a module applies through a ``weight`` property, since we read module attributes)."""
    params = sum(p.numel() for p in model.parameters())
    nonzeros = 0
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        for name, p in own.items():
            value = getattr(module, name.removesuffix("_orig"), p)
            value = value if isinstance(value, torch.Tensor) else p
            nonzeros += int(torch.count_nonzero(value.detach()).item())
    return {"params": params, "nonzeros": nonzeros}


def dense_linear_flops(module: nn.Module, batch_shape: tuple[int, ...] = ()) -> int:
    """FLOPs of a dense linear-like ``module`` (weight (out, in)) on inputs of leading shape
    ``batch_shape``: ``rows·(2·in·out + out)``, the last term only with a bias."""
    out_features, in_features = linear_shape(module)
    rows = math.prod(batch_shape) if batch_shape else 1
    bias = out_features if linear_bias(module) is not None else 0
    return rows * (2 * in_features * out_features + bias)


def _flops_of(module: nn.Module) -> Callable[[tuple[int, ...]], int] | None:
    """The module's cost formula: its own ``flops``, else the dense one for linear-like layers."""
    own = getattr(module, "flops", None)
    if callable(own):
        return own
    if _is_type(module, LINEAR_TYPES):
        return lambda batch_shape: dense_linear_flops(module, batch_shape)
    return None


def count_flops(model: nn.Module, example: torch.Tensor | tuple) -> int:
    """FLOPs of one forward pass on ``example`` (the whole batch)."""
    inputs = example if isinstance(example, tuple) else (example,)
    counter = FlopCounterMode(display=False)
    corrections: list[int] = []
    handles = [_self_costing_hooks(module, counter, corrections)
               for module in _outermost_self_costing(model)]
    try:
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        for pre, post in handles:
            pre.remove()
            post.remove()
    return int(counter.get_total_flops() + sum(corrections))


def _outermost_self_costing(model: nn.Module) -> list[nn.Module]:
    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        if _flops_of(module) is not None:
            found.append(module)
            return
        for child in module.children():
            walk(child)
    walk(model)
    return found


def _self_costing_hooks(module: nn.Module, counter: FlopCounterMode, corrections: list[int]):
    seen: dict[str, int] = {}
    flops = _flops_of(module)

    def before(mod, args):
        seen["flops"] = counter.get_total_flops()

    def after(mod, args, output):
        counted = counter.get_total_flops() - seen["flops"]
        batch_shape = tuple(args[0].shape[:-1]) if args else ()
        corrections.append(int(flops(batch_shape)) - counted)
    return module.register_forward_pre_hook(before), module.register_forward_hook(after)


def measure_latency(fn: Callable[[], Any], device: torch.device | str = "cpu",
                    warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Median and interquartile range (ms) of ``fn()`` over ``repeats`` timed calls after
    ``warmup`` untimed ones. On CUDA each call is timed with CUDA events."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"latency_ms": statistics.median(times), "latency_ms_iqr": quartiles[2] - quartiles[0]}


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak CUDA memory allocated since the last reset, or the process's peak resident size."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def measure_cost(model: nn.Module, example: torch.Tensor, *, warmup: int = 3,
                 repeats: int = 20, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """All cost numbers for inference on ``example`` (shape (B, ...), on the model's device).

    Returns params, nonzeros, flops_per_sample, latency_ms (median, whole batch),
    latency_ms_iqr, peak_memory_mb, throughput_per_s (samples), batch_size, device, dtype.
    """
    if example.ndim == 0:
        raise ValueError("measure_cost needs a batched example input of shape (B, ...)")
    first = next(model.parameters(), None)
    device = first.device if first is not None else example.device
    if example.device != device:
        raise ValueError(f"example is on {example.device} but the model is on {device}")
    batch = example.shape[0]
    was_training = model.training
    model.eval()
    try:
        cost: dict[str, Any] = count_parameters(model)
        cost["flops_per_sample"] = count_flops(model, example) / batch
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            timing = measure_latency(lambda: model(example), device, warmup, repeats)
        cost.update(timing)
        cost["peak_memory_mb"] = peak_memory_mb(device)
        cost["throughput_per_s"] = batch / (timing["latency_ms"] / 1e3)
        cost["batch_size"] = batch
        cost["device"] = device_name(str(device))
        cost["dtype"] = str(dtype or (first.dtype if first is not None else example.dtype))
        cost["torch_version"] = torch.__version__
    finally:
        model.train(was_training)
    return cost

