"""Matrix Nuclear-Norm against Matrix Entropy: time per batch of hidden states, side by side.

    PYTHONPATH=. python benchmarks/nuclear_norm.py --out benchmarks/results/nuclear_norm_h200.json
    PYTHONPATH=. python benchmarks/nuclear_norm.py --quick     # small CPU grid

For each (L tokens, d hidden) a batch of random hidden states (B, L, d) is scored by MNN, by the
library's Matrix Entropy (eigenvalues of the smaller of the d×d / L×L Gram matrices) and by the
d×d definition (eigenvalues of ZᵀZ, as the paper computes it). Medians of repeats after a warm-up;
CUDA-synchronised on GPU. Claim (METHODS.md): MNN 8–24× faster than Matrix Entropy.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.analysis.entropy import (matrix_entropy, matrix_nuclear_norm,  # noqa: E402
                                        normalised_states)
from workbench.environment import environment_info  # noqa: E402


def entropy_dxd(hidden: torch.Tensor) -> torch.Tensor:
    """The definition: eigenvalues of the d×d matrix ZᵀZ whatever L is."""
    z = normalised_states(hidden)
    ev = torch.linalg.eigvalsh(z.mT @ z).clamp_min(0)
    p = ev / ev.sum(-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(-1)


def median_ms(fn, x, repeats: int) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    fn(x)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    grid = ([(64, 128), (256, 256)] if args.quick else
            [(128, 768), (512, 768), (512, 2048), (1024, 2048), (1024, 4096), (4096, 4096)])
    batch, repeats = (4, 3) if args.quick else (8, 10)
    rows = []
    for L, d in grid:
        x = torch.randn(batch, L, d, device=device)
        mnn = median_ms(matrix_nuclear_norm, x, repeats)
        ent = median_ms(matrix_entropy, x, repeats)
        dxd = median_ms(entropy_dxd, x, max(2, repeats // 3))
        rows.append({"L": L, "d": d, "batch": batch, "mnn_ms": mnn, "entropy_ms": ent,
                     "entropy_dxd_ms": dxd, "speedup_vs_entropy": ent / mnn,
                     "speedup_vs_dxd": dxd / mnn})
        print(f"L={L:5d} d={d:5d}: MNN {mnn:8.3f} ms, entropy {ent:9.3f} ms "
              f"({ent / mnn:6.1f}x), d×d {dxd:9.3f} ms ({dxd / mnn:7.1f}x)", flush=True)
    result = {"benchmark": "nuclear_norm_vs_entropy", "claim": "MNN 8-24x faster",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **environment_info(device), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
