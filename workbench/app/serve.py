"""Serve the dashboard: ``serve(store, address, port)`` blocks until interrupted.

``address="0.0.0.0"`` serves the team: the page is then reachable under any host name, so the
websocket origin check is opened up (pass ``websocket_origin=[...]`` to restrict it, and
``basic_auth=...`` to require a password).
"""
from __future__ import annotations

import panel as pn

from workbench.runs.store import resolve_store_url

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def websocket_origins(address: str, port: int) -> list[str]:
    """The origins a browser may open the app's websocket from."""
    if address in WILDCARD_ADDRESSES:
        return ["*"]
    origins = [f"{address}:{port}"]
    if address in ("localhost", "127.0.0.1"):
        origins += [f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(origins))


def serve(store=None, address: str = "localhost", port: int = 5006, show: bool = False,
          **kwargs):
    """Serve ``create_app(store)`` (a fresh app per session) at ``http://address:port/``.

    Extra keyword arguments go to ``pn.serve`` (e.g. ``basic_auth``, ``num_procs``, ``admin``).
    """
    from .dashboard import TITLE, create_app

    url = resolve_store_url(store)  # resolve once, so every session reads the same store
    kwargs.setdefault("websocket_origin", websocket_origins(address, port))
    print(f"workbench dashboard: http://{address or '0.0.0.0'}:{port}/  (store {url})",
          flush=True)
    return pn.serve({"/": lambda: create_app(url)}, address=address, port=port, show=show,
                    title=TITLE, threaded=False, **kwargs)
