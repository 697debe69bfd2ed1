"""The filter widgets, generated from the filters the loaded runs allow (``RunsExplorer.specs``).

A choice filter is a ``MultiChoice`` of value labels (none chosen = no filter); a numeric
parameter with many values is an ``EditableRangeSlider``. Widgets are built only when the set
of filters changes (a reload that brings new parameters), never on a filter change; a filter
set from elsewhere (a deep link) moves its widget.
"""
from __future__ import annotations

import functools

import panel as pn
import param
from panel.viewable import Viewer

from .explorer import RunsExplorer
from .filters import IDENTITY_COLUMNS, FilterSpec

PLACEHOLDERS = {"method": "all methods", "model": "all models", "dataset": "all datasets",
                "device": "all devices", "status": "any status"}


class FilterPanel(Viewer):
    """Run identity filters (method, model, dataset, device, status), then a card with one
    filter per parameter that varies."""

    explorer = param.ClassSelector(class_=RunsExplorer)

    def __init__(self, **params):
        super().__init__(**params)
        self._widgets: dict[str, pn.widgets.Widget] = {}
        self._syncing = False
        self._identity = pn.Column(sizing_mode="stretch_width", margin=0)
        self._params = pn.Column(sizing_mode="stretch_width", margin=0)
        self._card = pn.Card(self._params, title="Parameters", collapsed=True,
                             sizing_mode="stretch_width", margin=(5, 0))
        self.explorer.param.watch(lambda _: self._build(), ["specs"])
        self.explorer.param.watch(lambda _: self._show_filters(), ["filters"])
        self._build()

    def _widget(self, spec: FilterSpec):
        current = self.explorer.filters.get(spec.column)
        if spec.kind == "range":
            low, high = spec.bounds
            value = current if isinstance(current, tuple) else (low, high)
            widget = pn.widgets.EditableRangeSlider(
                label=spec.label, start=low, end=high, value=value, step=(high - low) / 100,
                sizing_mode="stretch_width")
        else:
            widget = pn.widgets.MultiChoice(
                label=spec.label, options=list(spec.options), value=list(current or []),
                placeholder=PLACEHOLDERS.get(spec.column, "any value"),
                sizing_mode="stretch_width", solid=False)
        widget.param.watch(functools.partial(self._on_change, spec), "value")
        return widget

    def _build(self) -> None:
        specs = self.explorer.specs
        self._widgets = {s.column: self._widget(s) for s in specs}
        self._identity.objects = [w for c, w in self._widgets.items() if c in IDENTITY_COLUMNS]
        params = [w for c, w in self._widgets.items() if c not in IDENTITY_COLUMNS]
        self._params.objects = params
        self._card.title = f"Parameters ({len(params)})"
        self._card.visible = bool(params)

    def _on_change(self, spec: FilterSpec, event) -> None:
        if self._syncing:
            return
        value = event.new
        if spec.kind == "range":
            value = tuple(float(v) for v in value)
            if value[0] <= spec.bounds[0] and value[1] >= spec.bounds[1]:
                value = None  # the whole range: no filter
        self.explorer.set_filter(spec.column, value)

    def _show_filters(self) -> None:
        """Move the widgets to the explorer's filters (e.g. after a deep link was applied)."""
        filters = self.explorer.filters
        self._syncing = True
        try:
            for column, widget in self._widgets.items():
                current = filters.get(column)
                if isinstance(widget, pn.widgets.EditableRangeSlider):
                    value = current if isinstance(current, tuple) else (widget.start, widget.end)
                else:
                    value = list(current or [])
                if widget.value != value:
                    widget.value = value
        finally:
            self._syncing = False
        if any(c not in IDENTITY_COLUMNS for c in filters):
            self._card.collapsed = False

    def __panel__(self):
        return pn.Column(self._identity, self._card, sizing_mode="stretch_width", margin=0)
