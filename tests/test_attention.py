"""Attention capture (recomputed from q/k) against slow references, summaries and figures."""
import math
import time

import numpy as np
import pytest
import torch

from workbench.analysis.attention import QK, AttentionMaps, capture_attention
from workbench.models.gpt import GPT, GPTConfig
from workbench.viz.attention import (attention_difference_figure, attention_figures,
                                     attention_grid, attention_heatmap, export_figure,
                                     head_summary_figure, patch_attention_figure)

TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.", "A short one."]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    from workbench.models.pretrained import load_minilm
    model, tokenizer = load_minilm(dtype=torch.float64)
    return model, tokenizer


def _eager_attentions(model, enc):
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return model(**enc, output_attentions=True).attentions
    finally:
        model.config._attn_implementation = "sdpa"


def test_minilm_matches_eager_attentions_in_float64(minilm):
    model, tok = minilm
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    ref = _eager_attentions(model, enc)  # 6 x (B, 12, L, L)
    assert model.config._attn_implementation == "sdpa"  # the capture runs on the fused path
    for b in range(2):
        maps = capture_attention(model, enc, tokenizer=tok, batch_index=b)
        keep = enc["attention_mask"][b].bool()
        expected = torch.stack([a[b][:, keep][:, :, keep] for a in ref])
        assert maps.attn.dtype == torch.float32 and maps.attn.shape == expected.shape
        assert (maps.attn.double() - expected).abs().max() < 1e-6
        assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
        assert len(maps.tokens) == int(keep.sum())
    some = capture_attention(model, enc, layers=[-1, 2], heads=[3, 0])
    assert some.layers == [2, 5] and some.heads == [3, 0]
    assert some.layer_names == ["encoder.layer.2.attention.self", "encoder.layer.5.attention.self"]
    expected = torch.stack([ref[i][0][[3, 0]] for i in (2, 5)])
    assert (some.attn.double() - expected).abs().max() < 1e-6
    assert torch.equal(some.map(5, 0), some.attn[1, 1])


def test_gpt_maps_are_causal_and_reproduce_the_attention_output():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    ids = torch.randint(0, 256, (2, 20))
    maps = capture_attention(model, ids, batch_index=1)
    assert maps.attn.shape == (2, 4, 20, 20) and maps.layer_names == ["blocks.0.attn",
                                                                      "blocks.1.attn"]
    assert maps.attn.triu(1).abs().max() == 0
    assert torch.allclose(maps.attn.sum(-1), torch.ones(2, 4, 20), atol=1e-6)
    assert maps.tokens == [str(int(t)) for t in ids[1]]
    # Slow reference: the maps times V, through the output projection, give each block's output.
    seen = {}
    hooks = [b.attn.register_forward_hook(lambda m, a, out, i=i: seen.update({i: (a[0], out)}))
             for i, b in enumerate(model.blocks)]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for i, block in enumerate(model.blocks):
        x, out = seen[i]
        v = block.attn.qkv(x[1:2]).split(32, dim=2)[2].view(1, 20, 4, 8).transpose(1, 2)
        y = (maps.attn[i][None] @ v).transpose(1, 2).reshape(1, 20, 32)
        assert torch.allclose(block.attn.proj(y), out[1:2], atol=1e-5)


def test_generic_qk_fn_on_hf_gpt2_matches_eager():
    pytest.importorskip("transformers")
    from workbench.models.pretrained import tiny_gpt2
    model = tiny_gpt2().double()

    def gpt2_qk(module, args, kwargs):  # HF GPT-2: fused c_attn (Conv1D), causal
        q, k, _ = module.c_attn(args[0]).split(module.split_size, dim=2)
        B, L, _ = q.shape
        return QK(*(t.view(B, L, module.num_heads, -1).transpose(1, 2) for t in (q, k)),
                  causal=True)

    ids = torch.randint(0, 128, (1, 24))
    maps = capture_attention(model, ids, qk_fn=gpt2_qk, modules=["transformer.h.*.attn"])
    model.config._attn_implementation = "eager"
    ref = torch.cat(model(ids, output_attentions=True).attentions)
    assert (maps.attn.double() - ref).abs().max() < 1e-6
    with pytest.raises(ValueError, match="needs `modules`"):
        capture_attention(model, ids, qk_fn=gpt2_qk)


def test_bad_layers_and_heads_are_named():
    model = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    ids = torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        capture_attention(model, ids, layers=[5])
    with pytest.raises(ValueError, match="heads must be in 0..1"):
        capture_attention(model, ids, heads=[2])
    with pytest.raises(ValueError, match="batch_index 1 out of range"):
        capture_attention(model, ids, batch_index=1)
    with pytest.raises(ValueError, match="no attention modules"):
        capture_attention(torch.nn.Linear(3, 3), torch.zeros(1, 3))


def _random_maps(layers=2, heads=3, L=9, seed=0) -> AttentionMaps:
    g = torch.Generator().manual_seed(seed)
    attn = torch.randn(layers, heads, L, L, generator=g).softmax(-1)
    return AttentionMaps(attn, [f"t{i}" for i in range(L)], [f"layer{i}" for i in range(layers)],
                         list(range(layers)), list(range(heads)))


