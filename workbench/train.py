"""The one train / evaluate loop every notebook uses: device, bf16 AMP, seed, progress bar.

Works for both dataset tasks: classification (logits (B, n_classes)) and byte-level language
modelling (logits (B, T, vocab_size)); the loss is cross-entropy in nats either way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from workbench.data import Dataset
from workbench.data.text import eval_windows


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    ``metrics``: the final :func:`evaluate` on the test split. ``history``: one dict per
    optimizer step: ``step`` (1-based), ``train_loss`` (of that step's batch), ``lr``, and after
    an evaluation ``eval_<metric>`` keys, and ``time_s`` (seconds since the call began, at the
    end of the step). ``wall_time_s``: the whole call, evaluations and compilation included.
    """

    metrics: dict[str, Any]
    history: list[dict[str, float]]
    wall_time_s: float
    device: str  # "cpu" or "cuda:0"
    device_name: str  # "cpu" or the GPU's name
    steps: int


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# torch.compile settings for train(compile=...): Inductor modes, and "aot_eager" (no code
# generation: checks that a model traces, quickly, on any machine).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "aot_eager")


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """``model`` for the training forward: itself (``"none"``) or ``torch.compile``d in
    ``mode`` (``"reduce-overhead"`` replays CUDA graphs: no per-kernel host cost). The compiled
    wrapper shares the model's parameters."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "none":
        return model
    if mode == "aot_eager":
        return torch.compile(model, backend="aot_eager")
    return torch.compile(model, mode=mode)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; full precision otherwise (CPU bf16 is slow)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (nats) in float32, and the logits flattened to (N, n_outputs)."""
    logits = model(x)
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(logits, y.reshape(-1), reduction=reduction), logits


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base LR at 0-based ``step``: linear warm-up, then constant or cosine
    decay to 10 % of the base LR at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps - 1)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (dim >= 2), never on biases, norms or gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: str | torch.device = "auto",
    split: str = "test",
    batch_size: int = 256,
    eval_batches: int = 8,
    amp: bool = True,
) -> dict[str, Any]:
    """Quality of ``model`` on one split, deterministically (no random numbers).

    classification: the whole split -> ``{"accuracy", "loss" (nats), "split"}``.
    lm: ``eval_batches * batch_size`` fixed windows spread evenly over the split's stream ->
    ``{"loss" (nats/byte), "bits_per_byte", "perplexity", "split"}``.
    The model keeps the device it was moved to and its train / eval mode is restored.
    """
    device = resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    x_all, y_all = dataset.split(split)
    if dataset.task == "lm":
        x_all, y_all = eval_windows(x_all, dataset.block_size, eval_batches * batch_size)
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        with _autocast(device, amp):
            loss, logits = _loss(model, x, y, reduction="sum")
        total_loss += loss.item()
        correct += (logits.argmax(-1) == y.reshape(-1)).sum().item()
        count += y.numel()
    model.train(was_training)
    loss = total_loss / count
    split_name = "train" if split == "train" else "test"
    if dataset.task == "lm":
        return {"loss": loss, "bits_per_byte": loss / math.log(2), "perplexity": math.exp(loss),
                "split": split_name}
    return {"accuracy": correct / count, "loss": loss, "split": split_name}


def train(
    model: nn.Module,
    dataset: Dataset,
    steps: int,
    lr: float,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    amp: bool = True,
    seed: int = 0,
    eval_every: int | None = None,
    progress: bool = True,
    weight_decay: float = 0.0,
    schedule: Literal["cosine", "constant"] = "cosine",
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    eval_batches: int = 8,
    on_step: Callable[[int, torch.optim.Optimizer], Any] | None = None,
    compile: str = "none",
    schedule_steps: int | None = None,
    schedule_offset: int = 0,
    rewarm_steps: int = 0,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` AdamW steps on random batches of ``dataset``.

    ``seed`` fixes batch order and dropout (seed the model's initialisation through
    ``build_model(..., seed=...)``). ``eval_every`` evaluates on the test split every that many
    steps (and always once at the end). Raises ``FloatingPointError`` naming the step when
    the training loss is NaN or infinite. ``on_step(step, optimizer)``, when given, is called
    after each optimizer step (1-based), before any evaluation, with that step's gradients still
    in ``.grad`` and the AdamW optimizer (whose state a hook may reset): the hook for methods
    whose masks change while training (GMP, dynamic sparse; see
    ``workbench.structures.masked.Sparsifier``). ``compile`` runs the training forward and
    backward through ``torch.compile`` (one of ``COMPILE_MODES``; evaluation stays eager); the
    first steps then include compilation (see ``time_s`` in the history).

    One learning-rate schedule can span several calls (e.g. the two phases of reverse
    sparsification): ``schedule_steps`` is its length (default ``steps``) and
    ``schedule_offset`` the schedule step this call starts at; ``rewarm_steps`` ramps this
    call's first steps linearly on top (a restarted optimizer has no second-moment estimates).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}; expected 'cosine' or 'constant'")
    total = schedule_steps or steps
    if schedule_offset < 0 or schedule_offset + steps > total:
        raise ValueError(f"steps {schedule_offset}..{schedule_offset + steps} fall outside the "
                         f"{total}-step schedule (schedule_offset, schedule_steps)")
    device = resolve_device(device)
    torch.manual_seed(seed)  # dropout
    batches = torch.Generator().manual_seed(seed)  # batch indices, drawn on the CPU
    data = dataset.to(device)
    model.to(device).train()
    forward = compiled(model, compile)
    opt = make_optimizer(model, lr, weight_decay, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(schedule_offset + s, total, warmup_steps, schedule)
        * min(1.0, (s + 1) / max(rewarm_steps, 1)),
    )

    def run_eval() -> dict[str, Any]:
        return evaluate(model, data, device, "test", eval_batches=eval_batches, amp=amp)

    history: list[dict[str, float]] = []
    metrics: dict[str, Any] | None = None
    start = time.perf_counter()
    bar = trange(steps, disable=not progress, desc=f"train {dataset.name}", leave=False)
    for step in range(1, steps + 1):
        x, y = data.get_batch("train", batch_size, batches)
        with _autocast(device, amp):
            loss, _ = _loss(forward, x, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {step} of {steps} "
                                     f"(lr {sched.get_last_lr()[0]:.3g}); try a lower lr")
        row = {"step": step, "train_loss": loss_value, "lr": sched.get_last_lr()[0]}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, opt)
        row["time_s"] = time.perf_counter() - start
        metrics = None
        if eval_every and (step % eval_every == 0 or step == steps):
            metrics = run_eval()
            row.update({f"eval_{k}": v for k, v in metrics.items() if k != "split"})
        history.append(row)
        bar.update()
        if step % 10 == 0 or step == steps:
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
    bar.close()
    metrics = metrics or run_eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return TrainResult(metrics, history, time.perf_counter() - start, str(device), name, steps)
