"""Find and replace linear-like modules by name pattern in any ``nn.Module`` (Hugging Face too).

A *linear-like* module maps (..., in) -> (..., out) with a 2-D weight: ``nn.Linear`` (weight
(out, in)) or GPT-2's ``Conv1D`` from transformers (weight stored transposed, (in, out)).
:func:`linear_weight` always gives (out, in), so structure-fitting code never cares which.

``include`` / ``exclude`` patterns are matched on the qualified module name:
  - a glob, ``fnmatch`` on the whole name: ``"*.mlp.fc"``, ``"encoder.layer.*.intermediate.dense"``
  - a regex prefixed ``"re:"``, searched anywhere in the name: ``r"re:mlp\\.(fc|proj)$"``
  - a list of the above (any may match), or a callable ``(name, module) -> bool``.

:func:`replace_linears` swaps each match for ``factory(name, module)`` and returns a
:class:`SurgeryReport` in which every linear-like module appears, replaced or skipped with why.
"""
from __future__ import annotations

import fnmatch
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

CONV1D = "transformers.pytorch_utils.Conv1D"
# Classes, or "module.QualName" strings compared with each class in a module's MRO; a string
# recognises transformers' Conv1D without importing transformers.
LINEAR_TYPES: tuple[type | str, ...] = (nn.Linear, CONV1D)

# Parents whose forward reads these children's ``.weight`` directly instead of calling them
# (MultiheadAttention always, TransformerEncoderLayer on its eval fast path): a replacement
# without a dense weight would break them, so these children are skipped.
WEIGHT_READERS: dict[type, tuple[str, ...]] = {
    nn.MultiheadAttention: ("out_proj",),
    nn.TransformerEncoderLayer: ("linear1", "linear2"),
}

Pattern = Union[str, Sequence[str], Callable[[str, nn.Module], bool], None]
Factory = Callable[[str, nn.Module], Union[nn.Module, None]]


class Skip(Exception):
    """Raised by a factory to leave a module in place: ``raise Skip("rank would not save")``."""


def _is_type(module: nn.Module, types: Sequence[type | str]) -> bool:
    classes = tuple(t for t in types if isinstance(t, type))
    names = {t for t in types if isinstance(t, str)}
    return isinstance(module, classes) or any(
        f"{c.__module__}.{c.__qualname__}" in names for c in type(module).__mro__)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), whatever the storage; a view (no copy) for Conv1D, and
    ``to_dense()`` for structured layers that store factors instead of a weight."""
    if _is_type(module, (CONV1D,)):
        return module.weight.T
    if not hasattr(module, "weight") and hasattr(module, "to_dense"):
        return module.to_dense()
    return module.weight


def linear_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias (out,), or None."""
    return getattr(module, "bias", None)


@torch.no_grad()
def dense_linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """A plain ``nn.Linear`` holding copies of ``weight`` (out, in) and ``bias`` (out,), on the
    weight's device and dtype: how structured layers turn back into dense ones."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device,
                      dtype=weight.dtype)
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features)."""
    if isinstance(getattr(module, "in_features", None), int) and \
            isinstance(getattr(module, "out_features", None), int):
        return module.out_features, module.in_features
    out_features, in_features = linear_weight(module).shape
    return int(out_features), int(in_features)


def name_groups(names: Sequence[str]) -> list[str]:
    """Names with their numeric parts as ``*``, deduplicated in order: ``blocks.*.mlp.fc``."""
    return list(dict.fromkeys(re.sub(r"(?<![^.])\d+(?![^.])", "*", n) for n in names))


def _matcher(pattern: Pattern) -> Callable[[str, nn.Module], bool]:
    if pattern is None:
        return lambda name, module: True
    if callable(pattern):
        return pattern
    if isinstance(pattern, str) and pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return lambda name, module: regex.search(name) is not None
    if isinstance(pattern, str):
        return lambda name, module: fnmatch.fnmatchcase(name, pattern)
    matchers = [_matcher(p) for p in pattern]
    return lambda name, module: any(m(name, module) for m in matchers)


