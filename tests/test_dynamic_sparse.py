"""Dynamic sparse training: constant budget, drop the smallest, regrow by gradient (RigL) or at
random (SET), regrown weights at zero, masks that hold, and a mask history the inspectors read."""
import copy

import pandas as pd
import pytest
import torch

from workbench.data import load_dataset
from workbench.methods.dynamic_sparse import (DynamicSparseConfig, DynamicSparsifier, apply,
                                              cosine_drop_fraction, prune_and_regrow)
from workbench.models import build_model
from workbench.structures import MaskedLinear
from workbench.train import train
from workbench.viz.masks import mask_evolution_figure


def config(**options):
    return DynamicSparseConfig(**{"sparsity": 0.8, "update_every": 2, "end_step": 12,
                                  "drop_fraction": 0.5, **options})


def test_prune_and_regrow_matches_a_float64_sort():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 40, generator=gen, dtype=torch.float64)
    mask = torch.rand(24, 40, generator=gen) < 0.3
    scores = torch.rand(24, 40, generator=gen, dtype=torch.float64)
    n = 50
    new, grown = prune_and_regrow(weight.float(), mask, n, scores.float())
    assert int(new.sum()) == int(mask.sum())
    active = mask.flatten().nonzero().squeeze(1)
    smallest = active[weight.abs().flatten()[active].argsort()[:n]]  # float64 reference
    dropped_ref = torch.zeros(mask.numel(), dtype=torch.bool)
    dropped_ref[smallest] = True
    survivors = mask.flatten() & ~dropped_ref
    free = (~survivors).nonzero().squeeze(1)
    grown_ref = torch.zeros_like(dropped_ref)
    grown_ref[free[scores.flatten()[free].argsort(descending=True)[:n]]] = True
    assert torch.equal(grown.flatten(), grown_ref)
    assert torch.equal(new.flatten(), survivors | grown_ref)


