"""The train / evaluate loop: learning actually happens, determinism, metrics, NaN detection."""
import math

import pytest
import torch
from torch import nn

from workbench.data import load_dataset
from workbench.models import build_model
from workbench.train import TrainResult, evaluate, lr_factor, resolve_device, train


def test_resolve_device():
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert str(resolve_device("auto")) == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_synthetic_mlp_learns(blobs):
    model = build_model("mlp", blobs, width=32, depth=1, seed=0)
    before = evaluate(model, blobs, "cpu")["accuracy"]
    result = train(model, blobs, steps=100, lr=1e-2, device="cpu", progress=False, eval_every=50)
    assert isinstance(result, TrainResult)
    assert result.metrics["split"] == "test" and result.device == result.device_name == "cpu"
    assert result.metrics["accuracy"] >= 0.85 > before + 0.3  # chance is 0.25, best ~0.95
    assert [h["step"] for h in result.history] == list(range(1, 101))
    assert "eval_accuracy" in result.history[49] and "eval_accuracy" not in result.history[50]
    assert result.history[-1]["eval_accuracy"] == result.metrics["accuracy"]
    assert result.wall_time_s > 0


def test_digits_mlp_learns():
    digits = load_dataset("digits", seed=0, size="ci")
    model = build_model("mlp", digits, width=64, depth=1, seed=0)
    result = train(model, digits, steps=100, lr=1e-2, device="cpu", progress=False)
    assert result.metrics["accuracy"] >= 0.85  # chance is 0.1


def test_training_is_deterministic(blobs):
    runs = [
        train(build_model("mlp", blobs, width=16, seed=0), blobs, steps=20, lr=1e-2,
              device="cpu", progress=False, seed=5)
        for _ in range(2)
    ]
    untimed = [[{k: v for k, v in row.items() if k != "time_s"} for row in r.history]
               for r in runs]
    assert untimed[0] == untimed[1]
    times = [row["time_s"] for row in runs[0].history]
    assert times == sorted(times) and 0 < times[-1] <= runs[0].wall_time_s
    assert runs[0].metrics == runs[1].metrics


def test_byte_lm_loss_decreases(text):
    model = build_model("gpt", text, width=32, depth=1, n_head=2, seed=0)
    before = evaluate(model, text, "cpu", batch_size=64, eval_batches=2)
    assert before["loss"] == pytest.approx(math.log(256), abs=0.3)  # near-uniform at init
    result = train(model, text, steps=40, lr=1e-2, batch_size=16, device="cpu",
                   progress=False, eval_batches=2)
    after = result.metrics
    assert after["loss"] < before["loss"] - 1.5
    assert after["bits_per_byte"] == pytest.approx(after["loss"] / math.log(2))
    assert after["perplexity"] == pytest.approx(math.exp(after["loss"]))


def test_evaluate_is_deterministic_and_restores_mode(text):
    model = build_model("gpt", text, width=16, depth=1, n_head=2, seed=0, dropout=0.5).train()
    a = evaluate(model, text, "cpu", batch_size=8, eval_batches=2)
    b = evaluate(model, text, "cpu", batch_size=8, eval_batches=2)
    assert a == b and a["split"] == "test" and model.training
    on_train = evaluate(model, text, "cpu", split="train", batch_size=8, eval_batches=1)
    assert on_train["split"] == "train"


class NaNAfter(nn.Module):
    """A classifier whose logits turn NaN from the ``n``-th forward call on."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.calls, self.n = 0, n

    def forward(self, x):
        self.calls += 1
        out = self.linear(x)
        return out * float("nan") if self.calls >= self.n else out


def test_nan_loss_names_the_step(blobs):
    with pytest.raises(FloatingPointError, match="at step 3 of 10"):
        train(NaNAfter(3), blobs, steps=10, lr=1e-3, device="cpu", progress=False)


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        train(nn.Linear(8, 4), load_dataset("synthetic", size="ci"), 1, 1e-3, schedule="step")


def test_schedule_spans_two_calls(blobs):
    """A schedule split over two train() calls gives the learning rates of one call; the
    restart ramp scales the second call's first steps; steps outside the schedule are refused."""
    def lrs(steps, **kw):
        model = build_model("mlp", blobs, width=8, depth=1, seed=0)
        result = train(model, blobs, steps=steps, lr=1e-2, device="cpu", progress=False,
                       warmup_steps=3, **kw)
        return [h["lr"] for h in result.history]
    whole = lrs(20)
    first = lrs(12, schedule_steps=20)
    second = lrs(8, schedule_steps=20, schedule_offset=12)
    assert first + second == pytest.approx(whole)
    assert whole[0] == pytest.approx(1e-2 / 3) and whole[-1] == pytest.approx(1e-3)
    ramped = lrs(8, schedule_steps=20, schedule_offset=12, rewarm_steps=4)
    assert ramped == pytest.approx([w * min(1, (i + 1) / 4) for i, w in enumerate(second)])
    with pytest.raises(ValueError, match="outside the 20-step schedule"):
        lrs(9, schedule_steps=20, schedule_offset=12)


def test_compiled_training_matches_eager(text):
    """train(compile=...) runs the forward and backward through torch.compile ("aot_eager":
    the traced graph without code generation) with the same losses as eager; a model with
    Monarch FFN layers (custom ops) traces too. An unknown mode is refused by name."""
    from workbench.experiment import PATTERNS
    from workbench.methods import apply_method
    runs = []
    for mode in ("none", "aot_eager"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = build_model("gpt", text, width=32, depth=1, n_head=2, seed=0)
        torch.manual_seed(0)  # the fresh Monarch factors
        apply_method("monarch", model, nblocks=4, init="fresh", include=PATTERNS["ffn"])
        for layer in model.modules():
            if hasattr(layer, "impl"):
                layer.impl = "torch"  # the fast plan's custom ops, on the CPU
        runs.append(train(model, text, steps=5, lr=1e-2, batch_size=4, device="cpu",
                          progress=False, eval_batches=1, compile=mode))
    from torch._dynamo.utils import counters
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    eager, traced = ([row["train_loss"] for row in r.history] for r in runs)
    assert eager == pytest.approx(traced, rel=1e-5)
    with pytest.raises(ValueError, match="compile must be one of"):
        train(model, text, steps=1, lr=1e-3,
              device="cpu", progress=False, compile="fast")


def test_steady_step_time_leaves_out_warm_up_and_evaluations():
    from workbench.experiment import steady_step_ms
    history = [{"step": 1, "time_s": 5.0}]  # the first step compiled for 5 s
    for step in range(2, 12):
        row = {"step": step, "time_s": history[-1]["time_s"] + 0.01}
        if step == 8:
            row["eval_loss"] = 1.0  # the next gap includes an evaluation
        history.append(row)
    history.append({"step": 12, "time_s": history[-1]["time_s"] + 3.0})
    assert steady_step_ms(history) == pytest.approx(10.0)
    assert steady_step_ms(history[:2]) is None
