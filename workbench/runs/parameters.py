"""A notebook's parameters: read from its cell tagged ``parameters``, checked before any kernel.

Each parameter is one line ``name = literal  # help``. The default's type is the parameter's type
(int, float, bool, str, list, or None for "anything"); a help comment ending in
``(one of: a, b, c)`` also restricts the values. Values given on the command line arrive as
strings and are converted here, so a wrong name or type fails fast with a message naming it.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
from pathlib import Path
from typing import Any

_CHOICES = re.compile(r"\(one of:\s*([^)]*)\)\s*$")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


class ParameterError(ValueError):
    """A parameter given to a notebook is unknown or has a bad value."""


@dataclasses.dataclass
class Parameter:
    name: str
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return "any" if self.default is None else type(self.default).__name__

    def convert(self, value: Any) -> Any:
        """``value`` (a string from the CLI, or a Python value) as this parameter's type."""
        expected = type(self.default)
        if self.default is None:
            result = _literal_or_string(value) if isinstance(value, str) else value
        elif isinstance(value, str) and expected is not str:
            result = self._from_string(value)
        else:
            result = value
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                result = float(value)
            if type(result) is not expected:
                raise ParameterError(f"parameter {self.name!r} expects {self.type_name}, got "
                                     f"{type(value).__name__} {value!r}")
        if self.choices and str(result) not in self.choices:
            raise ParameterError(f"parameter {self.name!r} must be one of "
                                 f"{', '.join(self.choices)}; got {result!r}")
        return result

    def _from_string(self, text: str) -> Any:
        expected = type(self.default)
        try:
            if expected is bool:
                lowered = text.strip().lower()
                if lowered in _TRUE | _FALSE:
                    return lowered in _TRUE
                raise ValueError
            if expected is int:
                return int(text)
            if expected is float:
                return float(text)
            parsed = ast.literal_eval(text)
            if type(parsed) is not expected:
                raise ValueError
            return parsed
        except (ValueError, SyntaxError):
            raise ParameterError(f"parameter {self.name!r} expects {self.type_name}; "
                                 f"{text!r} is not one") from None


def _literal_or_string(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameters_cell(nb, path: str | Path = "notebook") -> str:
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ParameterError(f"{path} has no code cell tagged 'parameters'")


def read_parameters(notebook: str | Path) -> dict[str, Parameter]:
    """The parameters declared in a notebook file, in order."""
    import nbformat  # lazily: the library itself does not need Jupyter's packages
    path = Path(notebook)
    if not path.exists():
        raise FileNotFoundError(f"notebook not found: {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for a bad file
        raise ParameterError(f"{path} is not a readable notebook: {exc}") from exc
    return parse_parameters(parameters_cell(nb, path), path)


def parse_parameters(source: str, where: str | Path = "parameters cell") -> dict[str, Parameter]:
    tree = ast.parse(source)
    comments = _line_comments(source)
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(f"{where}: parameter {name!r} must have a literal default") from None
        help_text = comments.get(node.lineno, "")
        match = _CHOICES.search(help_text)
        choices = tuple(c.strip() for c in match.group(1).split(",")) if match else ()
        params[name] = Parameter(name, default, help_text, choices)
    return params


def _line_comments(source: str) -> dict[int, str]:
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    return comments


def resolve_parameters(declared: dict[str, Parameter], given: dict[str, Any],
                       notebook: str | Path = "notebook") -> dict[str, Any]:
    """Defaults overridden by ``given`` (converted); unknown names raise ParameterError."""
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise ParameterError(f"unknown parameter {unknown[0]!r} for {notebook}; it takes: "
                             f"{', '.join(declared) or '(none)'}")
    values = {name: p.default for name, p in declared.items()}
    for name, value in given.items():
        values[name] = declared[name].convert(value)
    return values
