"""Pooled PET analyses on simulated tables with known effects (independent of the image generator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_design_check_decides() -> None:
    batch = pd.Series(["S1", "S1", "S1", "S2", "S2"])
    assert check_design(batch, pd.Series(["trd", "hc", "trd", "hc", "hc"])).harmonize
    confounded = check_design(batch, pd.Series(["trd", "trd", "trd", "hc", "hc"]))
    assert (
        not confounded.harmonize
        and not confounded.identifiable
        and "confounded with scanner" in confounded.note
    )
    single = check_design(pd.Series(["S1"] * 4), pd.Series(["trd", "hc", "trd", "hc"]))
    assert not single.harmonize and single.identifiable
    tiny = check_design(pd.Series(["S1", "S1", "S1", "S2"]), pd.Series(["trd", "hc", "hc", "hc"]))
    assert not tiny.harmonize and "fewer than 2" in tiny.note


def test_baseline_difference_recovered_through_combat() -> None:
    subjects, _, regional = simulate(1, baseline_diff={"acc": -0.09, "insula": -0.08})
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert set(result["region"]) == set(REGIONS) - {REF}
    for region, truth in {"acc": -0.09, "insula": -0.08}.items():
        r = row(result, region)
        assert r["ci_low"] <= truth <= r["ci_high"] and r["estimate"] < 0 and r["q_value"] < 0.05
    nulls = result[~result["region"].isin(["acc", "insula"])]
    assert (nulls["q_value"] >= 0.05).all()
    assert result["note"].str.contains("harmonized by scanner with ComBat").all()


def test_scanner_offset_without_harmonization_would_be_a_false_positive() -> None:
    """The HC-only scanner reads 0.12 higher; ComBat removes it so nulls stay null."""
    subjects, _, regional = simulate(2, offsets={"S1": 0.0, "S2": 0.25})
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert (result["q_value"] >= 0.05).all()


def test_confounded_design_is_flagged_and_not_tested(caplog: pytest.LogCaptureFixture) -> None:
    subjects, _, regional = simulate(
        3, baseline_diff={"acc": -0.09}, n_hc=(0, 40), trd_scanner="S1"
    )
    result = analyze_baseline(regional, subjects, reference_region=REF)
    assert result["note"].str.contains("confounded with scanner").all()
    assert result["p_value"].isna().all() and result["estimate"].notna().all()
    assert "confounded with scanner" in caplog.text


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


def test_response_prediction_null_is_not_significant() -> None:
    subjects, scores, regional = simulate(6, n_arm=20, n_hc=(5, 5))
    # Response drawn independently of PET for 40 % of patients; one patient site -> repeated stratified folds.
    rng = np.random.default_rng(60)
    post = scores["visit"] == "post"
    responders = post & (rng.random(len(scores)) < 0.4)
    scores.loc[responders, "madrs_equivalent"] = 5.0
    result = analyze_response_prediction(
        regional,
        subjects,
        scores,
        reference_region=REF,
        n_permutations=40,
        n_bootstrap=300,
        n_repeats=3,
    )
    r = result.iloc[0]
    assert r["term"] == "auc" and r["ci_low"] <= 0.5 <= r["ci_high"] and r["p_value"] > 0.05
    assert "repeated stratified" in r["method"]


def test_response_prediction_with_too_few_responders() -> None:
    subjects, scores, regional = simulate(7, n_arm=6, n_hc=(3, 3))
    scores.loc[scores["visit"] == "post", "madrs_equivalent"] = 30.0  # nobody responds
    result = analyze_response_prediction(regional, subjects, scores, reference_region=REF)
    assert np.isnan(result.iloc[0]["estimate"]) and "smaller class" in result.iloc[0]["note"]


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
