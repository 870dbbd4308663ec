"""Pooled PET analyses across the three trials, each in the shared result shape.

- ``pet.baseline_trd_vs_hc``: baseline SUVR, TRD minus HC, adjusted for age and sex, with scanner
  effects removed by ComBat (neuroHarmonize) when the design check allows it.
- ``pet.ketamine_x_time``: MixedLM of log SUVR on visit x arm with a random intercept per subject;
  the interaction is reported as % change (ketamine relative to placebo).
- ``pet.change_vs_improvement``: in the ketamine arm, OLS of regional % change on MADRS improvement.
- ``pet.response_prediction``: cross-validated logistic regression of response on baseline SUVR,
  harmonization fitted inside each training fold, AUC with a bootstrap CI and a label-permutation p.

Models are fitted one region at a time (a model per region is the analysis, not a data loop); the
data handling around them is vectorised.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut, RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ketamap.errors import KetamapError
from ketamap.pooled import fit_mixed, result_frame
from ketamap.pooled.clinical import change_table

log = logging.getLogger("ketamap.pooled.pet")


@dataclass(frozen=True)
class DesignCheck:
    """Whether scanner harmonization can be applied without removing the diagnosis effect."""

    harmonize: bool
    identifiable: bool
    note: str


def check_design(batch: pd.Series, group: pd.Series) -> DesignCheck:
    """Decide whether ComBat by ``batch`` is possible and whether ``group`` survives it.

    The group effect is identifiable apart from batch effects only if the design
    [batch indicators, group] has full column rank, i.e. some batch contains both groups.
    """
    counts = batch.value_counts()
    if len(counts) == 1:
        return DesignCheck(
            False, True, f"single scanner ({counts.index[0]}): no harmonization needed"
        )
    small = sorted(counts[counts < 2].index)
    dummies = pd.get_dummies(batch).to_numpy(dtype=float)
    x = np.column_stack([dummies, (group == group.iloc[0]).to_numpy(dtype=float)])
    identifiable = np.linalg.matrix_rank(x) == x.shape[1]
    if not identifiable:
        per = {b: sorted(set(group[batch == b])) for b in counts.index}
        return DesignCheck(
            False,
            False,
            "diagnosis is confounded with scanner (each scanner saw one group only: "
            + "; ".join(f"{b}: {'/'.join(g)}" for b, g in sorted(per.items()))
            + "); the TRD-vs-HC difference cannot be separated from scanner effects, so nothing was "
            "harmonized and no p-value is given",
        )
    if small:
        return DesignCheck(
            False,
            True,
            f"scanners {small} have fewer than 2 scans; ComBat cannot be fitted, not harmonized",
        )
    shared = [b for b in counts.index if group[batch == b].nunique() > 1]
    return DesignCheck(
        True,
        True,
        f"harmonized by scanner with ComBat (diagnosis protected); both groups on scanner(s) {sorted(shared)}",
    )


def combat(data: np.ndarray, batch: pd.Series, covariates: pd.DataFrame) -> np.ndarray:
    """ComBat (neuroHarmonize) of ``data`` (subjects x regions) by ``batch``, protecting ``covariates``."""
    from neuroHarmonize import harmonizationLearn

    covars = covariates.reset_index(drop=True).astype(float)
    covars.insert(0, "SITE", batch.astype(str).to_numpy())
    with _quiet_neuroharmonize():
        _, adjusted = harmonizationLearn(np.asarray(data, dtype=float), covars)
    return np.asarray(adjusted)


@contextmanager
def _quiet_neuroharmonize() -> Iterator[None]:
    """neuroHarmonize still uses numpy.matrix; its PendingDeprecationWarning is not ours to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="the matrix subclass", category=PendingDeprecationWarning
        )
        yield


def _wide(regional: pd.DataFrame, visit: str) -> pd.DataFrame:
    rows = regional[regional["visit"] == visit]
    return rows.pivot_table(
        index="subject_id", columns="region", values="suvr", aggfunc="first"
    ).sort_index()


def _session_scanner(regional: pd.DataFrame, visit: str) -> pd.Series:
    rows = regional[regional["visit"] == visit].drop_duplicates("subject_id")
    return rows.set_index("subject_id")["scanner"].astype(str).sort_index()


