"""The dashboard in a real headless Chromium: served in a subprocess, driven with Playwright.

The runs below are made-up test data with plausible values (an MLP on mnist1d), not results.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
POINTS = ".scatterlayer .trace .point"
# method, parameters, accuracy, loss, FLOPs/sample, latency (ms) or None when not measured
TEST_RUNS = [
    ("dense", {}, 0.912, 0.291, 2.10e6, 1.84),
    ("gmp", {"sparsity": 0.5}, 0.905, 0.312, 1.06e6, 1.71),
    ("gmp", {"sparsity": 0.9}, 0.861, 0.447, 2.20e5, None),
    ("monarch", {"nblocks": 4}, 0.897, 0.335, 6.60e5, 0.93),
    ("monarch", {"nblocks": 16}, 0.874, 0.398, 2.90e5, 0.62),
    ("monarch", {"nblocks": 8}, 0.866, 0.425, 4.10e5, None),  # dominated by nblocks=16
]


def seed_store(path: Path) -> list[str]:
    """Write TEST_RUNS plus one failed run (no metrics, so not plotted); returns plotted ids."""
    store = RunStore(path)
    ids = []
    for i, (method, params, acc, loss, flops, latency) in enumerate(TEST_RUNS):
        cost = {"flops_per_sample": flops, "params": int(flops / 2), "peak_memory_mb": 40 + i}
        if latency is not None:
            cost["latency_ms"] = latency
        ids.append(store.add(RunRecord(
            method=method, notebook=f"notebooks/{method}.ipynb", model="mlp-256",
            dataset="mnist1d", device="cpu", seed=i, duration_s=12.0 + i,
            parameters={"preset": "ci", **params}, cost=cost,
            metrics={"accuracy": acc, "loss": loss, "split": "test"})))
    store.add(RunRecord(method="gmp", status="failed", error="RuntimeError: test failure"))
    return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_store(tmp_path):
    """(url, store path, plotted run ids): a seeded store served by ``workbench.app.serve`` in a subprocess."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    store, port = tmp_path / "runs.sqlite", free_port()
    ids = seed_store(store)
    log = open(tmp_path / "server.log", "w+")
    code = f"from workbench.app.serve import serve; serve(store={str(store)!r}, port={port})"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "WORKBENCH_STORE": str(store)},
                              cwd=Path(__file__).parents[1])
    url = f"http://localhost:{port}/"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"dashboard server did not come up at {url}:\n{log.read()}")
            time.sleep(0.25)
        yield url, store, ids
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_dashboard_shows_the_seeded_runs(served_store):
    from playwright.sync_api import expect, sync_playwright

    url, store, ids = served_store
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            expect(page.get_by_text("Structured-matrix workbench").first).to_be_visible(
                timeout=20_000)

            # Default axes: accuracy against FLOPs; every seeded run is one point.
            points = page.locator(POINTS)
            expect(points).to_have_count(len(ids), timeout=20_000)
            expect(page.locator(".gtitle").first).to_contain_text("accuracy vs FLOPs")
            expect(page.locator(".legendtext")).to_have_count(3)  # dense, gmp, monarch
            # The table lists every run, the failed one included.
            for run_id in ids:
                expect(page.get_by_text(run_id).first).to_be_attached()

            # Switch quality to loss: same points, new axis title.
            page.locator("select:has(option:text-is('loss'))").select_option(label="loss")
            expect(page.locator(".gtitle").first).to_contain_text("loss vs FLOPs")
            expect(points).to_have_count(len(ids))
            # Switch cost to latency: two runs have no latency, so they leave the plot.
            page.locator("select:has(option:text-is('latency (ms)'))").select_option(
                label="latency (ms)")
            expect(page.locator(".gtitle").first).to_contain_text("loss vs latency (ms)")
            expect(points).to_have_count(len(ids) - 2)

            page.locator("select:has(option:text-is('latency (ms)'))").select_option(
                label="FLOPs per sample")
            page.locator("select:has(option:text-is('loss'))").select_option(label="accuracy")
            expect(points).to_have_count(len(ids))
            page.wait_for_timeout(500)  # let Plotly finish its transition before the picture
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # A run logged while the page is open appears after "Reload runs".
            RunStore(store).add(RunRecord(method="dense", model="mlp-256", dataset="mnist1d",
                                          metrics={"accuracy": 0.93, "loss": 0.25},
                                          cost={"flops_per_sample": 4.2e6}))
            page.get_by_role("button", name="Reload runs").click()
            expect(points).to_have_count(len(ids) + 1)
            assert not errors, errors
        finally:
            browser.close()
