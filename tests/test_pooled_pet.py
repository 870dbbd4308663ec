"""Pooled PET analyses on simulated tables with known effects (independent of the image generator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ketamap.errors import KetamapError
from ketamap.pooled.pet import (
    analyze_baseline,
    analyze_change_vs_improvement,
    analyze_ketamine_x_time,
    analyze_response_prediction,
    check_design,
)

REGIONS = ["acc", "habenula", "dlpfc", "insula", "occipital", "putamen", "thalamus", "cerebellum"]
REF = "cerebellum"


def simulate(
    seed: int,
    *,
    n_arm: int = 40,
    n_hc: tuple[int, int] = (40, 40),
    baseline_diff: dict[str, float] | None = None,
    ketamine_pct: dict[str, float] | None = None,
    slope: dict[str, float] | None = None,
    trd_scanner: str = "S1",
    offsets: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """subjects, clinical_scores and pet_regional frames: RCT patients on trd_scanner, HC on S1 and S2."""
    rng = np.random.default_rng(seed)
    baseline_diff, ketamine_pct, slope = baseline_diff or {}, ketamine_pct or {}, slope or {}
    offsets = offsets or {"S1": 0.0, "S2": 0.12}
    subjects, scores, regional = [], [], []
    people = [("trd", "ketamine", trd_scanner, "rct")] * n_arm + [
        ("trd", "placebo", trd_scanner, "rct")
    ] * n_arm
    people += [("hc", None, "S1", "hc1")] * n_hc[0] + [("hc", None, "S2", "hc2")] * n_hc[1]
    for i, (group, arm, scanner, site) in enumerate(people):
        sid = f"KM{i:012X}"
        age, female = rng.normal(45, 10), rng.random() < 0.5
        subjects.append(
            dict(
                subject_id=sid,
                site=site,
                trial=site,
                group=group,
                arm=arm,
                sex="female" if female else "male",
                age_years=age,
            )
        )
        madrs0 = rng.normal(33 if group == "trd" else 2, 4)
        improvement = rng.normal(8 if arm == "ketamine" else 3, 6) if arm else 0.0
        scores.append(dict(subject_id=sid, visit="baseline", madrs_equivalent=madrs0))
        if arm:
            scores.append(dict(subject_id=sid, visit="post", madrs_equivalent=madrs0 - improvement))
        subject_level = rng.normal(0, 0.08)
        for region in REGIONS:
            true = 1.0 if region == REF else 1.5 * (1 + subject_level + rng.normal(0, 0.04))
            if group == "trd" and region != REF:
                true += baseline_diff.get(region, 0.0)
            base = true * (1 + rng.normal(0, 0.02)) + (offsets[scanner] if region != REF else 0)
            regional.append(
                dict(subject_id=sid, visit="baseline", region=region, suvr=base, scanner=scanner)
            )
            if arm:
                pct = 0.0
                if arm == "ketamine" and region != REF:
                    pct = ketamine_pct.get(region, 0.0) + slope.get(region, 0.0) * (improvement - 8)
                post = true * (1 + pct / 100) * (1 + rng.normal(0, 0.02)) + (
                    offsets[scanner] if region != REF else 0
                )
                regional.append(
                    dict(subject_id=sid, visit="post", region=region, suvr=post, scanner=scanner)
                )
    return pd.DataFrame(subjects), pd.DataFrame(scores), pd.DataFrame(regional)


def row(result: pd.DataFrame, region: str) -> pd.Series:
    return result[result["region"] == region].iloc[0]


def test_design_check_verdicts() -> None:
    batch = pd.Series(["S1", "S1", "S1", "S2", "S2"])
    partial = check_design(batch, pd.Series(["trd", "hc", "trd", "hc", "hc"]))
    assert partial.verdict == "partially confounded" and partial.identifiable
    assert partial.informative == ("S1",) and partial.single_group == {"S2": "hc"}
    assert "S2: hc" in partial.note and "left out" in partial.note
    confounded = check_design(batch, pd.Series(["trd", "trd", "trd", "hc", "hc"]))
    assert confounded.verdict == "fully confounded" and not confounded.identifiable
    assert "no estimate, interval or p-value" in confounded.note
    single = check_design(pd.Series(["S1"] * 4), pd.Series(["trd", "hc", "trd", "hc"]))
    assert single.verdict == "single batch" and single.identifiable
    balanced = check_design(batch, pd.Series(["trd", "hc", "trd", "hc", "trd"]))
    assert balanced.verdict == "balanced" and balanced.informative == ("S1", "S2")


def test_baseline_difference_recovered_with_batch_fixed_effects() -> None:
    subjects, _, regional = simulate(1, baseline_diff={"acc": -0.09, "insula": -0.08})
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert set(result["region"]) == set(REGIONS) - {REF}
    for region, truth in {"acc": -0.09, "insula": -0.08}.items():
        r = row(result, region)
        assert r["ci_low"] <= truth <= r["ci_high"] and r["estimate"] < 0 and r["q_value"] < 0.05
    nulls = result[~result["region"].isin(["acc", "insula"])]
    assert (nulls["q_value"] >= 0.05).all()
    assert result["note"].str.contains("partially confounded").all()
    # The HC-only batch S2 carries no information on the group difference: left out.
    assert (result["n"] == 120).all() and (result["df"] == 120 - 4).all()


def test_baseline_ols_matches_statsmodels_per_region() -> None:
    import statsmodels.formula.api as smf

    subjects, _, regional = simulate(11, n_arm=12, n_hc=(10, 10), trd_scanner="S2")
    moved = subjects["subject_id"].iloc[:4]  # four patients scanned on S1: both batches informative
    regional.loc[regional["subject_id"].isin(moved), "scanner"] = "S1"
    result = analyze_baseline(regional, subjects, reference_region=REF)
    wide = regional[regional["visit"] == "baseline"].pivot(
        index="subject_id", columns="region", values="suvr"
    )
    data = subjects.set_index("subject_id").loc[wide.index]
    data = data.assign(
        trd=(data["group"] == "trd").astype(float),
        female=(data["sex"] == "female").astype(float),
        batch=regional.drop_duplicates("subject_id").set_index("subject_id")["scanner"],
        y=wide["habenula"],
    )
    fit = smf.ols("y ~ trd + age_years + female + C(batch)", data=data).fit()
    r = row(result, "habenula")
    assert result["note"].iloc[0].startswith("balanced")
    assert r["estimate"] == pytest.approx(fit.params["trd"], rel=1e-10)
    assert r["ci_low"] == pytest.approx(fit.conf_int().loc["trd", 0], rel=1e-10)
    assert r["p_value"] == pytest.approx(fit.pvalues["trd"], rel=1e-8)
    assert r["df"] == fit.df_resid


def test_scanner_offset_of_a_control_only_batch_makes_no_false_positive() -> None:
    """The HC-only scanner reads 0.25 higher: it is left out of the contrast, so nulls stay null."""
    subjects, _, regional = simulate(2, offsets={"S1": 0.0, "S2": 0.25})
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert (result["q_value"] >= 0.05).all()


def test_confounded_design_is_flagged_and_not_estimated(caplog: pytest.LogCaptureFixture) -> None:
    subjects, _, regional = simulate(
        3, baseline_diff={"acc": -0.09}, n_hc=(0, 40), trd_scanner="S1"
    )
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert result["note"].str.contains("fully confounded").all()
    for col in ("estimate", "ci_low", "ci_high", "p_value", "q_value", "statistic", "df"):
        assert result[col].isna().all(), col
    assert result["method"].str.startswith("not estimated").all()
    assert "fully confounded" in caplog.text


def test_ketamine_x_time_recovered_and_placebo_null() -> None:
    subjects, _, regional = simulate(4, ketamine_pct={"habenula": -6.0, "dlpfc": 3.0})
    result = analyze_ketamine_x_time(regional, subjects, reference_region=REF)
    for region, truth in {"habenula": -6.0, "dlpfc": 3.0}.items():
        r = row(result, region)
        assert (
            r["ci_low"] <= truth <= r["ci_high"]
            and np.sign(r["estimate"]) == np.sign(truth)
            and r["q_value"] < 0.05
        )
    assert (result[~result["region"].isin(["habenula", "dlpfc"])]["q_value"] >= 0.05).all()
    assert (result["unit"] == "% change").all() and (result["n"] == 80).all()


def test_change_tracks_improvement() -> None:
    subjects, scores, regional = simulate(
        5, ketamine_pct={"habenula": -6.0}, slope={"habenula": -0.5}
    )
    result = analyze_change_vs_improvement(regional, subjects, scores, reference_region=REF)
    r = row(result, "habenula")
    assert r["ci_low"] <= -0.5 <= r["ci_high"] and r["q_value"] < 0.05 and r["n"] == 40
    assert (result[result["region"] != "habenula"]["q_value"] >= 0.05).all()


def _responders(scores: pd.DataFrame, subjects: pd.DataFrame, who: pd.Series) -> pd.DataFrame:
    """Set the post MADRS so that exactly the subjects in ``who`` respond (reduction >= 50 %)."""
    scores = scores.copy()
    base = scores[scores["visit"] == "baseline"].set_index("subject_id")["madrs_equivalent"]
    post = scores["visit"] == "post"
    ids = scores.loc[post, "subject_id"]
    responds = ids.isin(who)
    scores.loc[post, "madrs_equivalent"] = np.where(
        responds, 0.3 * base.reindex(ids).to_numpy(), 0.9 * base.reindex(ids).to_numpy()
    )
    return scores


def test_response_prediction_recovers_a_planted_marker_and_nulls() -> None:
    subjects, scores, regional = simulate(6, n_arm=40, n_hc=(5, 5))
    ket = subjects[subjects["arm"] == "ketamine"]["subject_id"]
    hab = regional[(regional["visit"] == "baseline") & (regional["region"] == "habenula")]
    hab = hab.set_index("subject_id")["suvr"].reindex(ket)
    marker = (hab - hab.mean()) / hab.std() + np.random.default_rng(6).normal(0, 0.7, len(hab))
    scores = _responders(scores, subjects, marker[marker > marker.median()].index.to_series())
    result = analyze_response_prediction(
        regional, subjects, scores, regions=["habenula", "acc"], reference_region=REF
    )
    assert set(result["region"]) == {"acc", "habenula"} and (result["arm"] == "ketamine").all()
    hab_row, acc_row = row(result, "habenula"), row(result, "acc")
    assert hab_row["ci_low"] > 0.6 and hab_row["q_value"] < 0.05
    assert acc_row["estimate"] > 0.5  # acc shares the simulated subject effect with the habenula
    assert "20 responders, 20 non-responders" in hab_row["note"]
    assert "reduction >= 50 %" in hab_row["note"] and "ketamine arm" in hab_row["note"]


def test_perfect_separation_is_significant_with_a_finite_interval() -> None:
    subjects, scores, regional = simulate(15, n_arm=20, n_hc=(3, 3))
    ket = subjects[subjects["arm"] == "ketamine"]["subject_id"]
    acc = regional[(regional["visit"] == "baseline") & (regional["region"] == "acc")]
    acc = acc.set_index("subject_id")["suvr"].reindex(ket)
    scores = _responders(scores, subjects, acc[acc > acc.median()].index.to_series())
    r = analyze_response_prediction(
        regional, subjects, scores, regions=["acc"], reference_region=REF
    ).iloc[0]
    assert r["estimate"] == 1.0 and r["p_value"] < 1e-3 and 0 < r["ci_low"] < r["ci_high"] < 1


def test_response_prediction_auc_is_mann_whitney_and_order_free() -> None:
    """Nothing is fitted: the AUC is Mann-Whitney's U / (n1 n0), whatever the row order or ids."""
    from scipy import stats

    subjects, scores, regional = simulate(12, n_arm=30, n_hc=(3, 3))
    rng = np.random.default_rng(12)
    ket = subjects[subjects["arm"] == "ketamine"]["subject_id"]
    scores = _responders(scores, subjects, ket[rng.random(len(ket)) < 0.4])
    result = analyze_response_prediction(
        regional, subjects, scores, regions=["dlpfc"], reference_region=REF
    )
    base = regional[(regional["visit"] == "baseline") & (regional["region"] == "dlpfc")]
    x = base.set_index("subject_id")["suvr"].reindex(ket)
    wide = scores.pivot(index="subject_id", columns="visit", values="madrs_equivalent").loc[ket]
    resp = (wide["baseline"] - wide["post"]) >= 0.5 * wide["baseline"]
    u = stats.mannwhitneyu(x[resp], x[~resp]).statistic
    assert result.iloc[0]["estimate"] == pytest.approx(u / (resp.sum() * (~resp).sum()), abs=1e-12)
    assert result.iloc[0]["ci_low"] <= 0.5 <= result.iloc[0]["ci_high"]  # random responders
    # Another pseudonymization key: other ids, other row order, the same AUC and interval.
    rename = {
        sid: f"KM{abs(hash(sid + 'other key')) % 10**12:012d}" for sid in subjects["subject_id"]
    }
    again = analyze_response_prediction(
        regional.sample(frac=1, random_state=1).replace({"subject_id": rename}),
        subjects.sample(frac=1, random_state=2).replace({"subject_id": rename}),
        scores.sample(frac=1, random_state=3).replace({"subject_id": rename}),
        regions=["dlpfc"],
        reference_region=REF,
    )
    for col in ("estimate", "ci_low", "ci_high", "p_value"):
        assert again.iloc[0][col] == pytest.approx(result.iloc[0][col], abs=1e-12)


