"""The Panel dashboard: runs explorer, Pareto fronts and run detail over the run store.

``create_app(store)`` builds one session's app; ``serve(store, address, port)`` serves it;
``pareto_figure`` and ``pareto_front`` also work on their own in a notebook.
"""
from .data import cost_columns, load_runs, pareto_front, quality_columns
from .pareto import pareto_figure

__all__ = ["cost_columns", "load_runs", "pareto_front", "pareto_figure", "quality_columns",
           "create_app", "serve"]


def create_app(store=None):
    """Build a fresh dashboard template (imported lazily: it pulls in Panel)."""
    from .dashboard import create_app as _create_app
    return _create_app(store)


def serve(store=None, **kwargs):
    """Serve the dashboard, blocking (see ``workbench.app.serve.serve``)."""
    from .serve import serve as _serve
    return _serve(store, **kwargs)
