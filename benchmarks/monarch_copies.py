"""The Monarch fast path's grouping copies alone: torch's strided copy against the Triton
per-row transpose (``row_transpose``) over a sweep of its tiles, with a plain ``clone`` of the
same bytes as the floor. GPU only.

    PYTHONPATH=. python benchmarks/monarch_copies.py --out benchmarks/results/monarch_copies_h200.json

Shapes: T tokens (default 16384) and n features, bf16. "group" is m[t, l, r] = h[t, r·b + l]
(rows read as (c, b), transposed: A = c, B = b); "ungroup" the way back (A = b, B = c).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.structures.monarch_plan import group, ungroup  # noqa: E402


def configs(A: int, B: int):
    """Candidate tiles: each side either whole (up to 256) or 32, 64 or 128 elements;
    4-16k elements a tile; 4 or 8 warps; flat loads / stores or not."""
    import triton

    def sides(k):
        whole = triton.next_power_of_2(k)
        return sorted({v for v in (32, 64, 128) if v < whole} | ({whole} if whole <= 256 else set()))

    for BA, BB, elems, warps, flat in itertools.product(
            sides(A), sides(B), (4096, 8192, 16384), (4, 8), (False, True)):
        if BA * BB > elems or (flat and not (BA == A or BB == B)):
            continue
        yield {"BT": elems // (BA * BB), "BA": BA, "BB": BB, "num_warps": warps, "flat": flat}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--nblocks", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("monarch_copies: needs a CUDA device")
    from triton.testing import do_bench

    from workbench.structures.monarch_triton import row_transpose, transpose_config
    T, dev = args.tokens, torch.device("cuda")
    rows = []
    for n, b in itertools.product(args.sizes, args.nblocks):
        if n % b or n // b < 2:
            continue
        c = n // b
        x = torch.randn(T, n, device=dev, dtype=torch.bfloat16)
        floor = do_bench(lambda: x.clone(), warmup=5, rep=20, return_mode="median")
        for direction, (A, B) in (("group", (c, b)), ("ungroup", (b, c))):
            want = x.view(T, A, B).transpose(1, 2).reshape(T, n)
            if direction == "group":
                torch_ms = do_bench(lambda: group(x, b), warmup=5, rep=20, return_mode="median")
            else:
                xg = x.view(T, b, c)
                torch_ms = do_bench(lambda: ungroup(xg), warmup=5, rep=20, return_mode="median")
            tried = []
            for cfg in [transpose_config(T, A, B)] + list(configs(A, B)):
                if not torch.equal(row_transpose(x, A, B, cfg), want):
                    raise SystemExit(f"monarch_copies: wrong result for {A}x{B} {cfg}")
                ms = do_bench(lambda: row_transpose(x, A, B, cfg), warmup=5, rep=20,
                              return_mode="median")
                tried.append({**cfg, "ms": ms})
            default = tried[0]
            best = min(tried, key=lambda r: r["ms"])
            row = {"n": n, "nblocks": b, "direction": direction, "A": A, "B": B,
                   "bytes": 2 * x.numel() * x.element_size(), "clone_ms": floor,
                   "torch_ms": torch_ms, "default_ms": default["ms"], "best": best,
                   "top5": sorted(tried, key=lambda r: r["ms"])[:5]}
            rows.append(row)
            print(f"{n:>5} b={b:<3} {direction:<8} clone {floor:.3f} torch {torch_ms:.3f} "
                  f"triton default {default['ms']:.3f} best {best['ms']:.3f} "
                  f"({2 * x.numel() * 2 / best['ms'] / 1e9:.2f} TB/s) {best}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(result(rows, T), indent=1))
    return result(rows, T)


def result(rows, T) -> dict:
    import triton
    return {"benchmark": "monarch_copies", "date": datetime.date.today().isoformat(),
            "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(),
            "dtype": "bfloat16", "tokens": T, "rows": rows}


if __name__ == "__main__":
    main()
