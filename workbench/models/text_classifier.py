"""A sentence classifier on a pretrained encoder (e.g. MiniLM): mean pooling + a linear head."""
from __future__ import annotations

import torch
from torch import nn


class SentenceClassifier(nn.Module):
    """``x`` (B, 2, L) int64 — token ids and attention mask stacked — -> logits (B, n_classes).

    The encoder is any Hugging Face model returning ``last_hidden_state`` (B, L, d); the
    sentence embedding is the mask-weighted mean over tokens (as sentence-transformers does).
    """

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"SentenceClassifier expects (B, 2, L) ids and mask, "
                             f"got {tuple(x.shape)}")
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
        return self.head(pooled)
