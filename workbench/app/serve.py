"""Serve the dashboard to a team: address, port, a password file, several processes.

``serve(store, address, port, basic_auth=FILE, num_procs=N)`` blocks until interrupted. The
password file is JSON, ``{"user": "pbkdf2_sha256$..."}`` (``workbench passwd FILE USER`` writes
hashed entries; plain-text passwords are accepted with a warning). It is checked before the
server starts and re-read at every login, so adding or removing a user needs no restart.

Login cookies are signed with a cookie secret: ``cookie_secret=``, else ``WORKBENCH_COOKIE_SECRET``
(or Panel's ``PANEL_COOKIE_SECRET``), else one generated once and kept in ``cookie_secret`` beside
a SQLite store (``~/.workbench/cookie_secret`` for other databases). Every process of a
``num_procs`` server uses the same secret, so a login made in one is honoured by the others.

The server exposes no route to the store's files: artifacts reach the page only through the
run detail, which opens them with ``RunStore.artifact`` (refusing paths outside the artifacts
folder). The remaining file routes are Bokeh's and Panel's static folders, which refuse paths
outside their roots, and Panel's component resources, restricted here to modules already loaded.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
from pathlib import Path

import panel as pn
import sqlalchemy as sa
from panel.auth import BasicAuthProvider, BasicLoginHandler
from panel.io.server import COMPONENT_PATH, ComponentResourceHandler
from tornado.web import HTTPError

from workbench.runs.store import resolve_store_url

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
COOKIE_SECRET_ENV = "WORKBENCH_COOKIE_SECRET"
COOKIE_SECRET_FILE = "cookie_secret"
MIN_SECRET_LENGTH = 16
HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 200_000  # about 0.1 s per login on one core


class ServeError(ValueError):
    """The dashboard cannot be served as asked (bad password file, secret, store, option)."""


# ---- passwords ---------------------------------------------------------------------------------
def hash_password(password: str, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hex digest>`` for a password file entry."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{HASH_SCHEME}${iterations}${salt}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a password file entry (hashed or plain), in constant time."""
    if stored.startswith(HASH_SCHEME + "$"):
        _, iterations, salt, _digest = stored.split("$")
        return hmac.compare_digest(hash_password(password, int(iterations), salt), stored)
    return hmac.compare_digest(password.encode(), stored.encode())


def load_auth_file(path: str | os.PathLike) -> dict[str, str]:
    """The users and password entries of a password file; ``ServeError`` naming the file and
    the problem when it is missing, unreadable, not JSON or not ``{"user": "password"}``."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServeError(f"basic-auth file {path} does not exist (create it with "
                         f"`workbench passwd {path} USER`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"basic-auth file {path} cannot be read: {exc}") from None
    try:
        users = json.loads(text)
    except ValueError as exc:
        raise ServeError(f"basic-auth file {path} is not valid JSON ({exc}); expected "
                         '{"user": "password", ...}') from None
    if not isinstance(users, dict) or not users:
        raise ServeError(f"basic-auth file {path} must hold a non-empty JSON object "
                         '{"user": "password", ...}')
    for user, entry in users.items():
        if not user.strip() or not isinstance(entry, str) or not entry:
            raise ServeError(f"basic-auth file {path}: user {user!r} needs a non-empty user "
                             "name and a password string")
        if entry.startswith(HASH_SCHEME + "$") and not _valid_hash(entry):
            raise ServeError(f"basic-auth file {path}: the hashed password of user {user!r} is "
                             f"malformed (expected {HASH_SCHEME}$ITERATIONS$SALT$HEX)")
    return users


def _valid_hash(entry: str) -> bool:
    parts = entry.split("$")
    return (len(parts) == 4 and parts[1].isdigit() and int(parts[1]) > 0 and bool(parts[2])
            and len(parts[3]) == 64 and all(c in "0123456789abcdef" for c in parts[3]))


def auth_file_warnings(path: str | os.PathLike, users: dict[str, str]) -> list[str]:
    """What is unsafe about a valid password file: plain-text entries, loose permissions."""
    notes = []
    plain = sorted(u for u, e in users.items() if not e.startswith(HASH_SCHEME + "$"))
    if plain:
        notes.append(f"{path}: password(s) of {', '.join(plain)} are stored in plain text; "
                     f"`workbench passwd {path} USER` stores a hash instead")
    mode = Path(path).expanduser().stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        notes.append(f"{path} is readable by other users; consider `chmod 600 {path}`")
    return notes


def set_password(path: str | os.PathLike, user: str, password: str) -> None:
    """Add ``user`` to the password file (creating it, mode 600) or change their password."""
    path = Path(path).expanduser()
    users = load_auth_file(path) if path.exists() else {}
    if not user.strip() or not password:
        raise ServeError("a user name and a non-empty password are needed")
    users[user] = hash_password(password)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(users, f, indent=2)
    os.replace(tmp, path)


class PasswordFileAuth(BasicAuthProvider):
    """Panel's login page, checking passwords against a (hashed) password file."""

    def __init__(self, path: str | os.PathLike, **kwargs):
        self.path = Path(path).expanduser()
        super().__init__(**kwargs)

    @property
    def login_handler(self):
        base = super().login_handler  # sets the endpoint and template on Panel's handler
        path = self.path

        class PasswordFileLoginHandler(base):
            def _validate(self, username, password):
                try:  # re-read, so edits to the file apply without a restart
                    users = load_auth_file(path)
                except ServeError as exc:
                    print(f"workbench dashboard: login refused: {exc}", file=sys.stderr)
                    return False
                stored = users.get(username)
                if stored is None:  # spend the same time as for a known user
                    verify_password(password, hash_password("", salt="unknown-user"))
                    return False
                return verify_password(password, stored)

        return PasswordFileLoginHandler