def _covariates(subjects: pd.DataFrame) -> pd.DataFrame:
    s = subjects.set_index("subject_id")
    return pd.DataFrame(
        {
            "age": pd.to_numeric(s["age_years"], errors="coerce").astype(float),
            "female": (s["sex"].astype(object) == "female").astype(float).where(s["sex"].notna()),
            "trd": (s["group"].astype(object) == "trd").astype(float),
            "arm": s["arm"].astype(object),
            "trial": s["trial"].astype(str),
            "site": s["site"].astype(str),
        }
    )


def _regions(wide: pd.DataFrame, reference: str) -> list[str]:
    return [r for r in wide.columns if r != reference]


def analyze_baseline(
    regional: pd.DataFrame, subjects: pd.DataFrame, *, reference_region: str
) -> pd.DataFrame:
    """``pet.baseline_trd_vs_hc``: TRD minus HC baseline SUVR per region, adjusted for age and sex."""
    wide = _wide(regional, "baseline")
    cov = _covariates(subjects).reindex(wide.index)
    cov["scanner"] = _session_scanner(regional, "baseline")
    complete = cov[["age", "female", "trd"]].notna().all(axis=1)
    dropped = int((~complete).sum())
    wide, cov = wide[complete], cov[complete]
    regions = _regions(wide, reference_region)
    if cov["trd"].nunique() < 2:
        raise KetamapError(
            "baseline PET needs both TRD patients and healthy controls", field="group"
        )
    check = check_design(cov["scanner"], cov["trd"].map({1.0: "trd", 0.0: "hc"}))
    log.log(
        logging.INFO if check.identifiable else logging.WARNING,
        "design check (pet.baseline_trd_vs_hc): %s",
        check.note,
    )
    values = wide[regions].to_numpy(dtype=float)
    if check.harmonize:
        values = combat(values, cov["scanner"], cov[["trd", "age", "female"]])
    note = check.note + (f"; {dropped} scans without age or sex left out" if dropped else "")
    data = cov[["trd", "age", "female"]].copy()
    rows = []
    for j, region in enumerate(regions):
        data["y"] = values[:, j]
        fit = smf.ols("y ~ trd + age + female", data=data).fit()
        low, high = fit.conf_int().loc["trd"]
        rows.append(
            dict(
                term="trd_minus_hc",
                region=region,
                estimate=fit.params["trd"],
                ci_low=low,
                ci_high=high,
                p_value=fit.pvalues["trd"] if check.identifiable else None,
                n=int(fit.nobs),
                unit="SUVR",
                statistic=fit.tvalues["trd"],
                df=float(fit.df_resid),
                method="OLS of baseline SUVR on diagnosis + age + sex"
                + (", after ComBat by scanner" if check.harmonize else ", not harmonized"),
                note=note,
            )
        )
    return _finish(rows, "pet.baseline_trd_vs_hc")


