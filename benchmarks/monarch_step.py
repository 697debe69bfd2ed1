"""Whole training steps: dense GPT against Monarch FFNs, eager and under torch.compile.

    PYTHONPATH=. python benchmarks/monarch_step.py --out benchmarks/results/monarch_step_h200.json
    PYTHONPATH=. python benchmarks/monarch_step.py --quick     # CPU smoke run, small sizes
    workbench runs import-benchmark benchmarks/results/monarch_step_h200.json   # into the store

Layer benchmarks (``monarch.py``) show Monarch faster than dense from n = 4096, yet the
notebooks' GPT at width 512 trained 0.61-0.70x as fast as dense on the H200: at that size each
step is a few hundred small kernels and the host (Python, autograd, Triton's launcher) sets the
pace. This benchmark measures what a training loop gets: ``workbench.train.train`` (bf16
autocast, AdamW, clipping), the steady step time (median over the second half of the steps,
``experiment.steady_step_ms``) and the time of the first steps (compilation), for each
width x variant (dense; Monarch nblocks b with each ``impl``: the default structured products,
or ``"dense"``, the weight built from the factors and one GEMM) x compile mode, side by side in
one run. Speedups
are against dense in the same mode.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.monarch import environment  # noqa: E402
from workbench.data import load_dataset  # noqa: E402
from workbench.experiment import PATTERNS, steady_step_ms  # noqa: E402
from workbench.methods import apply_method  # noqa: E402
from workbench.models import build_model  # noqa: E402
from workbench.structures import MonarchLinear  # noqa: E402
from workbench.train import resolve_device, train  # noqa: E402


def measure(data, width, depth, nblocks, impl, mode, steps, batch_size, device) -> dict:
    """One configuration: steady ms per step, seconds of the first 3 steps, final loss."""
    torch._dynamo.reset()
    model = build_model("gpt", data, width=width, depth=depth, seed=0)
    if nblocks:
        torch.manual_seed(0)
        apply_method("monarch", model, nblocks=nblocks, init="fresh", include=PATTERNS["ffn"])
        for layer in model.modules():
            if isinstance(layer, MonarchLinear):
                layer.impl = impl
    result = train(model, data, steps=steps, lr=1e-3, batch_size=batch_size, device=device,
                   progress=False, eval_batches=1, compile=mode, schedule="constant")
    history = result.history
    variant = f"monarch-b{nblocks}" + ("" if impl == "auto" else f"-{impl}") if nblocks else \
        "dense"
    return {"width": width, "depth": depth, "variant": variant, "compile": mode, "steady_step_ms": steady_step_ms(history),
            "first_3_steps_s": history[2]["time_s"], "final_train_loss":
            history[-1]["train_loss"], "params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run, small sizes")
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--nblocks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--impls", nargs="+", default=["auto", "dense"],
                        help="MonarchLinear.impl values (dense: weight built, one GEMM)")
    parser.add_argument("--modes", nargs="+", default=["none", "default", "reduce-overhead"])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.modes, args.steps, args.depth = [64], ["none", "aot_eager"], 12, 2
    device = resolve_device("auto")
    data = load_dataset("bytes", seed=0, size="ci" if args.quick else "default")
    env = environment(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    result = {"benchmark": "monarch_step", "environment": env,
              "tokens_per_step": args.batch_size * data.block_size, "steps": args.steps,
              "rows": []}
    rows = result["rows"]
    for width in args.widths:
        for mode in args.modes:
            configs = [(0, "auto")] + [(b, impl) for b in args.nblocks for impl in args.impls]
            for nblocks, impl in configs:
                row = measure(data, width, args.depth, nblocks, impl, mode, args.steps,
                              args.batch_size, device)
                rows.append(row)
                dense = next(r for r in rows if r["width"] == width and r["compile"] == mode
                             and r["variant"] == "dense")
                row["speedup_vs_dense"] = dense["steady_step_ms"] / row["steady_step_ms"]
                print(f"width {width:5d} {mode:>15} {row['variant']:>12}: "
                      f"{row['steady_step_ms']:8.2f} ms/step ({row['speedup_vs_dense']:.2f}x "
                      f"dense), first 3 steps {row['first_3_steps_s']:.1f} s", flush=True)
                if args.out:  # after every row: a run cut short keeps what it measured
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(result, indent=1))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
