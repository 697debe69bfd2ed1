"""Benchmark results (``benchmarks/results/*.json``) as run records, so the dashboard shows them.

Each measured implementation of each benchmark row becomes one record: ``dense``,
``monarch-plain`` (the two-bmm reference algorithm) or ``monarch`` (the fast path) for
``benchmarks/monarch.py``; ``dense`` and ``nm`` (2:4 on the semi-structured kernels) for
``benchmarks/semi_structured.py``; per whole-model configuration ``dense`` or ``monarch`` (with
its ``impl`` and ``compile`` mode) for ``benchmarks/monarch_step.py``.
:func:`benchmark_records` picks the reader by the file's
``benchmark`` field. Run ids are derived from the file and row, so importing a file twice adds
nothing the second time.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .record import RunRecord

IMPLEMENTATIONS = {"dense": "dense", "plain": "monarch-plain", "fast": "monarch"}


def _run_id(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]


def monarch_benchmark_records(path: str | Path) -> list[RunRecord]:
    """Records for a ``benchmarks/monarch.py`` result file (layer speed, bf16, one GPU)."""
    path = Path(path)
    data, rows, env = _load(path, "Monarch")
    records = []
    for row in rows:
        n, b, tokens = row["n"], row["nblocks"], row["tokens"]
        p, q, s = row["blocks"]
        dense_fb = row["times"]["dense"]["fwd_bwd"]["median_ms"]
        for impl, method in IMPLEMENTATIONS.items():
            if impl not in row["times"]:
                continue
            fwd, fwd_bwd = row["times"][impl]["fwd"], row["times"][impl]["fwd_bwd"]
            params = n * n if impl == "dense" else b * q * (p + s)
            errors = row.get("errors_vs_fp32", {}).get("triton" if impl == "fast" else impl, {})
            metrics = {"fwd_bwd_speedup_vs_dense": dense_fb / fwd_bwd["median_ms"]}
            graphed = row["times"][impl].get("fwd_bwd_graph")
            dense_graphed = row["times"]["dense"].get("fwd_bwd_graph")
            if graphed and dense_graphed:  # device time: the step replayed as a CUDA graph
                metrics["fwd_bwd_graph_speedup_vs_dense"] = (dense_graphed["median_ms"]
                                                             / graphed["median_ms"])
            if errors.get("y") is not None:
                metrics["rel_error_vs_fp32"] = errors["y"]
            records.append(RunRecord(
                run_id=_run_id(path.name, n, b, impl), method=method,
                notebook=f"benchmarks/{path.name}", model=f"linear {n}x{n}",
                dataset=f"{tokens} tokens, {env.get('dtype', 'bfloat16')}",
                parameters={"n": n, "nblocks": b if impl != "dense" else 0, "tokens": tokens,
                            "impl": impl, "benchmark": data.get("benchmark", "monarch")},
                metrics=metrics,
                cost={"params": params, "flops_per_sample": 2 * params,
                      "latency_ms": fwd["median_ms"],
                      "latency_ms_iqr": fwd["q80_ms"] - fwd["q20_ms"],
                      "fwd_bwd_ms": fwd_bwd["median_ms"],
                      **({"fwd_bwd_graph_ms": graphed["median_ms"]} if graphed else {}),
                      "throughput_per_s": tokens / (fwd["median_ms"] / 1e3)},
                **_environment_fields(env)))
    return records


def _environment_fields(env: dict) -> dict:
    """A record's device, torch version and creation time from a result file's environment
    block (now when the file has no date)."""
    return {"device": env.get("device_name", ""), "torch_version": env.get("torch", ""),
            "created_at": env.get("date", "") or RunRecord.__dataclass_fields__[
                "created_at"].default_factory()}


def _load(path: Path, what: str) -> tuple[dict, list, dict]:
    try:
        data = json.loads(path.read_text())
        return data, data["rows"], data["environment"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a {what} benchmark result: {exc}") from exc


def semi_structured_benchmark_records(path: str | Path) -> list[RunRecord]:
    """Records for a ``benchmarks/semi_structured.py`` result file: per layer shape (out, in),
    ``dense`` and ``nm`` (2:4 semi-structured) with latency for the whole token batch; shapes
    the kernels refused (rows with an ``error``) are skipped."""
    path = Path(path)
    data, rows, env = _load(path, "semi-structured")
    records = []
    for row in (r for r in rows if "error" not in r):
        out_f, in_f, tokens = row["out_features"], row["in_features"], row["tokens"]
        for impl, ms, err in (("dense", row["ms_dense"], row["err_dense"]),
                              ("2:4", row["ms_2_4"], row["err_2_4"])):
            params = out_f * in_f // (2 if impl == "2:4" else 1)
            records.append(RunRecord(
                run_id=_run_id(path.name, row["model"], row["layer"], out_f, in_f, impl),
                method="dense" if impl == "dense" else "nm",
                notebook=f"benchmarks/{path.name}", model=f"linear {in_f}->{out_f}",
                dataset=f"{tokens} tokens, {row.get('dtype', env.get('dtype', 'bfloat16'))}",
                parameters={"layer": f"{row['model']}: {row['layer']}", "out_features": out_f,
                            "in_features": in_f, "tokens": tokens, "impl": impl,
                            "n": 2 if impl == "2:4" else 0, "m": 4 if impl == "2:4" else 0,
                            "benchmark": "semi_structured"},
                metrics={"speedup_vs_dense": row["ms_dense"] / ms, "rel_error_vs_fp32": err},
                cost={"params": out_f * in_f, "nonzeros": params, "flops_per_sample": 2 * params,
                      "latency_ms": ms, "throughput_per_s": tokens / (ms / 1e3)},
                **_environment_fields(env)))
    return records


def step_benchmark_records(path: str | Path) -> list[RunRecord]:
    """Records for a ``benchmarks/monarch_step.py`` result file: one per (width, variant,
    compile mode), with the steady training-step time as the cost."""
    path = Path(path)
    data, rows, env = _load(path, "Monarch training-step")
    records = []
    for row in rows:
        variant = row["variant"]  # dense, monarch-b4, monarch-b4-dense
        nblocks, _, impl = variant.removeprefix("monarch-b").partition("-")
        monarch = variant.startswith("monarch")
        records.append(RunRecord(
            run_id=_run_id(path.name, row["width"], row["depth"], variant, row["compile"]),
            method="monarch" if monarch else "dense",
            notebook=f"benchmarks/{path.name}", model=f"gpt width {row['width']}",
            dataset=f"bytes, {data.get('tokens_per_step', '?')} tokens per step",
            parameters={"width": row["width"], "depth": row["depth"],
                        "nblocks": int(nblocks) if monarch else 0,
                        "impl": (impl or "auto") if monarch else "dense",
                        "compile": row["compile"], "benchmark": "monarch_step"},
            metrics={"speedup_vs_dense": row["speedup_vs_dense"],
                     "train_loss": row["final_train_loss"]},
            cost={"params": row["params"], "train_step_ms_steady": row["steady_step_ms"],
                  "first_3_steps_s": row["first_3_steps_s"]},
            **_environment_fields(env)))
    return records


def benchmark_records(path: str | Path) -> list[RunRecord]:
    """Records for any benchmark result file, by its ``benchmark`` field (Monarch by default).
    A file whose rows lack a field or hold the wrong kind of value raises ValueError naming the
    file and the field."""
    try:
        kind = json.loads(Path(path).read_text()).get("benchmark")
    except (OSError, ValueError, AttributeError):
        kind = None  # the Monarch reader names the problem
    reader, what = {"semi_structured": (semi_structured_benchmark_records, "semi-structured"),
                    "monarch_step": (step_benchmark_records, "Monarch training-step")}.get(
        kind, (monarch_benchmark_records, "Monarch"))
    try:
        return reader(path)
    except KeyError as exc:
        raise ValueError(f"{path} is not a {what} benchmark result: a row has no "
                         f"field {exc}") from exc
    except (TypeError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise ValueError(f"{path} is not a {what} benchmark result: a row is malformed "
                         f"({type(exc).__name__}: {exc})") from exc
