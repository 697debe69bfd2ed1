"""Reference models: shapes, causality, module names, registry errors, seeded init."""
import pytest
import torch
from torch import nn

from workbench.models import GPT, GPTConfig, Mixer1D, build_model


@pytest.mark.parametrize("name", ["mlp", "mixer"])
def test_classifier_shapes(name, blobs):
    model = build_model(name, blobs, width=16, depth=2)
    assert model(blobs.x_train[:5]).shape == (5, blobs.n_classes)


def test_mixer_on_mnist1d_signal():
    model = Mixer1D(seq_len=40, n_classes=10, patch_size=4, width=8, depth=1)
    assert model(torch.randn(3, 40)).shape == (3, 10)
    assert isinstance(model.blocks[0].token_mlp.fc, nn.Linear)
    assert model.blocks[0].token_mlp.fc.in_features == 10  # tokens
    with pytest.raises(ValueError, match="patch_size"):
        Mixer1D(seq_len=42, n_classes=10, patch_size=4)


def test_mlp_depth_counts_hidden_layers(blobs):
    model = build_model("mlp", blobs, width=16, depth=3)
    assert len(model.layers) == 3 and model.head.out_features == 4


def test_gpt_shapes_and_names(text):
    model = build_model("gpt", text, width=32, depth=2, n_head=2)
    x, _ = text.get_batch("train", 3)
    assert model(x).shape == (3, text.block_size, 256)
    linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    assert {"blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.attn.qkv", "lm_head"} <= linears
    assert model.blocks[0].mlp.fc.out_features == 4 * 32
    assert model.lm_head.weight is model.tok_emb.weight
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, text.block_size + 1, dtype=torch.long))


def test_gpt_untied_weights():
    model = GPT(GPTConfig(block_size=8, n_layer=1, n_head=1, n_embd=8, tie_weights=False))
    assert model.lm_head.weight is not model.tok_emb.weight


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(256, (2, 16))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 256
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_config_checks_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_unknown_model_and_mismatch_raise(blobs, text):
    with pytest.raises(ValueError, match="gpt, mixer, mlp"):
        build_model("resnet", blobs)
    with pytest.raises(ValueError, match="needs a lm dataset"):
        build_model("gpt", blobs)
    with pytest.raises(ValueError, match="needs a classification dataset"):
        build_model("mlp", text)


def test_seeded_build_is_reproducible_and_leaves_global_rng(blobs):
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    a = build_model("mlp", blobs, width=8, seed=1)
    b = build_model("mlp", blobs, width=8, seed=1)
    assert torch.rand(1) == expected
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model("mlp", blobs, width=8, seed=2)
    assert not torch.equal(a.head.weight, c.head.weight)
