"""The dashboard in a real headless Chromium: served in a subprocess, driven with Playwright.

The runs below are made-up test data with plausible values (an MLP on mnist1d), not results.
"""
import os
import sys
from pathlib import Path

import nbformat
import pytest
from torch import nn

from browser_support import (CHROMIUM, FIRST_RENDER_MS, browser_page, settled, start_server, stop,
                             until)
from workbench.checkpoint import save_checkpoint
from workbench.methods import apply_method
from workbench.runs.record import RunRecord, new_run_id
from workbench.runs.store import RunStore

pytestmark = pytest.mark.browser
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
WITH_ARTIFACTS = 3  # the run (index in TEST_RUNS) saved with a checkpoint and output notebook


def save_artifacts(store: RunStore, run_id: str, nblocks: int) -> dict:
    """A real Monarch checkpoint and a one-cell output notebook in the run's folder."""
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    apply_method("monarch", model, nblocks=nblocks)
    save_checkpoint(model, store.run_dir(run_id) / "model.pt")
    figure = {"data": [{"type": "bar", "x": ["dense", "monarch"], "y": [0.91, 0.9]}]}
    cell = nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "display_data", data={"application/vnd.plotly.v1+json": figure})])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Monarch on mnist1d"),
                                         cell])
    nbformat.write(nb, store.run_dir(run_id) / "output.ipynb")
    return {"artifacts": {"checkpoint": f"{run_id}/model.pt"},
            "output_notebook": f"{run_id}/output.ipynb"}


def seed_store(path: Path) -> list[str]:
    """Write TEST_RUNS plus one failed run (no metrics, so not plotted); returns plotted ids.
    TEST_RUNS[WITH_ARTIFACTS] has a checkpoint and an output notebook."""
    store = RunStore(path)
    ids = []
    for i, (method, params, acc, loss, flops, latency) in enumerate(TEST_RUNS):
        cost = {"flops_per_sample": flops, "params": int(flops / 2), "peak_memory_mb": 40 + i}
        if latency is not None:
            cost["latency_ms"] = latency
        run_id = new_run_id()
        files = save_artifacts(store, run_id, params["nblocks"]) if i == WITH_ARTIFACTS else {}
        ids.append(store.add(RunRecord(
            run_id=run_id, method=method, notebook=f"notebooks/{method}.ipynb", model="mlp-256",
            dataset="mnist1d", device="cpu", seed=i, duration_s=12.0 + i,
            parameters={"preset": "ci", **params}, cost=cost,
            metrics={"accuracy": acc, "loss": loss, "split": "test"}, **files)))
    store.add(RunRecord(method="gmp", status="failed", error="RuntimeError: test failure"))
    return ids


