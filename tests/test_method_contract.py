"""The contract every registered method passes (add a row to ROWS for a new method).

Each row applies one method to a small MLP (8 -> 32 -> 32 -> 4; every in_features divisible by
8): forward works in float32 and bf16 on the CPU, training through ``workbench.train`` (with the
method's sparsifier hook, if any) keeps the masks, the sparsity is the promised one, state_dict
round-trips into a freshly transformed model, and bad configurations raise clear errors.
"""
from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from workbench.methods import apply_method, make_config, method_names
from workbench.models import build_model
from workbench.structures import MaskReport
from workbench.train import train

STEPS = 6


@dataclasses.dataclass
class Row:
    name: str
    options: dict
    sparsity: float | None = None  # what a mask method promises after STEPS training steps
    bad: list = dataclasses.field(default_factory=list)  # (options, error message regex)
    masked: bool = False  # masks that must hold, without one promised sparsity (Sparse-IFT)


KEY_OPTIONS = ("mode", "variant", "regrow")  # options that tell rows of one method apart
ROWS = {row.name + "".join(f"-{row.options[k]}" for k in KEY_OPTIONS if k in row.options): row
        for row in [
    Row("monarch", {"nblocks": 4}, bad=[({"nblocks": 0}, "nblocks"), ({"init": "x"}, "init")]),
    Row("lowrank", {"rank": 4}, bad=[({}, "exactly one")]),
    Row("gmp", {"final_sparsity": 0.75, "initial_sparsity": 0.25, "start_step": 2,
                "end_step": 4, "frequency": 1, "scope": "global"}, sparsity=0.75,
        bad=[({"final_sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
             ({"final_sparsity": -0.1}, r"in \[0, 1\)"),
             ({"initial_sparsity": 0.9, "final_sparsity": 0.5}, "exceeds final_sparsity"),
             ({"end_step": 0}, "must be after start_step"), ({"scope": "x"}, "scope")]),
    Row("random_pruning", {"sparsity": 0.8, "distribution": "erk"}, sparsity=0.8,
        bad=[({"sparsity": 1}, r"\[0, 1\)"), ({"distribution": "x"}, "distribution")]),
    Row("nm", {"n": 2, "m": 8, "mode": "magnitude"}, sparsity=0.75,
        bad=[({"n": 5, "m": 4}, "n=5 > m=4"), ({"m": 0}, "m >= 1"), ({"mode": "x"}, "mode")]),
    Row("nm", {"n": 2, "m": 4, "mode": "srste"}, sparsity=0.5),
    Row("dynamic_sparse", {"sparsity": 0.75, "distribution": "erk", "regrow": "gradient",
                           "update_every": 2, "end_step": 4}, sparsity=0.75,
        bad=[({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
             ({"drop_fraction": 0}, r"drop_fraction must be in \(0, 1\]"),
             ({"regrow": "x"}, "regrow"), ({"end_step": 0}, "end_step"),
             ({"distribution": "x"}, "distribution")]),
    Row("dynamic_sparse", {"sparsity": 0.75, "distribution": "uniform", "regrow": "random",
                           "update_every": 2, "end_step": 4}, sparsity=0.75),
    Row("sparse_ift", {"variant": "parallel", "sparsity": 0.75}, sparsity=0.75,
        bad=[({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
             ({"variant": "x"}, "variant"), ({"variant": "wide"}, "needs reference")]),
    Row("sparse_ift", {"variant": "factorized", "sparsity": 0.75}, masked=True),
    Row("sparse_ift", {"variant": "doped", "sparsity": 0.5}, masked=True),
]}


def small_model(blobs, seed=0, dtype=torch.float32):
    return build_model("mlp", blobs, width=32, depth=2, seed=seed).to(dtype)


def transformed(row, blobs, seed=0, dtype=torch.float32):
    model = small_model(blobs, seed, dtype)
    report = apply_method(row.name, model, **row.options)
    return model, report


def fit(model, report, blobs, steps=STEPS):
    hook = getattr(report, "sparsifier", None)
    train(model, blobs, steps=steps, lr=1e-2, device="cpu", progress=False, weight_decay=0.1,
          on_step=hook.step if hook else None)


def test_every_registered_method_has_a_contract_row():
    assert set(method_names()) <= {row.name for row in ROWS.values()}


@pytest.mark.parametrize("key", ROWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_apply_forward_and_train(key, dtype, blobs):
    row = ROWS[key]
    model, report = transformed(row, blobs, dtype=dtype)
    assert report.replaced, report
    x = blobs.split("test")[0][:5].to(dtype)
    y = model(x)
    assert y.shape == (5, blobs.n_classes) and y.dtype == dtype and torch.isfinite(y).all()
    opt, hook = torch.optim.AdamW(model.parameters(), lr=1e-2), getattr(report, "sparsifier", None)
    xs, ys = blobs.split("train")
    for step in range(1, 3):  # by hand: train() feeds float32 batches
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs[:32].to(dtype)).float(), ys[:32]).backward()
        opt.step()
        if hook:
            hook.step(step)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("key", [k for k, row in ROWS.items()
                                 if row.sparsity is not None or row.masked])
def test_masks_hold_through_training_at_the_promised_sparsity(key, blobs):
    row = ROWS[key]
    model, report = transformed(row, blobs)
    assert isinstance(report, MaskReport) and report.layers
    fit(model, report, blobs)
    kept = sum(layer.weight_mask.sum().item() for layer in report.layers.values())
    total = sum(layer.weight_mask.numel() for layer in report.layers.values())
    if row.sparsity is not None:
        assert abs(kept - (1 - row.sparsity) * total) <= len(report.layers) / 2  # rounding only
    for name, layer in report.layers.items():
        assert model.get_submodule(name) is layer
        assert (layer.to_dense()[~layer.weight_mask] == 0).all(), name
        if not getattr(layer, "refine", False):  # SR-STE trains the dense weight on purpose
            assert (layer.weight[~layer.weight_mask] == 0).all(), name


@pytest.mark.parametrize("key", ROWS)
def test_state_dict_round_trips_into_a_fresh_transform(key, blobs):
    row = ROWS[key]
    model, report = transformed(row, blobs)
    fit(model, report, blobs)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = transformed(row, blobs, seed=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = blobs.split("test")[0][:7]
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("key, options, match",
                         [(k, o, m) for k, row in ROWS.items() for o, m in row.bad])
def test_bad_configurations_name_the_problem(key, options, match):
    with pytest.raises(ValueError, match=match):
        make_config(ROWS[key].name, **options)


@pytest.mark.parametrize("key", ROWS)
def test_unknown_option_is_refused(key):
    with pytest.raises(ValueError, match="has no option 'bogus'"):
        make_config(ROWS[key].name, bogus=1)
