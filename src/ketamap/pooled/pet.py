"""Pooled PET analyses across the trials, each in the shared result shape.

- ``pet.baseline_trd_vs_hc``: baseline SUVR, TRD minus HC, adjusted for age and sex. A design check
  on the acquisition batches (the physical scanners, ``pet_regional.batch``) decides what can be
  estimated: nothing when every batch holds one group; otherwise an OLS with batch fixed effects
  within the batches that hold both groups.
- ``pet.ketamine_x_time``: MixedLM of log SUVR on visit x arm (trial-specific visit effects when
  several trials randomised) with a random intercept per subject, every available scan used; the
  interaction is reported as % change (ketamine relative to placebo).
- ``pet.change_vs_improvement``: in the ketamine arm, OLS of regional % change on MADRS improvement.
- ``pet.response_prediction``: the AUC with which a pre-specified region's baseline SUVR separates
  responders from non-responders in one arm (within-batch pairs only when several batches).

Why batch fixed effects and not ComBat-then-OLS for the group contrast: ComBat estimates each
batch's location from the data and removes it, then the OLS treats the harmonized values as if
nothing had been estimated. When a batch holds controls only, its controls still enter the TRD-vs-HC
contrast as independent evidence although their batch offset was fitted on them, and the test is
anti-conservative (7.6 % of null regions at p < 0.05 over 300 simulated consortia at the published
sizes, CI coverage 92 %). With batch fixed effects a single-group batch carries no information
about the group difference at all, so it is left out of the contrast and the t test is exact under
the model; ``benchmarks/calibration.py`` measures both. ComBat (:func:`combat`) is still used where
estimated batch offsets are harmless: the harmonized-values figure.

Models are fitted one region at a time (a model per region is the analysis, not a data loop); the
data handling around them is vectorised.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

# scipy.stats, statsmodels and patsy are imported by the functions that use them: the figure
# jobs import this module too, and those imports cost them 1-2 s (benchmarks/overhead.py).
import numpy as np
import pandas as pd

from ketamap.errors import KetamapError
from ketamap.pooled import Outcome
from ketamap.pooled.clinical import change_table
from ketamap.pooled.stats import fit_mixed, result_frame

log = logging.getLogger("ketamap.pooled.pet")

SINGLE = "single batch"
BALANCED = "balanced"
PARTIAL = "partially confounded"
CONFOUNDED = "fully confounded"


@dataclass(frozen=True)
class DesignCheck:
    """What the acquisition batches allow for a two-group contrast.

    ``verdict`` is one of ``single batch``, ``balanced`` (every batch holds both groups),
    ``partially confounded`` (some batches hold one group only) and ``fully confounded`` (every
    batch holds one group only: the group difference cannot be told apart from batch effects).
    ``informative`` lists the batches holding both groups, ``single_group`` maps each other batch
    to the group it holds.
    """

    verdict: str
    informative: tuple[str, ...]
    single_group: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def identifiable(self) -> bool:
        return self.verdict != CONFOUNDED


def check_design(batch: pd.Series, group: pd.Series) -> DesignCheck:
    """Decide what a ``group`` contrast can use when observations come in ``batch``es.

    Under batch fixed effects the group effect is identified only by batches holding both groups
    (the design [batch indicators, group] has full column rank exactly when one does).
    """
    per = {str(b): sorted(set(map(str, group[batch == b]))) for b in sorted(set(map(str, batch)))}
    informative = tuple(b for b, g in per.items() if len(g) > 1)
    single = {b: g[0] for b, g in per.items() if len(g) == 1}
    listing = "; ".join(f"{b}: {g}" for b, g in single.items())
    if not informative:
        return DesignCheck(
            CONFOUNDED,
            informative,
            single,
            "fully confounded: every acquisition batch holds one group only ("
            + listing
            + "), so the TRD-vs-HC difference cannot be separated from scanner differences; no "
            "estimate, interval or p-value is given",
        )
    if len(per) == 1:
        return DesignCheck(
            SINGLE, informative, single, f"single acquisition batch ({informative[0]})"
        )
    if not single:
        return DesignCheck(
            BALANCED,
            informative,
            single,
            f"balanced: all {len(informative)} batches hold both groups; batch fixed effects",
        )
    return DesignCheck(
        PARTIAL,
        informative,
        single,
        f"partially confounded: {len(single)} batch(es) hold one group only ({listing}) and carry no "
        "information on the group difference, so they are left out of it; estimated within "
        + ", ".join(informative)
        + (" with batch fixed effects" if len(informative) > 1 else ""),
    )


def combat(data: np.ndarray, batch: pd.Series, covariates: pd.DataFrame) -> np.ndarray:
    """ComBat (neuroHarmonize) of ``data`` (subjects x regions) by ``batch``, protecting ``covariates``."""
    from neuroHarmonize import harmonizationLearn

    covars = covariates.reset_index(drop=True).astype(float)
    covars.insert(0, "SITE", batch.astype(str).to_numpy())
    with _quiet_neuroharmonize():
        _, adjusted = harmonizationLearn(np.asarray(data, dtype=float), covars)
    return np.asarray(adjusted)


def batch_overview(
    regional: pd.DataFrame, subjects: pd.DataFrame, *, reference_region: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, DesignCheck]:
    """Per baseline scan: batch, group and mean non-reference SUVR, as measured and after ComBat
    (group, age and sex protected; only when every batch has two scans and the design is
    identifiable, since ComBat would otherwise remove the group difference with the batch)."""
    reference = reference_of(regional, reference_region)
    wide = _wide(regional, "baseline")
    wide = wide[_regions(wide, reference)].dropna(axis=1)
    cov = _covariates(subjects).reindex(wide.index)
    cov["batch"] = session_batch(regional, "baseline")
    cov = cov.dropna(subset=["age", "female", "trd"])
    wide = wide.loc[cov.index]
    group = cov["trd"].map({1.0: "trd", 0.0: "hc"})
    check = check_design(cov["batch"], group)
    raw = pd.DataFrame({"batch": cov["batch"], "group": group, "value": wide.mean(axis=1)})
    counts = cov["batch"].value_counts()
    if not check.identifiable or len(counts) < 2 or (counts < 2).any():
        return raw, None, check
    values = combat(wide.to_numpy(dtype=float), cov["batch"], cov[["trd", "age", "female"]])
    return raw, raw.assign(value=values.mean(axis=1)), check


@contextmanager
def _quiet_neuroharmonize() -> Iterator[None]:
    """neuroHarmonize still uses numpy.matrix; its PendingDeprecationWarning is not ours to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="the matrix subclass", category=PendingDeprecationWarning
        )
        yield


