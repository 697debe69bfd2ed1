"""The workbench dashboard as a Panel script: ``panel serve apps/dashboard.py``.

The run store comes from the ``WORKBENCH_STORE`` environment variable (a path or an SQLAlchemy
URL), else the default store. ``workbench serve`` starts the same app.
"""
import os

import panel as pn

from workbench.app.dashboard import create_app

if pn.state.served:
    create_app(os.environ.get("WORKBENCH_STORE") or None).servable()
