"""A byte-level text corpus from the Python standard library's own source files.

Available offline on every machine with Python. Vocabulary: the 256 byte values. The corpus
differs between Python versions, so compare byte-LM numbers only within one Python version.
"""
from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch

VOCAB_SIZE = 256
# Third-party packages installed under the stdlib folder are not the standard library.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_dir() -> Path:
    """The folder holding the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_source_files(root: Path) -> Iterator[Path]:
    """``*.py`` files under ``root`` in sorted-path order, lazily (so a small corpus is fast).

    Directories sort as ``name + "/"``, which makes this walk yield paths in the same order as
    ``sorted()`` of their full path strings.
    """
    entries = sorted(os.scandir(root), key=lambda e: e.name + ("/" if e.is_dir() else ""))
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DIRS:
                yield from iter_source_files(Path(entry.path))
        elif entry.name.endswith(".py") and entry.is_file():
            yield Path(entry.path)


def load_stdlib_bytes(max_bytes: int, root: Path | None = None) -> torch.Tensor:
    """The first ``max_bytes`` bytes of the concatenated stdlib sources: (N,) uint8."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    chunks, total = [], 0
    for path in iter_source_files(root or stdlib_dir()):
        data = path.read_bytes()[: max_bytes - total]
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    corpus = b"".join(chunks)
    return torch.frombuffer(bytearray(corpus), dtype=torch.uint8)


def split_stream(
    tokens: torch.Tensor, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (N,) stream by position: the first part trains, the tail is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_train = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n_train].clone(), tokens[n_train:].clone()


def _windows(
    tokens: torch.Tensor, starts: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (B, T+1) windows at ``starts`` in one indexing op; split into inputs and targets."""
    offsets = starts.to(tokens.device)[:, None] + torch.arange(block_size + 1, device=tokens.device)
    window = tokens[offsets].long()  # (B, T+1)
    return window[:, :-1], window[:, 1:]


def sample_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a (N,) stream: inputs x (B, T) and next-byte targets y (B, T), int64."""
    if len(tokens) <= block_size:
        raise ValueError(f"stream of {len(tokens)} bytes is too short for block_size {block_size}")
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    return _windows(tokens, starts, block_size)


def eval_windows(
    tokens: torch.Tensor, block_size: int, n_windows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_windows`` fixed windows spread evenly over a (N,) stream (non-overlapping when the
    stream is long enough): x, y (n, T) int64. Deterministic, no random numbers."""
    n_fit = (len(tokens) - 1) // block_size
    if n_fit < 1:
        raise ValueError(f"stream of {len(tokens)} bytes is too short for block_size {block_size}")
    n = min(n_windows, n_fit)
    starts = torch.linspace(0, len(tokens) - block_size - 1, n).long()
    return _windows(tokens, starts, block_size)
