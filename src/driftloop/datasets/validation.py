"""Validation of a batch against its dataset spec: the audit step of write-audit-publish.

Every check runs (none stops the others), so a rejected batch gets the full list of what is wrong
with it. A batch that passes comes back in canonical form: the spec's columns, in the spec's
order, with the spec's types, ready to be written as Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from driftloop.datasets.spec import DatasetSpec, FeatureSpec

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_EXAMPLES = 5


@dataclass(frozen=True)
class CheckResult:
    """One validation check: its name, whether it passed, and what was found."""

    name: str
    passed: bool
    detail: str


@dataclass
class ValidationReport:
    """Every check run on one batch."""

    dataset: str
    rows: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        """One line per failed check, or a line saying all passed."""
        if self.passed:
            return f"all {len(self.checks)} checks passed on {self.rows} rows"
        lines = [f"{len(self.failures)} of {len(self.checks)} checks failed on {self.rows} rows:"]
        lines += [f"- {check.name}: {check.detail}" for check in self.failures]
        return "\n".join(lines)

    def to_markdown(self, title: str) -> str:
        """The report as a markdown table, for a Prefect artifact."""
        verdict = "**passed**" if self.passed else "**rejected**"
        lines = [
            f"# {title}",
            "",
            f"Dataset `{self.dataset}`, {self.rows} rows: {verdict}.",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        for check in self.checks:
            mark = "pass" if check.passed else "**FAIL**"
            lines.append(f"| {check.name} | {mark} | {check.detail.replace('|', '/')} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "rows": self.rows,
            "passed": self.passed,
            "checks": [check.__dict__ for check in self.checks],
        }


@dataclass
class Audit:
    """The outcome of validating one batch."""

    report: ValidationReport
    canonical: pd.DataFrame
    """The batch in canonical form; meaningful only when the report passed."""
    as_given: bool
    """Whether the canonical form is the input itself: same columns, order and types."""


def validate_batch(frame: pd.DataFrame, spec: DatasetSpec) -> Audit:
    """Run every check of ``spec`` on ``frame``."""
    report = ValidationReport(spec.name, len(frame))
    given = {name: frame[name] for name in frame.columns}
    checks = report.checks
    expected = spec.columns
    missing = [column for column in expected if column not in frame.columns]
    unexpected = [
        column
        for column in frame.columns
        if column not in expected and column not in spec.ignored_columns
    ]
    unexpected += [f"{column} (repeated)" for column in frame.columns[frame.columns.duplicated()]]
    checks.append(
        CheckResult(
            "schema",
            not missing and not unexpected,
            _join(("missing columns", missing), ("unexpected columns", unexpected))
            or f"{len(expected)} columns as specified",
        )
    )
    checks.append(
        CheckResult(
            "row count",
            spec.min_rows <= len(frame) <= spec.max_rows,
            f"{len(frame)} rows (allowed {spec.min_rows} to {spec.max_rows})",
        )
    )

    canonical: dict[str, pd.Series] = {}
    type_problems: list[str] = []
    null_problems: list[str] = []
    range_problems: list[str] = []
    category_problems: list[str] = []
    for feature in spec.features:
        if feature.name not in frame.columns:
            continue
        column = given[feature.name]
        present = column.notna()
        nulls = len(column) - int(present.sum())
        if nulls and not feature.nullable:
            null_problems.append(f"{feature.name} ({nulls} nulls)")
        converted, bad = _convert(column, feature, present)
        if bad:
            type_problems.append(f"{feature.name}: {bad}")
            continue
        canonical[feature.name] = converted
        if feature.type in ("numeric", "integer"):
            problem = _out_of_range(converted, feature)
            if problem:
                range_problems.append(problem)
        elif feature.type == "categorical":
            problem = _unknown_categories(converted, feature, present)
            if problem:
                category_problems.append(problem)

    id_problem = _id_column(frame, given, spec, canonical, null_problems)
    _time_column(given, spec, canonical, type_problems, null_problems)
    label_detail, label_ok = _label(
        given, spec, canonical, type_problems, null_problems, range_problems
    )

    checks.append(_check("types", type_problems, "every column has its type"))
    checks.append(_check("nulls", null_problems, "no nulls in required columns"))
    checks.append(_check("ranges", range_problems, "numbers within their ranges"))
    checks.append(_check("categories", category_problems, "categories all known"))
    checks.append(
        CheckResult("duplicates", id_problem is None, id_problem or "no duplicate records")
    )
    checks.append(
        CheckResult("label share" if spec.task == "binary" else "labels", label_ok, label_detail)
    )

    ordered = [column for column in expected if column in canonical]
    as_given = list(frame.columns) == ordered and all(canonical[c] is given[c] for c in ordered)
    canonical_frame = frame if as_given else pd.DataFrame({c: canonical[c] for c in ordered})
    return Audit(report, canonical_frame, as_given)


def _convert(column: pd.Series, feature: FeatureSpec, present: pd.Series) -> tuple[pd.Series, str]:
    """The column in the feature's type, or a description of the values that do not convert."""
    if feature.type in ("numeric", "integer"):
        if pd.api.types.is_bool_dtype(column):
            return column, "booleans where numbers are expected"
        if pd.api.types.is_integer_dtype(column) and feature.type == "integer":
            return column, ""  # already whole numbers: nothing to convert or check
        if pd.api.types.is_numeric_dtype(column):
            numbers = column
        else:
            numbers = pd.to_numeric(column, errors="coerce")
        broken = present & numbers.isna()
        if broken.any():
            return (
                column,
                f"{int(broken.sum())} values are not numbers, e.g. {_examples(column[broken])}",
            )
        if feature.type == "integer":
            fractional = present & (numbers.fillna(0) % 1 != 0)
            if fractional.any():
                return column, (
                    f"{int(fractional.sum())} values are not whole numbers, "
                    f"e.g. {_examples(column[fractional])}"
                )
            return (numbers.astype("Int64") if not present.all() else numbers.astype(np.int64)), ""
        if numbers is column and column.dtype == np.float64:
            return column, ""
        return numbers.astype(np.float64), ""
    if feature.type == "boolean":
        if pd.api.types.is_bool_dtype(column):
            return column, ""
        text = column.astype(str).str.strip().str.lower()
        truthy, falsy = text.isin(_TRUE), text.isin(_FALSE)
        broken = present & ~(truthy | falsy)
        if broken.any():
            return (
                column,
                f"{int(broken.sum())} values are not booleans, e.g. {_examples(column[broken])}",
            )
        if present.all():
            return truthy, ""
        nullable = truthy.astype("boolean")
        nullable[~present] = pd.NA
        return nullable, ""
    # categorical
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column, "numbers where category names are expected"
    if pd.api.types.is_string_dtype(column) and not isinstance(column.dtype, pd.CategoricalDtype):
        return column, ""
    return column.astype(str).where(present), ""


