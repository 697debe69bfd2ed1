"""Every plan of the fast Monarch path through Triton's interpreter (CPU, float32), against
the plain path in float64: the kernels' indexing checked without a GPU. Runs where Triton is
installed (the GPU machine; locally `pip install triton`), in a subprocess because
TRITON_INTERPRET must be set before Triton is imported."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
if torch.cuda.is_available():  # there the GPU tests run the compiled kernels themselves
    pytest.skip("the interpreter check is for machines without a GPU", allow_module_level=True)

CHECK = r"""
import torch
from workbench.structures import MonarchLinear, monarch_multiply
from workbench.structures.monarch_kernels import fast_backward, fast_forward
torch.manual_seed(0)
worst = 0.0
for i, o, b in [(128, 128, 2), (96, 64, 4), (256, 256, 16),   # foldable, padded, runs of 1
                (90, 70, 6), (273, 273, 3)]:                   # odd blocks: the padded plan
    layer = MonarchLinear(i, o, b, bias=False)
    x, dy = torch.randn(33, layer.in_ext), torch.randn(33, layer.out_ext)
    w1, w2 = layer.w1.detach(), layer.w2.detach()
    ref = [t.double().requires_grad_(True) for t in (x, w1, w2)]
    y_ref = monarch_multiply(*ref, layer.out_ext)
    want = (y_ref,) + torch.autograd.grad(y_ref, ref, dy.double())
    for ov in ({}, {"stage1": "triton"}, {"stage2": "triton"}, {"copies": "torch"},
               {"stage1": "triton", "stage2": "triton", "copies": "torch"},
               {"fold": True}, {"fold": True, "stage2": "triton"},
               {"fold": True, "stage1": "cublas"}, {"fold": True, "copies": "torch"},
               {"fold": True, "stage2": "triton", "copies": "torch"}, {"pad": True},
               {"copies": "triton"}, {"fold": True, "copies": "triton"}):
        y, saved, info = fast_forward(x, w1, w2, "triton", ov)
        got = (y,) + fast_backward(info, saved, dy)
        for g, w in zip(got, want):
            worst = max(worst, float((g.double() - w.detach()).norm() / w.detach().norm()))
for i, o, b in [(90, 70, 6), (273, 270, 3)]:   # the padded plan on unpadded x, y cut to o
    layer = MonarchLinear(i, o, b, bias=False)
    x, dy = torch.randn(33, i), torch.randn(33, o)
    w1, w2 = layer.w1.detach(), layer.w2.detach()
    ref = [t.double().requires_grad_(True) for t in (x, w1, w2)]
    y_ref = monarch_multiply(*ref, o)
    want = (y_ref,) + torch.autograd.grad(y_ref, ref, dy.double())
    y, saved, info = fast_forward(x, w1, w2, "triton", {"pad": True}, out_features=o)
    got = (y,) + fast_backward(info, saved, dy)
    for g, w in zip(got, want):
        worst = max(worst, float((g.double() - w.detach()).norm() / w.detach().norm()))
print(worst)
"""


def test_every_plan_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5


PURIFY_CHECK = r"""
import torch
from workbench.structures.purification import top_projector
torch.manual_seed(0)
y = torch.randn(3, 60, 24, dtype=torch.float64)
g = y.mT @ y
worst = 0.0
for k in (1, 5, 12):
    vec = torch.linalg.eigh(g).eigenvectors[..., -k:]
    want = vec @ vec.mT
    for fused in (True, False):
        worst = max(worst, float((top_projector(g, k, fused=fused) - want).abs().max()))
print(worst)
"""


def test_fused_purification_step_in_the_triton_interpreter():
    """The one-kernel purification step (purify_triton) against eigh's projector, float64."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", PURIFY_CHECK], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-12
