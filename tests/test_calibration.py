"""Calibration of the pooled analyses at a size that fits in CI (the full table is
``benchmarks/calibration.py``), and the consortium layouts of issue 9 at function level.

Bounds are wide enough for the Monte Carlo error of the replicates used here and tight enough to
catch the miscalibrations the issue found (e.g. 7.6 % type-I error of ComBat-then-OLS, 73 %
coverage of the old prediction interval, 9.5 % type-I error with pooled species variances).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import REPO as REPO_ROOT
from ketamap import calibration as cal
from ketamap.pooled import pet as pooled_pet
from ketamap.synth import load_scenario, tables

SCENARIOS = REPO_ROOT / "config" / "scenarios"


def summary_of(case: cal.Case) -> pd.DataFrame:
    return cal.summarize(cal.run_case(case)).set_index(["analysis", "term"])


def assert_level(row: pd.Series, cap: float) -> None:
    """Type-I error at most the nominal 5 % plus 2.5 Monte Carlo SEs (clustered by replicate:
    a replicate's regions share their subjects), and never above ``cap``."""
    assert row["type_i"] <= min(0.05 + 2.5 * row["type_i_se"], cap), row.to_dict()


def test_behaviour_species_are_not_pooled_when_their_noise_differs() -> None:
    """Human video much noisier than the mouse camera: with a pooled variance the human rows
    reached p < 0.05 in about 15 % of null replicates."""
    design = cal.BehaviourDesign(noise={"human": 0.3, "mouse": 0.04}, humans=6)
    case = cal.Case(
        "behaviour", "noisy humans", "null", cal._Call(cal.behaviour_results, design), 300
    )
    results = cal.run_case(case)
    human = results[(results["species"] == "human") & (results["term"] == "ketamine_minus_control")]
    rate = float((human["p_value"] < 0.05).mean())
    assert 0.02 <= rate <= 0.08, rate


def test_ieeg_contrasts_hold_their_level_with_subject_specific_drug_effects() -> None:
    case = cal.Case("ieeg", "null", "null", cal._Call(cal.ieeg_results, cal.IeegDesign()), 150)
    s = summary_of(case)
    assert_level(s.loc[("ieeg.slow_phase_duration", "ketamine_minus_baseline")], cap=0.08)
    assert_level(s.loc[("ieeg.synchrony", "ketamine_minus_baseline")], cap=0.1)
    margin = cal.IeegDesign(latency_shift_s=0.03)
    tost = summary_of(cal.Case("ieeg", "m", "margin", cal._Call(cal.ieeg_results, margin), 100))
    assert_level(tost.loc[("ieeg.fast_phase_latency", "equivalence_tost")], cap=0.1)


def test_pet_group_and_slope_analyses_hold_their_level_on_the_default_layout() -> None:
    """80 null consortia at the published sizes, 19 regions each."""
    null, planted = cal.scenario_cases(
        SCENARIOS / "default.yaml",
        "default",
        ("pet.baseline_trd_vs_hc", "pet.change_vs_improvement"),
        80,
    )
    s = summary_of(null)
    for analysis, term in (
        ("pet.baseline_trd_vs_hc", "trd_minus_hc"),
        ("pet.change_vs_improvement", "slope"),
    ):
        assert s.loc[(analysis, term), "type_i_rows"] >= 80 * 18
        assert_level(s.loc[(analysis, term)], cap=0.08)
    p = summary_of(planted)
    assert p.loc[("pet.baseline_trd_vs_hc", "trd_minus_hc"), "coverage"] >= 0.88
    assert p.loc[("pet.change_vs_improvement", "slope"), "coverage"] >= 0.88


def test_ketamine_x_time_holds_its_level_with_two_rcts_and_dropouts() -> None:
    null, planted = cal.scenario_cases(
        SCENARIOS / "pet_two_rcts.yaml", "two", ("pet.ketamine_x_time",), 20
    )
    key = ("pet.ketamine_x_time", "ketamine_x_time")
    assert_level(summary_of(null).loc[key], cap=0.1)
    assert summary_of(planted).loc[key, "coverage"] >= 0.85


def test_combat_then_ols_is_anti_conservative_where_batch_fixed_effects_are_not() -> None:
    """The comparison behind the README's choice, on a layout where the control-only batch is
    large: ComBat's estimated offsets are treated as known, batch fixed effects are exact."""

    def edit(s: dict) -> None:
        for site in s["sites"]:
            if site["id"] == "keio_hc":
                site["groups"]["hc"]["n"] = 8  # few shared-scanner controls, many on their own

    (fe,) = cal.scenario_cases(
        SCENARIOS / "default.yaml", "l", ("pet.baseline_trd_vs_hc",), 40, kinds=("null",), edit=edit
    )
    (legacy,) = cal.scenario_cases(
        SCENARIOS / "default.yaml",
        "l",
        ("pet.baseline_trd_vs_hc",),
        40,
        kinds=("null",),
        edit=edit,
        legacy=True,
    )
    key = ("pet.baseline_trd_vs_hc", "trd_minus_hc")
    fe, legacy = summary_of(fe).loc[key], summary_of(legacy).loc[key]
    assert_level(fe, cap=0.08)
    assert legacy["type_i"] > fe["type_i"] + 2 * fe["type_i_se"], (fe.to_dict(), legacy.to_dict())


def test_response_prediction_interval_covers_at_trial_sizes() -> None:
    """Two RCTs (about 34 ketamine patients): the old bootstrap covered 0.5 in 73 % of null seeds."""
    null, planted = cal.scenario_cases(
        SCENARIOS / "pet_two_rcts.yaml",
        "two",
        ("pet.response_prediction",),
        120,
        regions=("habenula", "acc", "dlpfc"),
        edit=lambda s: s["pet"]["effects"].update(
            response_predictor={"region": "acc", "correlation": 0.5}
        ),
    )
    s = summary_of(null).loc[("pet.response_prediction", "auc")]
    assert s["type_i_rows"] >= 200
    assert_level(s, cap=0.09)
    results = cal.run_case(null)
    covered = (results["ci_low"] <= 0.5) & (results["ci_high"] >= 0.5)
    assert covered[results["estimate"].notna()].mean() >= 0.92
    p = summary_of(planted).loc[("pet.response_prediction", "auc")]
    assert 0.9 <= p["coverage"] <= 0.99, p


# --------------------------------------------------------------------------- the layouts


def _tables(name: str, seed: int | None = None):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    if seed is not None:
        scenario = tables.with_seed(scenario, seed)
    subjects, scores = tables.clinical_tables(scenario)
    return subjects, scores, tables.pet_regional(scenario)


def test_same_make_and_model_on_another_device_is_another_batch() -> None:
    """Finding 1: every control on a second Biograph mCT: fully confounded, nothing estimated."""
    subjects, _, regional = _tables("pet_same_model_confounded")
    assert regional["scanner"].nunique() == 1 and regional["batch"].nunique() == 2
    result = pooled_pet.analyze_baseline(regional, subjects)
    assert result["note"].str.startswith("fully confounded").all()
    for col in ("estimate", "ci_low", "ci_high", "statistic", "p_value"):
        assert result[col].isna().all()


@pytest.mark.parametrize("seed", [None, 11, 12])
def test_control_only_device_of_the_same_model_makes_no_false_positive(seed) -> None:
    """Finding 2: the control-only second device (5 % low) is left out of the contrast."""
    subjects, _, regional = _tables("pet_partial_same_model", seed)
    result = pooled_pet.analyze_baseline(regional, subjects)
    assert result["note"].str.startswith("partially confounded").all()
    assert (result["q_value"] >= 0.05).all(), result.sort_values("q_value").head(3)
    on_own_device = subjects.loc[subjects["site"] == "ycu_obs", "subject_id"]
    assert result["n"].iloc[0] <= regional["subject_id"].nunique() - len(on_own_device)


def test_two_rcts_with_dropouts_fit_without_warnings() -> None:
    subjects, _, regional = _tables("pet_two_rcts")
    dropped = set(regional.loc[regional["visit"] == "baseline", "subject_id"]) - set(
        regional.loc[regional["visit"] == "post", "subject_id"]
    )
    randomised = set(subjects.loc[subjects["arm"].notna(), "subject_id"])
    assert len(dropped & randomised) == 9  # 15 % of 34 and of 24
    ket = pooled_pet.analyze_ketamine_x_time(regional, subjects)
    assert (
        ket["note"] == "9 randomised subject(s) without a post scan contribute their baseline"
    ).all()
    assert "visit x trial" in ket["method"].iloc[0] and (ket["df"] == 58 - 9 - 3).all()
    base = pooled_pet.analyze_baseline(regional, subjects)
    assert (
        base["note"].str.startswith("balanced").all()
        and "batch fixed effects" in base["method"].iloc[0]
    )


def test_ketamine_x_time_with_complete_data_is_the_ols_of_log_changes_on_arm_and_trial() -> None:
    import statsmodels.formula.api as smf

    scenario = load_scenario(SCENARIOS / "pet_two_rcts.yaml")
    for site in scenario["sites"]:
        if site.get("pet"):
            site["pet"]["missing_post_fraction"] = 0
    subjects, _ = tables.clinical_tables(scenario)
    regional = tables.pet_regional(scenario)
    result = pooled_pet.analyze_ketamine_x_time(regional, subjects).set_index("region")
    wide = regional[regional["region"] == "dlpfc"].pivot(
        index="subject_id", columns="visit", values="suvr"
    )
    data = subjects.set_index("subject_id").loc[wide.index]
    data = data.assign(d=100 * np.log(wide["post"] / wide["baseline"])).dropna(subset=["d"])
    fit = smf.ols("d ~ C(arm, Treatment('placebo')) + C(trial)", data=data).fit()
    term = "C(arm, Treatment('placebo'))[T.ketamine]"
    row = result.loc["dlpfc"]
    assert row["df"] == fit.df_resid
    assert row["estimate"] == pytest.approx(100 * np.expm1(fit.params[term] / 100), rel=1e-4)
    assert row["statistic"] == pytest.approx(fit.tvalues[term], rel=1e-3)
    assert result["note"].isna().all()


def test_default_run_has_no_mixed_model_warning() -> None:
    subjects, _, regional = _tables("default")
    result = pooled_pet.analyze_ketamine_x_time(regional, subjects)
    assert result["note"].isna().all(), result["note"].dropna().unique()


def test_scenario_cases_are_reproducible() -> None:
    (case,) = cal.scenario_cases(
        SCENARIOS / "default.yaml", "d", ("clinical.madrs_change",), 3, kinds=("null",)
    )
    a, b = cal.run_case(case), cal.run_case(replace(case))
    pd.testing.assert_frame_equal(a, b)


def test_response_prediction_does_not_depend_on_the_pseudonymization_key() -> None:
    """Finding 4: the same consortium pseudonymized with two keys gives the same AUC to 1e-9."""
    scenario = load_scenario(SCENARIOS / "pet_two_rcts.yaml")
    results = []
    for key in (b"ketamap-demo-key-not-secret", b"another consortium's secret"):
        subjects, scores = tables.clinical_tables(scenario, key=key)
        regional = tables.pet_regional(scenario, key=key)
        results.append(
            pooled_pet.analyze_response_prediction(
                regional, subjects, scores, regions=["habenula", "dlpfc"], min_per_class=3
            ).set_index("region")
        )
    a, b = results
    assert set(a.index) == {"habenula", "dlpfc"} and a["estimate"].notna().all()
    for col in ("estimate", "ci_low", "ci_high", "p_value"):
        assert np.allclose(a[col], b.loc[a.index, col], atol=1e-9, rtol=0), col
