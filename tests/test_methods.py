"""The method registry and the Monarch / low-rank methods on real models."""
import pytest
import torch

from workbench.data import load_dataset
from workbench.methods import apply_method, make_config, method_names
from workbench.methods.monarch import densify
from workbench.models import build_model
from workbench.structures import LowRankLinear, MonarchLinear


def small_gpt(seed=0):
    return build_model("gpt", load_dataset("bytes", size="ci"), width=64, depth=2, seed=seed)


def test_registry_and_config_errors():
    assert {"monarch", "lowrank"} <= set(method_names())
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        make_config("nope")
    with pytest.raises(ValueError, match="no option 'blocks'"):
        make_config("monarch", blocks=4)
    with pytest.raises(ValueError, match="nblocks"):
        make_config("monarch", nblocks=0)
    with pytest.raises(ValueError, match="exactly one"):
        make_config("lowrank")


def test_monarch_fresh_replaces_ffn_only():
    model = small_gpt()
    report = apply_method("monarch", model, nblocks=4, include="*mlp.*")
    names = [r.name for r in report.replaced]
    assert names == ["blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    assert all(isinstance(model.get_submodule(n), MonarchLinear) for n in names)
    assert report.params_after < report.params_before
    logits = model(torch.randint(0, 256, (2, 16)))
    assert torch.isfinite(logits).all()


def test_project_then_densify_round_trip():
    model = small_gpt().double()
    x = torch.randint(0, 256, (2, 16))
    apply_method("monarch", model, nblocks=2, init="project", include="*mlp.*")
    projected = model(x)
    report = densify(model)
    assert len(report.replaced) == 4
    assert not any(isinstance(m, MonarchLinear) for m in model.modules())
    torch.testing.assert_close(model(x), projected)  # to_dense keeps the function


def test_projection_beats_fresh_and_full_rank_is_exact():
    base = small_gpt().double()
    x = torch.randint(0, 256, (2, 16))
    ref = base(x)
    import copy
    full = copy.deepcopy(base)
    apply_method("monarch", full, nblocks=1, init="project", include="*mlp.*")
    torch.testing.assert_close(full(x), ref)  # nblocks=1 holds any matrix
    proj, fresh = copy.deepcopy(base), copy.deepcopy(base)
    apply_method("monarch", proj, nblocks=4, init="project", include="*mlp.*")
    apply_method("monarch", fresh, nblocks=4, init="fresh", include="*mlp.*")
    assert (proj(x) - ref).norm() < (fresh(x) - ref).norm()


def test_lowrank_matches_monarch_budget():
    model = small_gpt()
    monarch_params = MonarchLinear(64, 256, 4, bias=False).num_params()
    report = apply_method("lowrank", model, match_monarch_nblocks=4, include="*mlp.fc")
    for r in report.replaced:
        layer = model.get_submodule(r.name)
        assert isinstance(layer, LowRankLinear)
        assert layer.rank * (64 + 256) <= monarch_params < (layer.rank + 1) * (64 + 256)


def test_projection_error_names_the_layer_and_leaves_the_model_untouched():
    """A NaN in one layer's weight: the error said only "weight contains NaN" and the layers
    before it had already been replaced, leaving a half-converted model."""
    model = small_gpt()
    with torch.no_grad():
        model.blocks[1].mlp.fc.weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"monarch: layer 'blocks\.1\.mlp\.fc': .*NaN"):
        apply_method("monarch", model, nblocks=4, init="project", include="*mlp.*")
    assert not any(isinstance(m, MonarchLinear) for m in model.modules())


def test_densify_keeps_frozen_layers_frozen():
    """Densified, a frozen Monarch layer came back as a trainable nn.Linear."""
    model = small_gpt()
    apply_method("monarch", model, nblocks=4, include="*mlp.*")
    model.blocks[0].requires_grad_(False)
    model.blocks[1].mlp.fc.bias.requires_grad_(False)
    densify(model)
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    fc = model.blocks[1].mlp.fc
    assert fc.weight.requires_grad and not fc.bias.requires_grad