def test_head_summary_matches_slow_loops():
    maps = _random_maps()
    df = maps.head_summary()
    assert list(df.columns) == ["layer", "layer_name", "head", "entropy", "mean_distance",
                                "first_token"] and len(df) == 6
    for row in df.itertuples():
        p = maps.attn[row.layer, row.head].tolist()
        L = len(p)
        ent = sum(-x * math.log(x) for r in p for x in r if x > 0) / L
        dist = sum(p[i][j] * abs(i - j) for i in range(L) for j in range(L)) / L
        assert row.entropy == pytest.approx(ent, rel=1e-6)
        assert row.mean_distance == pytest.approx(dist, rel=1e-6)
        assert row.first_token == pytest.approx(sum(r[0] for r in p) / L, rel=1e-6)
    uniform = AttentionMaps(torch.full((1, 1, 4, 4), 0.25), list("abcd"), ["x"], [0], [0])
    assert uniform.head_summary().entropy[0] == pytest.approx(math.log(4))


def test_difference_with_itself_is_zero_and_shapes_are_checked(tmp_path):
    a, b = _random_maps(), _random_maps(seed=1)
    assert a.difference(a).attn.abs().max() == 0 and a.tv_distance(a).abs().max() == 0
    d = a.difference(b)
    assert d.kind == "difference" and torch.equal(d.attn, a.attn - b.attn)
    assert (a.tv_distance(b) > 0).all() and (a.tv_distance(b) <= 1).all()
    with pytest.raises(ValueError, match="heads differ"):
        a.difference(_random_maps(heads=2))
    with pytest.raises(ValueError, match="not a difference"):
        d.head_summary()
    a.save(tmp_path / "maps.pt")
    again = AttentionMaps.load(tmp_path / "maps.pt")
    assert torch.equal(again.attn, a.attn) and again.tokens == a.tokens


def test_figures_build_with_expected_traces(tmp_path):
    a, b = _random_maps(), _random_maps(seed=1)
    grid = attention_grid(a)
    assert len(grid.data) == 6 and grid.data[4].meta == {"layer": 1, "head": 1}
    np.testing.assert_allclose(grid.data[4].z, a.attn[1, 1].numpy(), rtol=1e-6)
    assert attention_grid(a.difference(b)).layout.coloraxis.cmid == 0
    view = attention_heatmap(a, layer=1, head=2)
    assert view.data[0].customdata.shape == (9, 9, 2)
    assert view.data[0].customdata[2, 5].tolist() == ["2: t2", "5: t5"]
    window = attention_heatmap(a, 0, 0, max_tokens=4, start=3)
    assert window.data[0].z.shape == (4, 4)
    assert "window: tokens 3–6 of 9" in window.layout.title.text
    summary = head_summary_figure(a.head_summary())
    assert len(summary.data) == 3 and summary.data[0].z.shape == (2, 3)
    change = attention_difference_figure(a, a)
    assert change.data[0].z.max() == 0 and "no layer changed" in change.layout.title.text
    assert set(attention_figures(a, b)) == {"Attention grid", "Token view", "Head summaries",
                                            "Attention change", "Difference grid"}
    assert all(f() for f in attention_figures(a, b).values())
    written = export_figure(grid, tmp_path / "grid.html")
    assert written[0].stat().st_size > 0


def test_patch_attention_on_synthetic_vit_maps():
    # [CLS] + a 4x5 patch grid; patch 7 attends to patch 12, [CLS] keeps 0.3 to itself.
    L = 1 + 20
    attn = torch.zeros(1, 1, L, L)
    attn[..., :, 0] = 0.3
    attn[..., 1 + 7, 1 + 12] = 0.7
    maps = AttentionMaps(attn, ["[CLS]"] + [f"p{i}" for i in range(20)], ["vit.0"], [0], [0])
    fig = patch_attention_figure(maps, 0, 0, grid=(4, 5), query_patch=7)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (4, 5) and z[2, 2] == pytest.approx(0.7) and z.sum() == pytest.approx(0.7)
    assert (fig.data[1].x[0], fig.data[1].y[0]) == (2, 1)  # query patch 7 is row 1, col 2
    assert "30.0% on the 1 prefix token" in fig.layout.title.text
    assert len(patch_attention_figure(maps, 0, 0, grid=(4, 5), query_patch=None).data) == 1
    with pytest.raises(ValueError, match="needs at least 25 tokens"):
        patch_attention_figure(maps, 0, 0, grid=(5, 5))


def test_512_tokens_capture_and_grid_quickly(minilm):
    model, _ = minilm
    ids = torch.randint(1000, 20000, (1, 512))
    start = time.perf_counter()
    maps = capture_attention(model, ids)
    fig = attention_grid(maps)
    elapsed = time.perf_counter() - start
    assert maps.attn.shape == (6, 12, 512, 512)
    assert len(fig.data) == 72 and fig.data[0].z.shape == (64, 64)
    assert "8×8 block" in fig.layout.title.text
    assert len(fig.to_json()) < 4e6  # float32 cells travel as binary
    assert elapsed < 6, f"512 tokens took {elapsed:.1f} s"
