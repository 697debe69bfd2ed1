"""2:4 semi-structured sparse matmul against dense, bf16, for real layer shapes, in one run.

    PYTHONPATH=. python benchmarks/semi_structured.py --out benchmarks/results/semi_structured_h200.json
    PYTHONPATH=. python benchmarks/semi_structured.py --list     # the shapes only (any machine)

For each weight shape (out, in): a 2:4 magnitude-masked weight, an input of ``--tokens`` rows,
``F.linear`` dense (cuBLAS) and with the weight as ``torch.sparse.to_sparse_semi_structured``
(CUTLASS / cuSPARSELt), medians of ``torch.utils.benchmark`` after a warm-up, side by side, plus
both outputs' max error against a float32 product. Shapes: every linear of the reference GPT at
the notebooks' default and gpu widths, MiniLM's (384->384, 384->1536, 1536->384) and large
square / FFN layers. Needs only torch (plus the workbench package on PYTHONPATH); on a machine
without CUDA it says so and exits with status 2. The JSON is rewritten after every shape.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.models.gpt import GPT, GPTConfig  # noqa: E402
from workbench.structures.semi_structured import semi_structured_timing  # noqa: E402
from workbench.surgery import find_linears, linear_shape  # noqa: E402

DEFAULT_OUT = "benchmarks/results/semi_structured_h200.json"
MINILM = {"attention (q, k, v, o)": (384, 384), "intermediate.dense (FFN in)": (1536, 384),
          "output.dense (FFN out)": (384, 1536)}
LARGE = {"square 4096": (4096, 4096), "square 8192": (8192, 8192),
         "FFN in 4096->16384": (16384, 4096), "FFN out 16384->4096": (4096, 16384)}


def gpt_shapes(width: int) -> dict[str, tuple[int, int]]:
    """{layer pattern: (out, in)} of one block of the reference GPT at embedding ``width``."""
    with torch.device("meta"):
        model = GPT(GPTConfig(n_embd=width, n_layer=1, n_head=4))
    return {name.removeprefix("blocks.0."): linear_shape(module)
            for name, module in find_linears(model, include="blocks.0.*")}


def all_shapes() -> list[tuple[str, str, tuple[int, int]]]:
    """(model, layer, (out, in)) rows, in benchmark order."""
    rows = [(f"gpt width {w}", layer, shape) for w in (128, 512)
            for layer, shape in gpt_shapes(w).items()]
    rows += [("MiniLM", layer, shape) for layer, shape in MINILM.items()]
    return rows + [("large", layer, shape) for layer, shape in LARGE.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON result path")
    parser.add_argument("--tokens", type=int, default=16384, help="input rows per matmul")
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds of timed calls per measurement")
    parser.add_argument("--list", action="store_true", help="print the shapes and exit")
    args = parser.parse_args(argv)
    shapes = all_shapes()
    if args.list:
        for model, layer, (out, inp) in shapes:
            print(f"{model:>14}  {layer:<28} {inp:>6} -> {out:<6}")
        return 0
    if not torch.cuda.is_available():
        print("semi_structured.py: torch's 2:4 semi-structured kernels need a CUDA GPU and none "
              "is available here; run it on the GPU machine (--list shows the shapes)",
              file=sys.stderr)
        return 2
    result = {"benchmark": "semi_structured",
              "environment": {"device_name": torch.cuda.get_device_name(),
                              "torch": torch.__version__, "cuda": torch.version.cuda,
                              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              "dtype": args.dtype, "tokens": args.tokens,
                              "timing": f"torch.utils.benchmark median, min_run_time "
                                        f"{args.min_run_time} s, after warm-up"},
              "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for model, layer, (out_f, in_f) in shapes:
        row = {"model": model, "layer": layer}
        try:
            row |= semi_structured_timing(out_f, in_f, args.tokens, getattr(torch, args.dtype),
                                          args.min_run_time)
            line = (f"dense {row['ms_dense']:.3f} ms, 2:4 {row['ms_2_4']:.3f} ms, "
                    f"speedup {row['speedup']:.2f}x, err {row['err_dense']:.1e} / "
                    f"{row['err_2_4']:.1e}")
        except (RuntimeError, ValueError) as exc:  # a shape the kernels refuse: say which
            row |= {"out_features": out_f, "in_features": in_f, "error": str(exc)[:500]}
            line = f"error: {str(exc)[:120]}"
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=1))
        print(f"{model:>14}  {layer:<28} {in_f:>6} -> {out_f:<6} {line}", flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
