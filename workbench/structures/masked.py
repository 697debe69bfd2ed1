"""Masked linear layers: the one mask machinery every sparsity method shares.

:class:`MaskedLinear` holds a dense ``weight`` (out, in) and a bool buffer ``weight_mask``
(out, in), True = kept, and multiplies by ``weight * weight_mask``. The mask holds through
training: setting a mask zeroes the dropped weights in place, and since forward multiplies by the
mask their gradients are exactly zero, so neither the optimizer's momentum nor weight decay moves
them. A mask changed mid-training would leave stale optimizer state behind: :class:`Sparsifier`
zeroes the optimizer's per-weight state (AdamW's ``exp_avg`` / ``exp_avg_sq``, SGD's momentum)
wherever a mask changed or a weight restarted, and re-zeroes the dropped weights after every
step. The mask is a buffer, so ``state_dict`` round-trips it and the mask inspectors
(``workbench.analysis.masks``) read it.

Training hook: a method whose masks change while training (GMP, dynamic sparse) returns a
:class:`MaskReport` whose ``sparsifier`` is a :class:`Sparsifier`; pass its ``step`` to
``workbench.train.train(..., on_step=report.sparsifier.step)``, which calls it after every
optimizer step as ``step(t, optimizer)`` (``t`` 1-based), while that step's gradients are still
in ``.grad``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..surgery import Pattern, SurgeryReport, dense_linear, linear_bias, linear_weight, \
    replace_linears


class MaskedLinear(nn.Module):
    """``nn.Linear(in_features, out_features)`` whose weight is multiplied by a fixed bool mask.

    Input (..., in_features) -> output (..., out_features). Parameters: ``weight`` (out, in),
    ``bias`` (out,) or None; buffer ``weight_mask`` bool (out, in), all True at construction.
    ``track_dense_grad``: when True, forward keeps the gradient with respect to the *masked*
    weight (dense, dropped entries included; what RigL regrows by) in ``self.dense_grad``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MaskedLinear: {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("weight_mask", torch.ones(out_features, in_features,
                                                       dtype=torch.bool, device=device))
        self.track_dense_grad = False
        self.dense_grad: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's default init, then the mask applied."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            self.bias.uniform_(-bound, bound)
        self.apply_mask_()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, sparsity={self.sparsity:.3f}")

    # ---- mask ----------------------------------------------------------------------------------
    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (bool (out, in), True = kept) and zero the dropped weights."""
        where = f"MaskedLinear({self.in_features}->{self.out_features}).set_mask"
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{where}: mask must be a bool tensor, got {got}")
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"{where}: mask shape {tuple(mask.shape)} != weight shape "
                             f"{tuple(self.weight.shape)} (out, in)")
        if not torch.isfinite(self.weight).all():
            raise ValueError(f"{where}: weight contains NaN or infinite values")
        self.weight_mask.copy_(mask)
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero the dropped entries of ``weight`` in place."""
        self.weight.masked_fill_(~self.weight_mask, 0)

    @property
    def nnz(self) -> int:
        """Kept weights (the mask's count, whatever their values)."""
        return int(self.weight_mask.count_nonzero())

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's entries dropped by the mask."""
        return 1 - self.nnz / self.weight_mask.numel()

    # ---- compute -------------------------------------------------------------------------------
    def masked_weight(self) -> torch.Tensor:
        """The (out, in) weight forward multiplies by, with autograd (subclasses change it)."""
        return self.weight * self.weight_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MaskedLinear expects (..., {self.in_features}) inputs, "
                             f"got {tuple(x.shape)}")
        w = self.masked_weight()
        if self.track_dense_grad and w.requires_grad:
            w.register_hook(self._keep_dense_grad)
        return F.linear(x, w, self.bias)

    def _keep_dense_grad(self, grad: torch.Tensor) -> None:
        self.dense_grad = grad.detach()

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (out_features, in_features) masked weight (bias excluded)."""
        return self.masked_weight().detach().clone()

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the same function (the zeros stored densely)."""
        return dense_linear(self.to_dense(), self.bias)

    # ---- cost ----------------------------------------------------------------------------------
    def num_params(self) -> int:
        """Kept weights plus the bias: the parameters a sparse format would store."""
        return self.nnz + (self.bias.numel() if self.bias is not None else 0)

    def flops(self, batch_shape: tuple[int, ...] = ()) -> int:
        """Effective FLOPs of one forward on inputs with leading shape ``batch_shape``:
        2 per kept weight per row (a sparse kernel's work), plus the bias adds."""
        rows = math.prod(batch_shape) if batch_shape else 1
        return rows * (2 * self.nnz + (self.out_features if self.bias is not None else 0))

    @classmethod
    @torch.no_grad()
    def from_dense(cls, linear_or_weight: nn.Module | torch.Tensor,
                   mask: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> "MaskedLinear":
        """A MaskedLinear copying a linear-like module (``nn.Linear``, GPT-2 ``Conv1D``, any
        layer ``surgery.linear_weight`` reads) or a weight (out, in); ``mask`` bool (out, in),
        default all kept; ``bias`` (out,) overrides the module's."""
        if isinstance(linear_or_weight, nn.Module):
            weight = linear_weight(linear_or_weight)
            bias = linear_bias(linear_or_weight) if bias is None else bias
        else:
            weight = linear_or_weight
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or \
                not weight.is_floating_point():
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
            raise ValueError(f"MaskedLinear.from_dense: weight must be a floating (out, in) "
                             f"tensor, got {got}")
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        if mask is not None:
            layer.set_mask(mask.to(weight.device))
        return layer


# ---- model-level helpers -------------------------------------------------------------------------
@dataclasses.dataclass
class MaskReport(SurgeryReport):
    """A :class:`SurgeryReport` for mask methods: ``layers`` {name: MaskedLinear} in model order,
    and ``sparsifier`` (a :class:`Sparsifier`, or None when the masks are fixed)."""

    layers: dict = dataclasses.field(default_factory=dict)
    sparsifier: "Sparsifier | None" = None

    @classmethod
    def of(cls, report: SurgeryReport, model: nn.Module) -> "MaskReport":
        fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(SurgeryReport)}
        return cls(**fields, layers={r.name: model.get_submodule(r.name)
                                     for r in report.replaced})

    @property
    def nonzeros(self) -> int:
        return sum(layer.nnz for layer in self.layers.values())

    @property
    def sparsity(self) -> float:
        """Dropped fraction over all masked weights together."""
        total = sum(layer.weight_mask.numel() for layer in self.layers.values())
        return 1 - self.nonzeros / total if total else 0.0

    def masks(self) -> dict[str, torch.Tensor]:
        """{name: a copy of the bool mask (out, in)}, e.g. for mask-evolution snapshots."""
        return {n: layer.weight_mask.detach().clone() for n, layer in self.layers.items()}

    def summary(self) -> str:
        total = len(self.replaced) + len(self.skipped)
        weights = sum(layer.weight_mask.numel() for layer in self.layers.values())
        return (f"masked {len(self.layers)} of {total} linear-like modules: their weights "
                f"{weights:,} -> {self.nonzeros:,} kept now (sparsity {self.sparsity:.1%}); "
                f"model params {self.model_params_after:,} stored densely")