def _out_of_range(column: pd.Series, feature: FeatureSpec) -> str:
    low = column < feature.minimum if feature.minimum is not None else False
    high = column > feature.maximum if feature.maximum is not None else False
    outside = low | high
    if not isinstance(outside, pd.Series) or not outside.any():
        return ""
    return (
        f"{feature.name}: {int(outside.sum())} values outside [{feature.minimum}, "
        f"{feature.maximum}], e.g. {_examples(column[outside])}"
    )


def _unknown_categories(column: pd.Series, feature: FeatureSpec, present: pd.Series) -> str:
    assert feature.categories is not None
    unknown = present & ~column.isin(list(feature.categories))
    if not unknown.any():
        return ""
    values = sorted({str(value) for value in column[unknown].unique()[:_EXAMPLES]})
    return f"{feature.name}: {int(unknown.sum())} values not in the known categories, e.g. {values}"


def _id_column(
    frame: pd.DataFrame,
    given: dict[str, pd.Series],
    spec: DatasetSpec,
    canonical: dict[str, pd.Series],
    null_problems: list[str],
) -> str | None:
    if spec.id_column is None:
        duplicated = frame.duplicated()
        count = int(duplicated.sum())
        return f"{count} rows repeat an earlier row" if count else None
    if spec.id_column not in frame.columns:
        return None
    ids = given[spec.id_column]
    if ids.isna().any():
        null_problems.append(f"{spec.id_column} ({int(ids.isna().sum())} nulls)")
    ids = ids.astype(str) if not pd.api.types.is_string_dtype(ids) else ids
    canonical[spec.id_column] = ids
    if ids.is_unique:  # one hashing pass in the common case; find the repeats only if needed
        return None
    duplicated = ids.duplicated()
    if duplicated.any():
        return (
            f"{int(duplicated.sum())} repeated {spec.id_column} values, "
            f"e.g. {_examples(ids[duplicated])}"
        )
    return None