def analyze_ketamine_x_time(
    regional: pd.DataFrame, subjects: pd.DataFrame, *, reference_region: str
) -> pd.DataFrame:
    """``pet.ketamine_x_time``: visit x arm in a MixedLM of log SUVR, random intercept per subject, as % change."""
    cov = _covariates(subjects)
    long = regional[regional["region"] != reference_region].merge(
        cov[["arm", "trial"]], left_on="subject_id", right_index=True, how="inner"
    )
    long = long[long["arm"].notna()].copy()
    both = long.groupby("subject_id")["visit"].transform("nunique") == 2
    long = long[both]
    if long.empty or long["arm"].nunique() < 2:
        raise KetamapError(
            "no randomised subjects with PET at both visits in both arms", field="arm"
        )
    long["log_suvr"] = np.log(long["suvr"].astype(float))
    long["post"] = (long["visit"] == "post").astype(float)
    long["ketamine"] = (long["arm"] == "ketamine").astype(float)
    multi_trial = long["trial"].nunique() > 1
    formula = "log_suvr ~ post * ketamine" + (" + C(trial)" if multi_trial else "")
    rows = []
    for region, data in long.groupby("region", sort=True):
        model = smf.mixedlm(formula, data=data, groups=data["subject_id"])
        fit, fit_note = fit_mixed(partial(model.fit, reml=True, method=["lbfgs", "powell"]))
        term = "post:ketamine"
        # Small-sample inference: the visit x arm contrast is within-subject, so use the
        # between-within degrees of freedom (observations - subjects - within-subject terms)
        # with a t reference instead of the Wald z; for two visits per subject this is exactly
        # the df of the paired comparison (statsmodels offers no Kenward-Roger correction).
        n_obs, n_subjects = int(fit.nobs), int(data["subject_id"].nunique())
        df = float(n_obs - n_subjects - 2)
        beta, se = float(fit.params[term]), float(fit.bse[term])
        tcrit = stats.t.ppf(0.975, df)
        low, high = beta - tcrit * se, beta + tcrit * se
        tval = beta / se
        rows.append(
            dict(
                term="ketamine_x_time",
                region=region,
                estimate=100 * np.expm1(beta),
                ci_low=100 * np.expm1(low),
                ci_high=100 * np.expm1(high),
                p_value=2 * stats.t.sf(abs(tval), df),
                n=n_subjects,
                unit="% change",
                statistic=tval,
                df=df,
                method="MixedLM of log SUVR ~ visit x arm"
                + (" + trial" if multi_trial else "")
                + ", random intercept per subject, REML; t with between-within df; % = 100 (exp(b) - 1)",
                note=fit_note,
            )
        )
    return _finish(rows, "pet.ketamine_x_time")


def percent_change(regional: pd.DataFrame, reference_region: str) -> pd.DataFrame:
    """Subjects x regions: 100 (post / baseline - 1) of SUVR."""
    base, post = _wide(regional, "baseline"), _wide(regional, "post")
    common = base.index.intersection(post.index)
    pct = 100 * (post.loc[common] / base.loc[common] - 1)
    return pct[_regions(pct, reference_region)]


def analyze_change_vs_improvement(
    regional: pd.DataFrame, subjects: pd.DataFrame, scores: pd.DataFrame, *, reference_region: str
) -> pd.DataFrame:
    """``pet.change_vs_improvement``: slope of regional % change on MADRS improvement, ketamine arm."""
    clinical = change_table(subjects, scores).set_index("subject_id")
    ket = clinical[clinical["arm"] == "ketamine"]
    pct = percent_change(regional, reference_region)
    common = pct.index.intersection(ket.index)
    if len(common) < 4:
        raise KetamapError(
            f"only {len(common)} ketamine-arm subjects with PET and MADRS at both visits",
            field="arm",
        )
    pct, ket = pct.loc[common], ket.loc[common]
    adjust = _session_scanner(regional, "baseline").reindex(common)
    data = pd.DataFrame(
        {"improvement": -ket["change"].astype(float), "scanner": adjust.to_numpy()}, index=common
    )
    multi = data["scanner"].nunique() > 1
    formula = "y ~ improvement" + (" + C(scanner)" if multi else "")
    rows = []
    for region in pct.columns:
        data["y"] = pct[region].to_numpy(dtype=float)
        fit = smf.ols(formula, data=data).fit()
        low, high = fit.conf_int().loc["improvement"]
        r = float(np.corrcoef(data["improvement"], data["y"])[0, 1])
        rows.append(
            dict(
                term="slope",
                region=region,
                estimate=fit.params["improvement"],
                ci_low=low,
                ci_high=high,
                p_value=fit.pvalues["improvement"],
                n=int(fit.nobs),
                unit="% change per MADRS point",
                statistic=fit.tvalues["improvement"],
                df=float(fit.df_resid),
                method="OLS of regional % SUVR change on MADRS improvement"
                + (" + scanner" if multi else ""),
                note=f"Pearson r = {r:.3f}",
            )
        )
    return _finish(rows, "pet.change_vs_improvement")


