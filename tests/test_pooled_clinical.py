"""The pooled clinical analysis: exact on hand-made data, calibrated over many simulated trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ketamap.errors import KetamapError
from ketamap.pooled.clinical import analyze_madrs_change
from ketamap.pooled.stats import bh_qvalues


def _frames(
    baseline: np.ndarray, post: np.ndarray, arms: list[str], trials: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(arms)
    ids = [f"KM{i:012X}" for i in range(n)]
    subjects = pd.DataFrame({"subject_id": ids, "trial": trials or ["T1"] * n, "arm": arms})
    scores = pd.concat(
        [
            pd.DataFrame({"subject_id": ids, "visit": "baseline", "madrs_equivalent": baseline}),
            pd.DataFrame({"subject_id": ids, "visit": "post", "madrs_equivalent": post}),
        ]
    )
    return subjects, scores


def _simulate(
    rng: np.random.Generator, n: int, ket: tuple[float, float], pbo: tuple[float, float]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    baseline = np.clip(np.round(rng.normal(33, 5, 2 * n)), 20, 60)
    change = np.concatenate([rng.normal(*ket, n), rng.normal(*pbo, n)])
    post = np.clip(np.round(baseline + change), 0, 60)
    return _frames(baseline, post, ["ketamine"] * n + ["placebo"] * n)


def _row(result: pd.DataFrame, term: str, arm: str | None = None) -> pd.Series:
    rows = result[
        (result["term"] == term) & (result["arm"].isna() if arm is None else result["arm"] == arm)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def test_matches_the_classical_two_sample_t_test() -> None:
    rng = np.random.default_rng(7)
    subjects, scores = _simulate(rng, 17, (-8.1, 10.0), (-2.5, 5.2))
    result = analyze_madrs_change(subjects, scores)
    wide = scores.pivot(index="subject_id", columns="visit", values="madrs_equivalent")
    change = (wide["post"] - wide["baseline"]).reindex(subjects["subject_id"]).to_numpy()
    ref = stats.ttest_ind(change[:17], change[17:])
    diff = _row(result, "arm_difference")
    assert diff["statistic"] == pytest.approx(ref.statistic) and diff["p_value"] == pytest.approx(
        ref.pvalue
    )
    assert diff["df"] == 32 and diff["n"] == 34 and diff["unit"] == "MADRS points"
    assert diff["estimate"] == pytest.approx(change[:17].mean() - change[17:].mean())
    assert _row(result, "change", "ketamine")["estimate"] == pytest.approx(change[:17].mean())


def test_response_and_remission_by_hand() -> None:
    baseline = np.array([30, 30, 30, 30, 30, 30, 30, 30.0])
    post = np.array([10, 15, 16, 29, 9, 20, 28, 30.0])
    arms = ["ketamine"] * 4 + ["placebo"] * 4
    result = analyze_madrs_change(*_frames(baseline, post, arms), remission_threshold=10)
    assert (
        _row(result, "response_rate", "ketamine")["estimate"] == 0.5
    )  # 10 and 15 are >= 50 % reductions
    assert _row(result, "response_rate", "placebo")["estimate"] == 0.25
    assert _row(result, "remission_rate", "ketamine")["estimate"] == 0.25
    assert _row(result, "remission_rate", "placebo")["estimate"] == 0.25
    assert _row(result, "response_difference")["estimate"] == 0.25
    assert (
        _row(result, "remission_rate", "ketamine")["p_value"]
        != _row(result, "remission_rate", "ketamine")["p_value"]
    )  # descriptive: no p
    assert (
        analyze_madrs_change(*_frames(baseline, post, arms), remission_threshold=12)["estimate"]
        .notna()
        .all()
    )


def test_incomplete_subjects_are_left_out_and_counted() -> None:
    baseline = np.array([30, 31, 32, 33, 30, 31, 32, 33.0])
    post = np.array([10, np.nan, 16, 29, 9, 20, 28, 30.0])
    result = analyze_madrs_change(*_frames(baseline, post, ["ketamine"] * 4 + ["placebo"] * 4))
    assert _row(result, "change", "ketamine")["n"] == 3 and _row(result, "arm_difference")["n"] == 7


def test_several_trials_get_a_trial_fixed_effect() -> None:
    rng = np.random.default_rng(3)
    subjects, scores = _simulate(rng, 20, (-8, 6), (-2, 6))
    subjects["trial"] = ["T1"] * 10 + ["T2"] * 10 + ["T1"] * 10 + ["T2"] * 10
    diff = _row(analyze_madrs_change(subjects, scores), "arm_difference")
    assert "trial fixed effects" in diff["method"] and diff["df"] == 40 - 3


def test_too_few_randomised_subjects() -> None:
    with pytest.raises(KetamapError, match=r"too few randomised subjects"):
        analyze_madrs_change(
            *_frames(
                np.array([30.0, 30.0, 30.0]),
                np.array([10.0, 12.0, 20.0]),
                ["ketamine", "ketamine", "placebo"],
            )
        )


def test_bh_qvalues_skip_missing() -> None:
    q = bh_qvalues(np.array([0.01, np.nan, 0.04, 0.03]))
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.03) and q[2] == pytest.approx(0.04)


def test_planted_effect_is_covered_at_the_nominal_rate() -> None:
    """Across 200 simulated trials the 95 % interval covers the planted -5.6 at about 95 %."""
    rng = np.random.default_rng(20261126)
    covered = right_sign = 0
    for _ in range(200):
        diff = _row(
            analyze_madrs_change(*_simulate(rng, 40, (-8.1, 10.0), (-2.5, 5.2))), "arm_difference"
        )
        covered += diff["ci_low"] <= -5.6 <= diff["ci_high"]
        right_sign += diff["estimate"] < 0
    assert 0.90 <= covered / 200 <= 0.99
    assert right_sign / 200 >= 0.95


def test_null_is_rejected_at_most_at_the_nominal_rate() -> None:
    """No arm difference planted: the arm difference is significant in about 5 % of 200 trials, not more."""
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(200):
        result = analyze_madrs_change(*_simulate(rng, 30, (-3.0, 6.0), (-3.0, 6.0)))
        rejections += _row(result, "arm_difference")["p_value"] < 0.05
    assert rejections / 200 <= 0.09  # binomial(200, 0.05) exceeds 18 with probability < 0.5 %


def test_too_few_randomised_subjects_names_the_sites_and_counts() -> None:
    subjects, scores = _frames(
        np.array([30.0, 30.0, 30.0, 30.0]),
        np.array([10.0, 12.0, 20.0, 18.0]),
        ["ketamine", "ketamine", "placebo", "placebo"],
    )
    subjects["site"] = "ycu_rct"
    scores = scores[scores["subject_id"] != subjects["subject_id"].iloc[3]]
    with pytest.raises(
        KetamapError,
        match=r"site 'ycu_rct', .*field 'arm': too few randomised subjects .*"
        r"site ycu_rct \(trial T1\): ketamine 2/2, placebo 1/2\); expected at least 2",
    ):
        analyze_madrs_change(subjects, scores)
    subjects["arm"] = None
    with pytest.raises(
        KetamapError, match=r"no subject has an arm \(sites in the subjects table: ycu_rct\)"
    ):
        analyze_madrs_change(subjects, scores)