def _time_column(
    given: dict[str, pd.Series],
    spec: DatasetSpec,
    canonical: dict[str, pd.Series],
    type_problems: list[str],
    null_problems: list[str],
) -> None:
    if spec.time_column is None or spec.time_column not in given:
        return
    raw = given[spec.time_column]
    if raw.isna().any():
        null_problems.append(f"{spec.time_column} ({int(raw.isna().sum())} nulls)")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        utc = str(raw.dtype.tz) == "UTC"
        canonical[spec.time_column] = raw if utc else raw.dt.tz_convert("UTC")
        return
    times = pd.to_datetime(raw, errors="coerce", utc=True)
    broken = raw.notna() & times.isna()
    if broken.any():
        type_problems.append(
            f"{spec.time_column}: {int(broken.sum())} values are not timestamps, "
            f"e.g. {_examples(raw[broken])}"
        )
        return
    canonical[spec.time_column] = times


def _label(
    given: dict[str, pd.Series],
    spec: DatasetSpec,
    canonical: dict[str, pd.Series],
    type_problems: list[str],
    null_problems: list[str],
    range_problems: list[str],
) -> tuple[str, bool]:
    if spec.target not in given:
        return f"no {spec.target} column", False
    raw = given[spec.target]
    nulls = int(raw.isna().sum())
    if nulls:
        null_problems.append(f"{spec.target} ({nulls} nulls)")
    if spec.target_type == "categorical":
        return _class_labels(raw, spec, canonical, type_problems, nulls)
    if spec.target_type == "numeric":
        return _numeric_labels(raw, spec, canonical, type_problems, range_problems, nulls)
    labels = pd.to_numeric(raw, errors="coerce")
    invalid = raw.notna() & ~labels.isin([0, 1])
    if invalid.any():
        type_problems.append(
            f"{spec.target}: {int(invalid.sum())} labels are not 0 or 1, "
            f"e.g. {_examples(raw[invalid])}"
        )
        return "labels are not all 0 or 1", False
    if nulls:
        return "labels missing", False
    labels = raw if raw.dtype == np.int64 else labels.astype(np.int64)
    canonical[spec.target] = labels
    share = float(labels.mean()) if len(labels) else 0.0
    ok = spec.label_share_min <= share <= spec.label_share_max
    return (
        f"{share:.2%} {spec.positive_label} (allowed {spec.label_share_min:.1%} "
        f"to {spec.label_share_max:.1%})",
        ok,
    )


def _class_labels(
    raw: pd.Series,
    spec: DatasetSpec,
    canonical: dict[str, pd.Series],
    type_problems: list[str],
    nulls: int,
) -> tuple[str, bool]:
    classes = list(spec.classes or ())
    text = raw.astype(str).where(raw.notna(), None)
    invalid = raw.notna() & ~text.isin(classes)
    if invalid.any():
        type_problems.append(
            f"{spec.target}: {int(invalid.sum())} labels are not classes of the spec "
            f"({', '.join(classes)}), e.g. {_examples(raw[invalid])}"
        )
        return "labels are not all classes of the spec", False
    if nulls:
        return "labels missing", False
    canonical[spec.target] = text.astype(object)
    shares = text.value_counts(normalize=True)
    return ", ".join(f"{name} {shares.get(name, 0.0):.1%}" for name in classes), True