def test_response_prediction_compares_pairs_within_batches_only() -> None:
    """A scanner offset shared by the responders of one batch creates no discrimination."""
    subjects, scores, regional = simulate(13, n_arm=30, n_hc=(3, 3))
    ket = subjects[subjects["arm"] == "ketamine"]["subject_id"].to_numpy()
    rng = np.random.default_rng(13)
    on_s2 = ket[:15]
    responders = np.concatenate([on_s2[rng.random(15) < 0.7], ket[15:][rng.random(15) < 0.2]])
    scores = _responders(scores, subjects, pd.Series(responders))
    shifted = regional["subject_id"].isin(on_s2) & (regional["region"] != REF)
    regional.loc[shifted, "suvr"] += 0.3
    regional.loc[regional["subject_id"].isin(on_s2), "scanner"] = "S2"
    result = analyze_response_prediction(
        regional, subjects, scores, regions=["occipital"], reference_region=REF
    )
    r = result.iloc[0]
    assert r["ci_low"] <= 0.5 <= r["ci_high"] and "within each of the batches" in r["method"]


def test_response_prediction_refuses_below_the_minimum() -> None:
    subjects, scores, regional = simulate(7, n_arm=12, n_hc=(3, 3))
    ket = subjects[subjects["arm"] == "ketamine"]["subject_id"]
    scores = _responders(scores, subjects, ket.iloc[:3])
    result = analyze_response_prediction(
        regional, subjects, scores, regions=["habenula"], reference_region=REF
    )
    r = result.iloc[0]
    assert np.isnan(r["estimate"]) and np.isnan(r["ci_low"]) and np.isnan(r["p_value"])
    assert "3 responders and 9 non-responders" in r["note"] and "at least 4" in r["note"]
    with pytest.raises(KetamapError, match="not non-reference regions"):
        analyze_response_prediction(
            regional, subjects, scores, regions=["nowhere"], reference_region=REF
        )


