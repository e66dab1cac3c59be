"""Estimation benchmark: ROC AUC estimated without labels, beside the realized one and NannyML's.

    .venv/bin/python bench/estimate.py [--window 5000] [--train 20000] [--skip-nannyml]

The fraud model is trained by driftloop (`train_model`, the default gradient boosting, on
baseline transactions at 3 % fraud) and calibrated on its holdout (`BinaryCalibration.fit`,
isotonic). Then windows of `--window` transactions, two per step, each a mix of baseline rows
and shifted rows, the shifted share stepping 0 → 25 → 50 → 75 → 100 %:

- covariate shift: `covariate_shift` rows with `baseline_rule=True` (amounts 2.5x, more online,
  electronics and travel; P(fraud | transaction) unchanged, so the fraud rate rises);
- concept drift: `concept_drift` rows (card testing: a new fraud rule).

For each window it prints the realized ROC AUC (the labels), driftloop's estimate with its 95 %
band, and NannyML's CBPE estimate on the same reference (the holdout: labels, scores, answers)
and the same window; then the mean absolute error of each against the realized value, and the
largest gap between the two estimates. NannyML (0.13.1) runs in an environment of its own that
the bench creates with uv under ~/.cache/driftloop-bench/ (its pins must not touch the
project's lock); the frames go to it as Parquet files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.estimation import BinaryCalibration
from driftloop.training import TrainParams, features_of, split_frame, train_model

PROJECT = Path(__file__).resolve().parents[1]
# statsmodels: nannyml 0.13.1 imports it without declaring it.
NANNYML = ["nannyml==0.13.1", "pyarrow", "statsmodels"]
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
TARGET_MAE = 0.03  # covariate shift, ROC AUC
TARGET_GAP = 0.01  # driftloop vs NannyML

NANNYML_SCRIPT = """
import json, sys, warnings
import pandas as pd
import nannyml as nml
warnings.filterwarnings("ignore")
folder = sys.argv[1]
reference = pd.read_parquet(f"{folder}/reference.parquet")
estimator = nml.CBPE(
    y_pred_proba="score", y_pred="answer", y_true="label",
    problem_type="classification_binary", metrics=["roc_auc"], chunk_number=1,
)
estimator.fit(reference)
found = {}
for name in json.loads(open(f"{folder}/windows.json").read()):
    window = pd.read_parquet(f"{folder}/{name}.parquet")
    result = estimator.estimate(window).filter(period="analysis").to_df()
    found[name] = float(result[("roc_auc", "value")].iloc[0])
