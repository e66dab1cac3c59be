"""Where batches come from: a dataset's built-in source, or local CSV and Parquet files.

A source is a string, so it can travel through a CLI flag, a Prefect parameter or an event:

- ``builtin`` or ``builtin:?rows=5000&seed=7&scenario=concept_drift`` — the dataset's own source:
  the transaction generator for ``transactions`` (``rows``, ``seed``, ``scenario``,
  ``fraud_rate``, ``start``), scikit-learn's bundled data for ``breast_cancer`` (optionally a
  seeded sample of ``rows``).
- a path to a ``.csv`` or ``.parquet`` file, or to a folder of them (read in name order and
  concatenated).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.datasets.spec import DatasetSpec
from driftloop.datasets.transactions import SCENARIOS, generate_transactions

BUILTIN = "builtin"
_ARROW_STRINGS = {
    pa.string(): pd.StringDtype("pyarrow"),
    pa.large_string(): pd.StringDtype("pyarrow"),
}


class SourceError(ValueError):
    """A source string that cannot be read; the message says why."""


def load_batch(source: str, spec: DatasetSpec) -> pd.DataFrame:
    """The rows of one batch from ``source``, as they are (validation comes after)."""
    if source == BUILTIN or source.startswith(BUILTIN + ":"):
        return _builtin(spec, dict(parse_qsl(urlsplit(source).query)))
    return _files(Path(source).expanduser())


def _builtin(spec: DatasetSpec, options: dict[str, str]) -> pd.DataFrame:
    if spec.name == "transactions":
        known = {"rows", "seed", "scenario", "fraud_rate", "start"}
        _refuse_unknown(options, known)
        scenario = options.get("scenario", "baseline")
        if scenario not in SCENARIOS:
            raise SourceError(
                f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}"
            )
        kwargs: dict[str, object] = {
            "seed": _integer(options, "seed", 0),
            "scenario": scenario,
            "fraud_rate": float(options.get("fraud_rate", 0.03)),
        }
        if "start" in options:
            try:
                start = pd.Timestamp(options["start"])
            except ValueError:
                raise SourceError("source option 'start' must be an ISO timestamp") from None
            kwargs["start"] = start.tz_localize("UTC") if start.tzinfo is None else start
        return generate_transactions(_integer(options, "rows", 5000), **kwargs)  # type: ignore[arg-type]
    if spec.name == "breast_cancer":
        _refuse_unknown(options, {"rows", "seed"})
        frame = breast_cancer_frame()
        if "rows" in options:
            rows = _integer(options, "rows", len(frame))
            frame = frame.sample(n=min(rows, len(frame)), random_state=_integer(options, "seed", 0))
            frame = frame.reset_index(drop=True)
        return frame
    raise SourceError(f"dataset {spec.name!r} has no built-in source")


def breast_cancer_frame() -> pd.DataFrame:
    """scikit-learn's bundled breast cancer data, columns in snake_case, 1 = malignant."""
    from sklearn.datasets import load_breast_cancer

    bundle = load_breast_cancer(as_frame=True)
    frame = bundle.data.rename(columns=lambda name: name.replace(" ", "_"))
    frame["malignant"] = (bundle.target == 0).astype("int64")
    return frame


def _files(path: Path) -> pd.DataFrame:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".parquet"))
        if not files:
            raise SourceError(f"folder {path} has no .csv or .parquet files")
        return pd.concat([_file(file) for file in files], ignore_index=True)
    if not path.exists():
        raise SourceError(f"source {path} does not exist (and is not 'builtin')")
    return _file(path)


def _file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            # Strings stay in Arrow memory (pandas' string[pyarrow]) instead of becoming
            # millions of Python objects: reading, validating and rewriting are then 3-5x faster.
            table = pq.read_table(path)
            return table.to_pandas(types_mapper=_ARROW_STRINGS.get)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError) as problem:
        raise SourceError(f"cannot read {path}: {problem}") from None
    raise SourceError(f"{path} is neither .csv nor .parquet")


def _integer(options: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(options.get(name, default))
    except ValueError:
        raise SourceError(f"source option {name!r} must be an integer") from None
    if value < 0:
        raise SourceError(f"source option {name!r} must not be negative")
    return value


def _refuse_unknown(options: dict[str, str], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise SourceError(f"unknown source options {unknown}; known: {sorted(known)}")
