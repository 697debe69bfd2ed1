"""Attention drill-down for the run detail: click a head in the layers × heads grid to open its
token view (per browser session: the state lives in this object, built per page)."""
from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from workbench.analysis.attention import AttentionMaps
from workbench.viz.attention import attention_grid, attention_heatmap


def clicked_head(click_data: dict | None, grid) -> tuple[int, int] | None:
    """(layer, head) of the grid cell in Plotly ``click_data``, from the trace's meta."""
    points = (click_data or {}).get("points") or []
    if not points or "curveNumber" not in points[0]:
        return None
    trace = grid.data[points[0]["curveNumber"]]
    meta = trace.meta or {}
    return (int(meta["layer"]), int(meta["head"])) if "layer" in meta else None


class AttentionExplorer(Viewer):
    """The grid of one run's attention maps beside the token view of the clicked head."""

    layer = param.Integer(doc="Layer of the head in the token view")
    head = param.Integer(doc="Head in the token view")

    def __init__(self, maps: AttentionMaps, **params):
        super().__init__(layer=maps.layers[0], head=maps.heads[0], **params)
        self.maps = maps
        self.grid = attention_grid(maps)
        self._grid_pane = pn.pane.Plotly(self.grid, sizing_mode="stretch_width",
                                         config={"displaylogo": False})
        self._grid_pane.param.watch(self._on_click, "click_data")

    def _on_click(self, event) -> None:
        picked = clicked_head(event.new, self.grid)
        if picked is not None:
            self.layer, self.head = picked

    @param.depends("layer", "head")
    def token_view(self):
        return pn.pane.Plotly(attention_heatmap(self.maps, self.layer, self.head),
                              sizing_mode="stretch_width", config={"displaylogo": False})

    def __panel__(self):
        hint = pn.pane.Markdown("Click a head in the grid to open its token view.",
                                styles={"color": "#555"})
        return pn.Column(hint, pn.Row(self._grid_pane, self.token_view,
                                      sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
