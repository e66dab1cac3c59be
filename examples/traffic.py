"""Live traffic for a driftloop inference service, from a CSV: each row predicted, then its true
label sent back (as a client whose outcomes become known later would).

    python examples/traffic.py FILE.csv --target COLUMN [--url http://127.0.0.1:3000]
        [--model NAME] [--pause 0.2]

Rows go in lists of 50, a pause between lists, so the monitor sees the traffic arrive window
by window. It prints how many were answered and by which model version.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--target", required=True, help="the column holding the true label")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model", help="the model's name, when the project has several")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between lists")
    args = parser.parse_args()
    frame = pd.read_csv(args.csv)
    labels = frame.pop(args.target).tolist()
    values = frame.astype(object)
    records = [
        # A CSV read back may hold 98.0 for an integer field: a whole number goes as one (a
        # decimal field takes it too), and a missing value as null.
        {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in row.items()}
        for row in values.where(values.notna(), None).to_dict("records")
    ]
    routes = f"{args.url}/models/{args.model}" if args.model else args.url
    versions: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(records), 50):
            answered = client.post(f"{routes}/predict", json=records[start : start + 50])
            answered.raise_for_status()
            for answer, label in zip(answered.json(), labels[start : start + 50], strict=True):
                versions[answer["model_version"]] += 1
                feedback = {"prediction_id": answer["prediction_id"], "label": label}
                client.post(f"{routes}/feedback", json=feedback).raise_for_status()
            time.sleep(args.pause)
    shown = ", ".join(f"{count} by {version}" for version, count in versions.items())
    print(f"{len(records)} rows predicted and labelled: {shown}")  # noqa: T201


if __name__ == "__main__":
    main()
