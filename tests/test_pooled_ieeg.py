"""Pooled iEEG analyses on simulated response tables with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ketamap.errors import KetamapError
from ketamap.harmonize.ieeg import synchrony
from ketamap.pooled.ieeg import (
    analyze_fast_phase_latency,
    analyze_slow_phase_duration,
    analyze_synchrony,
)


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


def test_channels_that_lose_the_slow_phase_are_left_out() -> None:
    """A slow phase not detected under ketamine is a detection failure as often as an abolished
    phase; counting it as 0 s (as before) measured detection. Those channels are left out and
    counted in the note."""
    df = simulate(5)
    rng = np.random.default_rng(0)
    ket_slow = (df["condition"] == "ketamine") & df["responsive_slow"]
    lost = ket_slow & (rng.random(len(df)) < 0.4)
    df.loc[lost, "responsive_slow"] = False
    df.loc[lost, "slow_duration_s"] = np.nan
    result = analyze_slow_phase_duration(df)
    overall = result[result["region_group"].isna()].iloc[0]
    truth = 0.7 * 0.55 - 0.7
    assert overall["ci_low"] <= truth <= overall["ci_high"], overall  # with 0 s: -0.47
    assert f"{int(lost.sum())} channel(s) with a slow phase at baseline" in overall["note"]
    df.loc[ket_slow, "responsive_slow"] = False
    df.loc[ket_slow, "slow_duration_s"] = np.nan
    with pytest.raises(KetamapError, match="slow-phase channels in both conditions"):
        analyze_slow_phase_duration(df)


def simulate_trials(
    rng: np.random.Generator, shared_sd: float, *, n_channels: int = 12, n_trials: int = 40
) -> np.ndarray:
    """Single-trial slow amplitudes of channels driven by a shared and a private log gain + noise."""
    shared = rng.normal(0, shared_sd, n_trials)
    private = rng.normal(0, 0.3, (n_channels, n_trials))
    return 3.0 * np.exp(shared[None, :] + private) + rng.normal(0, 0.3, (n_channels, n_trials))


def test_synchrony_excludes_pairs_sharing_a_contact_and_recovers_correlation() -> None:
    rng = np.random.default_rng(5)
    # Channels 0 and 1 share contact A2; their amplitudes are made identical, which must not count.
    amp = rng.normal(size=(3, 200))
    amp[1] = amp[0]
    r, n_pairs = synchrony(amp, ["A1-A2", "A2-A3", "B1-B2"])
    assert n_pairs == 2 and abs(r) < 0.2
    r_all, n_all = synchrony(amp, ["A1-A2", "C2-C3", "B1-B2"])
    assert n_all == 3 and r_all > 0.25  # the identical pair now counts
    # Known correlation: two channels share a common factor with loading 0.6 -> r = 0.36.
    common = rng.normal(size=20000)
    x = np.vstack([0.6 * common + 0.8 * rng.normal(size=20000) for _ in range(2)])
    assert synchrony(x, ["A1-A2", "B1-B2"])[0] == pytest.approx(0.36, abs=0.03)
    assert np.isnan(synchrony(x[:1], ["A1-A2"])[0])


def sync_table(seed: int, shared_ketamine: float, n_subjects: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [f"S{i}-S{i + 1}" for i in range(0, 24, 2)]  # no shared contacts
    rows = []
    for s in range(n_subjects):
        for condition, sd in (("baseline", 0.5), ("ketamine", shared_ketamine)):
            r, n_pairs = synchrony(simulate_trials(rng, sd), names)
            rows.append(
                dict(subject_id=f"KM{s:012X}", condition=condition, synchrony_r=r, n_pairs=n_pairs)
            )
    return pd.DataFrame(rows)


def test_synchrony_drop_recovered_and_null_clean() -> None:
    drop = analyze_synchrony(sync_table(11, 0.2)).iloc[0]
    assert drop["estimate"] < 0 and drop["ci_high"] < 0 and drop["q_value"] < 0.05
    assert drop["unit"] == "r" and drop["n"] == 8 and drop["df"] == 7
    false_positives = sum(
        analyze_synchrony(sync_table(100 + k, 0.5)).iloc[0]["p_value"] < 0.05 for k in range(40)
    )
    assert false_positives <= 6  # 5 % of 40 is 2; binomial 97.5th percentile ~ 5


def test_synchrony_needs_two_subjects_in_both_conditions() -> None:
    table = sync_table(3, 0.2, n_subjects=2)
    table.loc[table["subject_id"] == table["subject_id"].iloc[0], "synchrony_r"] = np.nan
    with pytest.raises(KetamapError, match="fewer than 2 subjects"):
        analyze_synchrony(table)


def test_slow_phase_falls_back_to_subject_level_when_mixedlm_is_singular() -> None:
    table = simulate(9, n_subjects=6)
    # keep one slow channel per subject: two observations per subject, a saturated design
    slow = table[table["responsive_slow"]]
    first = slow.groupby("subject_id")["channel"].first()
    keep = table.set_index(["subject_id", "channel"]).index.isin(list(first.items()))
    result = analyze_slow_phase_duration(table[keep])
    overall = result[result["region_group"].isna()].iloc[0]
    assert overall["estimate"] < 0 and overall["ci_low"] <= 0.7 * 0.55 - 0.7 <= overall["ci_high"]
    assert overall["n"] == 6 and np.isfinite(overall["p_value"])
    if "subject-level" in str(overall["note"]):
        assert overall["df"] == 5
