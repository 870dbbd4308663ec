"""Calibration of the pooled analyses by simulation: type-I error and interval coverage.

A statistical method is judged by what it does over many replicate consortia, not on one
scenario. For each case this module draws replicate datasets at a stated size and layout, runs
the pooled analysis exactly as the workflow runs it (the same functions of
:mod:`ketamap.pooled`), and counts

- **type-I error**: among rows whose planted value is null (a difference of 0, an AUC of 0.5),
  the fraction with p < 0.05 (a TOST row counts when its planted difference sits on the margin);
- **coverage**: among rows with a planted non-null value, the fraction whose 95 % interval covers
  it.

Clinical and PET cases draw their tables from scenario files (:mod:`ketamap.synth.tables`: the
generator's own draws rendered as the reader measures them, without writing images), so any
consortium layout written as a scenario can be calibrated (``ketamap calibration --scenario``).
iEEG and behaviour cases draw the per-channel and per-puff tables from a hierarchical model with
subject-level heterogeneity of the drug effect (the variance component the pooled models must
respect). ``benchmarks/calibration.py`` runs every case at full size; the tests run a few at a
size that fits in CI.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ketamap.pooled import behaviour as pooled_behaviour
from ketamap.pooled import clinical as pooled_clinical
from ketamap.pooled import ieeg as pooled_ieeg
from ketamap.pooled import pet as pooled_pet

ALPHA = 0.05
KEYS = ["analysis", "term", "arm", "region", "region_group", "species", "measure"]

# --------------------------------------------------------------------------- scenario cases


def null_scenario(scenario: dict[str, Any], *, clinical_null: bool = True) -> dict[str, Any]:
    """The scenario with every PET effect removed and, with ``clinical_null``, both arms changing
    alike. PET-only calibrations keep the ketamine arm's clinical response: without responders
    the prediction null (no baseline predictor) could not be tested."""
    out = copy.deepcopy(scenario)
    clinical = out["clinical"]
    clinical["match_moments"] = False
    if clinical_null and "placebo" in clinical["change"]:
        clinical["change"]["ketamine"] = dict(clinical["change"]["placebo"])
    if out.get("pet"):
        effects = out["pet"]["effects"]
        for key in ("trd_vs_hc_d", "ketamine_x_time_pct", "improvement_slope_pct"):
            effects[key] = []
        effects["response_predictor"] = {"region": None, "correlation": 0}
    return out


def planted_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario as planted, with sampling variability left in (no moment matching)."""
    out = copy.deepcopy(scenario)
    out["clinical"]["match_moments"] = False
    return out


def scenario_truth(scenario: dict[str, Any]) -> pd.DataFrame:
    """Clinical and PET ground truth of a scenario in the result keys."""
    from ketamap.synth import clinical, pet

    entries = clinical.truth(scenario) + pet.truth(scenario)
    truth = pd.DataFrame(entries)
    for key in KEYS:
        if key not in truth.columns:
            truth[key] = None
    return truth[[*KEYS, "value", "unit"]]


def scenario_results(
    scenario: dict[str, Any],
    analyses: tuple[str, ...],
    *,
    regions: tuple[str, ...] = ("habenula",),
    legacy: bool = False,
) -> pd.DataFrame:
    """Run the pooled clinical and PET analyses on one replicate's tables."""
    from ketamap.synth import tables

    subjects, scores = tables.clinical_tables(scenario)
    out = []
    if "clinical.madrs_change" in analyses:
        out.append(
            pooled_clinical.analyze_madrs_change(
                subjects,
                scores,
                remission_threshold=float(scenario["clinical"]["remission_threshold"]),
            )
        )
    pet_wanted = [a for a in analyses if a.startswith("pet.")]
    if pet_wanted:
        regional = tables.pet_regional(scenario)
        runs: dict[str, Callable[[], pd.DataFrame]] = {
            "pet.baseline_trd_vs_hc": lambda: (
                legacy_combat_baseline(regional, subjects)
                if legacy
                else pooled_pet.analyze_baseline(regional, subjects)
            ),
            "pet.ketamine_x_time": lambda: pooled_pet.analyze_ketamine_x_time(regional, subjects),
            "pet.change_vs_improvement": lambda: pooled_pet.analyze_change_vs_improvement(
                regional, subjects, scores
            ),
            "pet.response_prediction": lambda: pooled_pet.analyze_response_prediction(
                regional, subjects, scores, regions=list(regions)
            ),
        }
        out.extend(runs[a]() for a in pet_wanted)
    return pd.concat(out, ignore_index=True)


