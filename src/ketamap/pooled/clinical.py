"""Pooled clinical analysis of the trials: MADRS change, response and remission by arm.

``clinical.madrs_change`` pools every randomised participant of every trial with arms. The arm
difference is an OLS of the MADRS change on arm (with trial as a fixed effect when more than one
trial randomised), so with one trial it is the classical Student t of Ohtani et al. (2024).
Response (a reduction of at least ``response_fraction``) and remission (post MADRS at most
``remission_threshold``) are reported by arm with Agresti-Coull intervals, and as ketamine-minus-placebo
differences with Newcombe intervals and Fisher's exact test.
"""

from __future__ import annotations

from typing import Any

# scipy.stats, statsmodels and patsy are imported by the functions that use them: the figure
# jobs import this module too, and those imports cost them 1-2 s (benchmarks/overhead.py).
import numpy as np
import pandas as pd

from ketamap.errors import KetamapError
from ketamap.pooled import Outcome
from ketamap.pooled.stats import result_frame

ANALYSIS = "clinical.madrs_change"
ARMS = ("ketamine", "placebo")
POINTS = "MADRS points"


def change_table(subjects: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per randomised subject with baseline, post and change in MADRS equivalents.

    Subjects without both visits are left out (complete cases); ``n`` in the results says how many remain.
    """
    madrs = scores.pivot_table(
        index="subject_id", columns="visit", values="madrs_equivalent", aggfunc="first"
    )
    for visit in ("baseline", "post"):
        if visit not in madrs.columns:
            madrs[visit] = np.nan
    randomised = subjects[subjects["arm"].notna()].set_index("subject_id")[["trial", "arm"]]
    df = randomised.join(madrs[["baseline", "post"]], how="left")
    df = df.dropna(subset=["baseline", "post"]).astype({"baseline": float, "post": float})
    df["change"] = df["post"] - df["baseline"]
    df["arm"] = df["arm"].astype(str)
    df["trial"] = df["trial"].astype(str)
    return df.reset_index()


def too_few_randomised(subjects: pd.DataFrame, complete: pd.DataFrame) -> KetamapError:
    """The error when an arm has fewer than two complete cases, naming the sites and trials that
    randomised and, per arm, how many of their subjects have both visits."""
    randomised = subjects[subjects["arm"].notna()].astype({"arm": str})
    have = set(complete["subject_id"])
    keys = [c for c in ("site", "trial") if c in subjects.columns]
    parts = []
    if keys and len(randomised):
        for key, group in randomised.groupby(keys, sort=True):
            label = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
            name = f"site {label['site']}" if "site" in label else ""
            if "trial" in label:
                name = f"{name} (trial {label['trial']})" if name else f"trial {label['trial']}"
            arms = ", ".join(
                f"{arm} {int(group.loc[group['arm'] == arm, 'subject_id'].isin(have).sum())}/"
                f"{int((group['arm'] == arm).sum())}"
                for arm in ARMS
            )
            parts.append(f"{name}: {arms}")
    where = "; ".join(parts)
    sites = sorted(randomised["site"].astype(str).unique()) if "site" in randomised else []
    if not len(randomised):
        listed = sorted(subjects["site"].astype(str).unique()) if "site" in subjects else []
        problem = "no randomised subjects: no subject has an arm" + (
            f" (sites in the subjects table: {', '.join(listed)})" if listed else ""
        )
    else:
        problem = (
            "too few randomised subjects with both visits per arm (subjects with baseline and "
            f"post scores / randomised: {where or dict(complete['arm'].value_counts())})"
        )
    return KetamapError(
        problem,
        site=", ".join(sites) or None,
        file="subjects and clinical_scores tables",
        field="arm",
        expected="at least 2 subjects with baseline and post scores in each arm "
        f"({' and '.join(ARMS)}) over the randomised trials",
        hint="check the randomised sites' participants.tsv column 'arm' and their score files "
        "(sites[].reader.scores and .visits)",
    )


def analyze_madrs_change(
    subjects: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    response_fraction: float = 0.5,
    remission_threshold: float = 10.0,
) -> pd.DataFrame:
    """The pooled clinical result rows (shared result shape)."""
    import statsmodels.formula.api as smf
    from scipy import stats
    from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

    df = change_table(subjects, scores)
    counts = df["arm"].value_counts()
    if any(counts.get(arm, 0) < 2 for arm in ARMS):
        raise too_few_randomised(subjects, df)
    reduction = -df["change"] / df["baseline"].where(df["baseline"] > 0)
    df["response"] = reduction >= response_fraction
    df["remission"] = df["post"] <= remission_threshold
    rows: list[dict] = []

    for arm in ARMS:
        change = df.loc[df["arm"] == arm, "change"].to_numpy()
        test = stats.ttest_1samp(change, 0.0)
        ci = test.confidence_interval(0.95)
        rows.append(
            dict(
                term="change",
                arm=arm,
                estimate=change.mean(),
                ci_low=ci.low,
                ci_high=ci.high,
                p_value=test.pvalue,
                n=len(change),
                unit=POINTS,
                statistic=test.statistic,
                df=float(test.df),
                method="one-sample Student t vs 0",
            )
        )

    trials = df.groupby("trial")["arm"].nunique()
    multi = int((trials == 2).sum()) > 1
    formula = "change ~ C(arm, Treatment('placebo'))" + (" + C(trial)" if multi else "")
    fit = smf.ols(formula, data=df).fit()
    term = "C(arm, Treatment('placebo'))[T.ketamine]"
    ci_low, ci_high = fit.conf_int().loc[term]
    rows.append(
        dict(
            term="arm_difference",
            arm=None,
            estimate=fit.params[term],
            ci_low=ci_low,
            ci_high=ci_high,
            p_value=fit.pvalues[term],
            n=int(fit.nobs),
            unit=POINTS,
            statistic=fit.tvalues[term],
            df=float(fit.df_resid),
            method="OLS of MADRS change on arm"
            + (" with trial fixed effects" if multi else "")
            + ", Student t",
        )
    )

    rules = {
        "response": f"response = MADRS reduction >= {100 * response_fraction:g} % from baseline",
        "remission": f"remission = post MADRS <= {remission_threshold:g}",
    }
    for outcome in ("response", "remission"):
        successes = {arm: int(df.loc[df["arm"] == arm, outcome].sum()) for arm in ARMS}
        totals = {arm: int((df["arm"] == arm).sum()) for arm in ARMS}
        for arm in ARMS:
            # Agresti-Coull, not Wilson or Jeffreys: at these arm sizes both dip well below 95 %
            # for some rates (exact coverage: Wilson 86 % for a placebo response rate of 0.9 % in
            # 17, Jeffreys 89 % for a remission rate of 9.3 % in 26); Agresti-Coull stays at
            # 94.7-99.9 % over the rates and sizes of the trials (conservative near 0).
            low, high = proportion_confint(
                successes[arm], totals[arm], alpha=0.05, method="agresti_coull"
            )
            rows.append(
                dict(
                    term=f"{outcome}_rate",
                    arm=arm,
                    estimate=successes[arm] / totals[arm],
                    ci_low=low,
                    ci_high=high,
                    p_value=None,
                    n=totals[arm],
                    unit="proportion",
                    statistic=None,
                    df=None,
                    method=f"proportion, Agresti-Coull interval; {rules[outcome]}",
                )
            )
        low, high = confint_proportions_2indep(
            successes["ketamine"],
            totals["ketamine"],
            successes["placebo"],
            totals["placebo"],
            method="newcomb",
            compare="diff",
        )
        table = [
            [successes["ketamine"], totals["ketamine"] - successes["ketamine"]],
            [successes["placebo"], totals["placebo"] - successes["placebo"]],
        ]
        odds, p = stats.fisher_exact(table)
        rows.append(
            dict(
                term=f"{outcome}_difference",
                arm=None,
                estimate=successes["ketamine"] / totals["ketamine"]
                - successes["placebo"] / totals["placebo"],
                ci_low=low,
                ci_high=high,
                p_value=p,
                n=totals["ketamine"] + totals["placebo"],
                unit="proportion",
                statistic=odds if np.isfinite(odds) else None,
                df=None,
                method="risk difference ketamine - placebo, Newcombe interval, Fisher exact test "
                f"(statistic: odds ratio); {rules[outcome]}",
            )
        )
    out = result_frame(rows)
    out["analysis"] = ANALYSIS
    return out


def metrics(result: pd.DataFrame) -> dict:
    """Headline numbers for ``dvc metrics``."""
    diff = result[result["term"] == "arm_difference"].iloc[0]
    return {
        "arm_difference_madrs": round(float(diff["estimate"]), 6),
        "t": round(float(diff["statistic"]), 6),
        "df": float(diff["df"]),
        "p_value": round(float(diff["p_value"]), 6),
        "n": int(diff["n"]),
    }


# ------------------------------------------------------------------------------ workflow steps
# Named by ketamap.pooled.ANALYSES / FIGURES; each takes the tables it reads and its options
# (ketamap.pooled.analysis_options) and returns what to write.


def step_madrs_change(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    """``clinical.madrs_change`` and the headline metrics."""
    result = analyze_madrs_change(
        tables["subjects"],
        tables["clinical_scores"],
        response_fraction=float(options["clinical.response_fraction"]),
        remission_threshold=float(options["clinical.remission_threshold"]),
    )
    diff = result[result["term"] == "arm_difference"].iloc[0]
    summary = (
        f"arm difference {diff['estimate']:.2f} MADRS points, t({diff['df']:g}) = "
        f"{diff['statistic']:.2f}, p = {diff['p_value']:.3f}"
    )
    return Outcome(result, metrics=metrics(result), summary=summary)
