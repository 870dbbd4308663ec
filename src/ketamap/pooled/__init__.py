"""Pooled analyses. Each returns rows of the one shared result shape (table ``pooled_result``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests
from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

from ketamap.schemas import get_table

RESULT_TABLE = "pooled_result"


def result_frame(rows: list[dict]) -> pd.DataFrame:
    """Assemble result rows into the shared shape, filling absent strata with missing values and
    computing Benjamini-Hochberg q-values across the rows that carry a p-value."""
    fields = get_table(RESULT_TABLE).field_names
    df = pd.DataFrame(rows)
    for col in fields:
        if col not in df.columns:
            df[col] = None
    df = df[fields].copy()
    for col in ("estimate", "ci_low", "ci_high", "p_value", "statistic", "df"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    df["q_value"] = bh_qvalues(df["p_value"].astype(float).to_numpy())
    return df


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values; NaN where there is no p-value."""
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def fit_mixed(fit: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run a statsmodels mixed-model fit, turning its fitting warnings into a note for the result row.

    A random-intercept variance on the boundary (singular covariance) or a convergence warning is a
    property of the data worth reporting, not an error.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("always", SingularMatrixWarning)
        result = fit()
    kinds = {w.category for w in caught}
    notes = []
    if SingularMatrixWarning in kinds:
        notes.append("random-intercept variance estimated at its boundary (0)")
    if ConvergenceWarning in kinds:
        notes.append("the mixed model reported a convergence warning")
    return result, "; ".join(notes) or None