def mask_linears(model: nn.Module, include: Pattern = None, exclude: Pattern = None,
                 min_features: int = 0,
                 mask_fn: Callable[[str, torch.Tensor], torch.Tensor | None] | None = None,
                 make_layer: Callable[[nn.Module], MaskedLinear] = MaskedLinear.from_dense
                 ) -> MaskReport:
    """Turn the selected linear-like layers (nn.Linear, GPT-2 Conv1D) of ``model`` into
    MaskedLinear layers in place, built by ``make_layer(module)`` (default
    ``MaskedLinear.from_dense``; a subclass's builder for N:M and the like);
    ``mask_fn(name, weight (out, in))`` gives each layer's bool mask (None or omitted: the
    built layer's own). Patterns as in ``workbench.surgery``."""
    def factory(name: str, module: nn.Module) -> MaskedLinear:
        layer = make_layer(module)
        mask = mask_fn(name, layer.weight.detach()) if mask_fn is not None else None
        if mask is not None:
            layer.set_mask(mask)
        return layer
    report = replace_linears(model, factory, include=include, exclude=exclude,
                             min_features=min_features)
    return MaskReport.of(report, model)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> MaskReport:
    """Mask the layers named in ``masks`` ({module name: bool (out, in)}), turning plain linear
    layers into MaskedLinear and setting the mask of layers that already are; every name must
    exist."""
    if not masks:
        raise ValueError("apply_masks: no masks given")
    modules = dict(model.named_modules())
    missing = [n for n in masks if n not in modules]
    if missing:
        raise ValueError(f"apply_masks: model has no module {missing[0]!r}")
    for name in [n for n in masks if isinstance(modules[n], MaskedLinear)]:
        modules[name].set_mask(masks[name])
    plain = {n: m for n, m in masks.items() if not isinstance(modules[n], MaskedLinear)}
    report = mask_linears(model, include=lambda n, m: n in plain,
                          mask_fn=lambda n, w: plain[n]) if plain else \
        MaskReport(model_params_before=sum(p.numel() for p in model.parameters()),
                   model_params_after=sum(p.numel() for p in model.parameters()))
    not_masked = [s for s in report.skipped if s.name in plain]
    if not_masked:
        raise ValueError(f"apply_masks: cannot mask {not_masked[0].name!r}: "
                         f"{not_masked[0].reason}")
    report.layers = {n: model.get_submodule(n) for n in masks}
    return report