def test_auc_interval_covers_over_simulations() -> None:
    """Coverage of the logit DeLong interval at the sizes of one trial arm (4-6 responders)."""
    from ketamap.pooled.pet import auc_interval, stratified_auc

    rng = np.random.default_rng(14)
    for auc_true, n_pos, n_neg in ((0.5, 4, 13), (0.75, 5, 12), (0.75, 8, 9)):
        shift = np.sqrt(2) * stats_norm_ppf(auc_true)
        hits = 0
        for _ in range(400):
            x = np.concatenate([rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)])
            y = np.arange(n_pos + n_neg) < n_pos
            auc, var, p, n = stratified_auc(x, y, np.zeros(len(x)))
            low, high = auc_interval(auc, var, p, n)
            hits += low <= auc_true <= high
        assert 0.92 <= hits / 400 <= 0.99, (auc_true, n_pos, hits)


def stats_norm_ppf(q: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(q))


def test_figures_are_written_and_reproducible(tmp_path) -> None:
    from ketamap.figures import change_scatter, forest_plot
    from ketamap.pooled.clinical import change_table
    from ketamap.pooled.pet import percent_change

    subjects, scores, regional = simulate(
        8, ketamine_pct={"habenula": -6.0}, slope={"habenula": -0.5}, n_arm=15, n_hc=(5, 5)
    )
    result = analyze_change_vs_improvement(regional, subjects, scores, reference_region=REF)
    for name in ("a.png", "b.png"):
        forest_plot(result, tmp_path / name)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    clinical = change_table(subjects, scores).set_index("subject_id")
    ket = clinical[clinical["arm"] == "ketamine"]
    pct = percent_change(regional, REF).loc[ket.index]
    change_scatter(pct, -ket["change"], result, tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").stat().st_size > 5000


def test_ketamine_x_time_matches_the_two_sample_t_on_log_changes() -> None:
    """Two visits per subject: the mixed-model contrast with between-within df is the classical t."""
    from scipy import stats

    subjects, _, regional = simulate(9, ketamine_pct={"habenula": -6.0}, n_arm=17, n_hc=(3, 3))
    result = analyze_ketamine_x_time(regional, subjects, reference_region=REF)
    wide = regional[regional["region"] == "habenula"].pivot(
        index="subject_id", columns="visit", values="suvr"
    )
    change = np.log(wide["post"] / wide["baseline"]).dropna()
    arms = subjects.set_index("subject_id")["arm"].reindex(change.index)
    ref = stats.ttest_ind(change[arms == "ketamine"], change[arms == "placebo"])
    r = row(result, "habenula")
    assert r["df"] == 32 and r["statistic"] == pytest.approx(ref.statistic, rel=1e-3)
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-2)
    diff = change[arms == "ketamine"].mean() - change[arms == "placebo"].mean()
    assert r["estimate"] == pytest.approx(100 * np.expm1(diff), rel=1e-4)


def test_batch_overview_harmonizes_for_display_only_when_identifiable(tmp_path) -> None:
    from ketamap.figures import batch_plot
    from ketamap.pooled.pet import batch_overview

    subjects, _, regional = simulate(16, n_arm=10, n_hc=(10, 10), offsets={"S1": 0.0, "S2": 0.3})
    raw, harmonized, check = batch_overview(regional, subjects, reference_region=REF)
    assert check.verdict == "partially confounded" and harmonized is not None
    gap = raw.groupby("batch")["value"].mean().diff().iloc[-1]
    assert abs(harmonized.groupby("batch")["value"].mean().diff().iloc[-1]) < abs(gap) / 3
    batch_plot(raw, harmonized, check.note, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    subjects, _, regional = simulate(17, n_arm=10, n_hc=(0, 10))
    _, harmonized, check = batch_overview(regional, subjects, reference_region=REF)
    assert check.verdict == "fully confounded" and harmonized is None
