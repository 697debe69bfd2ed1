"""Monarch multiply against dense nn.Linear, side by side in one run: forward and forward+backward.

    PYTHONPATH=. python benchmarks/monarch.py --out benchmarks/results/monarch_h200.json
    PYTHONPATH=. python benchmarks/monarch.py --quick          # CPU, small sizes, plain/torch only

Three multiplies per (n, nblocks): dense ``nn.Linear`` (cuBLAS), ``plain`` (two bmm with
permutation copies, ``monarch_multiply``) and ``fast`` (``impl="triton"``: the strided plan of
``workbench.structures.monarch_kernels``, its default policy; ``impl="torch"`` on CPU), plus,
where the fold plan applies, the other plan side by side (``fast_copy``: the v3 copy plan, or
``fast_fold``), and where block sizes are odd the plan without its padding (``fast_unpadded``). Square layers, no bias.
Timing: ``triton.testing.do_bench`` (CUDA events, warm-up, median and 20/80% quantiles) on the
GPU, a wall-clock median on the CPU. Every fast result is first checked against a float32
reference (relative error of the output and of all three gradients).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.structures import MonarchLinear  # noqa: E402
from workbench.structures.monarch_kernels import (COPIES_DEFAULT, can_fold,  # noqa: E402
                                                  monarch_multiply_fast, use_cublas_stage1,
                                                  use_cublas_stage2, use_fold, use_pad)

TARGET_FRACTION = 0.7   # of the FLOP-ratio speedup, at n >= 4096 and nblocks 4 and 16
TARGET_OVER_PLAIN = 1.3


def bench(fn, cuda: bool, grad_to_none=None) -> dict:
    if cuda:
        from triton.testing import do_bench
        q20, q50, q80 = do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                 quantiles=[0.2, 0.5, 0.8])
        return {"median_ms": q50, "q20_ms": q20, "q80_ms": q80}
    fn()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "q20_ms": times[1], "q80_ms": times[-2]}


def bench_graphed(step) -> dict:
    """Median of CUDA-graph replays of ``step``: launch overhead (Python, Triton's launcher,
    autograd) removed, as a training loop under CUDA graphs would see it."""
    from triton.testing import do_bench
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    q20, q50, q80 = do_bench(graph.replay, warmup=25, rep=100, quantiles=[0.2, 0.5, 0.8])
    return {"median_ms": q50, "q20_ms": q20, "q80_ms": q80}


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def check(layer: MonarchLinear, impl: str, tokens: int, device) -> dict:
    """Relative error of y, dx, dw1, dw2 for ``impl`` and for ``plain`` against float32."""
    x = torch.randn(tokens, layer.in_features, device=device, dtype=layer.w1.dtype)
    dy = torch.randn(tokens, layer.out_features, device=device, dtype=layer.w1.dtype)
    ref = MonarchLinear(layer.in_features, layer.out_features, layer.nblocks, bias=False,
                        device=device, dtype=torch.float32, impl="plain")
    ref.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
    out = {}
    for name, module in (("reference", ref), ("plain", layer), (impl, layer)):
        module.impl = "plain" if name in ("reference", "plain") else impl
        xi = x.to(module.w1.dtype).requires_grad_(True)
        if device.type == "cuda":  # poison the allocator: unwritten outputs would show as NaN
            torch.full((tokens * max(layer.in_ext, layer.out_ext) * 2,), float("nan"),
                       device=device, dtype=xi.dtype)
        y = module(xi)
        grads = torch.autograd.grad(y, (xi, module.w1, module.w2), dy.to(y.dtype))
        out[name] = (y.detach(),) + tuple(g.detach() for g in grads)
    layer.impl = "plain"
    result = {}
    for name in ("plain", impl):
        errs = [rel(a, r) for a, r in zip(out[name], out["reference"])]
        result[name] = dict(zip(("y", "dx", "dw1", "dw2"), errs))
    return result


def measure(n: int, nblocks, tokens: int, dtype, device, impl: str, with_v1=False) -> dict:
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    dense = nn.Linear(n, n, bias=False, device=device, dtype=dtype)
    layer = MonarchLinear(n, n, nblocks, bias=False, device=device, dtype=dtype, impl="plain")
    b = layer.nblocks
    errors = check(layer, impl, min(tokens, 4096), device)
    x = torch.randn(tokens, n, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(tokens, n, device=device, dtype=dtype)
    flops_dense = 2 * tokens * n * n
    flops_monarch = layer.flops((tokens,))
    row = {"n": n, "nblocks": b, "tokens": tokens, "blocks": [layer.in_block, layer.mid_block,
                                                               layer.out_block],
           "padded": layer.in_ext != n, "flop_ratio": flops_dense / flops_monarch,
           "errors_vs_fp32": errors, "times": {}}
    variants = {"dense": dense, "plain": lambda v: monarch_multiply_fast(
        v, layer.w1, layer.w2, n, impl="plain"), "fast": lambda v: monarch_multiply_fast(
        v, layer.w1, layer.w2, n, impl=impl)}
    row["fold"] = use_fold({}, b, layer.mid_block)
    if can_fold(b, layer.mid_block):  # the other plan, side by side: copy plan (v3) or fold
        other = {"fold": not row["fold"]}
        variants["fast_fold" if other["fold"] else "fast_copy"] = (
            lambda v, other=other: monarch_multiply_fast(v, layer.w1, layer.w2, n, impl=impl,
                                                         overrides=other))
    # the first factor's products on the other back end (cuBLAS or Triton), side by side
    other1 = "triton" if use_cublas_stage1({}, b, layer.mid_block, row["fold"]) else "cublas"
    variants[f"fast_stage1_{other1}"] = lambda v: monarch_multiply_fast(
        v, layer.w1, layer.w2, n, impl=impl, overrides={"stage1": other1})
    if cuda:  # the grouping copies the other way (torch's strided copy or Triton), side by side
        copies = "torch" if COPIES_DEFAULT == "triton" else "triton"
        variants[f"fast_{copies}_copies"] = lambda v: monarch_multiply_fast(
            v, layer.w1, layer.w2, n, impl=impl, overrides={"copies": copies})
    # stage 2 on the other back end (cuBLAS batched GEMMs or the Triton kernel), side by side
    other2 = "triton" if use_cublas_stage2({}) else "cublas"
    variants[f"fast_stage2_{other2}"] = lambda v: monarch_multiply_fast(
        v, layer.w1, layer.w2, n, impl=impl, overrides={"stage2": other2})
    # odd block sizes: the copy plan without its block padding, side by side (use_pad)
    if use_pad({}, b, layer.in_block, layer.mid_block, layer.out_block):
        variants["fast_unpadded"] = lambda v: monarch_multiply_fast(
            v, layer.w1, layer.w2, n, impl=impl, overrides={"pad": False})
    # the weight built from the factors, then one dense GEMM (impl="dense"): dense speed at
    # best, the reference point for sizes where the structured products do not pay
    variants["dense_weight"] = lambda v: monarch_multiply_fast(v, layer.w1, layer.w2, n,
                                                               impl="dense")
    if cuda and with_v1:  # the first version (3-D tiles over stride-b gathers), for the record
        variants["fast_v1_gather"] = lambda v: monarch_multiply_fast(
            v, layer.w1, layer.w2, n, impl=impl, overrides={"gather": True})
    for name, module in variants.items():
        params = list(dense.parameters()) if name == "dense" else [layer.w1, layer.w2]

        def forward():
            with torch.no_grad():
                module(x)

        def forward_backward():
            torch.autograd.backward(module(x), dy)

        fwd = bench(forward, cuda)
        fb = bench(forward_backward, cuda, grad_to_none=[x] + params)
        flops = flops_dense if name in ("dense", "dense_weight") else flops_monarch
        fwd["tflops"] = flops / fwd["median_ms"] / 1e9
        fb["tflops"] = 3 * flops / fb["median_ms"] / 1e9
        row["times"][name] = {"fwd": fwd, "fwd_bwd": fb}
        if cuda:
            try:
                row["times"][name]["fwd_graph"] = bench_graphed(forward)
                row["times"][name]["fwd_bwd_graph"] = bench_graphed(
                    lambda: torch.autograd.grad(module(x), [x] + params, dy))
            except Exception as exc:  # report, keep the eager numbers
                row["times"][name]["graph_error"] = repr(exc)[:300]
    t = row["times"]
    for mode in ("fwd", "fwd_bwd", "fwd_graph", "fwd_bwd_graph"):
        if not all(mode in t[k] for k in ("dense", "plain", "fast")):
            continue
        d, p, f = (t[k][mode]["median_ms"] for k in ("dense", "plain", "fast"))
        row[f"speedup_{mode}"] = {"plain_over_dense": d / p, "fast_over_dense": d / f,
                                  "dense_weight_over_dense":
                                      d / t["dense_weight"][mode]["median_ms"],
                                  "fast_over_plain": p / f,
                                  "pct_of_flop_ratio": 100 * d / f / row["flop_ratio"]}
    fb = row["speedup_fwd_bwd"]
    targets = {"fast_ge_1.3x_plain": fb["fast_over_plain"] >= TARGET_OVER_PLAIN}
    if n >= 4096 and b in (4, 16):
        targets["fast_ge_70pct_flop_ratio"] = fb["pct_of_flop_ratio"] >= 100 * TARGET_FRACTION
    if n >= 1024 and row["flop_ratio"] >= 4:
        targets["fast_not_slower_than_dense"] = (fb["fast_over_dense"] >= 1.0
                                                 and row["speedup_fwd"]["fast_over_dense"] >= 1.0)
    row["targets"] = targets
    if "speedup_fwd_bwd_graph" in row:
        g, gf = row["speedup_fwd_bwd_graph"], row["speedup_fwd_graph"]
        graphed = {"fast_ge_1.3x_plain": g["fast_over_plain"] >= TARGET_OVER_PLAIN}
        if n >= 4096 and b in (4, 16):
            graphed["fast_ge_70pct_flop_ratio"] = g["pct_of_flop_ratio"] >= 100 * TARGET_FRACTION
        if n >= 1024 and row["flop_ratio"] >= 4:
            graphed["fast_not_slower_than_dense"] = (g["fast_over_dense"] >= 1.0
                                                     and gf["fast_over_dense"] >= 1.0)
        row["targets_under_cuda_graphs"] = graphed
    return row


def breakdown(n: int, nblocks, tokens: int, dtype, variants: dict | None = None) -> list:
    """Each of the six products alone (Triton), with its bytes and FLOPs floors: bytes = every
    operand read once + the output written once; floors at 4.1 TB/s and 760 TFLOP/s (DESIGN.md)."""
    from triton.testing import do_bench
    from workbench.structures.monarch_kernels import group, plan, run_product
    dev = torch.device("cuda")
    layer = MonarchLinear(n, n, nblocks, bias=False, device=dev, dtype=dtype)
    b, q, p, s = layer.nblocks, layer.mid_block, layer.in_block, layer.out_block
    sizes = (tokens, b, p, q, s)
    act = {"x": b * p, "h": b * q, "y": b * s}
    t = {k: torch.randn(tokens, v, device=dev, dtype=dtype) for k, v in act.items()}
    w = {"w1": layer.w1.detach(), "w2": layer.w2.detach()}
    ops = {"h=x@w1": ("x", "w1", "h"), "m=x@w1p": ("x", "w1", "h"),
           "dx=dm@w1p": ("h", "w1", "x"), "dw1p=dm'x": ("h", "x", "w1"),
           "y=m@w2>nat": ("h", "w2", "y"),
           "y=m@w2>grp": ("h", "w2", "y"), "dh=dy@w2>nat": ("y", "w2", "h"),
           "dw2=dy'm": ("y", "h", "w2"), "dx=dh@w1": ("h", "w1", "x"),
           "dw1=dh'x": ("h", "x", "w1"), "copy h->m": ("h", None, "h"),
           "copy dy->dy_g": ("y", None, "y")}
    rows = []
    m_grp = torch.randn(tokens, b, q, device=dev, dtype=dtype)
    dyT = torch.randn(b, tokens, s, device=dev, dtype=dtype)
    cublas = {  # stage 2 on cuBLAS (what stage2="cublas" runs), and its two copies
        "cublas y=m@w2": (lambda: torch.bmm(m_grp.transpose(0, 1), w["w2"].transpose(1, 2)),
                          2 * tokens * b * q * s),
        "cublas dmT=dyT@w2": (lambda: torch.bmm(dyT, w["w2"]), 2 * tokens * b * q * s),
        "cublas dw2=dyT'm": (lambda: torch.bmm(dyT.transpose(1, 2), m_grp.transpose(0, 1)),
                             2 * tokens * b * q * s),
        "copy Y->y (P2)": (lambda: dyT.permute(1, 2, 0).reshape(tokens, -1), 0),
        "copy dy->dyT": (lambda: t["y"].reshape(tokens, s, b).permute(2, 0, 1).contiguous(), 0),
    }
    for name, (fn, flops) in cublas.items():
        nbytes = 3 * t["y"].numel() * 2 if flops else 2 * t["y"].numel() * 2
        ms = do_bench(fn, warmup=10, rep=40, return_mode="median")
        rows.append({"n": n, "nblocks": b, "product": name, "config": "torch", "ms": ms,
                     "tb_s": nbytes / ms / 1e9, "tflops": flops / ms / 1e9})
        print(f"  {n:>5} b={b:<3} {name:<18} {ms:7.3f} ms  {flops / ms / 1e9:6.1f} TFLOP/s")
    for name, (a, bb, c) in ops.items():
        if name in ("m=x@w1p", "dx=dm@w1p", "dw1p=dm'x") and not can_fold(b, q):
            continue
        A, B = (t | w)[a], (t | w).get(bb)
        C = (torch.zeros(w[c].shape, device=dev) if c in w else torch.empty_like(t[c]))
        if B is None:  # a grouping copy, as the fast path does it
            G = M = N = K = 0
            nbytes, flops = 2 * A.numel() * A.element_size(), 0
        else:
            G, M, N, K = plan(name, *sizes)[:4]
            nbytes = (A.numel() + B.numel()) * A.element_size() + C.numel() * C.element_size()
            flops = 2 * G * M * N * K
        floor = max(nbytes / 4.1e12, flops / 760e12) * 1e3
        for label, ov in ({"default": None} | (variants or {}).get(name, {})).items():
            if B is None:
                def fn(A=A, b=b):
                    group(A, b)
            else:
                def fn(A=A, B=B, C=C, name=name, ov=ov):
                    run_product(name, A, B, C, sizes, "triton", {name: ov} if ov else None)
            try:
                ms = do_bench(fn, warmup=10, rep=40, return_mode="median")
            except Exception as exc:
                print(f"  {name} {label}: {exc!r}"[:200])
                continue
            rows.append({"n": n, "nblocks": b, "product": name, "config": label, "ms": ms,
                         "floor_ms": floor, "tb_s": nbytes / ms / 1e9,
                         "tflops": flops / ms / 1e9})
            print(f"  {n:>5} b={b:<3} {name:<10} {label:<14} {ms:7.3f} ms  floor {floor:6.3f}"
                  f"  {nbytes / ms / 1e9:6.2f} TB/s  {flops / ms / 1e9:6.1f} TFLOP/s")
    return rows


STAGE2_VARIANTS = {name: {"BN64": {"BN": 64}, "BN256": {"BN": 256}, "BM64": {"BM": 64},
                          "w4s4": {"num_warps": 4, "num_stages": 4}}
                   for name in ("h=x@w1", "y=m@w2>nat", "dh=dy@w2>nat", "dx=dh@w1")}
# tile sweep of the fold products (the stage-1 side that stays on Triton)
FOLD_TILES = {f"BM{bm}BN{bn}BK{bk}w{w}s{st}": dict(BM=bm, BN=bn, BK=bk, num_warps=w,
                                                   num_stages=st)
              for bm, bn, bk, w, st in [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
                                        (128, 128, 128, 8, 3), (64, 256, 64, 8, 4),
                                        (128, 64, 64, 4, 4), (256, 128, 64, 8, 3),
                                        (128, 256, 32, 8, 4), (64, 128, 64, 4, 5)]}
SWEEP_VARIANTS = STAGE2_VARIANTS | {name: FOLD_TILES for name in
                                    ("m=x@w1p", "dx=dm@w1p", "dw1p=dm'x")}


def environment(device, dtype) -> dict:
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "python": platform.python_version(),
           "dtype": str(dtype).replace("torch.", ""), "device": str(device)}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["sms"] = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def print_table(rows) -> None:
    print(f"{'n':>5} {'b':>3} {'R':>5} | {'fwd ms dense/plain/fast':>26} | "
          f"{'f+b ms dense/plain/fast':>26} | {'f+b x dense':>11} {'x plain':>7} {'%R':>5} | "
          f"targets")
    for r in rows:
        if "error" in r:
            print(f"{r['n']:>5} {r['nblocks']!s:>3} ERROR {r['error']}")
            continue
        t = r["times"]
        f = "/".join(f"{t[k]['fwd']['median_ms']:.3f}" for k in ("dense", "plain", "fast"))
        fb = "/".join(f"{t[k]['fwd_bwd']['median_ms']:.3f}" for k in ("dense", "plain", "fast"))
        s = r["speedup_fwd_bwd"]
        ok = " ".join(f"{k}={'yes' if v else 'NO'}" for k, v in r["targets"].items())
        for alt in ("fast_copy", "fast_fold", "fast_stage2_cublas", "fast_stage2_triton",
                    "fast_stage1_cublas", "fast_stage1_triton", "fast_triton_copies",
                    "fast_torch_copies", "dense_weight"):
            if alt in t:
                graphed = t[alt].get("fwd_bwd_graph", {}).get("median_ms", float("nan"))
                ok = (f"{alt} f+b {t[alt]['fwd_bwd']['median_ms']:.3f} "
                      f"(graphed {graphed:.3f}) | " + ok)
        if "speedup_fwd_bwd_graph" in r:
            g = r["speedup_fwd_bwd_graph"]
            fbg = "/".join(f"{t[k]['fwd_bwd_graph']['median_ms']:.3f}"
                           for k in ("dense", "plain", "fast"))
            ok += (f" | graphed f+b {fbg} = {g['fast_over_dense']:.2f}x dense "
                   f"{g['fast_over_plain']:.2f}x plain")
        print(f"{r['n']:>5} {r['nblocks']:>3} {r['flop_ratio']:>5.1f} | {f:>26} | {fb:>26} | "
              f"{s['fast_over_dense']:>10.2f}x {s['fast_over_plain']:>6.2f}x "
              f"{s['pct_of_flop_ratio']:>4.0f}% | {ok}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the results JSON here")
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--nblocks", nargs="*", default=["4", "16", "sqrt"])
    ap.add_argument("--v1", action="store_true",
                    help="also time the first version (3-D tiles; slow at nblocks=4)")
    ap.add_argument("--breakdown", action="store_true",
                    help="time the six products alone (GPU), with tile variants for stage 2")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.quick
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    impl = "triton" if cuda else "torch"
    sizes = args.sizes or ([1024, 4096, 8192] if cuda else [256, 1024])
    tokens = args.tokens or (16384 if cuda else 512)
    if args.breakdown:
        rows = []
        for n in sizes:
            for nb in args.nblocks:
                nb = nb if nb == "sqrt" else int(nb)
                rows += breakdown(n, nb, tokens, dtype, SWEEP_VARIANTS)
        result = {"benchmark": "monarch_products", "environment": environment(device, dtype),
                  "rows": rows}
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return result
    def write(rows):
        result = {"benchmark": "monarch_multiply", "environment": environment(device, dtype),
                  "fast_impl": impl, "bias": False,
                  "targets": {"fraction_of_flop_ratio_at_n_ge_4096_b_4_16": TARGET_FRACTION,
                              "fast_over_plain": TARGET_OVER_PLAIN,
                              "not_slower_than_dense_where_flop_ratio_ge_4": True},
                  "rows": rows}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
        return result

    rows = []
    for n in sizes:
        for nb in args.nblocks:
            nb = nb if nb == "sqrt" else int(nb)
            try:
                rows.append(measure(n, nb, tokens, dtype, device, impl, args.v1))
            except Exception as exc:  # keep the other rows; the error is in the output
                import traceback
                traceback.print_exc()
                rows.append({"n": n, "nblocks": nb, "error": repr(exc)})
                continue
            print_table(rows[-1:])
            sys.stdout.flush()
            write(rows)  # after every row: a run cut short keeps what it measured
    result = write(rows)
    print_table(rows)
    return result


if __name__ == "__main__":
    main()
