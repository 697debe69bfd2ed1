"""The fast Monarch path's plans side by side, forward+backward, eager and as a CUDA graph.
GPU only.

    PYTHONPATH=. python benchmarks/monarch_plans.py --out benchmarks/results/monarch_plans_h200.json

Plans (``overrides`` of ``monarch_multiply_fast``): ``default`` (whatever the policy picks),
``copy_cublas1`` (copy plan, first factor on cuBLAS), ``copy_triton1`` (copy plan, first factor
on the Triton kernel) and ``fold`` (the fold plan, its own stage-1 rule). bf16, 16384 tokens,
square layers without bias; times are medians in ms of ``benchmarks/monarch.py``'s ``bench``
(eager) and ``bench_graphed`` (the fwd+bwd replayed as one CUDA graph).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monarch import bench, bench_graphed, environment  # noqa: E402

from workbench.structures import MonarchLinear  # noqa: E402
from workbench.structures.monarch_kernels import monarch_multiply_fast  # noqa: E402

PLANS = {"default": None, "copy_cublas1": {"fold": False, "stage1": "cublas"},
         "copy_triton1": {"fold": False, "stage1": "triton"}, "fold": {"fold": True}}
SHAPES = [(4096, 16), (8192, 16), (2048, 4), (4096, 4), (1024, 4), (2048, 16)]


def measure(n: int, b: int, tokens: int, plans=tuple(PLANS)) -> dict:
    torch.manual_seed(0)
    layer = MonarchLinear(n, n, b, bias=False, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(tokens, n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(tokens, n, device="cuda", dtype=torch.bfloat16)
    params = [x, layer.w1, layer.w2]
    row = {"n": n, "nblocks": b, "tokens": tokens}
    for name in plans:
        overrides = PLANS[name]

        def forward(overrides=overrides):
            return monarch_multiply_fast(x, layer.w1, layer.w2, n, impl="triton",
                                         overrides=overrides)
        eager = bench(lambda: torch.autograd.backward(forward(), dy), True, grad_to_none=params)
        graphed = bench_graphed(lambda: torch.autograd.grad(forward(), params, dy))
        row[name] = {"fwd_bwd_ms": eager["median_ms"], "fwd_bwd_graph_ms": graphed["median_ms"]}
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plans", nargs="*", default=list(PLANS), choices=list(PLANS))
    ap.add_argument("--shapes", nargs="*", default=None, help="n:b pairs, e.g. 4096:16")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("monarch_plans: needs a CUDA device")
    result = {"benchmark": "monarch_plans",
              "environment": environment(torch.device("cuda"), torch.bfloat16), "rows": []}
    shapes = SHAPES if args.shapes is None else [tuple(map(int, v.split(":"))) for v in
                                                   args.shapes]
    for n, b in shapes:
        result["rows"].append(measure(n, b, args.tokens, args.plans))
        print(result["rows"][-1], flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
