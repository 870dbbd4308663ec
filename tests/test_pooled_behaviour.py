"""Pooled behaviour analyses on simulated puff, reward and time-course tables with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ketamap.errors import KetamapError
from ketamap.pooled.behaviour import (
    _hfb_rows,
    analyze_reflex_blink,
    analyze_reward_seeking,
    analyze_sustained_closure,
    analyze_timing_signature,
    shape_similarity,
)

CONTROL = {"human": "baseline", "mouse": "saline"}


def puffs(
    seed: int,
    *,
    sustained: dict[str, float] | None = None,
    reflex_shift: float = 0.0,
    n: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Per-puff reflex and sustained closure; ``sustained`` = ketamine minus control per species."""
    rng = np.random.default_rng(seed)
    sustained = sustained if sustained is not None else {"human": -0.2, "mouse": -0.2}
    n = n or {"human": 8, "mouse": 10}
    rows = []
    for species, count in n.items():
        for s in range(count):
            sid = f"KM{species[0].upper()}{s:011X}"
            level = 0.35 + rng.normal(0, 0.05)
            effect = sustained[species] + rng.normal(0, 0.03)
            for condition in (CONTROL[species], "ketamine"):
                ket = condition == "ketamine"
                for p in range(20):
                    rows.append(
                        dict(
                            subject_id=sid,
                            species=species,
                            condition=condition,
                            puff_index=p + 1,
                            reflex_closure=0.9 + (reflex_shift if ket else 0) + rng.normal(0, 0.05),
                            sustained_closure=level + (effect if ket else 0) + rng.normal(0, 0.08),
                        )
                    )
    return pd.DataFrame(rows)


def test_sustained_closure_recovered_per_species_and_interaction_null() -> None:
    result = analyze_sustained_closure(puffs(1)).set_index(["term", "species"], drop=False)
    for species in ("human", "mouse"):
        row = result.loc[("ketamine_minus_control", species)]
        assert row["ci_low"] <= -0.2 <= row["ci_high"] and row["q_value"] < 0.05
    inter = result[result["term"] == "species_x_drug"].iloc[0]
    assert pd.isna(inter["species"]) and inter["ci_low"] <= 0 <= inter["ci_high"]


def test_species_x_drug_detects_a_species_difference() -> None:
    result = analyze_sustained_closure(puffs(2, sustained={"human": -0.25, "mouse": -0.05}))
    inter = result[result["term"] == "species_x_drug"].iloc[0]
    assert inter["estimate"] < 0 and inter["ci_low"] <= -0.2 <= inter["ci_high"]
    assert inter["q_value"] < 0.05


def test_subject_difference_model_equals_paired_t() -> None:
    """With one species, the per-species effect is exactly the paired t on subject means."""
    table = puffs(3, n={"human": 9})
    row = analyze_sustained_closure(table).iloc[0]
    means = table.groupby(["subject_id", "condition"])["sustained_closure"].mean().unstack()
    t = stats.ttest_rel(means["ketamine"], means["baseline"])
    assert row["statistic"] == pytest.approx(t.statistic) and row["p_value"] == pytest.approx(
        t.pvalue
    )
    assert row["df"] == 8


def test_reflex_blink_equivalent_when_unchanged_not_when_shifted() -> None:
    same = analyze_reflex_blink(puffs(4), margin=0.1)
    tost = same[same["term"] == "equivalence_tost"]
    diff = same[same["term"] == "ketamine_minus_control"]
    assert len(tost) == 2 and (tost["p_value"] < 0.05).all()
    assert (diff["q_value"] >= 0.05).all()
    shifted = analyze_reflex_blink(puffs(5, reflex_shift=-0.2), margin=0.1)
    assert (shifted.loc[shifted["term"] == "equivalence_tost", "p_value"] > 0.05).all()


def test_false_positive_rate_of_the_sustained_contrast() -> None:
    hits = 0
    for k in range(60):
        res = analyze_sustained_closure(puffs(100 + k, sustained={"human": 0.0, "mouse": 0.0}))
        hits += int((res["p_value"] < 0.05).sum())
    assert hits <= 3 * 60 * 0.05 + 6  # three tests per run at alpha 0.05