def test_nothing_moves_at_n_zero_and_bad_input_is_named():
    w, m = torch.randn(4, 4), torch.eye(4, dtype=torch.bool)
    new, grown = prune_and_regrow(w, m, 0, torch.rand(4, 4))
    assert torch.equal(new, m) and not grown.any()
    with pytest.raises(ValueError, match="cannot move 5 of 4"):
        prune_and_regrow(w, m, 5, torch.rand(4, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        prune_and_regrow(w, m, 1, torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="bool mask"):
        prune_and_regrow(w, m.float(), 1, torch.rand(4, 4))


def test_cosine_drop_fraction():
    assert cosine_drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert cosine_drop_fraction(100, 0.3, 100) == pytest.approx(0.0)
    assert cosine_drop_fraction(101, 0.3, 100) == 0.0


def test_rigl_update_regrows_the_largest_dense_gradients_at_zero():
    torch.manual_seed(0)
    layer = MaskedLinear(32, 16).double()
    gen = torch.Generator().manual_seed(1)
    layer.set_mask(torch.rand(16, 32, generator=gen) < 0.25)
    cfg = config(update_every=1, end_step=10, drop_fraction=0.4)
    sparsifier = DynamicSparsifier({"fc": layer}, cfg)
    x, c = torch.randn(64, 32, dtype=torch.float64), torch.randn(64, 16, dtype=torch.float64)
    (layer(x) * c).sum().backward()  # dL/d(M⊙W) = cᵀx, dense, computed below independently
    before, weight = layer.weight_mask.clone(), layer.weight.detach().clone()
    sparsifier.step(1)
    n = int(cosine_drop_fraction(1, 0.4, 10) * int(before.sum()))
    expected, grown = prune_and_regrow(weight, before, n, (c.T @ x).abs())
    assert n > 0 and torch.equal(layer.weight_mask, expected)
    assert layer.nnz == int(before.sum())
    assert grown.any() and (layer.weight[grown] == 0).all()  # regrown weights start at zero
    kept = before & expected & ~grown  # a dropped weight that came back restarts at zero too
    assert torch.equal(layer.weight[kept], weight[kept])  # survivors untouched
    assert sparsifier.updates[0]["moved"] == n


def test_rigl_update_zeroes_the_optimizer_state_of_moved_weights_only():
    torch.manual_seed(0)
    layer = MaskedLinear(32, 16).double()
    layer.set_mask(torch.rand(16, 32, generator=torch.Generator().manual_seed(1)) < 0.25)
    sparsifier = DynamicSparsifier({"fc": layer}, config(update_every=2, end_step=10,
                                                         drop_fraction=0.4))
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    x, c = torch.randn(64, 32, dtype=torch.float64), torch.randn(64, 16, dtype=torch.float64)
    for step in (1, 2):
        opt.zero_grad()
        (layer(x) * c).sum().backward()
        opt.step()
        if step == 1:
            sparsifier.step(1, opt)  # not an update step: nothing reset
    state = opt.state[layer.weight]
    for key in ("exp_avg", "exp_avg_sq"):  # stale moments everywhere, masked entries included
        state[key].copy_(torch.rand(16, 32, dtype=torch.float64) + 0.5)
    moments = {k: state[k].clone() for k in ("exp_avg", "exp_avg_sq")}
    bias_moments = opt.state[layer.bias]["exp_avg"].clone()
    before, weight = layer.weight_mask.clone(), layer.weight.detach().clone()
    n = int(cosine_drop_fraction(2, 0.4, 10) * int(before.sum()))
    expected, grown = prune_and_regrow(weight, before, n, layer.dense_grad.abs())
    sparsifier.step(2, opt)
    assert torch.equal(layer.weight_mask, expected)
    moved = (before != expected) | grown  # dropped, grown, and dropped-then-regrown entries
    assert grown.any() and (before & ~expected).any()
    for key, old in moments.items():
        assert (state[key][moved] == 0).all(), key
        assert torch.equal(state[key][~moved], old[~moved]), key  # elsewhere untouched
    assert (layer.weight[grown] == 0).all() and (layer.weight[~expected] == 0).all()
    kept = expected & ~grown
    assert torch.equal(layer.weight[kept], weight[kept])
    assert torch.equal(opt.state[layer.bias]["exp_avg"], bias_moments)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_regrowth_under_sgd_with_and_without_state(momentum):
    torch.manual_seed(0)
    layer = MaskedLinear(16, 8)
    layer.set_mask(torch.rand(8, 16, generator=torch.Generator().manual_seed(1)) < 0.5)
    sparsifier = DynamicSparsifier({"fc": layer}, config(update_every=1, regrow="random"))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=momentum)
    layer(torch.randn(4, 16)).sum().backward()
    opt.step()
    before = layer.weight_mask.clone()
    sparsifier.step(1, opt)
    moved = before != layer.weight_mask
    assert moved.any() and (layer.weight[moved & layer.weight_mask] == 0).all()
    buffer = opt.state[layer.weight].get("momentum_buffer")
    assert (buffer is None) == (momentum == 0)  # plain SGD keeps no state: nothing to reset
    if buffer is not None:
        assert (buffer[moved] == 0).all() and (buffer[~moved] != 0).any()


def test_train_hands_the_optimizer_to_the_hook(blobs_data):
    model = build_model("mlp", blobs_data, width=32, depth=1, seed=0)
    report = apply(model, config(update_every=4, end_step=8))
    seen = []

    def hook(step, optimizer):
        report.sparsifier.step(step, optimizer)
        seen.append(optimizer)
    train(model, blobs_data, steps=4, lr=1e-2, device="cpu", progress=False, on_step=hook)
    (_, first), (_, last) = report.sparsifier.snapshots
    opt = seen[-1]
    assert isinstance(opt, torch.optim.AdamW)
    for name, layer in report.layers.items():
        moved = first[name] != last[name]  # the update at the last step moved these
        assert moved.any()
        for key in ("exp_avg", "exp_avg_sq"):
            value = opt.state[layer.weight][key]
            assert (value[moved] == 0).all() and (value[last[name] & ~moved] != 0).any()


@pytest.fixture(scope="module")
def blobs_data():
    return load_dataset("synthetic", size="ci")


@pytest.mark.parametrize("regrow", ["gradient", "random"])
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_training_keeps_the_budget_and_the_masks(regrow, distribution, blobs_data):
    model = build_model("mlp", blobs_data, width=32, depth=2, seed=0)
    report = apply(model, config(regrow=regrow, distribution=distribution))
    sparsifier = report.sparsifier
    budget = {n: layer.nnz for n, layer in report.layers.items()}
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    train(model, blobs_data, steps=16, lr=1e-2, device="cpu", progress=False,
          on_step=sparsifier.step, weight_decay=0.1)
    steps = [s for s, _ in sparsifier.snapshots]
    assert steps == [0, 2, 4, 6, 8, 10, 12]  # every Δt until T_end, then frozen
    for _, masks in sparsifier.snapshots:
        assert {n: int(m.sum()) for n, m in masks.items()} == budget  # exactly constant
    for name, layer in report.layers.items():
        assert (layer.weight[~layer.weight_mask] == 0).all()  # masks hold after AdamW steps
        assert torch.equal(layer.weight_mask.cpu(), sparsifier.snapshots[-1][1][name])
    table = sparsifier.evolution()
    last = table[table["step"] == 12]
    assert (last["iou_initial"] < 1).all() and (table[table["step"] == 0]["iou_initial"] == 1).all()
    assert (last["ever_active"] > 1 - 0.8).all()


def test_random_regrowth_is_seeded_and_differs_from_gradient(blobs_data):
    def final_masks(**options):
        model = build_model("mlp", blobs_data, width=32, depth=1, seed=0)
        report = apply(model, config(**options))
        train(model, blobs_data, steps=6, lr=1e-2, device="cpu", progress=False,
              on_step=report.sparsifier.step)
        return report.sparsifier.masks()
    a, b = final_masks(regrow="random"), final_masks(regrow="random")
    assert all(torch.equal(a[n], b[n]) for n in a)
    c = final_masks(regrow="gradient")
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_evolution_table_and_saved_artifacts(blobs_data, tmp_path, monkeypatch):
    model = build_model("mlp", blobs_data, width=32, depth=2, seed=0)
    report = apply(model, config())
    train(model, blobs_data, steps=6, lr=1e-2, device="cpu", progress=False,
          on_step=report.sparsifier.step)
    sparsifier = report.sparsifier
    paths = sparsifier.save("rigl-", folder=tmp_path)
    table = pd.read_csv(paths["mask_evolution"])
    assert list(table["step"].unique()) == [0, 2, 4, 6]
    updates = pd.DataFrame(sparsifier.updates)
    nnz = {n: layer.nnz for n, layer in report.layers.items()}
    for row in updates.itertuples():
        regrown = table[(table["layer"] == row.layer) & (table["step"] == row.step)]["regrown"]
        assert float(regrown.iloc[0]) == pytest.approx((row.moved - row.regrown_dropped) / nnz[row.layer])
    history = torch.load(paths["mask_history"])
    assert history["steps"] == [0, 2, 4, 6] and len(history["masks"]) == 4
    final = torch.load(paths["masks"])
    assert all(torch.equal(final[n], report.layers[n].weight_mask) for n in final)
    assert len(mask_evolution_figure(table).data) > 0  # the dashboard's figure reads it
    monkeypatch.setenv("WORKBENCH_RUN_DIR", str(tmp_path / "run"))
    assert sparsifier.save()["masks"] == str(tmp_path / "run" / "masks.pt")  # the run's folder


def test_configuration_errors_name_the_problem():
    for bad, match in [(dict(sparsity=1.0), r"sparsity must be a number in \[0, 1\)"),
                       (dict(sparsity=-0.5), "sparsity"),
                       (dict(drop_fraction=0.0), r"drop_fraction must be in \(0, 1\]"),
                       (dict(drop_fraction=1.5), "drop_fraction"),
                       (dict(regrow="magnitude"), "regrow must be 'gradient'"),
                       (dict(end_step=0), "end_step must be a positive int.*3/4"),
                       (dict(update_every=0), "update_every must be a positive int"),
                       (dict(distribution="normal"), "distribution must be one of")]:
        with pytest.raises(ValueError, match=match):
            config(**bad)
    layer = MaskedLinear(4, 4)
    sparsifier = DynamicSparsifier({"fc": layer}, config(update_every=1))
    with pytest.raises(RuntimeError, match="no gradient for 'fc'"):
        sparsifier.step(1)  # RigL at an update step without a backward pass
    copy.deepcopy(sparsifier)  # picklable state, no open handles


def test_small_dense_width_matches_the_sparse_budget(blobs_data):
    from workbench.experiment import width_for_params

    def build(width):
        return build_model("mlp", blobs_data, width=width, depth=1)
    counts = {w: sum(p.numel() for p in build(w).parameters()) for w in range(1, 65)}
    for target in (counts[1], counts[37] + 5, counts[64], counts[64] * 4):
        best = min(counts, key=lambda w: (abs(counts[w] - target), w))  # brute force
        assert width_for_params(build, target, 64) == best