def legacy_combat_baseline(regional: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """The method ketamap used before batch fixed effects, kept for comparison only: ComBat by
    batch (diagnosis, age and sex protected) on every scan, then OLS of the harmonized SUVR on
    diagnosis + age + sex, as if nothing had been estimated."""
    import statsmodels.formula.api as smf

    reference = pooled_pet.reference_of(regional)
    wide = pooled_pet._wide(regional, "baseline")
    cov = pooled_pet._covariates(subjects).reindex(wide.index)
    cov["batch"] = pooled_pet.session_batch(regional, "baseline")
    cov = cov.dropna(subset=["age", "female"])
    wide = wide.loc[cov.index]
    regions = [r for r in wide.columns if r != reference]
    values = pooled_pet.combat(
        wide[regions].to_numpy(dtype=float), cov["batch"], cov[["trd", "age", "female"]]
    )
    rows = []
    data = cov[["trd", "age", "female"]].copy()
    for j, region in enumerate(regions):
        data["y"] = values[:, j]
        fit = smf.ols("y ~ trd + age + female", data=data).fit()
        low, high = fit.conf_int().loc["trd"]
        rows.append(
            dict(
                analysis="pet.baseline_trd_vs_hc",
                term="trd_minus_hc",
                region=region,
                estimate=fit.params["trd"],
                ci_low=low,
                ci_high=high,
                p_value=fit.pvalues["trd"],
                statistic=fit.tvalues["trd"],
                unit="SUVR",
            )
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- simulated cases


@dataclass(frozen=True)
class IeegDesign:
    """Per-channel responses of a two-session (baseline, ketamine) iEEG study.

    Durations are log-normal per channel; the ketamine session multiplies them by
    ``duration_factor`` and adds a subject-specific shift (sd ``subject_effect_sd_s``: the drug
    effect varies between patients) and measurement noise per session. Synchrony is a Fisher-z
    per subject and session with a subject-specific drug shift.
    """

    subjects: int = 8
    channels: int = 40
    slow_fraction: float = 0.3
    fast_fraction: float = 0.7
    duration_s: float = 0.7
    duration_log_sd: float = 0.25
    duration_factor: float = 1.0
    subject_effect_sd_s: float = 0.05
    noise_sd_s: float = 0.08
    latency_s: float = 0.2
    latency_shift_s: float = 0.0
    latency_subject_sd_s: float = 0.004
    latency_noise_sd_s: float = 0.01
    amplitude_z: float = 6.0
    sync_z: float = 0.45
    sync_shift_z: float = 0.0
    sync_subject_sd_z: float = 0.12
    sync_noise_sd_z: float = 0.08

    def truth(self) -> dict[tuple[str, str | None], float]:
        mean_d = self.duration_s * np.exp(self.duration_log_sd**2 / 2)
        return {
            ("ieeg.slow_phase_duration", None): (self.duration_factor - 1) * mean_d,
            ("ieeg.fast_phase_latency", None): self.latency_shift_s,
        }


def simulate_ieeg(design: IeegDesign, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``ieeg_responses`` and ``ieeg_synchrony`` rows of one replicate (vectorised over channels)."""
    rng = np.random.default_rng(seed)
    s, c = design.subjects, design.channels
    subject = np.repeat(np.arange(s), c)
    groups = np.where(rng.random(s * c) < 0.5, "emotion", "other")
    slow = rng.random(s * c) < design.slow_fraction
    fast = rng.random(s * c) < design.fast_fraction
    duration = design.duration_s * np.exp(rng.normal(0, design.duration_log_sd, s * c))
    shift = rng.normal(0, design.subject_effect_sd_s, s)[subject]
    latency = rng.normal(design.latency_s, 0.02, s * c)
    lat_shift = design.latency_shift_s + rng.normal(0, design.latency_subject_sd_s, s)[subject]
    rows = []
    for condition, factor in (("baseline", 1.0), ("ketamine", design.duration_factor)):
        ket = condition == "ketamine"
        rows.append(
            pd.DataFrame(
                {
                    "subject_id": [f"S{i:02d}" for i in subject],
                    "condition": condition,
                    "channel": [f"C{i:03d}" for i in np.arange(s * c) % c],
                    "region_group": groups,
                    "slow_duration_s": np.where(
                        slow,
                        np.maximum(
                            duration * factor
                            + (shift if ket else 0)
                            + rng.normal(0, design.noise_sd_s, s * c),
                            0.05,
                        ),
                        np.nan,
                    ),
                    "fast_peak_latency_s": np.where(
                        fast,
                        latency
                        + (lat_shift if ket else 0)
                        + rng.normal(0, design.latency_noise_sd_s, s * c),
                        np.nan,
                    ),
                    "fast_peak_amplitude_z": np.where(
                        fast, design.amplitude_z * np.exp(rng.normal(0, 0.2, s * c)), np.nan
                    ),
                    "responsive_slow": slow,
                    "responsive_fast": fast,
                }
            )
        )
    responses = pd.concat(rows, ignore_index=True)
    base = rng.normal(design.sync_z, 0.15, s)
    drug = design.sync_shift_z + rng.normal(0, design.sync_subject_sd_z, s)
    sync = pd.DataFrame(
        {
            "subject_id": np.tile([f"S{i:02d}" for i in range(s)], 2),
            "condition": np.repeat(["baseline", "ketamine"], s),
            "synchrony_r": np.tanh(
                np.concatenate([base, base + drug]) + rng.normal(0, design.sync_noise_sd_z, 2 * s)
            ),
        }
    )
    return responses, sync


def ieeg_results(design: IeegDesign, seed: int, margin_s: float = 0.03) -> pd.DataFrame:
    responses, sync = simulate_ieeg(design, seed)
    out = pd.concat(
        [
            pooled_ieeg.analyze_slow_phase_duration(responses),
            pooled_ieeg.analyze_fast_phase_latency(responses, margin_s=margin_s),
            pooled_ieeg.analyze_synchrony(sync),
        ],
        ignore_index=True,
    )
    truth = design.truth()
    z = np.arctanh(sync.pivot(index="subject_id", columns="condition", values="synchrony_r"))
    z_base = float(z["baseline"].mean())
    sync_truth = float(np.tanh(z_base + design.sync_shift_z) - np.tanh(z_base))
    values = []
    for _, row in out.iterrows():
        if row["analysis"] == "ieeg.synchrony":
            values.append(sync_truth)
        elif row["term"] == "equivalence_tost":
            values.append(np.nan)
        else:
            values.append(truth[(row["analysis"], None)])
    return out.assign(value=values)


@dataclass(frozen=True)
class BehaviourDesign:
    """Per-puff eyelid closure of humans and mice, and reward seeking of mice, in two sessions.

    Each subject has its own level and its own drug effect (sd ``drug_sd``); humans (bedside
    video) are noisier than mice (head-fixed camera): ``noise`` per species.
    """

    humans: int = 8
    mice: int = 16
    puffs: int = 30
    reflex_effect: float = 0.0
    sustained_effect: float = 0.0
    drug_sd: dict[str, float] | None = None
    noise: dict[str, float] | None = None
    cues: int = 30
    train_drop_saline: float = 0.0
    ketamine_drop_factor: float = 0.5

    def species_sd(self, table: dict[str, float] | None, default: dict[str, float]) -> dict:
        return table or default


def simulate_behaviour(design: BehaviourDesign, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``behaviour_puffs`` and ``reward_seeking`` rows of one replicate."""
    rng = np.random.default_rng(seed)
    drug_sd = design.species_sd(design.drug_sd, {"human": 0.03, "mouse": 0.02})
    noise = design.species_sd(design.noise, {"human": 0.12, "mouse": 0.06})
    parts = []
    for species, n, control in (
        ("human", design.humans, "baseline"),
        ("mouse", design.mice, "saline"),
    ):
        level_r = rng.normal(0.7, 0.08, n)
        level_s = rng.normal(0.35, 0.06, n)
        drug_r = design.reflex_effect + rng.normal(0, drug_sd[species], n)
        drug_s = design.sustained_effect + rng.normal(0, drug_sd[species], n)
        for condition in (control, "ketamine"):
            ket = condition == "ketamine"
            k = design.puffs
            parts.append(
                pd.DataFrame(
                    {
                        "subject_id": np.repeat([f"{species[0]}{i:02d}" for i in range(n)], k),
                        "species": species,
                        "condition": condition,
                        "reflex_closure": np.repeat(level_r + (drug_r if ket else 0), k)
                        + rng.normal(0, noise[species], n * k),
                        "sustained_closure": np.repeat(level_s + (drug_s if ket else 0), k)
                        + rng.normal(0, noise[species], n * k),
                    }
                )
            )
    puffs = pd.concat(parts, ignore_index=True)
    m = design.mice
    base = np.clip(rng.normal(0.8, 0.06, m), 0.05, 0.95)
    rows = []
    for condition, factor in (("saline", 1.0), ("ketamine", design.ketamine_drop_factor)):
        drop = design.train_drop_saline * factor + rng.normal(0, 0.05, m)
        for epoch, p in (("pre_train", base), ("post_train", np.clip(base - drop, 0.02, 0.98))):
            rows.append(
                pd.DataFrame(
                    {
                        "subject_id": [f"m{i:02d}" for i in range(m)],
                        "condition": condition,
                        "epoch": epoch,
                        "anticipatory_fraction": rng.binomial(design.cues, p) / design.cues,
                    }
                )
            )
    return puffs, pd.concat(rows, ignore_index=True)


def behaviour_results(design: BehaviourDesign, seed: int, margin: float = 0.1) -> pd.DataFrame:
    puffs, reward = simulate_behaviour(design, seed)
    out = pd.concat(
        [
            pooled_behaviour.analyze_reflex_blink(puffs, margin=margin),
            pooled_behaviour.analyze_sustained_closure(puffs),
            pooled_behaviour.analyze_reward_seeking(reward),
        ],
        ignore_index=True,
    )
    truth = {
        ("behaviour.reflex_blink", "ketamine_minus_control"): design.reflex_effect,
        ("behaviour.sustained_closure", "ketamine_minus_control"): design.sustained_effect,
        ("behaviour.sustained_closure", "species_x_drug"): 0.0,
        ("mouse.reward_seeking_after_train", "train_effect_saline"): -design.train_drop_saline,
        ("mouse.reward_seeking_after_train", "train_effect_ketamine"): -design.train_drop_saline
        * design.ketamine_drop_factor,
        ("mouse.reward_seeking_after_train", "train_x_drug"): design.train_drop_saline
        * (1 - design.ketamine_drop_factor),
    }
    values = [truth.get((a, t), np.nan) for a, t in zip(out["analysis"], out["term"], strict=True)]
    return out.assign(value=values)


def timing_results(
    ieeg_design: IeegDesign, behaviour_design: BehaviourDesign, seed: int
) -> pd.DataFrame:
    """``cross_species.timing_signature`` rows with a p-value (the shape similarity is descriptive)."""
    responses, _ = simulate_ieeg(ieeg_design, seed)
    puffs, _ = simulate_behaviour(behaviour_design, seed + 1)
    curves = pd.DataFrame(columns=["subject_id", "species", "condition", "time_s", "closure"])
    out = pooled_behaviour.analyze_timing_signature(
        puffs, curves, responses, window_s=(-0.5, 2.0), n_boot=10, seed=seed
    )
    effect = {"ketamine_effect_fast": behaviour_design.reflex_effect}
    effect["ketamine_effect_slow"] = behaviour_design.sustained_effect
    values = []
    for _, row in out.iterrows():
        if row["measure"] == "hfb":
            slow = row["term"] == "ketamine_effect_slow"
            values.append(ieeg_design.duration_factor - 1 if slow else 0.0)
        else:
            values.append(effect[row["term"]])
    return out.assign(value=values)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Case:
    """One analysis family at one layout: a replicate function of the seed."""

    name: str
    layout: str
    kind: str  # "null" (type-I) or "planted" (coverage)
    replicate: Callable[[int], pd.DataFrame]
    reps: int


def _run_one(case: Case, seed: int) -> pd.DataFrame:
    # Thousands of replicates would repeat every design-check line; the level is restored after.
    logger = logging.getLogger("ketamap")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return case.replicate(seed).assign(seed=seed)
    finally:
        logger.setLevel(level)


def run_case(case: Case, *, jobs: int = 1, first_seed: int = 1) -> pd.DataFrame:
    """Every replicate of a case (seeds ``first_seed`` ... ``first_seed + reps - 1``)."""
    seeds = list(range(first_seed, first_seed + case.reps))
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            parts = list(pool.map(_run_one, [case] * len(seeds), seeds, chunksize=4))
    else:
        parts = [_run_one(case, s) for s in seeds]
    return pd.concat(parts, ignore_index=True).assign(
        case=case.name, layout=case.layout, kind=case.kind
    )


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per case, layout, analysis and term: type-I error (p < 0.05 among the rows of the null
    replicates whose planted value is null; for TOST rows, among the replicates whose true
    difference sits on the margin) and coverage (rows of the planted replicates with a planted
    effect whose 95 % interval covers it)."""
    df = results.copy()
    df["null_value"] = np.where(df["unit"].astype(str) == "AUC", 0.5, 0.0)
    df["estimated"] = df["estimate"].notna() | df["p_value"].notna()
    df["is_null"] = df["value"].notna() & np.isclose(df["value"].astype(float), df["null_value"])
    df["rejected"] = df["p_value"] < ALPHA
    df["covered"] = (df["ci_low"] <= df["value"]) & (df["value"] <= df["ci_high"])
    keys = ["case", "layout", "analysis", "term"]
    rows: dict[tuple, dict[str, Any]] = {}
    for key, part in df.groupby([*keys, "kind"], sort=False):
        *head, kind = key
        row = rows.setdefault(
            tuple(head),
            dict(
                zip(keys, head, strict=True),
                replicates=0,
                type_i=np.nan,
                type_i_rows=0,
                type_i_se=np.nan,
                coverage=np.nan,
                coverage_rows=0,
                coverage_se=np.nan,
                not_estimated=0.0,
            ),
        )
        est = part[part["estimated"]]
        tost = (part["term"] == "equivalence_tost").all()
        if (tost and kind == "margin") or (not tost and kind == "null"):
            tested = est if tost else est[est["is_null"]]
            if len(tested):
                row["type_i"] = float(tested["rejected"].mean())
                row["type_i_rows"] = len(tested)
                row["type_i_se"] = clustered_se(tested["rejected"], tested["seed"])
        elif not tost and kind == "planted":
            planted = est[~est["is_null"] & est["value"].notna()]
            if len(planted):
                row["coverage"] = float(planted["covered"].mean())
                row["coverage_rows"] = len(planted)
                row["coverage_se"] = clustered_se(planted["covered"], planted["seed"])
        else:
            continue
        row["replicates"] = max(row["replicates"], int(part["seed"].nunique()))
        # Rows a replicate could not estimate (e.g. too few responders) are not counted above.
        row["not_estimated"] = max(row["not_estimated"], float(1 - len(est) / len(part)))
    out = pd.DataFrame(list(rows.values()))
    return out[out["type_i"].notna() | out["coverage"].notna()].reset_index(drop=True)


def verdict(row: pd.Series, *, max_type_i: float = 0.055, coverage: tuple = (0.93, 0.97)) -> str:
    """``calibrated`` when the type-I error is at most 5.5 % and the coverage within 93-97 %;
    ``within Monte Carlo error`` when a target is missed by less than two Monte Carlo standard
    errors (the replicates cannot tell); ``NOT calibrated`` otherwise, with the side."""
    problems: list[str] = []
    close: list[str] = []
    if pd.notna(row["type_i"]) and row["type_i"] > max_type_i:
        se = row.get("type_i_se", monte_carlo_se(row["type_i"], int(row["type_i_rows"])))
        (close if row["type_i"] - 2 * se <= max_type_i else problems).append(
            "type-I error above 5.5 %"
        )
    if pd.notna(row["coverage"]) and not coverage[0] <= row["coverage"] <= coverage[1]:
        se = row.get("coverage_se", monte_carlo_se(row["coverage"], int(row["coverage_rows"])))
        low = row["coverage"] < coverage[0]
        side = "coverage below 93 %" if low else "coverage above 97 % (conservative)"
        miss = coverage[0] - row["coverage"] if low else row["coverage"] - coverage[1]
        (close if miss <= 2 * se else problems).append(side)
    if problems:
        return "NOT calibrated: " + "; ".join(problems)
    if close:
        return "within Monte Carlo error (" + "; ".join(close) + ")"
    return "calibrated"


def monte_carlo_se(rate: float, n: int) -> float:
    """Binomial standard error of a rate from n independent rows."""
    return float(np.sqrt(rate * (1 - rate) / n)) if n else float("nan")


def clustered_se(hits: pd.Series, seed: pd.Series) -> float:
    """Monte Carlo standard error of a rate over rows clustered in replicates.

    The regions of one replicate consortium share its subjects, so their rejections are
    correlated (one unlucky draw of the controls moves every region): the rate's standard error
    is that of a ratio of per-replicate sums, not the binomial one.
    """
    per = pd.DataFrame({"hit": hits.astype(float), "seed": seed}).groupby("seed")["hit"]
    k, n = per.sum().to_numpy(), per.count().to_numpy().astype(float)
    s = len(k)
    if s < 2:
        return float("nan")
    rate = k.sum() / n.sum()
    return float(np.sqrt(((k - rate * n) ** 2).sum() * s / (s - 1)) / n.sum())


def format_table(summary: pd.DataFrame) -> str:
    """The summary as the Markdown table the README carries."""
    lines = [
        "| analysis | term | layout | replicates | type-I error (± MC SE; rows) "
        "| coverage (± MC SE; rows) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        t1 = (
            f"{100 * r['type_i']:.1f} % (± {100 * r['type_i_se']:.1f}; {r['type_i_rows']})"
            if pd.notna(r["type_i"])
            else ""
        )
        cov = (
            f"{100 * r['coverage']:.1f} % (± {100 * r['coverage_se']:.1f}; {r['coverage_rows']})"
            if pd.notna(r["coverage"])
            else ""
        )
        name = r["analysis"] + (
            " (legacy ComBat-then-OLS)" if r["case"].startswith("legacy") else ""
        )
        skipped = f"; {100 * r['not_estimated']:.0f} % not estimated" if r["not_estimated"] else ""
        lines.append(
            f"| `{name}` | {r['term']} | {r['layout']}{skipped} | {r['replicates']} | {t1} | "
            f"{cov} | {verdict(r)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the case list


def _pet_case(scenario: dict[str, Any], kind: str, analyses: tuple[str, ...], **kw: Any):
    base = (
        null_scenario(scenario, clinical_null="clinical.madrs_change" in analyses)
        if kind == "null"
        else planted_scenario(scenario)
    )
    truth = scenario_truth(base)

    def replicate(seed: int) -> pd.DataFrame:
        from ketamap.synth.tables import with_seed

        result = scenario_results(with_seed(base, seed), analyses, **kw)
        for key in KEYS:
            if key not in result.columns:
                result[key] = None
        merged = result.merge(
            truth.rename(columns={"unit": "unit_truth"}),
            on=[k for k in KEYS if k != "unit"],
            how="left",
        )
        if kind == "null":
            chance = pd.Series(
                np.where(merged["unit"].astype(str) == "AUC", 0.5, 0.0), index=merged.index
            )
            merged["value"] = merged["value"].fillna(chance)
        return merged

    return replicate


def scenario_cases(
    path: str | Path,
    layout: str,
    analyses: tuple[str, ...],
    reps: int,
    *,
    kinds: tuple[str, ...] = ("null", "planted"),
    regions: tuple[str, ...] = ("habenula",),
    legacy: bool = False,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> list[Case]:
    """Null and planted cases of a scenario file (clinical and PET analyses)."""
    from ketamap.synth import load_scenario

    scenario = load_scenario(path)
    if edit is not None:
        edit(scenario)
    name = ("legacy " if legacy else "") + ", ".join(a.split(".")[0] for a in analyses)
    return [
        Case(
            name,
            layout,
            kind,
            _Replicate(scenario, kind, analyses, regions, legacy),
            reps,
        )
        for kind in kinds
    ]


class _Replicate:
    """A picklable replicate function (process pools cannot send closures)."""

    def __init__(
        self,
        scenario: dict[str, Any],
        kind: str,
        analyses: tuple[str, ...],
        regions: tuple[str, ...],
        legacy: bool,
    ) -> None:
        self.args = (scenario, kind, analyses, regions, legacy)
        self._fn: Callable[[int], pd.DataFrame] | None = None

    def __call__(self, seed: int) -> pd.DataFrame:
        if self._fn is None:
            scenario, kind, analyses, regions, legacy = self.args
            self._fn = _pet_case(scenario, kind, analyses, regions=regions, legacy=legacy)
        return self._fn(seed)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self.args, "_fn": None}


class _Call:
    """A picklable ``fn(design, seed)`` bound to its design."""

    def __init__(self, fn: Callable[..., pd.DataFrame], *designs: Any) -> None:
        self.fn, self.designs = fn, designs

    def __call__(self, seed: int) -> pd.DataFrame:
        return self.fn(*self.designs, seed)


def simulated_cases(reps: int) -> list[Case]:
    """iEEG, behaviour and cross-species cases at the published sizes (8 patients, 16 mice)."""
    null_i, planted_i = IeegDesign(), IeegDesign(duration_factor=0.55, sync_shift_z=-0.5)
    margin_i = IeegDesign(latency_shift_s=0.03)
    null_b = BehaviourDesign()
    planted_b = BehaviourDesign(sustained_effect=-0.2, train_drop_saline=0.3)
    margin_b = BehaviourDesign(reflex_effect=0.1)
    layout_i = "8 patients x 40 channels, subject-specific drug effect"
    layout_b = "8 patients + 16 mice, noisier human video"
    return [
        Case("ieeg", layout_i, "null", _Call(ieeg_results, null_i), reps),
        Case("ieeg", layout_i, "planted", _Call(ieeg_results, planted_i), reps),
        Case("ieeg", layout_i, "margin", _Call(ieeg_results, margin_i), reps),
        Case("behaviour", layout_b, "null", _Call(behaviour_results, null_b), reps),
        Case("behaviour", layout_b, "planted", _Call(behaviour_results, planted_b), reps),
        Case("behaviour", layout_b, "margin", _Call(behaviour_results, margin_b), reps),
        Case("cross_species", layout_b, "null", _Call(timing_results, null_i, null_b), reps),
        Case(
            "cross_species",
            layout_b,
            "planted",
            _Call(timing_results, planted_i, planted_b),
            reps,
        ),
    ]
