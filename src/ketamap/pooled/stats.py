"""What every pooled analysis shares: the result frame, BH q-values, mixed-model fits."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

# scipy.stats, statsmodels and patsy are imported by the functions that use them: the figure
# jobs import this module too, and those imports cost them 1-2 s (benchmarks/overhead.py).
import numpy as np
import pandas as pd

from ketamap.pooled import RESULT_TABLE
from ketamap.schemas import get_table


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
    from statsmodels.stats.multitest import multipletests

    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def fit_mixed(fit: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run a statsmodels MixedLM fit and say in one note what is wrong with it, if anything.

    statsmodels warns about three different things, and only real problems become a note:

    - the fit did not converge (``converged`` is False after every optimizer tried): a problem;
    - the Hessian at the estimate is not positive definite while the random-intercept variance is
      inside the parameter space: the standard errors cannot be trusted, a problem;
    - "the MLE may be on the boundary": statsmodels raises this whenever the random-intercept
      variance is below 0.01 *in the outcome's own units* (for log SUVR, a between-subject SD of
      10 % triggers it), so it is replaced by a unit-free check: the variance as a fraction of
      the residual variance below 1e-6. That is a property of the data, reported as such, not a
      failure.

    Retries of another optimizer after a first one stalled are not reported when a later one
    converged.
    """
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("always", SingularMatrixWarning)
        result = fit()
    notes = []
    boundary = random_variance_ratio(result) < 1e-6
    if not getattr(result, "converged", True):
        notes.append("the mixed model did not converge (estimates unreliable)")
    elif not boundary and any("Hessian" in str(w.message) for w in caught):
        notes.append(
            "the mixed model's Hessian is not positive definite (standard errors unreliable)"
        )
    if boundary:
        notes.append("random-intercept variance estimated at 0")
    return result, "; ".join(notes) or None


def random_variance_ratio(result: Any) -> float:
    """Smallest random-effect variance of a MixedLM fit relative to the residual variance."""
    unscaled = np.atleast_2d(np.asarray(getattr(result, "cov_re_unscaled", [[np.inf]]), float))
    return float(np.min(np.diag(unscaled))) if unscaled.size else float("inf")
