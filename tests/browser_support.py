"""What the browser tests share: a dashboard server in a subprocess on a free port, and a page of
Debian's headless Chromium, with waits that hold on a loaded 2-core machine (CI).

A test waits for a condition, never for a fixed time: ``expect(...)`` retries until its
condition holds, ``page.wait_for_function`` for what the page holds (the URL follows the view
asynchronously), and ``until`` repeats an idempotent action whose effect a re-render can swallow
(a click on a table row that Tabulator is rebuilding, a drag over a plot that Plotly is redrawing).
"""
from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# On a loaded 2-core machine a server round trip (a filter, a run detail with its spectra) can
# take well over Playwright's default 5 s for an expectation.
EXPECT_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 60_000  # clicks, navigation, wait_for_function (Playwright's default: 30 s)
FIRST_RENDER_MS = 90_000  # a fresh page: Bokeh's and Panel's scripts, the session, the plots
SERVER_START_S = 180  # importing torch and Panel, and a warm-up session, on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself has a socket listening on ``port`` (not some other
    process that took the port first)."""
    try:
        proc = psutil.Process(pid)
        conns = (proc.net_connections("tcp") if hasattr(proc, "net_connections")
                 else proc.connections("tcp"))
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def answers(port: int) -> bool:
    """Whether the server at ``port`` answers a request (a cheap one: no session is made)."""
    try:
        conn = http.client.HTTPConnection("localhost", port, timeout=20)
        conn.request("GET", "/static/nothing")
        conn.getresponse().read()
        return True
    except OSError:
        return False


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def start_server(command: Callable[[int], list[str]], log: Path, attempts: int = 5,
                 **popen) -> tuple[subprocess.Popen, int]:
    """``(process, port)``: ``command(port)`` started on a free port, once that process listens
    there and answers. A port taken by another process between ``free_port`` and the server's
    bind (other jobs share the machine) means another try on another port; any other early exit,
    or no answer within ``SERVER_START_S``, fails the test with the server's log."""
    for _ in range(attempts):
        port = free_port()
        with log.open("w") as out:
            server = subprocess.Popen(command(port), stdout=out, stderr=subprocess.STDOUT, **popen)
        deadline = time.monotonic() + SERVER_START_S
        while server.poll() is None and time.monotonic() < deadline:
            if listens(server.pid, port) and answers(port):
                return server, port
            time.sleep(0.25)
        if server.poll() is None:
            stop(server)
            pytest.fail(f"the dashboard server did not answer on port {port} within "
                        f"{SERVER_START_S} s:\n{log.read_text()}")
        if "Address already in use" not in log.read_text():
            pytest.fail(f"the dashboard server exited ({server.returncode}):\n{log.read_text()}")
    pytest.fail(f"no free port after {attempts} tries:\n{log.read_text()}")


def until(action: Callable[[], None], check: Callable[[int], None],
          timeout_ms: int = ACTION_TIMEOUT_MS, attempt_ms: int = 10_000) -> None:
    """Do ``action`` until ``check(timeout_ms)`` (an ``expect``) passes. For idempotent actions
    whose effect a re-render can swallow; an action that times out (its target went away, e.g.
    because the first try did work after all) is followed by the check all the same."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        with contextlib.suppress(PlaywrightTimeout):
            action()
        try:
            check(attempt_ms)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def upstream_race(exc) -> bool:
    """Tabulator 6.4 (bundled by Panel) sometimes raises "Cannot read properties of null
    (reading 'firstChild')" in ``setColumns`` when a column update reaches a table that is
    rebuilding (about 1 in 10 reloads here); the table then renders the new data all the same,
    which the tests check. Only that error, from that function, is let through."""
    stack = exc.stack or ""
    return "reading 'firstChild'" in str(exc) and "setColumns" in stack and "tabulator" in stack


@contextlib.contextmanager
def browser_page(height: int = 1000):
    """A headless Chromium page (1400 px wide) and the list its page errors are added to;
    expectations and actions wait as long as a loaded machine needs."""
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.set_default_timeout(ACTION_TIMEOUT_MS)
            errors = []
            page.on("pageerror", lambda exc: None if upstream_race(exc) else errors.append(
                str(exc) + (exc.stack or "")[:1500]))
            yield page, errors
        finally:
            browser.close()


def settled(locator, polls: int = 3, timeout_ms: int = ACTION_TIMEOUT_MS) -> None:
    """Wait until the elements of ``locator`` exist and have kept their boxes for ``polls``
    polls in a row, 100 ms apart (a plot done redrawing), e.g. before clicking one by position.
    (Polled from here: Playwright's locators reach into Bokeh's shadow roots, page scripts'
    ``querySelector`` does not.)"""
    boxes_of = "els => els.map(e => { const r = e.getBoundingClientRect(); " \
               "return [r.x, r.y, r.width, r.height]; })"
    deadline = time.monotonic() + timeout_ms / 1000
    last, same = None, 0
    while same < polls:
        if time.monotonic() > deadline:
            raise AssertionError(f"{locator} did not stop moving within {timeout_ms} ms")
        boxes = locator.evaluate_all(boxes_of)
        same = same + 1 if boxes and boxes == last else 0
        last = boxes
        locator.page.wait_for_timeout(100)