def masked_layers(model: nn.Module) -> dict[str, MaskedLinear]:
    """{name: MaskedLinear} of every masked layer in ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLinear)}


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor,
                          positions: torch.Tensor) -> None:
    """Zero ``optimizer``'s per-entry state of ``param`` at ``positions`` (bool, shaped like
    ``param``): every state tensor of ``param``'s shape (AdamW ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``; SGD ``momentum_buffer``). Scalars such as Adam's ``step`` are shared by
    all entries and stay; no optimizer, or no state yet (stateless SGD, before the first step),
    is nothing to do."""
    state = optimizer.state.get(param, {}) if optimizer is not None else {}
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(positions.to(value.device), 0)


class Sparsifier:
    """Changes the masks of ``layers`` ({name: MaskedLinear}) during training.

    ``step(t, optimizer=None)`` is the training hook (``train(..., on_step=sparsifier.step)``):
    after optimizer step ``t`` (1-based) it calls :meth:`update` (subclasses decide whether and
    how to change masks; return True when they did), zeroes the optimizer's state of every entry
    whose mask changed or that :meth:`restart` marked (so neither a pruned weight's nor a
    regrown weight's old moments drive it), and then re-zeroes the dropped weights.
    ``history``: (step, overall sparsity) after each update that changed masks.
    """

    def __init__(self, layers: Mapping[str, MaskedLinear]):
        if not layers:
            raise ValueError("Sparsifier: no masked layers")
        self.layers = dict(layers)
        self.history: list[tuple[int, float]] = []
        self._restarted: dict[str, torch.Tensor] = {}

    def update(self, step: int) -> bool:
        """Change masks after optimizer step ``step``; True when any mask changed."""
        return False

    @torch.no_grad()
    def restart(self, name: str, positions: torch.Tensor) -> None:
        """In :meth:`update`: set the weights of layer ``name`` at ``positions`` (bool (out, in))
        to zero, and have ``step`` zero their optimizer state too (e.g. RigL's regrown weights,
        a just-dropped one that comes straight back included)."""
        self.layers[name].weight.masked_fill_(positions, 0)
        previous = self._restarted.get(name)
        self._restarted[name] = positions if previous is None else previous | positions

    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        before = self.masks() if optimizer is not None else {}
        self._restarted = {}
        if self.update(step):
            self.history.append((step, self.sparsity))
            for name, mask in before.items():
                layer = self.layers[name]
                fresh = (mask != layer.weight_mask) | self._restarted.get(name, False)
                reset_optimizer_state(optimizer, layer.weight, fresh)
        for layer in self.layers.values():
            layer.apply_mask_()

    @property
    def sparsity(self) -> float:
        total = sum(layer.weight_mask.numel() for layer in self.layers.values())
        return 1 - sum(layer.nnz for layer in self.layers.values()) / total

    def masks(self) -> dict[str, torch.Tensor]:
        """{name: a copy of the current bool mask (out, in)}."""
        return {n: layer.weight_mask.detach().clone() for n, layer in self.layers.items()}
