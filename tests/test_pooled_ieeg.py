"""Pooled iEEG analyses on simulated response tables with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ketamap.pooled.ieeg import analyze_fast_phase_latency, analyze_slow_phase_duration


def simulate(
    seed: int, *, n_subjects: int = 10, slow_ratio: float = 0.55, latency_shift: float = 0.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        sid = f"KM{s:012X}"
        subject_offset = rng.normal(0, 0.05)
        for c in range(40):
            group = "emotion" if c < 15 else "other"
            slow = rng.random() < (0.6 if group == "emotion" else 0.2)
            fast = rng.random() < 0.7
            duration = 0.7 + subject_offset + rng.normal(0, 0.1)
            latency = 0.2 + rng.normal(0, 0.02)
            for condition in ("baseline", "ketamine"):
                factor = slow_ratio if condition == "ketamine" else 1.0
                rows.append(
                    dict(
                        subject_id=sid,
                        channel=f"A{c}-A{c + 1}",
                        region_group=group,
                        condition=condition,
                        responsive_slow=slow,
                        slow_duration_s=duration * factor + rng.normal(0, 0.05) if slow else np.nan,
                        responsive_fast=fast,
                        fast_peak_latency_s=latency
                        + (latency_shift if condition == "ketamine" else 0)
                        + rng.normal(0, 0.01)
                        if fast
                        else np.nan,
                    )
                )
    return pd.DataFrame(rows)


def test_slow_phase_shortening_recovered_overall_and_by_group() -> None:
    result = analyze_slow_phase_duration(simulate(1))
    truth = 0.7 * 0.55 - 0.7
    assert set(result["region_group"].fillna("all")) == {"all", "emotion", "other"}
    for _, r in result.iterrows():
        assert r["ci_low"] <= truth <= r["ci_high"] and r["estimate"] < 0 and r["q_value"] < 0.05
    assert (result["unit"] == "s").all()


def test_slow_phase_null_is_not_significant() -> None:
    result = analyze_slow_phase_duration(simulate(2, slow_ratio=1.0))
    assert (result["q_value"] >= 0.05).all()


def test_fast_latency_equivalent_when_unchanged_and_not_when_shifted() -> None:
    same = analyze_fast_phase_latency(simulate(3), margin_s=0.03).set_index("term")
    assert same.loc["ketamine_minus_baseline", "p_value"] >= 0.05
    assert same.loc["equivalence_tost", "p_value"] < 0.05
    assert (
        same.loc["equivalence_tost", "ci_low"] > -0.03
        and same.loc["equivalence_tost", "ci_high"] < 0.03
    )
    shifted = analyze_fast_phase_latency(simulate(4, latency_shift=0.06), margin_s=0.03).set_index(
        "term"
    )
    assert shifted.loc["ketamine_minus_baseline", "estimate"] == pytest.approx(0.06, abs=0.01)
    assert shifted.loc["equivalence_tost", "p_value"] > 0.05


def test_channels_that_lose_the_slow_phase_count_as_zero() -> None:
    df = simulate(5)
    ket_slow = (df["condition"] == "ketamine") & df["responsive_slow"]
    df.loc[ket_slow, "responsive_slow"] = False
    df.loc[ket_slow, "slow_duration_s"] = np.nan
    overall = analyze_slow_phase_duration(df)
    overall = overall[overall["region_group"].isna()].iloc[0]
    assert overall["estimate"] == pytest.approx(-0.7, abs=0.05)