def reference_of(regional: pd.DataFrame, reference_region: str | None = None) -> str:
    """The SUVR reference region: as given, else the one the table was harmonized against."""
    if reference_region is not None:
        return reference_region
    found = sorted(set(regional.get("reference_region", pd.Series(dtype=str)).dropna()))
    if len(found) != 1:
        raise KetamapError(
            f"pet_regional has reference regions {found}",
            field="reference_region",
            expected="every site harmonized against the same reference region",
        )
    return str(found[0])


def _wide(regional: pd.DataFrame, visit: str) -> pd.DataFrame:
    rows = regional[regional["visit"] == visit]
    return rows.pivot_table(
        index="subject_id", columns="region", values="suvr", aggfunc="first"
    ).sort_index()


def _batch_column(regional: pd.DataFrame) -> str:
    # Tables harmonized before batch existed (schema version 1) only name the make and model.
    return "batch" if "batch" in regional.columns else "scanner"


def session_batch(regional: pd.DataFrame, visit: str) -> pd.Series:
    """Per subject: the acquisition batch of the scan at ``visit``."""
    col = _batch_column(regional)
    rows = regional[regional["visit"] == visit].drop_duplicates("subject_id")
    return rows.set_index("subject_id")[col].astype(str).sort_index()


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


def _t_row(beta: float, se: float, df: float) -> dict:
    from scipy import stats

    tcrit = stats.t.ppf(0.975, df)
    return dict(
        estimate=beta,
        ci_low=beta - tcrit * se,
        ci_high=beta + tcrit * se,
        p_value=float(2 * stats.t.sf(abs(beta / se), df)),
        statistic=beta / se,
        df=df,
    )