def reward(seed: int, drop: dict[str, float], n_mice: int = 12, n_cues: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_mice):
        base = np.clip(0.8 + rng.normal(0, 0.05), 0, 1)
        for condition in ("saline", "ketamine"):
            for epoch, p in (("pre_train", base), ("post_train", base + drop[condition])):
                rows.append(
                    dict(
                        subject_id=f"KM{m:012X}",
                        condition=condition,
                        epoch=epoch,
                        anticipatory_fraction=rng.binomial(n_cues, np.clip(p, 0, 1)) / n_cues,
                    )
                )
    return pd.DataFrame(rows)


def test_reward_train_effect_and_interaction() -> None:
    result = analyze_reward_seeking(reward(7, {"saline": -0.3, "ketamine": -0.15})).set_index(
        "term"
    )
    assert (
        result.loc["train_effect_saline", "ci_low"]
        <= -0.3
        <= result.loc["train_effect_saline", "ci_high"]
    )
    assert result.loc["train_effect_saline", "q_value"] < 0.05
    inter = result.loc["train_x_drug"]
    assert inter["estimate"] > 0 and inter["ci_low"] <= 0.15 <= inter["ci_high"]
    assert (result["species"] == "mouse").all()


def test_reward_null_and_missing_epoch() -> None:
    null = analyze_reward_seeking(reward(8, {"saline": 0.0, "ketamine": 0.0}))
    assert (null["q_value"] >= 0.05).all()
    with pytest.raises(KetamapError, match="lacks"):
        analyze_reward_seeking(
            reward(8, {"saline": 0.0, "ketamine": 0.0}).query("epoch == 'pre_train'")
        )


