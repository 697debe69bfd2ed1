"""Serving the dashboard to a team: password file, cookie secret, refusals, and two real servers
(two processes behind a password; an empty store) checked over HTTP and in headless Chromium."""
import http.client
import re
import sqlite3
import subprocess
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest

from browser_support import FIRST_RENDER_MS, browser_page, free_port, start_server, stop
from conftest import cli_env, workbench_cmd
from workbench.app.serve import (ServeError, hash_password, load_auth_file, resolve_cookie_secret,
                                 serve, set_password, verify_password)
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore

PASSWORD = "correct horse battery"
SECRET_MARKER = "WORKBENCH-TEST-SECRET"


# ---- passwords and the password file ------------------------------------------------------------
def test_hashed_and_plain_passwords_verify():
    entry = hash_password(PASSWORD)
    assert entry.startswith("pbkdf2_sha256$") and PASSWORD not in entry
    assert verify_password(PASSWORD, entry)
    assert not verify_password(PASSWORD + "!", entry) and not verify_password("", entry)
    assert hash_password(PASSWORD) != entry  # salted
    assert verify_password("plain", "plain") and not verify_password("Plain", "plain")


def test_set_password_writes_a_private_file_of_hashes(tmp_path):
    path = tmp_path / "users.json"
    set_password(path, "alice", "a-pass")
    set_password(path, "bob", "b-pass")
    set_password(path, "alice", "new-pass")
    users = load_auth_file(path)
    assert sorted(users) == ["alice", "bob"]
    assert verify_password("new-pass", users["alice"]) and not verify_password("a-pass",
                                                                              users["alice"])
    assert verify_password("b-pass", users["bob"])
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content, problem", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('["alice", "pw"]', "non-empty JSON object"),
    ("{}", "non-empty JSON object"),
    ('{"alice": 123}', "'alice' needs"),
    ('{"alice": ""}', "'alice' needs"),
    ('{"alice": "pbkdf2_sha256$x$salt$beef"}', "'alice' is malformed"),
])
def test_bad_password_files_are_refused_naming_the_problem(tmp_path, content, problem):
    path = tmp_path / "users.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ServeError, match=re.escape(problem)) as info:
        load_auth_file(path)
    assert str(path) in str(info.value)