def _ols_columns(y: np.ndarray, x: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficient ``column`` and its SE for every column of ``y`` (same design ``x``) at once.

    This is ``statsmodels.OLS`` fitted per region, vectorised over regions (one QR of the shared
    design); ``tests/test_pooled_pet.py`` checks it against statsmodels.
    """
    n, k = x.shape
    if np.linalg.matrix_rank(x) < k:
        raise KetamapError("the design matrix is rank deficient", field="batch")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    df = n - k
    sigma2 = (resid**2).sum(axis=0) / df
    xtx_inv = np.linalg.inv(x.T @ x)
    return coef[column], np.sqrt(sigma2 * xtx_inv[column, column]), float(df)


def analyze_baseline(
    regional: pd.DataFrame, subjects: pd.DataFrame, *, reference_region: str | None = None
) -> pd.DataFrame:
    """``pet.baseline_trd_vs_hc``: TRD minus HC baseline SUVR per region, adjusted for age and sex."""
    from patsy import dmatrix

    reference = reference_of(regional, reference_region)
    wide = _wide(regional, "baseline")
    cov = _covariates(subjects).reindex(wide.index)
    cov["batch"] = session_batch(regional, "baseline")
    complete = cov[["age", "female", "trd"]].notna().all(axis=1)
    dropped = int((~complete).sum())
    wide, cov = wide[complete], cov[complete]
    regions = _regions(wide, reference)
    if cov["trd"].nunique() < 2:
        raise KetamapError(
            "baseline PET needs both TRD patients and healthy controls", field="group"
        )
    check = check_design(cov["batch"], cov["trd"].map({1.0: "trd", 0.0: "hc"}))
    log.log(
        logging.INFO if check.identifiable else logging.WARNING,
        "design check (pet.baseline_trd_vs_hc): %s",
        check.note,
    )
    note = check.note + (f"; {dropped} scans without age or sex left out" if dropped else "")
    if not check.identifiable:
        rows = [
            dict(
                term="trd_minus_hc",
                region=region,
                n=len(cov),
                unit="SUVR",
                method="not estimated: diagnosis fully confounded with acquisition batch",
                note=note,
            )
            for region in regions
        ]
        return _finish(rows, "pet.baseline_trd_vs_hc")
    used = cov["batch"].isin(check.informative).to_numpy()
    data = cov[used]
    fixed = len(check.informative) > 1
    design = dmatrix(
        "trd + age + female" + (" + C(batch)" if fixed else ""), data, return_type="dataframe"
    )
    values = wide[regions].to_numpy(dtype=float)[used]
    ok = np.isfinite(values)
    rows = []
    # Regions missing on some scans (no voxel on a coarse grid) are fitted on their own rows.
    for mask in {tuple(col) for col in ok.T}:
        m = np.asarray(mask)
        cols = np.array([j for j in range(len(regions)) if tuple(ok[:, j]) == mask])
        beta, se, df = _ols_columns(
            values[np.ix_(m, cols)], design.to_numpy()[m], design.columns.get_loc("trd")
        )
        for j, b, s in zip(cols, beta, se, strict=True):
            rows.append(
                dict(
                    term="trd_minus_hc",
                    region=regions[j],
                    **_t_row(float(b), float(s), df),
                    n=int(m.sum()),
                    unit="SUVR",
                    method="OLS of baseline SUVR on diagnosis + age + sex"
                    + (" + batch fixed effects" if fixed else "")
                    + f", within {len(check.informative)} batch(es) holding both groups; Student t",
                    note=note,
                )
            )
    rows.sort(key=lambda r: str(r["region"]))
    return _finish(rows, "pet.baseline_trd_vs_hc")


def _randomised_long(
    regional: pd.DataFrame, subjects: pd.DataFrame, reference: str
) -> pd.DataFrame:
    cov = _covariates(subjects)
    col = _batch_column(regional)
    long = regional[regional["region"] != reference].merge(
        cov[["arm", "trial"]], left_on="subject_id", right_index=True, how="inner"
    )
    long = long[long["arm"].notna() & long["visit"].isin(["baseline", "post"])].copy()
    long["batch"] = long[col].astype(str)
    return long


def analyze_ketamine_x_time(
    regional: pd.DataFrame, subjects: pd.DataFrame, *, reference_region: str | None = None
) -> pd.DataFrame:
    """``pet.ketamine_x_time``: visit x arm in a MixedLM of log SUVR, random intercept per subject.

    Every randomised subject's available scans enter (a subject without a post scan still informs
    the baseline levels, as the likelihood does under data missing at random). With several trials
    each trial has its own visit effect (placebo response and scanner drift may differ by trial);
    the interaction is the drug effect pooled over trials. A scanner change between a subject's
    visits adds batch fixed effects. The fit is on 100 log SUVR (rescaling changes no estimate or
    test; it keeps the optimizer well conditioned). Inference: t with between-within degrees of
    freedom (complete subjects minus the within-subject fixed effects), which for complete data is
    exactly the t of an OLS of each subject's log change on arm (+ trial); statsmodels offers no
    Kenward-Roger correction.
    """
    import statsmodels.formula.api as smf

    reference = reference_of(regional, reference_region)
    long = _randomised_long(regional, subjects, reference)
    visits = long.groupby("subject_id")["visit"].nunique()
    complete = long[long["subject_id"].isin(visits.index[visits == 2])]
    arms = complete.drop_duplicates("subject_id")["arm"].value_counts()
    if any(arms.get(a, 0) < 2 for a in ("ketamine", "placebo")):
        raise KetamapError(
            f"subjects with PET at both visits per arm: {arms.to_dict()}",
            field="arm",
            expected="at least 2 randomised subjects with baseline and post PET in each arm",
        )
    long["y"] = 100 * np.log(long["suvr"].astype(float))
    long["post"] = (long["visit"] == "post").astype(float)
    long["ketamine"] = (long["arm"] == "ketamine").astype(float)
    trials = sorted(complete.groupby("trial")["arm"].nunique().loc[lambda s: s == 2].index)
    long = long[long["trial"].isin(trials)]
    multi_trial = len(trials) > 1
    formula = "y ~ post * ketamine" + (" + C(trial) + post:C(trial)" if multi_trial else "")
    switched = int((long.groupby("subject_id")["batch"].nunique() > 1).sum())
    if switched:
        formula += " + C(batch)"
    n_dropout = int(long["subject_id"].nunique() - complete["subject_id"].nunique())
    rows = []
    for region, data in long.groupby("region", sort=True):
        data = data.dropna(subset=["y"])
        model = smf.mixedlm(formula, data=data, groups=data["subject_id"])
        fit, fit_note = fit_mixed(partial(model.fit, reml=True, method=["bfgs", "lbfgs", "powell"]))
        n_subjects = int(data["subject_id"].nunique())
        within = sum(1 for name in fit.fe_params.index if "post" in name or "batch" in name)
        df = float(len(data) - n_subjects - within)
        beta, se = float(fit.fe_params["post:ketamine"]), float(fit.bse_fe["post:ketamine"])
        row = _t_row(beta, se, df)
        notes = [
            n
            for n in (
                fit_note,
                f"{n_dropout} randomised subject(s) without a post scan contribute their baseline"
                if n_dropout
                else None,
                f"{switched} subject(s) scanned on different batches at the two visits"
                if switched
                else None,
            )
            if n
        ]
        rows.append(
            dict(
                term="ketamine_x_time",
                region=region,
                estimate=100 * np.expm1(beta / 100),
                ci_low=100 * np.expm1(row["ci_low"] / 100),
                ci_high=100 * np.expm1(row["ci_high"] / 100),
                p_value=row["p_value"],
                n=n_subjects,
                unit="% change",
                statistic=row["statistic"],
                df=df,
                method="MixedLM of log SUVR ~ visit x arm"
                + (" + trial + visit x trial" if multi_trial else "")
                + (" + batch" if switched else "")
                + ", random intercept per subject, REML; t with between-within df; "
                "% = 100 (exp(b) - 1)",
                note="; ".join(notes) or None,
            )
        )
    return _finish(rows, "pet.ketamine_x_time")


def percent_change(regional: pd.DataFrame, reference_region: str | None = None) -> pd.DataFrame:
    """Subjects x regions: 100 (post / baseline - 1) of SUVR."""
    reference = reference_of(regional, reference_region)
    base, post = _wide(regional, "baseline"), _wide(regional, "post")
    common = base.index.intersection(post.index)
    pct = 100 * (post.loc[common] / base.loc[common] - 1)
    return pct[_regions(pct, reference)]


def analyze_change_vs_improvement(
    regional: pd.DataFrame,
    subjects: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    reference_region: str | None = None,
) -> pd.DataFrame:
    """``pet.change_vs_improvement``: slope of regional % change on MADRS improvement, ketamine arm."""
    import statsmodels.api as sm
    from patsy import dmatrix

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
    data = pd.DataFrame(
        {
            "improvement": -ket["change"].astype(float),
            "trial": ket["trial"].astype(str),
            "batch": session_batch(regional, "baseline").reindex(common).to_numpy(),
        },
        index=common,
    )
    terms = ["improvement"]
    for factor in ("trial", "batch"):
        candidate = dmatrix(" + ".join([*terms, f"C({factor})"]), data)
        if data[factor].nunique() > 1 and np.linalg.matrix_rank(candidate) == candidate.shape[1]:
            terms.append(f"C({factor})")
    design = dmatrix(" + ".join(terms), data, return_type="dataframe")
    rows = []
    for region in pct.columns:
        y = pct[region].to_numpy(dtype=float)
        ok = np.isfinite(y)
        fit = sm.OLS(y[ok], design.to_numpy()[ok]).fit()
        j = design.columns.get_loc("improvement")
        r = float(np.corrcoef(data["improvement"].to_numpy()[ok], y[ok])[0, 1])
        rows.append(
            dict(
                term="slope",
                region=region,
                **_t_row(float(fit.params[j]), float(fit.bse[j]), float(fit.df_resid)),
                n=int(ok.sum()),
                unit="% change per MADRS point",
                method="OLS of regional % SUVR change on MADRS improvement"
                + "".join(f" + {t[2:-1]}" for t in terms[1:])
                + ", ketamine arm; Student t",
                note=f"Pearson r = {r:.3f}",
            )
        )
    return _finish(rows, "pet.change_vs_improvement")


def stratified_auc(
    score: np.ndarray, positive: np.ndarray, stratum: np.ndarray
) -> tuple[float, float, int, int]:
    """AUC of ``score`` for ``positive`` comparing only pairs within the same stratum, and its
    DeLong variance.

    Within one stratum this is the Mann-Whitney AUC (ties count half) with DeLong's variance
    (structural components); across strata the within-stratum AUCs are pooled with weights
    n_pos * n_neg (the share of within-stratum pairs), the strata being independent. Written here
    because neither scipy, statsmodels nor scikit-learn offers DeLong's variance; it is a few
    array operations and tests/test_pooled_pet.py checks it against scipy's Mann-Whitney U.

    Returns AUC, variance, positives and negatives in strata that hold both.
    """
    total_pairs, auc_sum, var_sum, n_pos, n_neg = 0.0, 0.0, 0.0, 0, 0
    for s in np.unique(stratum):
        x1 = score[(stratum == s) & positive]
        x0 = score[(stratum == s) & ~positive]
        if len(x1) == 0 or len(x0) == 0:
            continue
        psi = (x1[:, None] > x0[None, :]) + 0.5 * (x1[:, None] == x0[None, :])
        pairs = float(psi.size)
        v10 = psi.mean(axis=1)
        v01 = psi.mean(axis=0)
        var = (v10.var(ddof=1) / len(x1) if len(x1) > 1 else 0.0) + (
            v01.var(ddof=1) / len(x0) if len(x0) > 1 else 0.0
        )
        total_pairs += pairs
        auc_sum += pairs * psi.mean()
        var_sum += pairs**2 * var
        n_pos, n_neg = n_pos + len(x1), n_neg + len(x0)
    if total_pairs == 0:
        return float("nan"), float("nan"), n_pos, n_neg
    return auc_sum / total_pairs, var_sum / total_pairs**2, n_pos, n_neg


def auc_interval(auc: float, var: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95 % interval of an AUC on the logit scale, from DeLong's variance.

    The AUC is first moved half a pair away from 0 and 1 ((AUC n1 n0 + 0.5) / (n1 n0 + 1)), so a
    perfect separation still has a finite logit; when DeLong's variance is 0 (perfect separation)
    the Hanley-McNeil variance at the moved AUC is used (wide, but honest: a perturbed DeLong
    variance there covered 0.85 only 89-92 % of the time). Simulated coverage with 4-20 positives
    and 9-20 negatives, true AUC 0.5-0.95: 0.93-0.98; Wald intervals on the AUC scale 0.80-0.93
    (benchmarks/calibration.py and tests/test_pooled_pet.py).
    """
    from scipy import stats

    pairs = n_pos * n_neg
    a = (auc * pairs + 0.5) / (pairs + 1)
    if not var > 0:
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / pairs
    logit = np.log(a / (1 - a))
    half = stats.norm.ppf(0.975) * np.sqrt(var) / (a * (1 - a))
    return float(1 / (1 + np.exp(-(logit - half)))), float(1 / (1 + np.exp(-(logit + half))))