def curves(seed: int, species: str, n: int, shape: np.ndarray, times: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n):
        for condition in (CONTROL[species], "ketamine"):
            scale = 1.0 if condition != "ketamine" else 0.5
            closure = scale * shape + rng.normal(0, 0.05, len(times))
            rows.append(
                pd.DataFrame(
                    dict(
                        subject_id=f"KM{species[0].upper()}{s:011X}",
                        species=species,
                        condition=condition,
                        time_s=times,
                        closure=closure,
                    )
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_shape_similarity_high_for_same_shape_low_for_different() -> None:
    times = np.round(np.arange(-0.5, 2.0, 0.01), 2)
    bump = np.exp(-((times - 0.8) ** 2) / 0.1)
    same = pd.concat([curves(1, "human", 6, bump, times), curves(2, "mouse", 8, bump, times)])
    rows = shape_similarity(same, window_s=(-0.5, 2.0), n_boot=300, seed=1)
    assert {r["term"] for r in rows} == {"shape_similarity_control", "shape_similarity_ketamine"}
    assert all(r["estimate"] > 0.9 and r["ci_low"] > 0.8 for r in rows)
    other = np.exp(-((times - 1.8) ** 2) / 0.02)
    diff = pd.concat([curves(3, "human", 6, bump, times), curves(4, "mouse", 8, other, times)])
    rows = shape_similarity(diff, window_s=(-0.5, 2.0), n_boot=300, seed=1)
    assert all(r["estimate"] < 0.3 for r in rows)
    # The bootstrap is seeded: the same seed gives the same interval.
    again = shape_similarity(diff, window_s=(-0.5, 2.0), n_boot=300, seed=1)
    assert [r["ci_low"] for r in rows] == [r["ci_low"] for r in again]


def test_timing_signature_rows() -> None:
    times = np.round(np.arange(-0.5, 2.0, 0.01), 2)
    bump = np.exp(-((times - 0.8) ** 2) / 0.1)
    tc = pd.concat([curves(1, "human", 6, bump, times), curves(2, "mouse", 8, bump, times)])
    result = analyze_timing_signature(puffs(9), tc, None, window_s=(-0.5, 2.0), n_boot=200, seed=3)
    eyelid = result[result["measure"] == "eyelid"].dropna(subset=["species"])
    assert set(zip(eyelid["term"], eyelid["species"], strict=True)) == {
        (t, s) for t in ("ketamine_effect_fast", "ketamine_effect_slow") for s in ("human", "mouse")
    }
    slow = eyelid[eyelid["term"] == "ketamine_effect_slow"]
    assert (slow["ci_high"] < 0).all()
    fast = eyelid[eyelid["term"] == "ketamine_effect_fast"]
    assert (fast["estimate"].abs() < 0.03).all()  # no planted reflex change


def ieeg_responses(seed: int, *, factor: float = 0.55, lost: float = 0.3) -> pd.DataFrame:
    """``ieeg_responses`` rows of 6 patients x 14 channels: slow-phase durations shortened by
    ``factor`` under ketamine, fast-peak amplitudes unchanged. Under ketamine a fraction ``lost``
    of the slow channels has no detected slow phase, and fast channels whose amplitude dips below
    threshold are not responsive (their amplitude is still measured)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(6):
        sid = f"KM{s:012X}"
        for c in range(14):
            slow = c % 2 == 0
            fast = c % 7 != 0
            duration = rng.normal(0.66, 0.08)
            amplitude = rng.uniform(1.6, 5.0)
            drop = rng.random() < lost
            for condition in ("baseline", "ketamine"):
                ket = condition == "ketamine"
                amp = amplitude + rng.normal(0, 0.4) if fast else rng.normal(0.5, 0.4)
                has_slow = slow and not (ket and drop)
                rows.append(
                    dict(
                        subject_id=sid,
                        channel=f"A{c}-A{c + 1}",
                        condition=condition,
                        fast_peak_amplitude_z=amp,
                        responsive_fast=bool(amp > 2.0),
                        slow_duration_s=(
                            (factor if ket else 1.0) * duration + rng.normal(0, 0.01)
                            if has_slow
                            else np.nan
                        ),
                        responsive_slow=has_slow,
                    )
                )
    return pd.DataFrame(rows)


def test_hfb_rows_use_channels_with_the_component_in_both_conditions() -> None:
    """A channel whose slow phase or fast peak is not detected under ketamine is left out, not
    counted as 0: with 30 % of the slow phases undetected under ketamine, a 0 s would move the
    slow change from -0.45 to about -0.6, and a 0 z for the fast peaks that dip below threshold
    would make an unchanged amplitude look lower."""
    truth = {"ketamine_effect_slow": 0.55 - 1, "ketamine_effect_fast": 0.0}
    covered = dict.fromkeys(truth, 0)
    errors: dict[str, list[float]] = {term: [] for term in truth}
    for seed in range(20):
        for row in _hfb_rows(ieeg_responses(seed)):
            term = row["term"]
            errors[term].append(row["estimate"] - truth[term])
            covered[term] += row["ci_low"] <= truth[term] <= row["ci_high"]
            assert row["measure"] == "hfb" and row["n"] == 6 and "left out" in row["note"]
    # Measured: slow -0.4506, 19 of 20 covered; fast -0.0004, 18 of 20 (counting the lost
    # channels as 0: -0.61, 1 of 20 and -0.047, 16 of 20).
    assert all(abs(np.mean(e)) < 0.01 for e in errors.values()), errors
    assert min(covered.values()) >= 17, covered  # 95 % intervals
    # Nothing planted, nothing found; the counts in the note are those of the table.
    responses = ieeg_responses(9, factor=1.0)
    rows = {r["term"]: r for r in _hfb_rows(responses)}
    assert rows["ketamine_effect_slow"]["ci_low"] <= 0 <= rows["ketamine_effect_slow"]["ci_high"]
    base = responses[(responses["condition"] == "baseline") & responses["responsive_slow"]]
    ket = responses[(responses["condition"] == "ketamine") & responses["responsive_slow"]]
    assert rows["ketamine_effect_slow"]["note"] == (
        f"{len(ket)} channels; {len(base) - len(ket)} of the {len(base)} with a slow phase at "
        "baseline have none under ketamine and are left out"
    )
