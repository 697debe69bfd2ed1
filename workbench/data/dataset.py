"""The ``Dataset`` record every builder returns and the train loop consumes."""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from workbench.data.text import sample_batch

Task = Literal["classification", "lm"]


@dataclasses.dataclass
class Dataset:
    """A small in-memory dataset, already split.

    classification: ``x_train`` (N, input_dim) float32, ``y_train`` (N,) int64 in
    ``[0, n_classes)``; the same for ``x_test`` / ``y_test``.
    lm: ``x_train`` / ``x_test`` are 1-D uint8 byte streams (the test stream is the held-out
    tail of the corpus); ``y_train`` / ``y_test`` are None because targets are the next byte.
    Batches are (B, block_size) windows, see :meth:`get_batch`.
    """

    name: str
    task: Task
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    input_dim: int | None = None  # classification only
    n_classes: int | None = None  # classification only
    vocab_size: int | None = None  # lm only
    block_size: int | None = None  # lm only

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, y)`` of ``"train"`` or ``"test"`` (``"val"`` is an alias of ``"test"``)."""
        if split == "train":
            return self.x_train, self.y_train
        if split in ("test", "val"):
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")

    def get_batch(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch, on the device the tensors live on.

        classification: x (B, input_dim) float32, y (B,) int64.
        lm: x (B, block_size) int64 bytes, y (B, block_size) int64 next bytes.
        Indices are drawn on the CPU from ``generator``, so a seeded generator gives the same
        batches on any device.
        """
        x, y = self.split(split)
        if self.task == "lm":
            return sample_batch(x, batch_size, self.block_size, generator)
        ix = torch.randint(len(x), (batch_size,), generator=generator).to(x.device)
        return x[ix], y[ix]

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor moved to ``device`` (the data is small)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    @property
    def n_train(self) -> int:
        """Training samples (classification) or training bytes (lm)."""
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        """Test samples (classification) or held-out bytes (lm)."""
        return len(self.x_test)
