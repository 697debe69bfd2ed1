"""A text-classification task built offline: which standard-library package a docstring is from.

Each sample is the first paragraph of a function or class docstring (at least 5 words) from one
of ``PACKAGES`` in the running interpreter's standard library (tests excluded); the label is the
package. Classes are balanced by down-sampling, the split is seeded. Texts are tokenized with a
Hugging Face tokenizer into ``x`` (N, 2, max_length) int64: token ids and the attention mask.
"""
from __future__ import annotations

import ast
import random

import torch

from .dataset import Dataset
from .text import iter_source_files, stdlib_dir

# Packages every CPython install has (tkinter and idlelib, used before 2026-11-29 21:55, are
# split into separate Debian packages and were missing on the GPU machine).
PACKAGES = ("asyncio", "email", "unittest", "xml", "multiprocessing", "importlib", "logging",
            "http")
SIZES = {"ci": 48, "default": 400, "gpu": 400}  # samples per class (at most)


def docstring_texts(package: str) -> list[str]:
    """First paragraphs of the function / class docstrings of ``package`` (sorted, unique)."""
    texts = set()
    folder = stdlib_dir() / package
    if not folder.is_dir():
        raise FileNotFoundError(f"the standard-library package {package!r} is missing from "
                                f"{stdlib_dir()} (some distributions ship it separately)")
    for path in iter_source_files(folder):
        if "test" in path.parts[-2:] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    first = " ".join(doc.split("\n\n")[0].split())
                    if len(first.split()) >= 5:
                        texts.add(first[:400])
    return sorted(texts)


def load_docstring_topics(tokenizer, seed: int = 0, size: str = "default",
                          max_length: int = 64, test_fraction: float = 0.25) -> Dataset:
    """The docstring-topic task tokenized by ``tokenizer``; ``size`` in ci / default / gpu."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    rng = random.Random(seed)
    train, test = [], []
    corpus = [docstring_texts(package) for package in PACKAGES]
    per_class = min(SIZES[size], *(len(texts) for texts in corpus))
    for label, texts in enumerate(corpus):
        rng.shuffle(texts)
        texts = texts[:per_class]
        cut = max(1, round(len(texts) * test_fraction))
        test += [(t, label) for t in texts[:cut]]
        train += [(t, label) for t in texts[cut:]]
    rng.shuffle(train)
    x_train, y_train = _encode(tokenizer, train, max_length)
    x_test, y_test = _encode(tokenizer, test, max_length)
    return Dataset("docstrings", "classification", x_train, y_train, x_test, y_test,
                   input_dim=max_length, n_classes=len(PACKAGES))


def _encode(tokenizer, samples, max_length):
    batch = tokenizer([t for t, _ in samples], padding="max_length", truncation=True,
                      max_length=max_length, return_tensors="pt")
    x = torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1).long()
    return x, torch.tensor([label for _, label in samples], dtype=torch.long)