# ---- cookie secret, origins, static routes -------------------------------------------------------
def cookie_secret_path(store_url: str) -> Path:
    """Where a generated cookie secret is kept for this store."""
    url = sa.engine.make_url(store_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / COOKIE_SECRET_FILE
    return Path.home() / ".workbench" / COOKIE_SECRET_FILE


def resolve_cookie_secret(store_url: str, explicit: str | None = None) -> str:
    """The explicit secret, else ``WORKBENCH_COOKIE_SECRET`` / ``PANEL_COOKIE_SECRET``, else the
    store's secret file (generated with mode 600 the first time)."""
    secret = explicit or os.environ.get(COOKIE_SECRET_ENV) or pn.config.cookie_secret
    source = "the cookie secret"
    if not secret:
        path = cookie_secret_path(store_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        except FileExistsError:  # made earlier, or by a process starting beside this one
            pass
        secret, source = path.read_text().strip(), f"cookie secret file {path}"
    if len(secret) < MIN_SECRET_LENGTH:
        raise ServeError(f"{source} is too short ({len(secret)} characters; at least "
                         f"{MIN_SECRET_LENGTH} are needed)")
    return secret


def websocket_origins(address: str, port: int) -> list[str]:
    """The origins a browser may open the app's websocket from."""
    if address in WILDCARD_ADDRESSES:
        return ["*"]
    origins = [f"{address}:{port}"]
    if address in ("localhost", "127.0.0.1"):
        origins += [f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(origins))


class LoadedComponentResourceHandler(ComponentResourceHandler):
    """Panel's component resource route, but only for modules this server has already loaded
    (Panel's own imports any module the URL names before checking the resource)."""

    def parse_url_path(self, path: str) -> str:
        module = path.split("/", 1)[0]
        if "/" not in path or module not in sys.modules:
            raise HTTPError(404)
        return super().parse_url_path(path)


def is_memory_store(store_url: str) -> bool:
    url = sa.engine.make_url(store_url)
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


# ---- serve --------------------------------------------------------------------------------------
def serve(store=None, address: str = "localhost", port: int = 5006, show: bool = False,
          basic_auth: str | os.PathLike | None = None, num_procs: int = 1,
          cookie_secret: str | None = None, **kwargs):
    """Serve ``create_app(store)`` (a fresh app per session) at ``http://address:port/``.

    ``basic_auth``: a password file (see the module docstring); ``num_procs``: worker processes
    sharing the port (0: one per core). Extra keyword arguments go to ``pn.serve``.
    Raises ``ServeError`` naming the problem before anything is served.
    """
    url = resolve_store_url(store)  # resolve once, so every session reads the same store
    if is_memory_store(url):
        raise ServeError("an in-memory SQLite store cannot be served (every connection, and "
                         "every process, would see its own empty database); give a file path "
                         "or a database URL")
    if num_procs < 0:
        raise ServeError(f"--num-procs must be 0 (one per core) or more, not {num_procs}")
    if basic_auth is not None:
        users = load_auth_file(basic_auth)
        for note in auth_file_warnings(basic_auth, users):
            print(f"workbench dashboard: warning: {note}", file=sys.stderr)
        kwargs["auth_provider"] = PasswordFileAuth(basic_auth)
    elif address in WILDCARD_ADDRESSES:
        print("workbench dashboard: warning: serving without a password to every machine that "
              "can reach this port (see --basic-auth)", file=sys.stderr)
    if basic_auth is not None or cookie_secret:
        kwargs["cookie_secret"] = resolve_cookie_secret(url, cookie_secret)
    kwargs.setdefault("websocket_origin", websocket_origins(address, port))
    kwargs["extra_patterns"] = [(f"/{COMPONENT_PATH}(.*)", LoadedComponentResourceHandler, {}),
                                *kwargs.get("extra_patterns", [])]
    from .dashboard import TITLE, create_app
    # Build a throw-away session before serving, so the first visitor does not wait for imports,
    # Plotly's validators and the store. Bokeh refuses to fork once an app has made a session,
    # so several processes only build the dashboard (reading the store into every cache).
    if num_procs == 1:
        kwargs.setdefault("warm", True)
    else:
        create_app(url)
    print(f"workbench dashboard: http://{address or '0.0.0.0'}:{port}/  (store {url}"
          f"{', password login' if basic_auth else ''}"
          f"{f', {num_procs or os.cpu_count()} processes' if num_procs != 1 else ''})",
          flush=True)
    parent = os.getpid()
    # With num_procs != 1 only the forked workers return from pn.serve(start=False).
    server = pn.serve({"/": lambda: create_app(url)}, address=address, port=port, show=show,
                      title=TITLE, threaded=False, num_procs=num_procs, start=False, **kwargs)
    if os.getpid() != parent:
        stop_with_parent(server, parent)
    server.start()
    server.io_loop.start()
    return server


def stop_with_parent(server, parent: int, every_ms: int = 1000) -> None:
    """Stop a forked worker once the process that forked it has gone (Tornado's parent
    does not pass a SIGTERM on, and its workers would keep serving the port)."""
    from tornado.ioloop import PeriodicCallback

    def check():
        if os.getppid() != parent:
            server.io_loop.stop()
    PeriodicCallback(check, every_ms).start()