def test_serve_refuses_before_serving(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        serve(tmp_path / "runs.sqlite", basic_auth=tmp_path / "missing.json", port=free_port())
    with pytest.raises(ServeError, match="in-memory"):
        serve("sqlite://", port=free_port())


def test_cli_names_a_missing_auth_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    result = subprocess.run(workbench_cmd("serve", "--basic-auth", str(missing)),
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 2
    assert f"basic-auth file {missing} does not exist" in result.stderr


# ---- cookie secret ------------------------------------------------------------------------------
def test_cookie_secret_is_generated_once_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_COOKIE_SECRET", raising=False)
    monkeypatch.setattr("panel.config.cookie_secret", None)
    url = f"sqlite:///{tmp_path}/runs.sqlite"
    secret = resolve_cookie_secret(url)
    path = tmp_path / "cookie_secret"
    assert len(secret) >= 32 and path.read_text() == secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert resolve_cookie_secret(url) == secret  # kept, so every process and restart agrees
    monkeypatch.setenv("WORKBENCH_COOKIE_SECRET", "from-the-environment-0123")
    assert resolve_cookie_secret(url) == "from-the-environment-0123"
    assert resolve_cookie_secret(url, "given-on-the-command-line") == "given-on-the-command-line"
    with pytest.raises(ServeError, match="too short"):
        resolve_cookie_secret(url, "short")


# ---- a team server: two processes behind a password --------------------------------------------
def start(args: list[str], tmp_path: Path, store: Path) -> tuple[subprocess.Popen, int, Path]:
    """``workbench --store STORE serve --port PORT ARGS`` on a free port, once it answers."""
    log = tmp_path / "server.log"
    server, port = start_server(
        lambda port: workbench_cmd("--store", str(store), "serve", "--port", str(port), *args),
        log, env=cli_env(WORKBENCH_STORE=str(store)))
    return server, port, log


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def workers(pid: int) -> list[int]:
    """The processes forked by ``pid``."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """(port, server process, run ids): ``workbench serve --num-procs 2 --basic-auth FILE`` over
    a store with two runs and one corrupt record."""
    tmp = tmp_path_factory.mktemp("team")
    store = tmp / "runs.sqlite"
    runs = RunStore(store)
    ids = [runs.add(RunRecord(method=m, model="mlp-256", dataset="mnist1d",
                              metrics={"accuracy": acc}, cost={"flops_per_sample": flops}))
           for m, acc, flops in (("dense", 0.91, 2.1e6), ("monarch", 0.89, 6.6e5))]
    runs.engine.dispose()
    with sqlite3.connect(store) as conn:
        conn.execute("INSERT INTO runs (run_id, created_at, status, method, schema_version, body)"
                     " VALUES ('brokenbody01', '2026-01-09', 'ok', 'gmp', 1, '{not json')")
    set_password(tmp / "users.json", "alice", PASSWORD)
    server, port, log = start(["--num-procs", "2", "--basic-auth", str(tmp / "users.json")],
                              tmp, store)
    try:
        deadline = time.monotonic() + 60  # one worker answering does not mean both are forked
        while len(workers(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield port, server, ids
    finally:
        forked = workers(server.pid)
        stop(server)
        # The workers notice their parent has gone within a second, then exit (which takes a
        # while on a loaded machine); an exited worker may linger as a zombie until reaped.
        deadline = time.monotonic() + 60
        while any(running(pid) for pid in forked):
            if time.monotonic() > deadline:
                for pid in forked:
                    subprocess.run(["kill", str(pid)])
                pytest.fail(f"workers {forked} kept serving after the server was stopped")
            time.sleep(0.2)


def request(port: int, method: str, path: str, body: dict | None = None, cookie: str = ""):
    """One request on a fresh connection (so the two workers share the requests)."""
    conn = http.client.HTTPConnection("localhost", port, timeout=30)
    headers = {"Cookie": cookie} if cookie else {}
    data = None
    if body is not None:
        data = urllib.parse.urlencode(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=data, headers=headers)
    reply = conn.getresponse()
    return reply.status, reply.getheader("Location") or "", reply.headers, reply.read().decode()


@pytest.mark.browser
def test_login_refuses_a_wrong_password_and_accepts_the_right_one(team_server):
    port, server, _ = team_server
    assert len(workers(server.pid)) == 2
    status, location, _, _ = request(port, "GET", "/")
    assert status == 302 and "login" in location
    for user, password in (("alice", "wrong"), ("mallory", PASSWORD), ("alice", "")):
        status, location, headers, _ = request(port, "POST", "/login",
                                               {"username": user, "password": password})
        assert status == 302 and "error=" in location
        assert not any(c.startswith("user=") for c in headers.get_all("Set-Cookie") or [])

    status, location, headers, _ = request(port, "POST", "/login",
                                           {"username": "alice", "password": PASSWORD})
    assert status == 302 and "error" not in location
    cookie = "; ".join(c.split(";")[0] for c in headers.get_all("Set-Cookie"))
    assert "user=" in cookie
    for _ in range(6):  # fresh connections: both workers honour the login cookie
        status, _, _, page = request(port, "GET", "/", cookie=cookie)
        assert status == 200 and "Structured-matrix workbench" in page
    status, _, _, _ = request(port, "GET", "/", cookie="user=alice")  # an unsigned cookie
    assert status == 302


@pytest.mark.browser
def test_browser_login_then_the_runs_and_the_corrupt_record(team_server):
    from playwright.sync_api import expect

    port, _, ids = team_server
    with browser_page() as (page, errors):
        page.goto(f"http://localhost:{port}/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "not the password")
        page.click("button[type=submit]")
        expect(page.locator(".errormessage")).to_contain_text("Invalid username or password")

        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator(".scatterlayer .trace .point, .gl-container")).not_to_have_count(
            0, timeout=FIRST_RENDER_MS)
        row = page.locator(".tabulator-row", has_text="brokenbody01")
        expect(row).to_contain_text("corrupt")
        for run_id in ids:
            expect(page.locator(".tabulator-row", has_text=run_id)).to_have_count(1)
        assert not errors, errors


# ---- an empty store: the empty state, and no file outside the artifacts whatever the URL -------
@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    """(port, secret file path): ``workbench serve`` over an empty store, with a secret file
    beside the store and one inside a run's artifacts folder."""
    tmp = tmp_path_factory.mktemp("empty")
    store = tmp / "store" / "runs.sqlite"
    store.parent.mkdir()
    (store.parent / "secret.txt").write_text(SECRET_MARKER)
    (store.parent / "artifacts" / "run1").mkdir(parents=True)
    (store.parent / "artifacts" / "run1" / "output.ipynb").write_text(SECRET_MARKER)
    server, port, log = start([], tmp, store)
    try:
        yield port, store.parent / "secret.txt", log
    finally:
        stop(server)


def traversal_paths(secret: Path) -> list[str]:
    up = "..%2f" * 12
    target = urllib.parse.quote(str(secret).lstrip("/"), safe="")
    paths = []
    for prefix in ("/", "/static/", "/static/extensions/panel/", "/static/extensions/",
                   "/components/", "/components/panel/Column/_css/", "/artifacts/", "/run1/"):
        paths += [f"{prefix}{up}etc/passwd", f"{prefix}{up}{target}",
                  f"{prefix}{'%2e%2e/' * 12}etc/passwd", f"{prefix}..%5c..%5c..%5cetc%5cpasswd",
                  f"{prefix}%2fetc%2fpasswd", f"{prefix}/{secret}"]
    return paths + ["/secret.txt", "/artifacts/run1/output.ipynb", "/run1/output.ipynb",
                    "/components/os/path/__file__/..%2f..%2fetc/passwd",
                    "/components/this/x/_css/a"]


@pytest.mark.browser
def test_no_file_outside_the_static_folders_whatever_the_url(empty_server):
    port, secret, log = empty_server
    for path in traversal_paths(secret):
        status, _, _, body = request(port, "GET", path)
        assert status in (403, 404), (path, status)
        assert SECRET_MARKER not in body and "root:x:0" not in body, path
    # A component URL may name any module; one not loaded yet is not imported (``this``
    # would print the Zen of Python into the server's log).
    assert "Beautiful is better than ugly" not in log.read_text()
    # The static routes still serve what they are for.
    assert request(port, "GET", "/components/panel.template.fast.list/FastListTemplate/_css/"
                               "fast_list_template.css")[0] == 200


@pytest.mark.browser
def test_empty_store_shows_how_to_add_runs(empty_server):
    from playwright.sync_api import expect

    port, _, _ = empty_server
    with browser_page() as (page, errors):
        page.goto(f"http://localhost:{port}/")
        expect(page.get_by_text("No runs in this store yet")).to_be_visible(
            timeout=FIRST_RENDER_MS)
        expect(page.get_by_text("workbench run notebooks/baseline.ipynb").first).to_be_visible()
        assert not errors, errors