@pytest.fixture(scope="module")
def served_store(tmp_path_factory):
    """(url, store path, plotted run ids): a seeded store served by ``workbench.app.serve`` in a
    subprocess, shared by this module's tests (each opens its own page, so its own session)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    tmp_path = tmp_path_factory.mktemp("served")
    store = tmp_path / "runs.sqlite"
    ids = seed_store(store)

    def command(port: int) -> list[str]:
        return [sys.executable, "-c", "from workbench.app.serve import serve; "
                f"serve(store={str(store)!r}, port={port})"]
    server, port = start_server(command, tmp_path / "server.log", cwd=Path(__file__).parents[1],
                                env={**os.environ, "WORKBENCH_STORE": str(store)})
    try:
        yield f"http://localhost:{port}/", store, ids
    finally:
        stop(server)


def test_dashboard_shows_the_seeded_runs(served_store):
    from playwright.sync_api import expect

    url, store, ids = served_store
    with browser_page() as (page, errors):
        page.goto(url)
        expect(page.get_by_text("Structured-matrix workbench").first).to_be_visible(
            timeout=FIRST_RENDER_MS)

        # Default axes: accuracy against FLOPs; every seeded run is one point.
        points = page.locator(POINTS)
        expect(points).to_have_count(len(ids), timeout=FIRST_RENDER_MS)
        title = page.locator(".gtitle").first
        expect(title).to_contain_text("accuracy vs FLOPs")
        expect(page.locator(".legendtext")).to_have_count(3)  # dense, gmp, monarch
        # The table lists every run, the failed one included.
        for run_id in ids:
            expect(page.get_by_text(run_id).first).to_be_attached()

        # Switch quality to loss: same points, new axis title.
        page.locator("select:has(option:text-is('loss'))").select_option(label="loss")
        expect(title).to_contain_text("loss vs FLOPs")
        expect(points).to_have_count(len(ids))
        # Switch cost to latency: two runs have no latency, so they leave the plot.
        page.locator("select:has(option:text-is('latency (ms)'))").select_option(
            label="latency (ms)")
        expect(title).to_contain_text("loss vs latency (ms)")
        expect(points).to_have_count(len(ids) - 2)

        page.locator("select:has(option:text-is('latency (ms)'))").select_option(
            label="FLOPs per sample")
        page.locator("select:has(option:text-is('loss'))").select_option(label="accuracy")
        expect(title).to_contain_text("accuracy vs FLOPs")
        expect(points).to_have_count(len(ids))
        settled(points)  # Plotly done drawing before the picture
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # A run logged while the page is open appears after "Reload runs".
        new_id = RunStore(store).add(RunRecord(
            method="dense", model="mlp-256", dataset="mnist1d",
            metrics={"accuracy": 0.93, "loss": 0.25}, cost={"flops_per_sample": 4.2e6}))
        page.get_by_role("button", name="Reload runs").click()
        expect(points).to_have_count(len(ids) + 1)
        expect(page.locator(".tabulator-cell", has_text=new_id).first).to_be_attached()
        assert not errors, errors


def test_clicking_a_point_or_a_row_opens_the_run_detail(served_store):
    from playwright.sync_api import expect

    url, store, ids = served_store
    # Tall, so the screenshot shows the whole detail (the template scrolls inside).
    with browser_page(height=1800) as (page, errors):
        page.goto(url)
        points = page.locator(POINTS)
        expect(points.first).to_be_visible(timeout=FIRST_RENDER_MS)

        # A click on a point (Plotly listens on its drag layer, so click by position, once the
        # plot has stopped moving; again if a late redraw moved the point under the click).
        header = page.locator("h2:has-text('Run ')")

        def click_point():
            if points.count():  # still on the Runs tab: the last click did not open a run
                settled(points)
                box = points.first.bounding_box()
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        until(click_point, lambda ms: expect(header).to_be_visible(timeout=ms))
        assert header.locator("code").inner_text() in ids

        # A row of the runs table: the Monarch run with a checkpoint and a notebook (the tab
        # is rendered afresh, and a click on a row that Tabulator is rebuilding is lost).
        page.locator(".bk-tab", has_text="Runs").click()
        expect(header).to_be_hidden()

        def opened(ms):
            expect(header).to_be_visible(timeout=ms)
            expect(header.locator("code")).to_have_text(ids[WITH_ARTIFACTS], timeout=ms)
        until(lambda: page.locator(".tabulator-row", has_text=ids[WITH_ARTIFACTS]).first.click(
            timeout=5_000), opened)
        layer = page.locator("select:has(option:has-text('Monarch 64×32, nblocks=4'))")
        expect(layer).to_be_visible()
        figures = page.locator(".js-plotly-plot")
        expect(figures).to_have_count(4)  # factors, weight, spectra, P1
        settled(page.locator(".js-plotly-plot .main-svg"))  # the figures drawn before the picture
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "run_detail.png"), full_page=True)

        page.locator(".bk-tab", has_text="Output notebook").click()
        notebook = page.frame_locator("iframe[title='output notebook']")
        expect(notebook.get_by_text("Monarch on mnist1d")).to_be_visible()
        expect(notebook.locator(".js-plotly-plot .point")).to_have_count(2)  # the bars
        assert not errors, errors


def box_select_all(page) -> None:
    """Drag a selection box over the whole Pareto plot area (its drag layer), once the plot has
    stopped moving."""
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    settled(drag)
    box = drag.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=8)
    page.mouse.up()


def test_filter_select_export_compare_and_baseline(served_store):
    import csv

    from playwright.sync_api import expect

    url, store, ids = served_store
    monarch = [i for i, run in zip(ids, TEST_RUNS) if run[0] == "monarch"]
    with browser_page(height=1400) as (page, errors):
        page.goto(url)
        points = page.locator(POINTS)
        expect(points.first).to_be_visible(timeout=FIRST_RENDER_MS)

        # Filter to one method: the plot, the URL and the export button follow.
        choices = page.locator(".choices").first  # the method filter
        choices.click()
        page.keyboard.type("monarch")
        option = choices.locator(".choices__item--choice:not(.is-selected)",
                                 has_text="monarch").first
        expect(option).to_be_visible()  # typing filtered the list: pick it
        option.click()
        page.keyboard.press("Escape")
        expect(points).to_have_count(len(monarch))
        expect(page.get_by_role("button", name=f"Export {len(monarch)} filtered runs (CSV)")
               ).to_be_visible()
        # The URL follows the view asynchronously (Panel syncs location after the render).
        page.wait_for_function("() => location.search.includes('method=monarch')")

        # A box over the plot selects its runs: the table ticks them, the axes show them (the
        # same box again if a redraw swallowed the drag).
        selected_rows = page.locator(".tabulator-row.tabulator-selected")
        until(lambda: box_select_all(page),
              lambda ms: expect(selected_rows).to_have_count(len(monarch), timeout=ms))
        expect(page.get_by_text(f"{len(monarch)} selected").first).to_be_visible()
        expect(page.locator(".gtitle", has_text="Parallel coordinates")).to_contain_text(
            f"{len(monarch)} selected")
        page.wait_for_function("ids => ids.every(i => location.search.includes(i))", arg=monarch)

        # Untick one row: the export has exactly the remaining runs.
        row = page.locator(".tabulator-row", has_text=monarch[0])

        def untick():
            if "tabulator-selected" in (row.get_attribute("class") or ""):
                row.locator("input[type=checkbox]").click(timeout=5_000)
        until(untick, lambda ms: expect(selected_rows).to_have_count(len(monarch) - 1,
                                                                     timeout=ms))
        with page.expect_download() as download:
            page.get_by_role("button", name=f"Export {len(monarch) - 1} selected runs").click()
        with open(download.value.path(), newline="") as f:
            exported = sorted(r["run_id"] for r in csv.DictReader(f))
        assert exported == sorted(monarch[1:])
        assert download.value.suggested_filename.startswith(f"runs-selected-{len(monarch) - 1}")

        # Compare the selected runs side by side: the parameter that differs is shown.
        page.get_by_role("button", name="Compare selected").click()
        compare = page.locator("table", has_text="Comparing").or_(page.locator("table").filter(
            has_text=monarch[1]))
        expect(compare.first).to_contain_text(monarch[2])
        expect(compare.first).to_contain_text("nblocks")

        # A row click opens the run, with what differs from a baseline run.
        page.locator(".bk-tab", has_text="Runs").first.click()
        header = page.locator("h2:has-text('Run ') code")
        until(lambda: page.locator(".tabulator-row", has_text=monarch[1]).locator(
                  ".tabulator-cell[tabulator-field=method]").click(timeout=5_000),
              lambda ms: expect(header).to_have_text(monarch[1], timeout=ms))
        diff = page.locator("table", has_text="baseline")
        expect(diff).to_contain_text("nblocks")
        assert not errors, errors


# Every change of the address bar (Panel's Location uses pushState), with the URL it set.
RECORD_URL_CHANGES = """(() => {
    window.__urlChanges = [];
    for (const name of ["pushState", "replaceState"]) {
        const original = history[name].bind(history);
        history[name] = (...args) => {
            const result = original(...args);
            window.__urlChanges.push(location.href);
            return result;
        };
    }
})()"""


def test_deep_link_round_trip(served_store):
    from playwright.sync_api import expect

    url, store, ids = served_store
    chosen = [ids[1], ids[4]]  # gmp 0.5 and monarch 16, both with a latency
    link = f"{url}?x=latency_ms&y=loss&logx=1&method=gmp,monarch&runs={','.join(chosen)}"
    with browser_page() as (page, errors):
        page.add_init_script(RECORD_URL_CHANGES)
        # The same view spelled otherwise (full column names, another order) is rewritten to
        # the canonical link once the page has loaded.
        page.goto(f"{url}?runs={','.join(chosen)}&method=gmp,monarch&logx=1&y=metric.loss"
                  "&x=cost.latency_ms")
        page.wait_for_function("link => location.href === link", arg=link,
                               timeout=FIRST_RENDER_MS)

        page.goto(link)
        expect(page.locator(".gtitle").first).to_contain_text("loss vs latency (ms)",
                                                              timeout=FIRST_RENDER_MS)
        with_latency = [i for i, run in zip(ids, TEST_RUNS)
                        if run[0] in ("gmp", "monarch") and run[5] is not None]
        expect(page.locator(POINTS)).to_have_count(len(with_latency))
        expect(page.locator("select:has(option:text-is('loss'))")).to_have_value("loss")
        expect(page.locator(".choices__item--selectable", has_text="gmp")).to_be_visible()
        expect(page.locator(".choices__item--selectable", has_text="monarch")).to_be_visible()
        page.wait_for_function("gd => gd._fullLayout?.xaxis?.type === 'log'",
                               arg=page.locator(".js-plotly-plot").first.element_handle())
        expect(page.locator(".tabulator-row.tabulator-selected")).to_have_count(2)

        # Changing the view rewrites the link: the default quality leaves the query.
        page.locator("select:has(option:text-is('loss'))").select_option(label="accuracy")
        expect(page.locator(".gtitle").first).to_contain_text("accuracy vs latency (ms)")
        page.wait_for_function("() => window.__urlChanges.length > 0")
        # The load's sync came before this change's: the canonical link was left as it was,
        # and the one rewrite is the change.
        (changed,) = page.evaluate("window.__urlChanges")
        assert changed == link.replace("&y=loss", "")
        assert page.evaluate("location.href") == changed
        assert not errors, errors