def _linears(model: nn.Module, types: Sequence[type | str], include: Pattern) -> list:
    """Every linear-like (name, module), a module under two names twice; raises ValueError when
    ``include`` is given and matches none of them (listing the available names)."""
    found = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if _is_type(m, types)]
    if not found:
        raise ValueError(f"model has no linear-like module (types {types})")
    inc = _matcher(include)
    if include is not None and not any(inc(n, m) for n, m in found):
        groups = name_groups([n for n, _ in found])
        more = f", ... ({len(groups) - 8} more)" if len(groups) > 8 else ""
        raise ValueError(f"pattern {include!r} matched no linear layer; "
                         f"available: {', '.join(groups[:8])}{more}")
    return found


def find_linears(model: nn.Module, include: Pattern = None, exclude: Pattern = None,
                 types: Sequence[type | str] = LINEAR_TYPES) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of each linear-like module matching ``include`` and not
    ``exclude``, in model order; a module reachable under several names is listed once.
    Raises ValueError if the model has none or ``include`` matches none."""
    inc, exc = _matcher(include), _matcher(exclude) if exclude is not None else None
    found, seen = [], set()
    for n, m in _linears(model, types, include):
        if id(m) not in seen and inc(n, m) and not (exc and exc(n, m)):
            seen.add(id(m))
            found.append((n, m))
    return found


@dataclass
class Replacement:
    name: str
    old_type: str
    new_type: str
    old_params: int
    new_params: int
    shape: tuple[int, int]  # (out, in) of the replaced module


@dataclass
class Skipped:
    name: str
    type: str
    reason: str


@dataclass
class SurgeryReport:
    """What :func:`replace_linears` did: every linear-like module is in ``replaced`` or
    ``skipped``. ``params_*`` count the replaced modules only, ``model_params_*`` the model."""

    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    model_params_before: int = 0
    model_params_after: int = 0

    @property
    def params_before(self) -> int:
        return sum(r.old_params for r in self.replaced)

    @property
    def params_after(self) -> int:
        return sum(r.new_params for r in self.replaced)

    @property
    def param_change(self) -> float:
        """Relative change of the replaced modules' parameters: -0.75 means 4x fewer."""
        return self.params_after / self.params_before - 1 if self.params_before else 0.0

    def to_frame(self) -> Any:
        """pandas DataFrame, one row per linear-like module, replaced ones first."""
        import pandas as pd

        rows = [dict(vars(r), status="replaced", reason="") for r in self.replaced]
        rows += [dict(name=s.name, status="skipped", old_type=s.type, reason=s.reason)
                 for s in self.skipped]
        return pd.DataFrame(rows, columns=["name", "status", "old_type", "new_type", "shape",
                                           "old_params", "new_params", "reason"])

    def summary(self) -> str:
        total = len(self.replaced) + len(self.skipped)
        return (f"replaced {len(self.replaced)} of {total} linear-like modules, their params "
                f"{self.params_before:,} -> {self.params_after:,} ({self.param_change:+.1%}); "
                f"model params {self.model_params_before:,} -> {self.model_params_after:,}")

    def groups(self) -> list[tuple[str, int, str, str]]:
        """(name pattern, count, what, detail): rows differing only by a layer index merged."""
        keys = [(name_groups([r.name])[0], f"{r.old_type} -> {r.new_type}",
                 f"{r.shape[0]}x{r.shape[1]}, params {r.old_params:,} -> {r.new_params:,}")
                for r in self.replaced]
        keys += [(name_groups([s.name])[0], f"{s.type} skipped", s.reason) for s in self.skipped]
        return [(k[0], keys.count(k), k[1], k[2]) for k in dict.fromkeys(keys)]

    def __str__(self) -> str:
        rows = self.groups()
        w0, w2 = (max((len(r[i]) for r in rows), default=0) for i in (0, 2))
        lines = [f"  {g:<{w0}}  x{n:<3} {what:<{w2}}  {detail}" for g, n, what, detail in rows]
        return "\n".join([f"SurgeryReport: {self.summary()}", *lines])

    def _repr_html_(self) -> str:
        esc = html.escape
        cells = "".join(f"<tr><td><code>{esc(g)}</code></td><td>{n}</td><td>{esc(w)}</td>"
                        f"<td>{esc(d)}</td></tr>" for g, n, w, d in self.groups())
        return (f"<p><b>SurgeryReport</b>: {html.escape(self.summary())}</p><table><tr><th>modules"
                f"</th><th>count</th><th>what</th><th>detail</th></tr>{cells}</table>")


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a shared parameter counts once


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """``model.<dotted name> = new``; Sequential / ModuleList indices ("blocks.0") work too,
    since nn.Module.__setattr__ re-registers an existing child of that name."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(parameter) -> every (module, qualified parameter name) holding it."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod, f"{mname}.{pname}".lstrip(".")))
    return owners


def _must_keep(model: nn.Module, name: str, module: nn.Module, names: list[str], owners: dict,
               min_features: int):
    """Why ``module`` has to stay (root, shared, tied, read by its parent, too small), or None."""
    if not name:
        return "the root module cannot be replaced in place"
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    for reader, children in WEIGHT_READERS.items():
        if isinstance(parent, reader) and child in children:
            return f"its parent {type(parent).__name__} reads {child}.weight directly"
    if len(names) > 1:
        return f"shared: the same module is also {', '.join(n for n in names if n != name)}"
    for pname, p in module.named_parameters(recurse=False):
        tied = [qual for mod, qual in owners[id(p)] if mod is not module]
        if tied:
            return f"tied: {pname} is shared with {', '.join(tied)}"
    if min(linear_shape(module)) < min_features:
        return f"too small: min(out, in) = {min(linear_shape(module))} < {min_features}"
    return None


def replace_linears(model: nn.Module, factory: Factory, include: Pattern = None,
                    exclude: Pattern = None, types: Sequence[type | str] = LINEAR_TYPES,
                    min_features: int = 0) -> SurgeryReport:
    """Replace in place each linear-like module matching ``include`` and not ``exclude`` by
    ``factory(name, module)``; the report lists every linear-like module of the model.

    The factory returns the new module, or None (or raises :class:`Skip`) to keep the old one.
    The new module is moved to the old weight's device and floating dtype. Skipped, with the
    reason: names not included or excluded, a module reachable under two names, a module
    sharing a parameter with another one (tied embeddings), a child whose parent reads its
    weight directly (``WEIGHT_READERS``: ``nn.MultiheadAttention.out_proj``, ...),
    ``min(out, in) < min_features``.
    """
    linears = _linears(model, types, include)
    inc, exc = _matcher(include), _matcher(exclude)
    names_of: dict[int, list[str]] = {}
    for n, m in linears:
        names_of.setdefault(id(m), []).append(n)
    owners = _owners(model)
    report = SurgeryReport(model_params_before=_num_params(model))
    swaps = []  # every factory runs before the first swap: an error leaves the model untouched
    for name, module in linears:
        if not inc(name, module):
            reason = "not matched by include"
        elif exclude is not None and exc(name, module):
            reason = "matched by exclude"
        else:
            reason = _must_keep(model, name, module, names_of[id(module)], owners,
                                min_features)
        if reason is None:
            try:
                new = factory(name, module)
                reason = None if new is not None else "factory returned None"
            except Skip as skip:
                reason = f"factory skipped: {skip}"
        if reason is not None:
            report.skipped.append(Skipped(name, type(module).__name__, reason))
            continue
        weight = linear_weight(module)
        dtype = weight.dtype if weight.is_floating_point() else None
        swaps.append((name, module, new.to(device=weight.device, dtype=dtype)))
    for name, module, new in swaps:
        _set_submodule(model, name, new)
        report.replaced.append(Replacement(name, type(module).__name__, type(new).__name__,
                                           _num_params(module), _num_params(new),
                                           linear_shape(module)))
    report.model_params_after = _num_params(model)
    return report


__all__ = ["LINEAR_TYPES", "Replacement", "Skip", "Skipped", "SurgeryReport", "dense_linear",
           "find_linears", "linear_bias", "linear_shape", "linear_weight", "name_groups",
           "replace_linears"]
