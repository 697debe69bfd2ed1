"""The ``workbench`` command: run notebooks, list and export runs, serve the dashboard.

    workbench run notebooks/baseline.ipynb -p width 64 -p preset ci
    workbench sweep notebooks/baseline.ipynb -g width 32,64,128 -p preset ci
    workbench runs list | show RUN_ID | export --format csv|parquet -o FILE
    workbench serve [--address 0.0.0.0] [--port 5006] [--basic-auth FILE] [--num-procs N]
    workbench passwd FILE USER
    workbench lab

Exit status: 0 ok, 1 a run failed, 2 bad command line or notebook parameters.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`workbench runs list | head`): not an error
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - turn library errors into a clean message
        from .runs import ParameterError, StoreError
        if isinstance(exc, (ParameterError, FileNotFoundError, ValueError)):
            print(f"workbench: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (StoreError, KeyError)):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # unquoted
            print(f"workbench: error: {message}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n")[0])
    p.add_argument("--store", help="run store: SQLite path or SQLAlchemy URL "
                                   "(default: $WORKBENCH_STORE or data/store/runs.sqlite)")
    sub = p.add_subparsers()

    run = sub.add_parser("run", help="execute a notebook and record the run")
    run.add_argument("notebook")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"))
    run.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(handler=_run)

    sweep = sub.add_parser("sweep", help="run a notebook over a grid of parameter values")
    sweep.add_argument("notebook")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="fixed parameter")
    sweep.add_argument("-g", "--grid", nargs=2, action="append", default=[],
                       metavar=("NAME", "V1,V2,..."), help="swept parameter")
    sweep.add_argument("--cell-timeout", type=float, default=None)
    sweep.add_argument("--skip-existing", action="store_true",
                       help="skip settings that already have an ok run of this notebook")
    sweep.set_defaults(handler=_sweep)

    runs = sub.add_parser("runs", help="list, show or export recorded runs")
    runs_sub = runs.add_subparsers()
    ls = runs_sub.add_parser("list")
    ls.add_argument("--method")
    ls.add_argument("--status")
    ls.set_defaults(handler=_runs_list)
    show = runs_sub.add_parser("show")
    show.add_argument("run_id")
    show.set_defaults(handler=_runs_show)
    export = runs_sub.add_parser("export")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("-o", "--output", help="file (default: stdout for csv)")
    export.set_defaults(handler=_runs_export)
    imp_store = runs_sub.add_parser("import-store", help="copy the runs of another store "
                                    "(records and artifact folders) into this one")
    imp_store.add_argument("source", help="SQLite path or SQLAlchemy URL of the other store")
    imp_store.set_defaults(handler=_runs_import_store)
    imp = runs_sub.add_parser("import-benchmark", help="add a benchmarks/results JSON as runs")
    imp.add_argument("files", nargs="+")
    imp.set_defaults(handler=_runs_import)

    serve = sub.add_parser("serve", help="serve the dashboard (localhost unless told otherwise)")
    serve.add_argument("--address", default="localhost",
                       help="interface to listen on (0.0.0.0: every machine that can reach it)")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--basic-auth", metavar="FILE",
                       help='require a login: JSON {"user": "password hash"} (see `passwd`)')
    serve.add_argument("--num-procs", type=int, default=1, metavar="N",
                       help="worker processes sharing the port (0: one per core)")
    serve.add_argument("--cookie-secret", help="signs login cookies (default: "
                       "$WORKBENCH_COOKIE_SECRET, else a secret kept beside the store)")
    serve.add_argument("--show", action="store_true", help="open a browser")
    serve.set_defaults(handler=_serve)

    passwd = sub.add_parser("passwd", help="add a user to a --basic-auth file, or change their "
                                           "password (stored hashed)")
    passwd.add_argument("file")
    passwd.add_argument("user")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin instead of prompting")
    passwd.set_defaults(handler=_passwd)

    lab = sub.add_parser("lab", help="open JupyterLab on the notebooks")
    lab.add_argument("extra", nargs=argparse.REMAINDER)
    lab.set_defaults(handler=_lab)
    return p


def _store(args):
    from .runs import RunStore
    return RunStore(args.store)


def _run(args) -> int:
    from .runs.executor import execute
    from .runs.parameters import read_parameters, resolve_parameters
    given = dict(args.parameter)
    resolve_parameters(read_parameters(args.notebook), given, Path(args.notebook).name)
    record = execute(args.notebook, given, store=_store(args), cell_timeout=args.cell_timeout,
                     progress=not args.no_progress)
    if record.status != "ok":
        print(f"run {record.run_id} failed: {record.error}", file=sys.stderr)
        print(f"partial output notebook: {record.output_notebook or '(none)'}", file=sys.stderr)
    print(record.run_id)
    return 0 if record.status == "ok" else 1


def _sweep(args) -> int:
    from .runs.parameters import read_parameters, resolve_parameters
    declared = read_parameters(args.notebook)
    names = [name for name, _ in args.grid]
    grids = [values.split(",") for _, values in args.grid]
    settings = [{**dict(args.parameter), **dict(zip(names, combo))}
                for combo in itertools.product(*grids)]
    resolved = [resolve_parameters(declared, setting, Path(args.notebook).name)
                for setting in settings]  # check every setting before running any
    done = _finished_settings(args) if args.skip_existing else []
    failures, not_run = 0, []
    with _ForwardSignals() as children:
        for i, (setting, values) in enumerate(zip(settings, resolved), 1):
            if children.received:  # stopped by a signal: start no further setting
                not_run.append(f"[{i}/{len(settings)}] {setting}")
                continue
            # every parameter counts, not only those given: a run with another value of a
            # parameter left at its default does not cover this setting; a parameter the
            # notebook did not have yet when a run was made counts as its default
            if any(all(p.get(k, declared[k].default) == v for k, v in values.items())
                   for p in done):
                print(f"[{i}/{len(settings)}] {setting}: already done, skipped",
                      file=sys.stderr)
                continue
            print(f"[{i}/{len(settings)}] {setting}", file=sys.stderr, flush=True)
            failures += children.run(_run_command(args, setting)) != 0
    print(f"sweep: {len(settings) - failures - len(not_run)} ok, {failures} failed",
          file=sys.stderr)
    if children.received:
        print(f"sweep: stopped by {signal.Signals(children.received).name}; "
              f"{len(not_run)} settings not run:", *not_run, sep="\n  ", file=sys.stderr)
        return 128 + children.received
    return 1 if failures else 0


def _run_command(args, setting: dict) -> list[str]:
    """The ``workbench run`` command line of one sweep setting."""
    cmd = [sys.executable, "-m", "workbench.cli"]
    if args.store:
        cmd += ["--store", args.store]
    cmd += ["run", args.notebook, "--no-progress"]
    if args.cell_timeout:
        cmd += ["--cell-timeout", str(args.cell_timeout)]
    for name, value in setting.items():
        cmd += ["-p", name, str(value)]
    return cmd


class _ForwardSignals:
    """While in use, SIGTERM and SIGINT (Ctrl-C) do not stop the sweep: they are passed on to
    the running child, whose executor records its run as interrupted, and ``received`` keeps
    the signal so that the sweep starts no further setting. Each child has its own process
    group, so a Ctrl-C in the terminal reaches it once, through the sweep."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self.child: subprocess.Popen | None = None

    def __enter__(self) -> "_ForwardSignals":
        self.previous = {signum: signal.signal(signum, self._forward) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _forward(self, signum, frame) -> None:
        self.received = signum
        if self.child is not None:
            self.child.send_signal(signum)  # a no-op once the child has ended

    def run(self, cmd: list[str]) -> int:
        """Run ``cmd`` to its end (even when a signal came meanwhile); its exit status."""
        self.child = subprocess.Popen(cmd, process_group=0)
        try:
            return self.child.wait()
        finally:
            self.child = None


def _finished_settings(args) -> list[dict]:
    """The inputs of the ok runs of ``args.notebook`` already in the store, matched by file
    name (runs copied from another checkout, e.g. data/demo, count too). The inputs are read
    from the output notebook (papermill keeps them): a record's own parameters may hold what
    the notebook resolved or logged instead (depth 0 -> 4, nblocks [4, 16] -> 4)."""
    from .runs import StoreError
    store, name = _store(args), Path(args.notebook).name
    settings = []
    for record in store.records(status="ok"):
        if Path(getattr(record, "notebook", "") or "").name != name:
            continue
        settings.append(record.parameters)
        try:
            output = json.loads(store.artifact(record.output_notebook).read_text())
            settings.append(output["metadata"]["papermill"]["parameters"])
        except (OSError, ValueError, KeyError, TypeError, StoreError):
            pass
    return settings


def _runs_list(args) -> int:
    records = list(_store(args).records(status=args.status, method=args.method))
    if not records:
        print("no runs yet: try `workbench run notebooks/baseline.ipynb -p preset ci`")
        return 0
    print(f"{'run_id':<13} {'created_at (UTC)':<20} {'status':<8} {'method':<14} {'model':<10} "
          f"{'dataset':<10} quality")
    for r in records:
        row = r.flat()
        quality = ", ".join(f"{k}={v:.4g}" for k, v in getattr(r, "metrics", {}).items()
                            if isinstance(v, (int, float)))
        print(f"{row['run_id']:<13} {row.get('created_at', '')[:19]:<20} {row['status']:<8} "
              f"{row['method']:<14} {row.get('model', ''):<10} {row.get('dataset', ''):<10} "
              f"{quality or row.get('error') or ''}")
    return 0


def _runs_show(args) -> int:
    record = _store(args).get(args.run_id).to_dict()
    print(json.dumps(_finite_or_null(record), indent=2, allow_nan=False))
    return 0


def _finite_or_null(value):
    """``value`` with NaN and +-Infinity, which strict JSON has no words for, made None (null)
    at any depth; the store keeps them as they are."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def _runs_export(args) -> int:
    frame = _store(args).frame()
    if args.format == "parquet":
        if not args.output:
            print("workbench: error: parquet export needs -o FILE", file=sys.stderr)
            return 2
        _one_type_per_column(frame).to_parquet(args.output, index=False)
    elif args.output:
        frame.to_csv(args.output, index=False)
    else:
        frame.to_csv(sys.stdout, index=False)
    if args.output:
        print(f"wrote {len(frame)} runs to {args.output}", file=sys.stderr)
    return 0


def _one_type_per_column(frame):
    """``frame`` with each column whose values are of several types (a parameter that is 4 in
    one run and ``"[4, 16]"``, JSON text, in another) turned to text, since a parquet column
    has one type; missing values stay missing."""
    frame = frame.copy()
    for name in frame.columns[frame.dtypes == object]:
        column = frame[name]
        if len({type(value) for value in column.dropna()}) > 1:
            frame[name] = column.astype(str).where(column.notna(), None)
    return frame


def _runs_import_store(args) -> int:
    from .runs.transfer import import_store
    if "://" not in args.source and not Path(args.source).is_file():
        raise FileNotFoundError(f"no run store at {args.source}")
    print(import_store(args.source, _store(args)))
    return 0


def _runs_import(args) -> int:
    from .runs import StoreError
    from .runs.benchmarks import benchmark_records
    store = _store(args)
    added = skipped = 0
    for path in args.files:
        for record in benchmark_records(path):
            try:
                store.add(record)
                added += 1
            except StoreError:
                skipped += 1
    print(f"imported {added} runs ({skipped} already in the store)")
    return 0


def _serve(args) -> int:
    from .app.serve import serve
    serve(store=args.store, address=args.address, port=args.port, show=args.show,
          basic_auth=args.basic_auth, num_procs=args.num_procs, cookie_secret=args.cookie_secret)
    return 0


def _passwd(args) -> int:
    from .app.serve import set_password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("workbench: error: the passwords differ", file=sys.stderr)
            return 2
    set_password(args.file, args.user, password)
    print(f"{args.file}: password of {args.user} set (hashed)", file=sys.stderr)
    return 0


def _lab(args) -> int:
    from .runs.executor import ensure_kernel
    ensure_kernel()
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebooks}", *args.extra]
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