def _numeric_labels(
    raw: pd.Series,
    spec: DatasetSpec,
    canonical: dict[str, pd.Series],
    type_problems: list[str],
    range_problems: list[str],
    nulls: int,
) -> tuple[str, bool]:
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
    invalid = raw.notna() & ~np.isfinite(numbers)
    if invalid.any():
        type_problems.append(
            f"{spec.target}: {int(invalid.sum())} labels are not finite numbers, "
            f"e.g. {_examples(raw[invalid])}"
        )
        return "labels are not all finite numbers", False
    if nulls:
        return "labels missing", False
    low, high = spec.target_minimum, spec.target_maximum
    outside = (numbers < low if low is not None else False) | (
        numbers > high if high is not None else False
    )
    if np.any(outside):
        range_problems.append(
            f"{spec.target}: {int(np.sum(outside))} labels outside "
            f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        )
    canonical[spec.target] = numbers
    if numbers.empty:
        return "no labels", True
    return f"mean {numbers.mean():.4g}, from {numbers.min():.4g} to {numbers.max():.4g}", True


def _check(name: str, problems: list[str], ok_detail: str) -> CheckResult:
    return CheckResult(name, not problems, "; ".join(problems) if problems else ok_detail)


def _join(*parts: tuple[str, list[str]]) -> str:
    return "; ".join(f"{label}: {', '.join(values)}" for label, values in parts if values)


def _examples(values: pd.Series) -> str:
    return repr([str(value) for value in values.head(_EXAMPLES).tolist()])


def row_problems(frame: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    """Why each row, on its own, would fail the checks: "" for a row that passes.

    The per-row part of :func:`validate_batch` (values that are missing where required, not of
    their type, out of range, of an unknown category, or labels the target cannot hold), for setting
    rows aside instead of refusing the batch they came in. Checks about the whole batch (row
    count, label share, repeated ids) are not judged here.
    """
    reasons = pd.Series("", index=frame.index, dtype=object)

    def flag(mask: pd.Series, reason: str) -> None:
        if mask.any():
            reasons[mask] = reasons[mask] + reason + "; "

    for feature in spec.features:
        if feature.name not in frame.columns:
            continue
        column = frame[feature.name]
        present = column.notna()
        if not feature.nullable:
            flag(~present, f"{feature.name} is missing")
        if feature.type in ("numeric", "integer"):
            numbers = pd.to_numeric(column, errors="coerce")
            flag(present & numbers.isna(), f"{feature.name} is not a number")
            if feature.type == "integer":
                flag(present & (numbers.fillna(0) % 1 != 0), f"{feature.name} is not whole")
            if feature.minimum is not None:
                flag(numbers < feature.minimum, f"{feature.name} below {feature.minimum:g}")
            if feature.maximum is not None:
                flag(numbers > feature.maximum, f"{feature.name} above {feature.maximum:g}")
        elif feature.type == "categorical":
            known = list(feature.categories or ())
            flag(present & ~column.isin(known), f"{feature.name} is not a known category")
    if spec.target in frame.columns:
        target = frame[spec.target]
        if spec.target_type == "categorical":
            text = target.astype(str).where(target.notna(), None)
            flag(~text.isin(list(spec.classes or ())), f"{spec.target} is not a class of the spec")
        elif spec.target_type == "numeric":
            numbers = pd.to_numeric(target, errors="coerce").astype("float64")
            flag(~np.isfinite(numbers), f"{spec.target} is not a finite number")
            if spec.target_minimum is not None:
                flag(numbers < spec.target_minimum, f"{spec.target} below {spec.target_minimum:g}")
            if spec.target_maximum is not None:
                flag(numbers > spec.target_maximum, f"{spec.target} above {spec.target_maximum:g}")
        else:
            labels = pd.to_numeric(target, errors="coerce")
            flag(~labels.isin([0, 1]), f"{spec.target} is not 0 or 1")
    return reasons.str.removesuffix("; ")
