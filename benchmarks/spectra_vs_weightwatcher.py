"""``workbench.analysis.spectra`` against WeightWatcher's ``analyze()`` on MiniLM, side by side in
one process on one machine.

    .venv/bin/pip install weightwatcher==0.7.7   # for this benchmark only: not a dependency
    PYTHONPATH=. .venv/bin/python benchmarks/spectra_vs_weightwatcher.py [--repeats 5]

Layers: those both analyse (WeightWatcher skips layers with fewer than 8 eigenvalues; here the
2-row token-type embedding). Values: per shared column, the max absolute and max relative
difference over the layers, for our default (float32) and for ``dtype=torch.float64`` (as
WeightWatcher computes), each against its tolerance; both use Gram eigenvalues (the default).
In float32, ``matrix_rank`` and hence ``entropy`` are not held to WeightWatcher's: a float32
Gram solve cannot resolve λ below ~1e-6·λ_max, which its float64 rank rule still counts.
Timing: each tool once to warm up, then ``--repeats`` alternating runs, wall-clock medians.
Writes benchmarks/results/spectra_vs_weightwatcher_cpu.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.analysis.spectra import spectra  # noqa: E402
from workbench.models.pretrained import load_minilm  # noqa: E402
from workbench.environment import environment_info  # noqa: E402

TARGET_SPEEDUP = 5.0
FIT = ["alpha", "D", "xmin", "sigma", "alpha_weighted"]
NORMS = ["lambda_max", "stable_rank", "log_norm", "log_spectral_norm"]
COUNTS = ["num_evals", "M", "N", "num_pl_spikes"]
# Relative tolerances per run; None: reported, not held (see the module docstring).
TOLERANCES = {
    "float32_gram": {**dict.fromkeys(FIT, 1e-3), **dict.fromkeys(NORMS, 1e-5),
                     **dict.fromkeys(COUNTS, 0.0), "matrix_rank": None, "entropy": None},
    "float64_gram": {**dict.fromkeys(FIT + NORMS, 1e-9), **dict.fromkeys(COUNTS, 0.0),
                    "matrix_rank": 0.0, "entropy": 1e-6},  # WW adds 1e-10 to each p
}
RUNS = {"float32_gram": {}, "float64_gram": {"dtype": torch.float64}}


def differences(ours, theirs, tolerances: dict) -> dict:
    out = {}
    for column, tol in tolerances.items():
        a = ours[column].to_numpy(dtype=float)
        b = theirs[column].to_numpy(dtype=float)
        diff = np.abs(a - b)
        rel = float(np.max(diff / np.maximum(np.abs(b), 1e-300)))
        out[column] = {"max_abs": float(diff.max()), "max_rel": rel, "tol_rel": tol,
                       "ok": None if tol is None else bool(rel <= tol)}
    return out


def timed(fn, repeats: int) -> list[float]:
    return [_once(fn) for _ in range(repeats)]


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/spectra_vs_weightwatcher_cpu.json")
    args = parser.parse_args()
    try:
        import weightwatcher
    except ImportError:
        sys.exit("needs WeightWatcher: .venv/bin/pip install weightwatcher==0.7.7")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model, _ = load_minilm()
    watcher = weightwatcher.WeightWatcher(model=model)

    theirs = watcher.analyze().set_index("longname")            # warm-up (and the values)
    results = {name: spectra(model, progress=False, **kw).set_index("layer")
               for name, kw in RUNS.items()}
    shared = [n for n in theirs.index if n in results["float32_gram"].index]
    diffs = {name: differences(df.loc[shared], theirs.loc[shared], TOLERANCES[name])
             for name, df in results.items()}

    times = {"weightwatcher": [], **{name: [] for name in RUNS}}
    for _ in range(args.repeats):                               # alternate the contenders
        times["weightwatcher"].append(_once(watcher.analyze))
        for name, kw in RUNS.items():
            times[name].append(_once(lambda: spectra(model, progress=False, **kw)))
    medians = {name: statistics.median(t) for name, t in times.items()}
    speedup = {name: medians["weightwatcher"] / medians[name] for name in RUNS}

    env = environment_info("cpu")
    record = {
        "benchmark": "spectra_vs_weightwatcher", "model": "sentence-transformers/all-MiniLM-L6-v2",
        "device": env["device"], "torch_threads": torch.get_num_threads(),
        "torch_version": env["torch_version"], "weightwatcher_version": weightwatcher.__version__,
        "git_commit": env["git_commit"],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "layers_compared": len(shared),
        "only_ours": [n for n in results["float32_gram"].index if n not in theirs.index],
        "timings_s": {name: {"median": medians[name], "runs": times[name]} for name in times},
        "speedup_vs_weightwatcher": speedup, "target_speedup": TARGET_SPEEDUP,
        "target_met": speedup["float32_gram"] >= TARGET_SPEEDUP, "differences": diffs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")

    print(f"{len(shared)} layers; WeightWatcher {weightwatcher.__version__}, {env['device']}")
    for name in RUNS:
        print(f"  {name:13s} median {medians[name]:.3f} s  vs WeightWatcher "
              f"{medians['weightwatcher']:.3f} s: {speedup[name]:.1f}x")
        for column, d in diffs[name].items():
            verdict = "not held" if d["ok"] is None else ("ok" if d["ok"] else "FAIL")
            print(f"    {column:18s} max abs {d['max_abs']:.2e}  max rel {d['max_rel']:.2e}  "
                  f"tol {d['tol_rel']}  {verdict}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
