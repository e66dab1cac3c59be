"""A project from a sample of the user's data: what ``driftloop init --from FILE`` writes.

:func:`infer_spec` reads a CSV (its delimiter sniffed: comma, semicolon, tab or pipe) or a
Parquet file, and guesses for every column its type, categories, range (the observed one widened
by a margin), nullability, and whether it is the id or the event-time column; from the target it
guesses the task. Every guess comes with its reason (:class:`Guess`), printed by the command and
written as a comment beside the field, so the user reviews YAML, not code. A target it cannot use
(missing, all null, a single value) and a file without rows are refused with
:class:`InitError`.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from driftloop.datasets.spec import DatasetSpec
from driftloop.tasks import Task

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_CATEGORIES = 50  # more distinct strings than this: not a category (free text, codes)
NUMERIC_SHARE = 0.9  # a text column this much parseable as numbers is numeric
MAX_CLASSES = 20  # an integer target with at most this many values is a set of classes
ID_NAME = re.compile(r"(^id$|_id$|^id_|uuid|guid)")
TIME_NAME = re.compile(r"(time|date|timestamp|_at$|^at$)")


class InitError(ValueError):
    """The data cannot make a project: the message says why and what to do."""


@dataclass(frozen=True)
class Guess:
    """One column's verdict and why."""

    column: str
    verdict: str
    reason: str


@dataclass
class Inferred:
    """A spec (as YAML-ready data), the task, and every guess with its reason."""

    spec: dict[str, Any]
    task: Task
    rows: int
    guesses: list[Guess] = field(default_factory=list)

    def note(self, column: str, verdict: str, reason: str) -> None:
        self.guesses.append(Guess(column, verdict, reason))


def read_sample(path: Path, rows: int) -> pd.DataFrame:
    """At most ``rows`` rows of a .csv (delimiter sniffed) or .parquet file."""
    if not path.is_file():
        raise InitError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path)
            batches = table.iter_batches(batch_size=rows)
            first = next(batches, None)
            return (
                first.to_pandas()
                if first is not None
                else table.schema_arrow.empty_table().to_pandas()
            )
        if suffix == ".csv":
            head = path.read_text(encoding="utf-8", errors="replace")[:65536]
            if not head.strip():
                raise InitError(f"{path} is empty: driftloop needs a header and some rows")
            try:
                delimiter = (
                    csv.Sniffer().sniff(head.split("\n", 1)[0], delimiters=",;\t|").delimiter
                )
            except csv.Error:
                delimiter = ","
            return pd.read_csv(path, sep=delimiter, nrows=rows)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, InitError):
            raise
        raise InitError(f"cannot read {path}: {error}") from None
    raise InitError(f"{path} is neither .csv nor .parquet")


def infer_spec(
    frame: pd.DataFrame,
    *,
    name: str,
    target: str,
    task: Task | None = None,
    margin: float = 0.5,
) -> Inferred:
    """Guess the spec of ``frame`` with ``target`` as the target column.

    Args:
        name: the dataset's name (snake_case; its folder in lakeFS).
        task: the task, when the user says it; else guessed from the target.
        margin: ranges are the observed ones widened by this share of their width on each side
            (and not below 0 where no value was negative).

    Raises:
        InitError: no rows, no such target, a target that is all null or has one value, a column
            name driftloop cannot use, or a task the target cannot serve.
    """
    if frame.empty:
        raise InitError("the file has no rows: driftloop learns types and ranges from a sample")
    bad_names = [str(c) for c in frame.columns if not NAME.match(str(c))]
    if bad_names:
        renames = ", ".join(f"{c!r} -> {snake(c)!r}" for c in bad_names[:8])
        raise InitError(
            f"column names must be snake_case (lower-case letters, digits, _), as they become "
            f"the fields of /predict; rename them in the data first: {renames}"
        )
    if target not in frame.columns:
        raise InitError(
            f"no column {target!r}; the columns are {', '.join(map(str, frame.columns))}"
        )
    inferred = Inferred(spec={"name": name, "target": target}, task="binary", rows=len(frame))
    inferred.task = _target(frame[target], target, task, inferred)
    features: list[dict[str, Any]] = []
    ignored: list[str] = []
    for column in frame.columns:
        if column == target:
            continue
        verdict = _column(frame[column], str(column), margin, inferred)
        if verdict == "id":
            inferred.spec["id_column"] = column
        elif verdict == "time":
            inferred.spec["time_column"] = column
        elif verdict is None:
            ignored.append(str(column))
        else:
            features.append(verdict)
    if not features:
        raise InitError("no column but the target can be a feature: nothing to learn from")
    inferred.spec["features"] = features
    if ignored:
        inferred.spec["ignored_columns"] = ignored
    DatasetSpec.model_validate(inferred.spec)  # what init writes must load
    return inferred


