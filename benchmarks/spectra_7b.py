"""``spectra`` on every linear weight of a Llama-2-7B-shaped model, timed on the GPU.

    PYTHONPATH=. python benchmarks/spectra_7b.py            # GPU; H200 target: <= 60 s
    PYTHONPATH=. python benchmarks/spectra_7b.py --quick    # CPU smoke run: 2 layers, 1/16 width

Shapes (Llama-2-7B): 32 layers x (q, k, v, o: 4096x4096; gate, up: 11008x4096; down:
4096x11008) = 224 matrices, and lm_head 32000x4096: 6.6e9 weights, 13 GB in bf16. The weights
are random N(0, 0.02²) bf16 made on the device (built on the meta device, then filled in place:
never materialised on the CPU); the cost does not depend on their values. All 225 ESDs have
4096 eigenvalues: 225 float32 Gram matrices 4096x4096 go through batched ``eigvalsh``, then one
vectorised power-law fit. Also times one eigvalsh and the fit alone, to show where time goes.
Writes benchmarks/results/spectra_7b_<device kind>.json (not with --quick unless --out).
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.analysis.spectra import fit_power_law, spectra  # noqa: E402
from workbench.environment import environment_info  # noqa: E402

TARGET_S = 60.0
FULL = {"layers": 32, "hidden": 4096, "ffn": 11008, "vocab": 32000}
QUICK = {"layers": 2, "hidden": 256, "ffn": 688, "vocab": 2000}


def llama_shaped(layers: int, hidden: int, ffn: int, vocab: int, device) -> nn.Module:
    """Linear layers named and shaped like Hugging Face's LlamaForCausalLM, bf16 on ``device``."""
    def linear(n_in: int, n_out: int) -> nn.Linear:
        return nn.Linear(n_in, n_out, bias=False, dtype=torch.bfloat16)

    with torch.device("meta"):                       # no memory, no init: filled on the device
        model = nn.Module()
        model.layers = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.self_attn = nn.ModuleDict({name: linear(hidden, hidden)
                                             for name in ("q_proj", "k_proj", "v_proj", "o_proj")})
            block.mlp = nn.ModuleDict({"gate_proj": linear(hidden, ffn),
                                       "up_proj": linear(hidden, ffn),
                                       "down_proj": linear(ffn, hidden)})
            model.layers.append(block)
        model.lm_head = linear(hidden, vocab)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=generator)
    return model


def seconds(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers at 1/16 width, any device")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--method", default="gram", choices=["gram", "svd"])
    parser.add_argument("--linalg", default=None, choices=["cusolver", "magma"],
                        help="torch.backends.cuda.preferred_linalg_library (default: torch's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.linalg:
        torch.backends.cuda.preferred_linalg_library(args.linalg)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    if not args.quick and device.type != "cuda":
        sys.exit("the full 7B run needs a GPU (13 GB of bf16 weights); use --quick on the CPU")
    shape = QUICK if args.quick else FULL
    model = llama_shaped(**shape, device=device)
    n_weights = sum(p.numel() for p in model.parameters())

    warm = spectra(model, include="layers.0.self_attn.q_proj", device=device, progress=False,
                   method=args.method)                                   # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    table = None

    def run():
        nonlocal table
        table = spectra(model, device=device, progress=True, method=args.method)
    total = seconds(run, device)

    h = shape["hidden"]
    w = torch.randn(h, h, device=device)
    gram = w.mT @ w
    eig = statistics.median(seconds(lambda: torch.linalg.eigvalsh(gram), device)
                            for _ in range(3))
    evals = torch.linalg.eigvalsh(gram).expand(len(table), h).contiguous()
    fit = seconds(lambda: fit_power_law(evals), device)

    env = environment_info(str(device))
    record = {
        "benchmark": "spectra_7b", "quick": args.quick, "shapes": shape, "weights": n_weights,
        "method": args.method, "linalg": args.linalg or "default", "warm_up_rows": len(warm),
        "weight_dtype": "bfloat16", "device": env["device"], "torch_version": env["torch_version"],
        "git_commit": env["git_commit"],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "matrices": len(table), "skipped": int(table.skipped.sum()), "seconds": total,
        "phases_s": {"eigvalsh_one_gram": eig, "eigvalsh_all_estimate": eig * len(table),
                     "fit_all_rows": fit},
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else None,
        "target_s": TARGET_S, "target_met": None if args.quick else total <= TARGET_S,
    }
    print(table[["layer", "shape", "alpha", "log_norm", "stable_rank", "entropy"]]
          .head(8).to_string())
    print(json.dumps({k: record[k] for k in ("device", "matrices", "skipped", "seconds",
                                             "phases_s", "target_met")}, indent=1))
    out = args.out or (None if args.quick else f"benchmarks/results/spectra_7b_{device.type}.json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
