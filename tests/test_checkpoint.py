import pytest
import torch

from workbench.checkpoint import load_checkpoint, load_structured_layers, save_checkpoint
from workbench.data import load_dataset
from workbench.methods import apply_method
from workbench.models import build_model


def test_round_trip_rebuilds_structured_layers(tmp_path):
    model = build_model("gpt", load_dataset("bytes", size="ci"), width=64, depth=2, seed=0)
    apply_method("monarch", model, nblocks=4, include="*mlp.fc")
    apply_method("lowrank", model, rank=8, include="*mlp.proj", init="fresh")
    path = save_checkpoint(model, tmp_path / "ckpt.pt", step=3)
    layers = load_structured_layers(path)
    assert sorted(layers) == ["blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.mlp.fc",
                              "blocks.1.mlp.proj"]
    for name, layer in layers.items():
        original = model.get_submodule(name)
        torch.testing.assert_close(layer.to_dense(), original.to_dense())
    assert load_checkpoint(path)["extra"] == {"step": 3}


def test_plain_state_dict_and_errors(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt")["structure"] == {}
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
