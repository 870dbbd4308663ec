"""Compare pooled results with a synthetic scenario's ground truth.

The ground-truth entries carry the same keys as the pooled result rows (analysis, term and the
stratum columns), so recovery is a join: for each truth, is the estimate's sign right and does its
95 % interval cover the truth; for each planted null, is it not significant after FDR.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ketamap import schemas
from ketamap.errors import KetamapError
from ketamap.pooled import RESULT_TABLE

STRATA = ("arm", "region", "species", "region_group", "measure", "condition")


def compare(truth_path: str | Path, pooled_dir: str | Path, alpha: float = 0.05) -> pd.DataFrame:
    """One row per ground-truth entry with the matching estimate, interval and verdicts."""
    if not Path(truth_path).is_file():
        raise KetamapError(
            "ground truth file missing",
            file=truth_path,
            expected="ground_truth.json written by `ketamap synth` (resources/demo/sites/ after make run)",
        )
    truth = pd.DataFrame(json.loads(Path(truth_path).read_text())["entries"])
    if not Path(pooled_dir).is_dir():
        raise KetamapError(
            "pooled results folder missing", file=pooled_dir, expected="results/pooled of a run"
        )
    rows = []
    for analysis, entries in truth.groupby("analysis", sort=True):
        path = Path(pooled_dir) / f"{analysis}.parquet"
        if not path.is_file():  # not run (yet): every truth of it is reported as not found
            rows.append(
                entries.assign(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, q_value=np.nan)
            )
            continue
        result = schemas.read_table(path, RESULT_TABLE)
        keys = ["term"] + [c for c in STRATA if c in entries.columns and c in result.columns]
        left = entries.copy()
        right = result.copy()
        for k in keys:  # a missing stratum is a key like any other
            left[k] = left[k].astype(object).where(left[k].notna(), "")
            right[k] = right[k].astype(object).where(right[k].notna(), "")
        merged = left.merge(right, on=["analysis", *keys], how="left", suffixes=("_truth", ""))
        rows.append(merged)
    if not rows:
        raise KetamapError(
            "no ground-truth entries",
            file=truth_path,
            expected="entries with analysis, term and value",
        )
    df = pd.concat(rows, ignore_index=True)
    # A result row exists for the truth (with or without an estimate: "not estimated" rows count
    # as found and not covered).
    method = df["method"] if "method" in df.columns else pd.Series(np.nan, index=df.index)
    df["found"] = df["estimate"].notna() | method.notna()
    # Optional truths cover every question an analysis could be configured to ask (e.g. each
    # arm and region of pet.response_prediction); those the run did not ask are not failures.
    if "optional" in df.columns:
        df = df[~(df["optional"].fillna(False).astype(bool) & ~df["found"])].reset_index(drop=True)
    df["covered"] = (df["ci_low"] <= df["value"]) & (df["value"] <= df["ci_high"])
    # The value of "no effect": chance for an AUC, zero for differences and slopes.
    null_value = np.where(df["unit"].astype(str) == "AUC", 0.5, 0.0)
    nonzero = df["value"] != null_value
    # Rates are non-negative by construction: a sign only means something for effects.
    signed = ~df["term"].str.endswith("_rate")
    df["sign_ok"] = (
        ~nonzero | ~signed | ((df["estimate"] > null_value) == (df["value"] > null_value))
    )
    has_p = df["q_value"].notna()
    df["null_ok"] = nonzero | ~has_p | (df["q_value"] >= alpha)
    return df
