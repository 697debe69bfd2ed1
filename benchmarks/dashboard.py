"""The dashboard with a 10,000-run store in headless Chromium: first render, filter and axis change.

    .venv/bin/python benchmarks/dashboard.py --out benchmarks/results/dashboard_10k_cpu.json \
        --screenshot benchmarks/results/dashboard_10k_cpu.png
    .venv/bin/python benchmarks/dashboard.py --runs 2000 --repeats 3       # a quicker look

A generated store (several methods, models, datasets, parameter grids, seeds; accuracy or loss
plus the cost meter's numbers; a few failed runs) is written through ``RunStore`` in a temporary
folder and served by ``workbench.app.serve`` in a subprocess. Chromium (Debian's, through
Playwright) loads it once to warm the server, then measures each repeat in a fresh browser
context (a new session, nothing cached). A script installed before any page script records
when each Plotly ``newPlot`` / ``react`` promise resolves (what it drew) and when the first
table row enters the DOM (a MutationObserver, shadow roots included):

- first render: navigation start -> the Pareto plot drawn with every plotted run and a row of
  the runs table present (the later of the two; its stages are kept too);
- filter change: the method filter set to one method -> the Pareto plot redrawn with exactly that
  method's runs;
- axis change: the cost (x) axis switched -> the Pareto plot redrawn with the new x title.
Each change also reports ``settled_ms``: the last redraw of any plot before 400 ms of quiet.

Medians (and min/max) over the repeats go to JSON with the machine (CPU, cores, load average
before, during each repeat and after), the torch/panel/bokeh/plotly versions and the time to read
the store into a frame; ``machine_busy`` and a note say when other work was running.
Targets (issue 6): first render <= 3 s, filter or axis change <= 500 ms on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workbench.runs.record import RunRecord  # noqa: E402
from workbench.runs.store import RunStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGETS_MS = {"first_render": 3000, "filter_change": 500, "axis_change": 500}
# method -> its swept parameter and values; quality loss factor per unit of "compression"
METHODS = {
    "dense": ("width", [64, 128, 256, 512]),
    "gmp": ("sparsity", [0.5, 0.7, 0.8, 0.9, 0.95]),
    "random_prune": ("sparsity", [0.5, 0.7, 0.8, 0.9]),
    "nm_sparse": ("nm", ["2:4", "1:4", "4:8"]),
    "monarch": ("nblocks", [2, 4, 8, 16, 32]),
    "lowrank": ("rank", [8, 16, 32, 64, 128]),
    "kronecker": ("factors", [2, 4, 8]),
    "s2ft": ("ratio", [0.01, 0.05, 0.1]),
    "compacter": ("hidden", [4, 8, 16]),
    "quantization": ("bits", [2, 4, 8]),
}
MODELS = {  # model -> (dataset, dense params, dense FLOPs/sample, dense quality, metric)
    "mlp-256": ("mnist1d", 2.1e5, 4.2e5, 0.93, "accuracy"),
    "mixer-64": ("mnist1d", 8.6e5, 3.4e7, 0.95, "accuracy"),
    "mlp-512": ("digits", 6.0e5, 1.2e6, 0.97, "accuracy"),
    "minilm-l6": ("sst2", 2.27e7, 1.1e9, 0.90, "accuracy"),
    "gpt-bytes-small": ("bytes", 3.4e6, 6.8e6, 1.62, "bits_per_byte"),
}
DEVICES = ["CPU (AMD EPYC, 2 cores)", "NVIDIA H200"]


def fake_record(rng: random.Random, i: int) -> RunRecord:
    """One plausible run: a method at one setting on one model, with quality and cost that
    trade off (more compression: cheaper and a little worse) plus seed noise."""
    method = rng.choice(list(METHODS))
    name, values = METHODS[method]
    k = rng.randrange(len(values))
    model = rng.choice(list(MODELS))
    dataset, params, flops, quality, metric = MODELS[model]
    seed = rng.randrange(5)
    keep = 1.0 if method == "dense" else 0.9 ** (k + 1) * rng.uniform(0.6, 1.0)
    device = rng.choice(DEVICES)
    created = (datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
               + datetime.timedelta(minutes=7 * i + rng.randrange(7)))
    parameters = {"preset": rng.choice(["ci", "default", "gpu"]), "lr": rng.choice([1e-3, 3e-3]),
                  "steps": rng.choice([500, 1000, 2000]), "seed": seed, name: values[k],
                  "include": "*.dense" if "minilm" in model else "*"}
    common = dict(run_id=f"r{i:06d}", method=method, model=model, dataset=dataset, device=device,
                  notebook=f"notebooks/{'baseline' if method == 'dense' else method}.ipynb",
                  parameters=parameters, seed=seed, created_at=created.isoformat(),
                  torch_version="2.13.0", git_commit="0123456789ab",
                  duration_s=round(rng.uniform(20, 900), 1))
    if rng.random() < 0.03:
        return RunRecord(status="failed", error="RuntimeError: CUDA out of memory", **common)
    penalty = (1 - keep) * rng.uniform(0.02, 0.12) + rng.gauss(0, 0.004)
    if metric == "accuracy":
        metrics = {"accuracy": round(max(0.0, quality - penalty), 4),
                   "loss": round(0.2 + 2 * penalty + rng.uniform(0, 0.05), 4), "split": "test"}
    else:
        metrics = {"bits_per_byte": round(quality + 3 * penalty, 4),  # and next-byte accuracy
                   "accuracy": round(0.55 - penalty, 4),
                   "loss": round((quality + 3 * penalty) * 0.693, 4), "split": "val"}
    gpu = device.startswith("NVIDIA")
    latency = flops * keep / (5e11 if gpu else 2e10) * 1e3 * rng.uniform(0.8, 1.5) + 0.05
    cost = {"params": int(params * keep), "nonzeros": int(params * keep * rng.uniform(0.9, 1)),
            "flops_per_sample": flops * keep, "latency_ms": round(latency, 4),
            "latency_ms_iqr": round(latency * rng.uniform(0.02, 0.2), 4),
            "peak_memory_mb": round(params * keep * 4 / 2**20 * 3 + 40, 1),
            "throughput_per_s": round(1e3 / latency, 1)}
    return RunRecord(metrics=metrics, cost=cost, **common)


def generate_store(path: Path, runs: int, seed: int = 0) -> dict:
    """Write a new store at ``path``: ``runs`` ok runs (each with accuracy and FLOPs, so each is
    one point of the default plot) plus one failed run per hundred; returns counts."""
    rng = random.Random(seed)
    store = RunStore(path)
    counts = {"plotted": 0, "failed": 0, "per_method": {}}
    i = 0
    while counts["plotted"] < runs or counts["failed"] < runs // 100:
        record = fake_record(rng, i)
        i += 1
        kind = "failed" if record.status == "failed" else "plotted"
        if counts[kind] >= (runs // 100 if kind == "failed" else runs):
            continue
        store.add(record)
        counts[kind] += 1
        if kind == "plotted":
            counts["per_method"][record.method] = counts["per_method"].get(record.method, 0) + 1
    store.engine.dispose()
    counts["runs"] = counts["plotted"] + counts["failed"]
    return counts


# ---- in the browser ---------------------------------------------------------------------------
# Installed before any page script: records every Plotly draw (newPlot / react, after its promise
# resolves) with the number of scatter points and the x-axis title, and the first moment a row of
# a Tabulator table is in the DOM (a MutationObserver on the document and on every shadow root).
PROBE = r"""
(() => {
  const wb = window.__wb = {draws: [], tableAt: null};
  const points = (gd) => (gd.data || []).reduce((n, t) =>
      n + (String(t.type || 'scatter').startsWith('scatter') && String(t.mode || 'markers')
             .includes('markers') && t.x ? t.x.length : 0), 0);
  const record = (kind, gd) => wb.draws.push({t: performance.now(), kind, points: points(gd),
      parcoords: (gd.data || []).some(t => t.type === 'parcoords'),
      x: String(gd.layout?.xaxis?.title?.text ?? gd.layout?.xaxis?.title ?? '')});
  let plotly;
  Object.defineProperty(window, 'Plotly', {configurable: true, get: () => plotly, set: (lib) => {
    plotly = lib;
    for (const name of ['newPlot', 'react']) {
      const original = lib[name];
      lib[name] = function (gd, ...rest) {
        const result = original.call(this, gd, ...rest);
        Promise.resolve(result).then(() => record(name, typeof gd === 'string' ?
            document.getElementById(gd) : gd));
        return result;
      };
    }
  }});
  const isRow = (n) => n.nodeType === 1 && (n.classList.contains('tabulator-row') ||
                                            !!n.querySelector?.('.tabulator-row'));
  const observer = new MutationObserver((mutations) => {
    if (wb.tableAt !== null) return;
    for (const m of mutations) for (const n of m.addedNodes)
      if (isRow(n)) { wb.tableAt = performance.now(); return; }
  });
  observer.observe(document, {childList: true, subtree: true});
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    const root = attach.call(this, init);
    observer.observe(root, {childList: true, subtree: true});
    return root;
  };
})();
"""
BUSY_LOAD = 1.0  # a 1-min load average above this means other work shared the CPU
SETTLE_MS = 400  # a change has settled when no plot has redrawn for this long


def wait_for_draw(page, since: float, timeout_s: float, **want) -> dict:
    """The first Plotly draw after ``since`` (page ms) whose points / x title match ``want``."""
    js = """([since, want]) => window.__wb.draws.find(d => d.t > since && !d.parcoords &&
        (want.points === undefined || d.points === want.points) &&
        (want.x === undefined || d.x.includes(want.x))) || null"""
    handle = page.wait_for_function(js, arg=[since, want], timeout=timeout_s * 1e3, polling=20)
    return handle.json_value()


def settled_at(page, since: float) -> float:
    """When the last plot redraw after ``since`` happened, once none came for SETTLE_MS."""
    while True:
        last = page.evaluate("(s) => Math.max(s, ...window.__wb.draws.map(d => d.t))", since)
        now = page.evaluate("performance.now()")
        if now - last >= SETTLE_MS:
            return last
        page.wait_for_timeout(SETTLE_MS - (now - last) + 10)


def first_render(page, url: str, points: int) -> dict:
    """Navigation start -> the Pareto plot drawn with ``points`` points and table rows shown."""
    page.goto(url)
    draw = wait_for_draw(page, 0, 60, points=points)
    page.wait_for_function("window.__wb.tableAt !== null", timeout=60_000, polling=20)
    table = page.evaluate("window.__wb.tableAt")
    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
    nav = json.loads(timing)
    return {"ms": max(draw["t"], table), "plot_ms": draw["t"], "table_ms": table,
            "html_ms": nav.get("responseEnd"), "dom_content_loaded_ms":
            nav.get("domContentLoadedEventEnd"), "settled_ms": settled_at(page, 0)}


def timed_change(page, act, **want) -> dict:
    """``act()`` (a widget interaction) -> the Pareto plot redrawn as ``want`` says."""
    page.wait_for_timeout(SETTLE_MS)
    t0 = page.evaluate("performance.now()")
    act()
    try:
        draw = wait_for_draw(page, t0, 30, **want)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "dashboard-bench-failure.png"))
        raise RuntimeError(f"no redraw with {want} after the change; draws since: "
                           f"{page.evaluate('(t) => window.__wb.draws.filter(d => d.t > t)', t0)}")
    return {"ms": draw["t"] - t0, "settled_ms": settled_at(page, t0) - t0}


def choose_method(page, method: str) -> None:
    """Type ``method`` into the method filter (a MultiChoice, "all methods") and press Enter."""
    page.get_by_placeholder("all methods").click()
    page.keyboard.type(method)
    page.locator(f".choices__item--choice[data-value='{method}']").wait_for()
    page.keyboard.press("Enter")


def choose_cost(page, label: str) -> None:
    page.locator(f"select:has(option:text-is('{label}'))").first.select_option(label=label)


def measure(url: str, counts: dict, repeats: int, method: str, cost_label: str,
            screenshot: str | None = None) -> dict:
    """Warm-up page, then ``repeats`` fresh pages: first render, filter change, axis change.
    ``screenshot``: a PNG of the first page as first rendered."""
    from playwright.sync_api import sync_playwright

    rows: list[dict] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for i in range(repeats + 1):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(PROBE)
                row = {"first_render": first_render(page, url, counts["plotted"])}
                if i == 0 and screenshot:
                    page.screenshot(path=screenshot)
                row["filter_change"] = timed_change(
                    page, lambda: choose_method(page, method),
                    points=counts["per_method"][method])
                row["axis_change"] = timed_change(page, lambda: choose_cost(page, cost_label),
                                                  x=cost_label)
                page.close()
                row["load_average_1min"] = round(os.getloadavg()[0], 2)
                print(("warm-up" if i == 0 else f"repeat {i}"),
                      {k: round(v["ms"]) for k, v in row.items() if isinstance(v, dict)},
                      f"load {row['load_average_1min']}", flush=True)
                rows.append(row)
            version = browser.version
        finally:
            browser.close()
    return {"chromium_version": version, "warm_up": rows[0], "repeats": rows[1:]}


def summary(rows: list[dict]) -> dict:
    """Median, min and max of each timing over the repeats, the target and whether it is met;
    for the first render also the medians of its stages (HTML served, scripts run, plot, table)."""
    def median(name, key="ms"):
        return round(statistics.median(r[name][key] for r in rows), 1)
    out = {}
    for name in TARGETS_MS:
        values = [r[name]["ms"] for r in rows]
        out[name] = {"median_ms": median(name), "min_ms": round(min(values), 1),
                     "max_ms": round(max(values), 1), "target_ms": TARGETS_MS[name],
                     "met": median(name) <= TARGETS_MS[name],
                     "settled_median_ms": median(name, "settled_ms")}
    out["first_render"]["stages_median_ms"] = {
        key: median("first_render", key)
        for key in ("html_ms", "dom_content_loaded_ms", "plot_ms", "table_ms")}
    return out


# ---- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, port: int, log: Path) -> subprocess.Popen:
    code = f"from workbench.app.serve import serve; serve(store={str(store)!r}, port={port})"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log.open("w"),
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/liveness", timeout=2):
                pass
        except urllib.error.HTTPError:  # the server answers (no liveness route): up
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.25)
        else:
            return server
    server.kill()
    raise RuntimeError(f"the dashboard server did not start:\n{log.read_text()}")


def machine() -> dict:
    import bokeh
    import panel
    import plotly
    import torch

    from workbench.environment import device_name
    return {"device": device_name("cpu"), "cores": os.cpu_count(), "torch": torch.__version__,
            "panel": panel.__version__, "bokeh": bokeh.__version__, "plotly": plotly.__version__,
            "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="plotted runs (ok, with "
                        "accuracy and FLOPs); one failed run per hundred is added")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default="monarch", help="the method the filter picks")
    parser.add_argument("--cost", default="latency (ms)", help="the axis change's new x label")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--screenshot", help="PNG of the dashboard with the generated runs")
    args = parser.parse_args()

    load_before = os.getloadavg()  # before this process starts any work of its own
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        store = Path(tmp) / "runs.sqlite"
        t0 = time.perf_counter()
        counts = generate_store(store, args.runs)
        generate_s = time.perf_counter() - t0
        print(f"store: {counts['runs']} runs ({counts['failed']} failed) in {generate_s:.1f} s",
              flush=True)
        from workbench.app.data import read_frame
        from workbench.runs.store import resolve_store_url
        t0 = time.perf_counter()
        read_frame(resolve_store_url(store))
        read_s = time.perf_counter() - t0
        port = free_port()
        server = start_server(store, port, Path(tmp) / "server.log")
        try:
            result = measure(f"http://localhost:{port}/", counts, args.repeats, args.method,
                             args.cost, args.screenshot)
        finally:
            server.terminate()
            server.wait(timeout=20)
    load_after = os.getloadavg()
    out = {
        "benchmark": "dashboard", "date": datetime.date.today().isoformat(),
        "machine": {**machine(), "chromium": result.pop("chromium_version")},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "store": {**counts, "generate_s": round(generate_s, 2), "read_frame_s": round(read_s, 3)},
        "changes": {"filter": f"method filter -> {args.method} "
                              f"({counts['per_method'][args.method]} points)",
                    "axis": f"cost (x) -> {args.cost}"},
        "summary": summary(result["repeats"]), **result,
    }
    # During the repeats the benchmark itself (server, Chromium, Playwright) adds up to about 2
    # to the load average; the load before it started is what other work put on the machine.
    out["machine_busy"] = load_before[0] > BUSY_LOAD
    if out["machine_busy"]:
        out["note"] = (f"other processes were running (1-min load average {load_before[0]:.1f} "
                       f"on {os.cpu_count()} cores before the benchmark started): the timings are "
                       "higher than on an idle machine")
    print(json.dumps(out["summary"], indent=2), out.get("note", ""))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
