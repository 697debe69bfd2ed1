"""One purification step's update as a single Triton kernel (see ``purification``).

Given x (B, w, w), x2 = x·x (B, w, w) and t1 = trace(x) (B,), for every matrix b:
t2 = trace(x2[b]); up = |2·t1 − t2 − k| < |t2 − k|; x[b] ← 2x − x2 if up else x2 (in place);
t1_next[b] = trace of the new x (2·t1 − t2 or t2); occupation[b] = |t1 − t2|.
Every program re-reads the w diagonal entries of x2[b] (a few hundred loads) instead of waiting
for a separate reduction kernel; t1 is carried, since x's own diagonal is being overwritten.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _purify_step_kernel(x_ptr, x2_ptr, t1_ptr, t1_next_ptr, occ_ptr, k, W, WW,
                        BLOCK: tl.constexpr, WB: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    base = b.to(tl.int64) * WW
    d = tl.arange(0, WB)
    t2 = tl.sum(tl.load(x2_ptr + base + d * (W + 1), mask=d < W, other=0.0), axis=0)
    t1 = tl.load(t1_ptr + b)
    up = tl.abs(2 * t1 - t2 - k) < tl.abs(t2 - k)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < WW
    x = tl.load(x_ptr + base + offs, mask=mask)
    x2 = tl.load(x2_ptr + base + offs, mask=mask)
    tl.store(x_ptr + base + offs, tl.where(up, 2 * x - x2, x2), mask=mask)
    if pid == 0:
        tl.store(t1_next_ptr + b, tl.where(up, 2 * t1 - t2, t2))
        tl.store(occ_ptr + b, tl.abs(t1 - t2))


def purify_step(x: torch.Tensor, x2: torch.Tensor, t1: torch.Tensor, t1_next: torch.Tensor,
                occupation: torch.Tensor, k: int) -> None:
    """Update x (B, w, w) in place from x2 = x·x; write t1_next and occupation (B,)."""
    batch, w, _ = x.shape
    grid = (batch, triton.cdiv(w * w, BLOCK))
    _purify_step_kernel[grid](x, x2, t1, t1_next, occupation, float(k), w, w * w,
                              BLOCK=BLOCK, WB=triton.next_power_of_2(w))
