"""MLP-Mixer (Tolstikhin et al., 2021) for 1-D signals such as MNIST-1D.

A (B, L) signal is cut into L / patch_size patches (tokens); each block mixes across tokens,
then across channels, with plain MLPs. Module names: ``blocks.{i}.token_mlp.fc / proj``,
``blocks.{i}.channel_mlp.fc / proj``, ``patch_embed``, ``head``.
"""
from __future__ import annotations

import torch
from torch import nn

from workbench.models.feedforward import FeedForward


class MixerBlock(nn.Module):
    """(B, S, C) -> (B, S, C): token mixing over S, then channel mixing over C."""

    def __init__(self, n_tokens: int, width: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.token_mlp = FeedForward(n_tokens, token_hidden)
        self.ln_2 = nn.LayerNorm(width)
        self.channel_mlp = FeedForward(width, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.ln_1(x).transpose(1, 2)).transpose(1, 2)  # mix along S
        return x + self.channel_mlp(self.ln_2(x))


class Mixer1D(nn.Module):
    """Signal (B, seq_len) float -> logits (B, n_classes).

    ``seq_len`` must be a multiple of ``patch_size``. Hidden widths default to 2x the
    token count and 4x the channel width.
    """

    def __init__(
        self,
        seq_len: int,
        n_classes: int,
        patch_size: int = 4,
        width: int = 64,
        depth: int = 4,
        token_hidden: int | None = None,
        channel_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if seq_len % patch_size:
            raise ValueError(f"seq_len {seq_len} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        n_tokens = seq_len // patch_size
        self.patch_embed = nn.Linear(patch_size, width)
        self.blocks = nn.ModuleList(
            MixerBlock(n_tokens, width, token_hidden or 2 * n_tokens, channel_hidden or 4 * width)
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L = x.shape
        x = self.patch_embed(x.view(B, L // self.patch_size, self.patch_size))  # (B, S, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(dim=1))  # mean-pool tokens -> (B, n_classes)