def snake(name: object) -> str:
    text = re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_") or "column"
    return text if text[0].isalpha() else f"c_{text}"


def _target(column: pd.Series, name: str, asked: Task | None, inferred: Inferred) -> Task:
    present = column.dropna()
    if present.empty:
        raise InitError(f"target {name!r} is all null: there is nothing to learn")
    values = present.unique()
    if len(values) == 1:
        raise InitError(
            f"target {name!r} has one value ({_label_text(values[0])}) in {len(present)} rows: "
            "a model needs at least two outcomes to tell apart"
        )
    nulls = len(column) - len(present)
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    zero_one = numeric and set(np.unique(present.astype(float))) <= {0.0, 1.0}
    whole = numeric and bool(np.all(np.mod(present.astype(float), 1) == 0))
    if asked is None:
        if zero_one or pd.api.types.is_bool_dtype(column):
            asked, why = "binary", "it holds only 0 and 1"
        elif numeric and whole and len(values) <= MAX_CLASSES:
            asked, why = "multiclass", f"it holds {len(values)} whole numbers: classes"
        elif numeric:
            asked, why = "regression", f"it holds {len(values)} different numbers"
        else:
            asked, why = "multiclass", f"it holds {len(values)} different labels"
    else:
        why = "--task says so"
    if asked == "binary":
        if not (zero_one or pd.api.types.is_bool_dtype(column)):
            raise InitError(
                f"target {name!r} holds {sorted(map(str, values))[:5]}: a binary target is 0 or 1 "
                "(map it to 0/1, or use --task multiclass)"
            )
        share = float(present.astype(float).mean())
        inferred.spec["target_type"] = "binary"
        inferred.spec["positive_label"] = f"{name} = 1"
        detail = f"{share:.1%} are 1"
    elif asked == "multiclass":
        if len(values) > MAX_CATEGORIES:
            raise InitError(
                f"target {name!r} has {len(values)} different values: too many classes for a "
                "multiclass model (use --task regression if it is a number)"
            )
        classes = sorted(_label_text(v) for v in values)
        inferred.spec["target_type"] = "categorical"
        inferred.spec["classes"] = classes
        detail = f"classes {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}"
    else:
        if not numeric:
            raise InitError(f"target {name!r} holds text: a regression target is a number")
        inferred.spec["target_type"] = "numeric"
        detail = f"from {present.min():g} to {present.max():g}"
    if nulls:
        detail += f"; {nulls} rows without a label cannot be ingested until they have one"
    inferred.note(name, f"target, {asked}", f"{why}; {detail}")
    return asked


def _label_text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _column(column: pd.Series, name: str, margin: float, inferred: Inferred) -> Any:
    present = column.dropna()
    nullable = len(present) < len(column)
    if present.empty:
        inferred.note(name, "ignored", "all null: nothing to learn its type from")
        return None
    unique = present.nunique()
    all_unique = unique == len(present) and not nullable
    if ID_NAME.search(name) and all_unique and "id_column" not in inferred.spec:
        inferred.note(name, "id column", "its name says id and every value is different")
        return "id"
    if "time_column" not in inferred.spec and _is_time(column, name):
        inferred.note(name, "time column", "its values are timestamps")
        return "time"
    if pd.api.types.is_bool_dtype(column):
        return _feature(name, "boolean", nullable, inferred, "true/false values")
    if pd.api.types.is_numeric_dtype(column):
        return _number(present, name, nullable, margin, inferred, "")
    text = present.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    parsed = float(numbers.notna().mean())
    if parsed == 1.0:
        return _number(numbers, name, nullable, margin, inferred, " (written as text)")
    if parsed >= NUMERIC_SHARE:
        odd = sorted(set(text[numbers.isna()]))[:3]
        reason = (
            f"{parsed:.0%} of its values are numbers; rows with the others ({odd}) will be "
            "refused at ingestion"
        )
        return _number(numbers.dropna(), name, nullable, margin, inferred, "", reason)
    if unique > MAX_CATEGORIES:
        inferred.note(
            name,
            "ignored",
            f"{unique} different strings (over {MAX_CATEGORIES}): free text or codes, not a "
            "category; batches may carry it, the model does not see it",
        )
        return None
    categories = sorted(set(text))
    mixed = " (some look like numbers, so it is text)" if parsed > 0 else ""
    entry = {"name": name, "type": "categorical", "categories": categories}
    return _feature(
        name,
        "categorical",
        nullable,
        inferred,
        f"{len(categories)} different strings{mixed}",
        entry,
    )