def auc_test(
    score: np.ndarray, positive: np.ndarray, stratum: np.ndarray, auc: float
) -> tuple[float, float]:
    """z and two-sided p of H0 AUC = 0.5 (no association), with the variance under H0.

    One stratum: the Mann-Whitney U test of scipy (exact for small samples without ties). Several:
    the stratified (van Elteren-type) normal approximation, each stratum's null variance
    (n1 + n0 + 1) / (12 n1 n0) weighted like its AUC. ``z`` is that normal approximation in both
    cases.
    """
    from scipy import stats

    weights, null_var, used = [], [], []
    for s in np.unique(stratum):
        n1 = int(((stratum == s) & positive).sum())
        n0 = int(((stratum == s) & ~positive).sum())
        if n1 and n0:
            weights.append(n1 * n0)
            null_var.append((n1 + n0 + 1) / (12 * n1 * n0))
            used.append(s)
    w = np.asarray(weights, dtype=float) / sum(weights)
    z = (auc - 0.5) / float(np.sqrt((w**2 * np.asarray(null_var)).sum()))
    if len(used) == 1:
        inside = stratum == used[0]
        p = stats.mannwhitneyu(
            score[inside & positive], score[inside & ~positive], alternative="two-sided"
        ).pvalue
        return z, float(p)
    return z, float(2 * stats.norm.sf(abs(z)))


