"""YAML files a user writes, validated by a pydantic model, with errors that say where.

A project file or a dataset spec with a mistake stops with the file, the line and the field:
``examples/churn/churn.yaml:14: features[2].type: Input should be 'numeric', ... (got 'float')``.
The line comes from the YAML node the error's location points to (the nearest one that exists,
so a missing field is reported at the line of the mapping that lacks it).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class DocumentError(ValueError):
    """A YAML file that is not what it must be: where, which field, and why."""

    def __init__(self, path: Path, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def read_document(path: Path, model: type[Model], context: dict[str, Any] | None = None) -> Model:
    """Parse the YAML file ``path`` and validate it as ``model``; DocumentError if it is not one.

    Only the first problem is reported (with how many more there are): a user fixes them in
    order, and the first one often causes the rest.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DocumentError(path, None, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DocumentError(path, None, None, f"cannot be read: {error}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise DocumentError(
            path, mark.line + 1 if mark else None, None, f"not valid YAML: {problem}"
        ) from None
    if not isinstance(data, dict):
        raise DocumentError(path, 1, None, "must be a YAML mapping (key: value lines)")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        # A misspelt key shows as an unknown field and a missing one: the unknown one first.
        problems.sort(key=lambda item: item["type"] != "extra_forbidden")
        first = problems[0]
        location = tuple(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("missing", "extra_forbidden") and "input" in first:
            shown = first["input"]
            if not isinstance(shown, (dict, list)):
                message += f" (got {shown!r})"
        if first["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(model, location, problems)
        if len(problems) > 1:
            message += f" ({len(problems) - 1} more problem(s) after this one)"
        raise DocumentError(path, _line(root, location), _field(location), message) from None


def line_of(path: Path, location: tuple[Any, ...]) -> int | None:
    """The line of ``location`` (keys and list indices) in the YAML file ``path``."""
    return _line(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), location)


def _field(location: tuple[Any, ...]) -> str:
    """``("features", 2, "type")`` as ``features[2].type``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _line(root: yaml.Node | None, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest node of ``location`` present in the document."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _suggestion(model: type[BaseModel], location: tuple[Any, ...], problems: list[Any]) -> str:
    """What the unknown key at ``location`` was probably meant to be: a required field missing
    beside it that it nearly spells, else (at the top level) the fields there are."""
    parent, name = location[:-1], str(location[-1])
    missing = [
        str(item["loc"][-1])
        for item in problems
        if item["type"] == "missing" and tuple(item["loc"][:-1]) == parent
    ]
    close = difflib.get_close_matches(name, missing, n=1, cutoff=0.6)
    if not close and not parent:
        close = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]}?"
    if not parent:
        return f"; known: {', '.join(model.model_fields)}"
    return ""