def _is_time(column: pd.Series, name: str) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if column.dtype != object or not TIME_NAME.search(name):
        return False
    parsed = pd.to_datetime(column.dropna().astype(str), errors="coerce", utc=True, format="mixed")
    return bool(parsed.notna().all())


def _number(
    values: pd.Series,
    name: str,
    nullable: bool,
    margin: float,
    inferred: Inferred,
    written: str,
    reason: str = "",
) -> dict[str, Any]:
    numbers = values.astype(float)
    finite = numbers[np.isfinite(numbers)]
    whole = bool(np.all(np.mod(finite, 1) == 0)) if len(finite) else False
    kind = "integer" if whole else "numeric"
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    width = (high - low) or max(abs(high), 1.0)
    minimum, maximum = low - margin * width, high + margin * width
    if low >= 0:
        minimum = max(minimum, 0.0)
    if whole:
        minimum, maximum = math.floor(minimum), math.ceil(maximum)
    entry: dict[str, Any] = {
        "name": name,
        "type": kind,
        "minimum": _tidy(minimum),
        "maximum": _tidy(maximum),
    }
    why = reason or f"{'whole' if whole else 'decimal'} numbers{written} from {low:g} to {high:g}"
    return _feature(name, kind, nullable, inferred, f"{why}; range widened by {margin:.0%}", entry)


def _tidy(value: float) -> float | int:
    if float(value).is_integer():
        return int(value)
    return float(f"{value:.6g}")


def _feature(
    name: str,
    kind: str,
    nullable: bool,
    inferred: Inferred,
    reason: str,
    entry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    entry = dict(entry or {"name": name, "type": kind})
    if nullable:
        entry["nullable"] = True
        reason += "; has nulls"
    inferred.note(name, kind, reason)
    return entry


def project_files(
    inferred: Inferred, *, model: str, spec_file: str, source: str, command: str
) -> tuple[str, str]:
    """The text of ``driftloop.yaml`` and of the spec, each guess a comment beside its field."""
    reasons = {guess.column: f"{guess.verdict}: {guess.reason}" for guess in inferred.guesses}
    header = (
        f"# Written by `{command}` from {inferred.rows} rows.\n"
        "# Every value below is a guess from that sample; the comment says why. Review it:\n"
        "# ranges, categories and nullability are what batches are checked against.\n"
    )
    spec_text = yaml.safe_dump(inferred.spec, sort_keys=False, allow_unicode=True, width=100)
    lines = []
    for line in spec_text.splitlines():
        match = re.match(r"^(\s*-?\s*)name: (\S+)$", line)
        if match and match.group(2) in reasons and line.startswith("- "):
            lines.append(f"  # {reasons[match.group(2)]}")
        lines.append(line)
        named = re.match(r"^(?:(?:target|id_column|time_column): |- )(\S+)$", line)
        if named and named.group(1) in reasons:
            lines[-1] = f"{line}  # {reasons[named.group(1)]}"
    spec_body = header + "\n".join(_indent_comments(lines)) + "\n"
    project = {
        "models": [
            {
                "name": model,
                "dataset": spec_file,
                "task": inferred.task,
                "estimator": "hist_gradient_boosting",
                "source": source,
            }
        ]
    }
    project_body = (
        header
        + yaml.safe_dump(project, sort_keys=False)
        + "# Optional, per model: train: {seed: 7}, gate: {margin: 0.01}, monitor: "
        "{window_rows: 1000}\n"
    )
    return project_body, spec_body


def _indent_comments(lines: list[str]) -> list[str]:
    """Feature comments at the indentation of the list item that follows them."""
    out = []
    for index, line in enumerate(lines):
        if line.startswith("  # ") and index + 1 < len(lines):
            indent = len(lines[index + 1]) - len(lines[index + 1].lstrip())
            out.append(" " * indent + line.strip())
        else:
            out.append(line)
    return out