def analyze_response_prediction(
    regional: pd.DataFrame,
    subjects: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    regions: Sequence[str],
    arm: str = "ketamine",
    response_fraction: float = 0.5,
    min_per_class: int = 4,
    reference_region: str | None = None,
) -> pd.DataFrame:
    """``pet.response_prediction``: how well does baseline SUVR of a pre-specified region tell
    responders from non-responders in ``arm`` (``ketamine``, ``placebo`` or ``all``)?

    The estimand is the AUC of the region's baseline SUVR for response (a MADRS reduction of at
    least ``response_fraction``): the probability that a responder's SUVR exceeds a
    non-responder's (AUC < 0.5: lower SUVR goes with response). Nothing is fitted, so the AUC is
    its own out-of-sample estimate, does not depend on the order of the rows (hence not on the
    pseudonymization key), and needs no cross-validation; several regions are several
    pre-specified hypotheses (one row each, BH across them). With several acquisition batches
    only responder/non-responder pairs of the same batch are compared (a scanner offset cannot
    create or hide discrimination). Below ``min_per_class`` responders or non-responders (the
    interval's coverage is not honest below 4) the row says so and gives no number.
    """
    reference = reference_of(regional, reference_region)
    clinical = change_table(subjects, scores).set_index("subject_id")
    if arm != "all":
        clinical = clinical[clinical["arm"] == arm]
    wide = _wide(regional, "baseline")
    missing = [r for r in regions if r not in wide.columns or r == reference]
    if missing:
        raise KetamapError(
            f"regions {missing} are not non-reference regions of pet_regional",
            field="pet.response_prediction.regions",
            expected=f"some of {sorted(set(wide.columns) - {reference})}",
        )
    common = wide.index.intersection(clinical.index)
    clinical = clinical.loc[common]
    reduction = -clinical["change"] / clinical["baseline"].where(clinical["baseline"] > 0)
    responder = (reduction >= response_fraction - 1e-12).to_numpy()
    batch = session_batch(regional, "baseline").reindex(common).to_numpy()
    outcome = (
        f"response = MADRS reduction >= {100 * response_fraction:g} %; {arm} arm"
        if arm != "all"
        else f"response = MADRS reduction >= {100 * response_fraction:g} %; both arms"
    )
    rows = []
    for region in regions:
        x = wide.loc[common, region].to_numpy(dtype=float)
        ok = np.isfinite(x)
        auc, var, n_pos, n_neg = stratified_auc(x[ok], responder[ok], batch[ok])
        base = dict(
            term="auc",
            arm=arm,
            region=region,
            n=int(n_pos + n_neg),
            unit="AUC",
        )
        if min(n_pos, n_neg) < min_per_class:
            rows.append(
                dict(
                    base,
                    method="not estimated: too few responders or non-responders",
                    note=f"{n_pos} responders and {n_neg} non-responders with baseline PET "
                    f"({outcome}); at least {min_per_class} of each are needed for an interval "
                    "with honest coverage",
                )
            )
            continue
        low, high = auc_interval(auc, var, n_pos, n_neg)
        z, p = auc_test(x[ok], responder[ok], batch[ok], auc)
        classes = pd.DataFrame({"b": batch[ok], "r": responder[ok]}).groupby("b")["r"].nunique()
        strata = int((classes == 2).sum())
        rows.append(
            dict(
                base,
                estimate=auc,
                ci_low=low,
                ci_high=high,
                p_value=p,
                statistic=z,
                method="AUC of baseline SUVR for response (Mann-Whitney, "
                + ("pairs within each of the batches, " if strata > 1 else "")
                + "no model fitted); DeLong variance, logit interval; Mann-Whitney test of AUC = 0.5"
                + (" (stratified by batch, normal approximation)" if strata > 1 else ""),
                note=f"{n_pos} responders, {n_neg} non-responders ({outcome})",
            )
        )
    return _finish(rows, "pet.response_prediction")


