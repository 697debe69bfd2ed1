"""PNG / SVG export of inspector figures through kaleido (which drives Chromium)."""
import shutil

import plotly.graph_objects as go
import pytest
import torch

from workbench.analysis.masks import magnitude_mask
from workbench.viz import export_figure
from workbench.viz.masks import mask_heatmap


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("google-chrome")),
                    reason="kaleido needs Chrome or Chromium (make test installs Debian's)")
def test_png_and_svg_export(tmp_path):
    fig = mask_heatmap(magnitude_mask(torch.randn(256, 256), 0.5))
    written = export_figure(fig, tmp_path / "mask.png") + export_figure(fig, tmp_path / "m.svg")
    assert [p.suffix for p in written] == [".html", ".png", ".html", ".svg"]
    assert (tmp_path / "mask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "m.svg").read_bytes()[:2000]


def test_export_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError):
        export_figure({"data": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="must end in"):
        export_figure(go.Figure(), tmp_path / "x.gif")
