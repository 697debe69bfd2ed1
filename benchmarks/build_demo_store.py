"""Build the shipped demo store (``data/demo``) from real runs: chosen runs of other stores (a
main run brings its logged variants), whole stores (the GPU machine's), and benchmark results.

    python benchmarks/build_demo_store.py --out data/demo/runs.sqlite \\
        --all /tmp/gpu/runs.sqlite --runs data/store/runs.sqlite 098ff73d6313 ... \\
        --benchmark benchmarks/results/monarch_h200.json

Files larger than ``--max-file-mb`` (output notebooks, figures) or ``--max-checkpoint-mb``
(``*.pt``) are left out to keep the repository small; a record naming a missing file gets the
dashboard's "missing" message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.runs import RunStore, StoreError  # noqa: E402
from workbench.runs.benchmarks import benchmark_records  # noqa: E402
from workbench.runs.transfer import import_store  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--all", nargs="*", default=[], help="stores copied whole")
    ap.add_argument("--runs", nargs="+", action="append", default=[], metavar="STORE ID",
                    help="a store, then the main runs to copy from it (with their variants)")
    ap.add_argument("--benchmark", nargs="*", default=[], help="benchmark result JSON files")
    ap.add_argument("--max-file-mb", type=float, default=1.5)
    ap.add_argument("--max-checkpoint-mb", type=float, default=0.25)
    args = ap.parse_args(argv)
    target = RunStore(args.out)
    for source in args.all:
        print(source, import_store(source, target))
    for source, *ids in args.runs:
        wanted = set(ids)
        print(source, import_store(source, target, select=lambda r: (
            r.run_id in wanted or r.parameters.get("parent_run") in wanted)))
    for path in args.benchmark:
        added = 0
        for record in benchmark_records(path):
            try:
                target.add(record)
                added += 1
            except StoreError:
                pass
        print(path, f"added {added} benchmark runs")
    def too_big(path: Path) -> bool:
        limit = args.max_checkpoint_mb if path.suffix == ".pt" else args.max_file_mb
        return path.stat().st_size > limit * 2**20

    dropped = [p for p in target.artifacts_root.rglob("*") if p.is_file() and too_big(p)]
    for path in dropped:
        path.unlink()
    size = sum(p.stat().st_size for p in target.artifacts_root.rglob("*") if p.is_file())
    print(f"{len(target)} runs; left out {len(dropped)} files over the size limits; "
          f"artifacts {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