print(json.dumps(found))
"""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def windows(size: int) -> list[tuple[str, str, float, pd.DataFrame]]:
    """(name, scenario, shifted share, frame): two windows per step of each scenario."""
    found = []
    seed = 1000
    for scenario in ("covariate_shift", "concept_drift"):
        for share in SHARES:
            for _ in range(2):
                seed += 1
                shifted = int(round(size * share))
                keep = scenario == "covariate_shift"
                parts = [
                    generate_transactions(size - shifted, seed=seed, baseline_rule=True)
                    if size - shifted
                    else None,
                    generate_transactions(
                        shifted, seed=seed + 50_000, scenario=scenario, baseline_rule=keep
                    )
                    if shifted
                    else None,
                ]
                frame = pd.concat([p for p in parts if p is not None], ignore_index=True)
                found.append((f"{scenario}-{share:.2f}-{seed}", scenario, share, frame))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=5000)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--skip-nannyml", action="store_true")
    args = parser.parse_args()

    spec = load_spec("transactions")
    frame = generate_transactions(args.train, seed=1, baseline_rule=True)
    params = TrainParams(seed=1)
    split = split_frame(frame, spec, params, None)
    say(f"training on {len(split.train)} rows, calibrating on a holdout of {len(split.holdout)}")
    trained = train_model(split, spec, params)
    threshold = float(trained.metrics["threshold"])

    def scores_of(rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(trained.pipeline.predict_proba(features_of(rows, spec))[:, 1])

    holdout_scores = scores_of(split.holdout)
    holdout_labels = split.holdout[spec.target].to_numpy()
    calibration = BinaryCalibration.fit(holdout_scores, holdout_labels, threshold)

    rows = []
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-estimate-") as folder:
        pd.DataFrame(
            {
                "score": holdout_scores,
                "answer": (holdout_scores >= threshold).astype(int),
                "label": holdout_labels,
            }
        ).to_parquet(f"{folder}/reference.parquet")
        names = []
        for name, scenario, share, window in windows(args.window):
            scores = scores_of(window)
            labels = window[spec.target].to_numpy()
            started = time.perf_counter()
            estimate = calibration.estimate(scores)["roc_auc"]
            took = time.perf_counter() - started
            rows.append(
                {
                    "name": name,
                    "scenario": scenario,
                    "share": share,
                    "fraud": float(labels.mean()),
                    "realized": float(roc_auc_score(labels, scores)),
                    "ours": estimate.value,
                    "lower": estimate.lower,
                    "upper": estimate.upper,
                    "seconds": took,
                }
            )
            pd.DataFrame({"score": scores, "answer": (scores >= threshold).astype(int)}).to_parquet(
                f"{folder}/{name}.parquet"
            )
            names.append(name)
        theirs: dict[str, float] = {}
        if not args.skip_nannyml:
            Path(folder, "windows.json").write_text(json.dumps(names))
            say("NannyML CBPE on the same reference and windows")
            from bench.environments import python_of

            answer = subprocess.run(
                [str(python_of("nannyml-0.13.1", NANNYML)), "-c", NANNYML_SCRIPT, folder],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"},
            )
            if answer.returncode != 0:
                raise SystemExit(f"NannyML failed:\n{answer.stderr[-3000:]}")
            theirs = json.loads(answer.stdout.strip().splitlines()[-1])
    report(rows, theirs, args.window)


def report(rows: list[dict[str, object]], theirs: dict[str, float], size: int) -> None:
    table = pd.DataFrame(rows)
    table["nannyml"] = [theirs.get(str(name), float("nan")) for name in table["name"]]
    print(f"\nROC AUC per window of {size} transactions: realized (labels) and estimated (none)")
    header = (
        f"{'scenario':<16}{'shifted':>8}{'fraud':>7}{'realized':>10}{'driftloop':>11}"
        f"{'95 % band':>18}{'in band':>9}{'nannyml':>9}{'gap':>8}"
    )
    print(header)
    for row in table.itertuples():
        inside = "yes" if row.lower <= row.realized <= row.upper else "NO"
        print(
            f"{row.scenario:<16}{row.share:>7.0%}{row.fraud:>7.1%}{row.realized:>10.4f}"
            f"{row.ours:>11.4f}   [{row.lower:.4f}, {row.upper:.4f}]{inside:>9}"
            f"{row.nannyml:>9.4f}{abs(row.ours - row.nannyml):>8.4f}"
        )
    print()
    for scenario, group in table.groupby("scenario", sort=False):
        ours = (group["ours"] - group["realized"]).abs().mean()
        nannyml = (group["nannyml"] - group["realized"]).abs().mean()
        shifted = group[group["share"] == 1.0]
        print(
            f"{scenario}: mean absolute error driftloop {ours:.4f}, NannyML {nannyml:.4f}; "
            f"fully shifted windows: realized {shifted['realized'].mean():.4f}, "
            f"estimated {shifted['ours'].mean():.4f}"
        )
    covariate = table[table["scenario"] == "covariate_shift"]
    mae = (covariate["ours"] - covariate["realized"]).abs().mean()
    gap = (table["ours"] - table["nannyml"]).abs().max()
    print(f"estimate per window: median {table['seconds'].median() * 1000:.1f} ms")
    print(f"target (covariate shift): mean absolute error <= {TARGET_MAE} -> {mae:.4f}")
    if theirs:
        print(f"target: driftloop within {TARGET_GAP} of NannyML on every window -> {gap:.4f}")


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