def _finish(rows: list[dict], analysis: str) -> pd.DataFrame:
    out = result_frame(rows)
    out["analysis"] = analysis
    return out


# ------------------------------------------------------------------------------ workflow steps
# Named by ketamap.pooled.ANALYSES / FIGURES; each takes the tables it reads and its options
# (ketamap.pooled.analysis_options) and returns what to write.


def _pet_tables(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, ...]:
    reg = tables["pet_regional"]
    if reg.empty:
        raise KetamapError(
            "pet_regional has no rows",
            file="results/tables/pet_regional.parquet",
            expected="PET scans from a PET site",
        )
    return reg, tables["subjects"], tables["clinical_scores"]


def _forest(result: pd.DataFrame, null: float = 0.0) -> Outcome:
    from ketamap import figures

    significant = int((result["q_value"] < 0.05).sum())
    return Outcome(
        result,
        figure=partial(figures.forest_plot, result, null=null),
        summary=f"{len(result)} rows, {significant} with q < 0.05",
    )


def step_baseline(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    reg, subj, _ = _pet_tables(tables)
    return _forest(analyze_baseline(reg, subj))


def step_ketamine_x_time(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    reg, subj, _ = _pet_tables(tables)
    return _forest(analyze_ketamine_x_time(reg, subj))


def step_change_vs_improvement(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    reg, subj, scores = _pet_tables(tables)
    return _forest(analyze_change_vs_improvement(reg, subj, scores))


def step_response_prediction(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    from ketamap.config import with_defaults

    reg, subj, scores = _pet_tables(tables)
    spec = with_defaults(options["analysis"], "analyses", "pet.response_prediction")
    result = analyze_response_prediction(
        reg,
        subj,
        scores,
        regions=list(spec["regions"]),
        arm=str(spec["arm"]),
        response_fraction=float(options["clinical.response_fraction"]),
        min_per_class=int(spec["min_per_class"]),
    )
    return _forest(result, null=0.5)


def figure_change_scatter(
    result: pd.DataFrame,
    regional: pd.DataFrame,
    subjects: pd.DataFrame,
    scores: pd.DataFrame,
    output: Path,
) -> None:
    """Scatter of regional % change against MADRS improvement for the strongest regions."""
    from ketamap import figures

    clinical = change_table(subjects, scores)
    ket = clinical[clinical["arm"] == "ketamine"].set_index("subject_id")
    pct = percent_change(regional)
    common = pct.index.intersection(ket.index)
    figures.change_scatter(pct.loc[common], -ket.loc[common, "change"], result, output)


def figure_batches(regional: pd.DataFrame, subjects: pd.DataFrame, output: Path) -> None:
    """Baseline SUVR by acquisition batch and group, as measured and after ComBat (display only)."""
    from ketamap import figures

    raw, harmonized, check = batch_overview(regional, subjects)
    figures.batch_plot(raw, harmonized, f"design check: {check.note}", output)