def analyze_response_prediction(
    regional: pd.DataFrame,
    subjects: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    reference_region: str,
    response_fraction: float = 0.5,
    seed: int = 0,
    n_repeats: int = 10,
    n_permutations: int = 200,
    n_bootstrap: int = 2000,
) -> pd.DataFrame:
    """``pet.response_prediction``: does baseline regional SUVR predict response, out of sample?"""
    clinical = change_table(subjects, scores).set_index("subject_id")
    wide = _wide(regional, "baseline")
    common = wide.index.intersection(clinical.index)
    clinical, wide = clinical.loc[common], wide.loc[common]
    reduction = -clinical["change"] / clinical["baseline"].where(clinical["baseline"] > 0)
    y = (reduction >= response_fraction).to_numpy(dtype=int)
    x = wide[_regions(wide, reference_region)].to_numpy(dtype=float)
    site = subjects.set_index("subject_id")["site"].reindex(common).astype(str).to_numpy()
    scanner = _session_scanner(regional, "baseline").reindex(common).to_numpy()
    minority = int(min(y.sum(), len(y) - y.sum()))
    base = dict(term="auc", region=None, unit="AUC", statistic=None, df=None, n=len(y))
    if minority < 2:
        return _finish(
            [
                dict(
                    base,
                    estimate=None,
                    ci_low=None,
                    ci_high=None,
                    p_value=None,
                    method="not estimated",
                    note=f"only {minority} subjects in the smaller class (responders or non-responders)",
                )
            ],
            "pet.response_prediction",
        )
    n_sites = len(set(site))
    if n_sites >= 2:
        splits_of = lambda labels: list(LeaveOneGroupOut().split(x, labels, site))  # noqa: E731
        scheme = f"leave-one-site-out over {n_sites} sites"
    else:
        k = min(5, minority)
        splits_of = lambda labels: list(  # noqa: E731
            RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed).split(
                x, labels
            )
        )
        scheme = f"{n_repeats} x repeated stratified {k}-fold"
    notes: set[str] = set()

    def cv_auc(labels: np.ndarray) -> tuple[float, np.ndarray]:
        scores_oof = np.zeros(len(labels))
        counts = np.zeros(len(labels))
        for train, test in splits_of(labels):
            if len(set(labels[train])) < 2:
                continue
            xtr, xte = x[train], x[test]
            if len(set(scanner[train])) > 1 and set(scanner[test]) <= set(scanner[train]):
                xtr, xte = _combat_fold(xtr, xte, scanner[train], scanner[test])
                notes.add("ComBat by scanner fitted in each training fold")
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
            model.fit(xtr, labels[train])
            scores_oof[test] += model.predict_proba(xte)[:, 1]
            counts[test] += 1
        pred = scores_oof / np.maximum(counts, 1)
        return float(roc_auc_score(labels, pred)), pred

    auc, pred = cv_auc(y)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if len(set(y[idx])) == 2:
            boot.append(roc_auc_score(y[idx], pred[idx]))
    low, high = np.percentile(boot, [2.5, 97.5])
    null = np.array([cv_auc(rng.permutation(y))[0] for _ in range(n_permutations)])
    p = (1 + np.sum(null >= auc)) / (1 + n_permutations)
    if not notes:
        notes.add(
            "no harmonization (one scanner in training, or the test scanner unseen in training)"
        )
    return _finish(
        [
            dict(
                base,
                estimate=auc,
                ci_low=low,
                ci_high=high,
                p_value=p,
                method=f"L2 logistic regression on standardized baseline SUVR, {scheme}; AUC of out-of-fold "
                f"predictions, percentile bootstrap CI ({n_bootstrap}), label-permutation p ({n_permutations})",
                note="; ".join(sorted(notes)),
            )
        ],
        "pet.response_prediction",
    )


def _combat_fold(
    xtr: np.ndarray, xte: np.ndarray, btr: np.ndarray, bte: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ComBat learnt on the training fold only, then applied to the test fold."""
    from neuroHarmonize import harmonizationApply, harmonizationLearn

    with _quiet_neuroharmonize():
        model, xtr_h = harmonizationLearn(xtr, pd.DataFrame({"SITE": btr}))
        xte_h = harmonizationApply(xte, pd.DataFrame({"SITE": bte}), model)
    return np.asarray(xtr_h), np.asarray(xte_h)


def _finish(rows: list[dict], analysis: str) -> pd.DataFrame:
    out = result_frame(rows)
    out["analysis"] = analysis
    return out
