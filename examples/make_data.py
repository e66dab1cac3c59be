"""Data driftloop does not ship, to try it on "your own" data: CSV files made from scikit-learn's
bundled wine (which cultivar, from 13 measurements: multiclass) and diabetes (disease
progression, from 10 measurements: regression) data, resampled with a little noise.

    python examples/make_data.py wine FOLDER       # FOLDER/wine.csv, FOLDER/wine-drifted.csv
    python examples/make_data.py diabetes FOLDER   # FOLDER/diabetes.csv, ...-drifted.csv

The drifted file is what live traffic looks like after a change: some measurements moved, and
the outcome for the same measurements different (a concept the first model cannot know). The
README's "Your own data in five minutes" uses them; the tests build their projects with them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def wine_frame(rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """13 measurements and the cultivar (``class_0``, ``class_1``, ``class_2``)."""
    from sklearn.datasets import load_wine

    bundle = load_wine(as_frame=True)
    frame = bundle.data.rename(columns=snake)
    frame["cultivar"] = [f"class_{code}" for code in bundle.target]
    return resized(frame, rows, seed, target="cultivar")


def diabetes_frame(rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """10 scaled measurements and the disease's progression after a year."""
    from sklearn.datasets import load_diabetes

    bundle = load_diabetes(as_frame=True)
    frame = bundle.data.rename(columns=snake)
    frame["progression"] = bundle.target.astype("float64")
    return resized(frame, rows, seed, target="progression")


def resized(frame: pd.DataFrame, rows: int | None, seed: int, target: str) -> pd.DataFrame:
    """``rows`` rows drawn from ``frame`` (with replacement beyond its size), each measurement
    moved by noise of 2 % of its spread; ``frame`` itself when ``rows`` is None."""
    if rows is None:
        return frame
    rng = np.random.default_rng(seed)
    picked = frame.sample(n=rows, replace=rows > len(frame), random_state=seed)
    picked = picked.reset_index(drop=True)
    features = [c for c in picked.columns if c != target]
    noise = rng.normal(0, 0.02, size=(rows, len(features))) * picked[features].std().to_numpy()
    picked[features] = picked[features].to_numpy() + noise
    for column in features:  # whole numbers stay whole
        if pd.api.types.is_integer_dtype(frame[column]) or frame[column].mod(1).eq(0).all():
            picked[column] = picked[column].round().astype("int64")
    return picked


ROTATED = {"class_0": "class_1", "class_1": "class_2", "class_2": "class_0"}


def drifted_wine(rows: int, seed: int) -> pd.DataFrame:
    """Six of thirteen measurements moved by three standard deviations, and every cultivar now
    called by the next one's name."""
    frame = wine_frame(rows, seed)
    reference = wine_frame()
    for column in ("alcohol", "malic_acid", "ash", "magnesium", "flavanoids", "hue"):
        frame[column] = frame[column] + 3 * reference[column].std()
    frame["magnesium"] = frame["magnesium"].round().astype("int64")
    frame["cultivar"] = frame["cultivar"].map(ROTATED)
    return frame


def drifted_diabetes(rows: int, seed: int) -> pd.DataFrame:
    """Five of ten measurements moved by about two standard deviations, and progression 150
    higher for the same measurements."""
    frame = diabetes_frame(rows, seed)
    for column in ("age", "bmi", "bp", "s1", "s5"):
        frame[column] = frame[column] + 0.1
    frame["progression"] = frame["progression"] + 150.0
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["wine", "diabetes"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=1000, help="rows of the first file")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    make, drift = (
        (wine_frame, drifted_wine) if args.dataset == "wine" else (diabetes_frame, drifted_diabetes)
    )
    first, later = args.folder / f"{args.dataset}.csv", args.folder / f"{args.dataset}-drifted.csv"
    make(args.rows, seed=1).to_csv(first, index=False)
    drift(600, seed=2).to_csv(later, index=False)
    print(f"wrote {first} ({args.rows} rows) and {later} (600 rows, drifted)")  # noqa: T201


if __name__ == "__main__":
    main()
