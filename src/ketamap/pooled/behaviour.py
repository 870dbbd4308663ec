"""Pooled behaviour and cross-species analyses of the eye puff, in the shared result shape.

Every drug contrast is within subject: humans are recorded at baseline and under ketamine, mice
under saline and under ketamine. ``control`` below is baseline (humans) or saline (mice).

- ``behaviour.reflex_blink``: reflex closure (peak closure in the reflex window), ketamine minus
  control per species, with a TOST equivalence row against ``behaviour.equivalence_margin``.
- ``behaviour.sustained_closure``: sustained closure, ketamine minus control per species and the
  species x drug interaction (human minus mouse drug effect).
- ``mouse.reward_seeking_after_train``: anticipatory-lick fraction after minus before the
  eight-puff train under saline and under ketamine, and the train x drug interaction.
- ``cross_species.timing_signature``: the ketamine effect on the fast and the slow component side
  by side (eyelid reflex vs sustained closure in both species, fast HFB peak vs slow-phase duration
  in the human iEEG), and the similarity of the human and mouse eyelid response shapes on the
  common 100 Hz time base.

Model: each subject contributes one mean per condition (over its puffs or cues). With two balanced
conditions per subject, the random-intercept model ``y ~ drug + (1 | subject)`` of one species has
within-subject estimates and t tests that are exactly those of the per-subject differences
``d = ketamine - control`` (the paired t, n - 1 df). Species are analysed with their own variance
(humans on bedside video are noisier than head-fixed mice; pooling the variances made the human
intervals too narrow), and the species x drug interaction is the Welch t of the two species'
differences. Fitting the mixed model itself on such a saturated design makes statsmodels' MixedLM
fail to invert its Hessian, so the equivalent form is used (tests check it against the paired t).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# scipy.stats, statsmodels and patsy are imported by the functions that use them: the figure
# jobs import this module too, and those imports cost them 1-2 s (benchmarks/overhead.py).
import numpy as np
import pandas as pd

from ketamap.errors import KetamapError
from ketamap.pooled import Outcome
from ketamap.pooled.stats import bh_qvalues, result_frame

CONTROL = {"baseline": "control", "saline": "control", "ketamine": "ketamine"}
SPECIES = ("human", "mouse")


def subject_differences(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per subject: species, mean ``value`` under control and ketamine, and their difference ``d``.

    Subjects without both conditions (or without a value in one) are dropped.
    """
    df = table.dropna(subset=[value]).reset_index(drop=True)
    df["drug"] = df["condition"].map(CONTROL)
    means = df.pivot_table(
        index=["subject_id", "species"], columns="drug", values=value, aggfunc="mean"
    )
    for col in ("control", "ketamine"):
        if col not in means.columns:
            means[col] = np.nan
    means = means.dropna(subset=["control", "ketamine"]).reset_index()
    means["d"] = means["ketamine"] - means["control"]
    return means


@dataclass(frozen=True)
class Effect:
    """One species' mean ketamine - control difference, its SE, degrees of freedom and subjects."""

    est: float
    se: float
    df: float
    n: int


def _species_effects(diffs: pd.DataFrame) -> dict[str, Effect]:
    """Per-species mean difference with its own variance: a one-sample t per species (n - 1 df).

    Each species is its own population with its own measurement (bedside video in humans, a
    head-fixed camera in mice), so their variances are not pooled: with a pooled variance the
    noisier, smaller human sample got too narrow intervals (type-I error 9.5 % instead of 5 % in
    benchmarks/calibration.py).
    """
    present = [s for s in SPECIES if (diffs["species"] == s).sum() >= 2]
    if not present:
        raise KetamapError(
            "fewer than 2 subjects with both conditions in every species",
            field="condition",
            expected="control (baseline or saline) and ketamine sessions for each subject",
        )
    out = {}
    for species in present:
        d = diffs.loc[diffs["species"] == species, "d"].to_numpy(dtype=float)
        out[species] = Effect(
            float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), float(len(d) - 1), len(d)
        )
    return out


def _welch(a: Effect, b: Effect) -> Effect:
    """a - b with the Welch-Satterthwaite degrees of freedom."""
    va, vb = a.se**2, b.se**2
    se = float(np.sqrt(va + vb))
    df = (va + vb) ** 2 / (va**2 / a.df + vb**2 / b.df) if va + vb > 0 else float(a.df + b.df)
    return Effect(a.est - b.est, se, float(df), a.n + b.n)


def _row(
    term: str, species: str | None, est: float, se: float, df: float, n: int, unit: str, method: str
) -> dict:
    from scipy import stats

    tcrit = stats.t.ppf(0.975, df)
    return dict(
        term=term,
        species=species,
        estimate=est,
        ci_low=est - tcrit * se,
        ci_high=est + tcrit * se,
        p_value=float(2 * stats.t.sf(abs(est / se), df)) if se > 0 else np.nan,
        n=n,
        unit=unit,
        statistic=est / se if se > 0 else np.nan,
        df=df,
        method=method,
    )


def analyze_reflex_blink(puffs: pd.DataFrame, *, margin: float) -> pd.DataFrame:
    """``behaviour.reflex_blink``: ketamine minus control reflex closure, per species, with TOST."""
    from scipy import stats

    diffs = subject_differences(puffs, "reflex_closure")
    effects = _species_effects(diffs)
    method = (
        "per-subject mean reflex closure, ketamine minus control; one-sample t of the per-subject "
        "differences per species (= random-intercept model with two balanced conditions), n - 1 df"
    )
    rows = []
    for species, e in effects.items():
        est, se, df = e.est, e.se, e.df
        diff = _row("ketamine_minus_control", species, est, se, df, e.n, "fraction", method)
        rows.append(diff)
        t90 = stats.t.ppf(0.95, df)
        rows.append(
            dict(
                diff,
                term="equivalence_tost",
                ci_low=est - t90 * se,
                ci_high=est + t90 * se,
                p_value=float(
                    max(stats.t.sf((est + margin) / se, df), stats.t.cdf((est - margin) / se, df))
                ),
                statistic=float(min((est + margin) / se, (margin - est) / se)),
                method=f"TOST of the same contrast against +/- {margin:g}; interval is the 90 % CI",
                note=f"equivalence margin +/- {margin:g} closure; a small p means the reflex is unchanged",
            )
        )
    out = result_frame(rows)
    # The TOST p answers another question: BH within the difference rows, TOST rows kept as is.
    tost = out["term"] == "equivalence_tost"
    out.loc[tost, "q_value"] = out.loc[tost, "p_value"]
    out.loc[~tost, "q_value"] = bh_qvalues(out.loc[~tost, "p_value"].to_numpy(dtype=float))
    out["analysis"] = "behaviour.reflex_blink"
    return out


def analyze_sustained_closure(puffs: pd.DataFrame) -> pd.DataFrame:
    """``behaviour.sustained_closure``: species x drug on sustained closure (per species + interaction)."""
    diffs = subject_differences(puffs, "sustained_closure")
    effects = _species_effects(diffs)
    method = (
        "per-subject mean sustained closure, ketamine minus control (the random-intercept model's "
        "within-subject contrast); one-sample t per species, n - 1 df"
    )
    rows = [
        _row("ketamine_minus_control", s, e.est, e.se, e.df, e.n, "fraction", method)
        for s, e in effects.items()
    ]
    if len(effects) == 2:
        inter = _welch(effects["human"], effects["mouse"])
        rows.append(
            _row(
                "species_x_drug",
                None,
                inter.est,
                inter.se,
                inter.df,
                inter.n,
                "fraction",
                "per-subject mean sustained closure: human minus mouse ketamine effect, Welch t "
                "(the species' variances differ)",
            )
        )
    out = result_frame(rows)
    out["analysis"] = "behaviour.sustained_closure"
    return out


def analyze_reward_seeking(reward: pd.DataFrame) -> pd.DataFrame:
    """``mouse.reward_seeking_after_train``: train effect (post - pre anticipatory fraction) per drug
    and the train x drug interaction (ketamine minus saline train effect), within mouse."""
    wide = reward.pivot_table(
        index="subject_id", columns=["condition", "epoch"], values="anticipatory_fraction"
    )
    needed = [(c, e) for c in ("saline", "ketamine") for e in ("pre_train", "post_train")]
    missing = [f"{c}/{e}" for c, e in needed if (c, e) not in wide.columns]
    if missing:
        raise KetamapError(
            f"reward seeking lacks {missing}",
            field="epoch",
            expected="pre_train and post_train epochs in saline and ketamine sessions",
        )
    wide = wide[needed].dropna()
    if len(wide) < 2:
        raise KetamapError(
            "fewer than 2 mice with all four condition x epoch cells", field="anticipatory_fraction"
        )
    sal = (wide[("saline", "post_train")] - wide[("saline", "pre_train")]).to_numpy(dtype=float)
    ket = (wide[("ketamine", "post_train")] - wide[("ketamine", "pre_train")]).to_numpy(dtype=float)
    n = len(wide)
    df = float(n - 1)
    rows = []
    for term, d, what in (
        ("train_effect_saline", sal, "post - pre train, saline"),
        ("train_effect_ketamine", ket, "post - pre train, ketamine"),
        ("train_x_drug", ket - sal, "(post - pre) ketamine minus (post - pre) saline"),
    ):
        rows.append(
            _row(
                term,
                "mouse",
                float(d.mean()),
                float(d.std(ddof=1) / np.sqrt(n)),
                df,
                n,
                "fraction",
                f"anticipatory-lick fraction, {what}; within-mouse contrast of the train x drug "
                "random-intercept model (one-sample t of per-mouse contrasts)",
            )
        )
    out = result_frame(rows)
    out["analysis"] = "mouse.reward_seeking_after_train"
    return out


def shape_similarity(
    timecourses: pd.DataFrame, *, window_s: tuple[float, float], n_boot: int, seed: int
) -> list[dict]:
    """Pearson r of the human and mouse mean eyelid-closure curves per drug condition, with a
    percentile bootstrap over subjects (each species resampled on its own)."""
    tc = timecourses[
        (timecourses["time_s"] >= window_s[0] - 1e-9)
        & (timecourses["time_s"] <= window_s[1] + 1e-9)
    ].reset_index(drop=True)
    tc = tc.assign(drug=tc["condition"].map(CONTROL))
    rng = np.random.default_rng(seed)
    rows = []
    for drug in ("control", "ketamine"):
        curves = {}
        for species in SPECIES:
            part = tc[(tc["species"] == species) & (tc["drug"] == drug)]
            curves[species] = part.pivot_table(
                index="subject_id", columns="time_s", values="closure"
            )
        if any(len(c) < 2 for c in curves.values()):
            continue
        times = curves["human"].columns.intersection(curves["mouse"].columns)
        h = curves["human"][times].to_numpy(dtype=float)
        m = curves["mouse"][times].to_numpy(dtype=float)

        def corr(hh: np.ndarray, mm: np.ndarray) -> np.ndarray:
            a, b = np.nanmean(hh, axis=-2), np.nanmean(mm, axis=-2)
            ok = np.isfinite(a) & np.isfinite(b)
            a = np.where(ok, a, 0.0)
            b = np.where(ok, b, 0.0)
            k = ok.sum(axis=-1, keepdims=True)
            a = np.where(ok, a - a.sum(axis=-1, keepdims=True) / k, 0.0)
            b = np.where(ok, b - b.sum(axis=-1, keepdims=True) / k, 0.0)
            return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

        r = float(corr(h, m))
        # Bootstrap resamples: (n_boot, subjects, time) index arrays, vectorised.
        hb = h[rng.integers(0, len(h), (n_boot, len(h)))]
        mb = m[rng.integers(0, len(m), (n_boot, len(m)))]
        boot = corr(hb, mb)
        lo, hi = np.nanpercentile(boot, [2.5, 97.5])
        rows.append(
            dict(
                term=f"shape_similarity_{drug}",
                measure="eyelid",
                estimate=r,
                ci_low=float(lo),
                ci_high=float(hi),
                n=len(h) + len(m),
                unit="r",
                method=(
                    f"Pearson r of the human and mouse mean closure curves on the 100 Hz base over "
                    f"{list(window_s)} s; percentile bootstrap over subjects ({n_boot}, seed {seed})"
                ),
            )
        )
    return rows


def analyze_timing_signature(
    puffs: pd.DataFrame,
    timecourses: pd.DataFrame,
    ieeg_responses: pd.DataFrame | None,
    *,
    window_s: tuple[float, float],
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """``cross_species.timing_signature``: fast vs slow ketamine effects in both species and the
    similarity of their eyelid response shapes."""
    rows = []
    for term, value in (
        ("ketamine_effect_fast", "reflex_closure"),
        ("ketamine_effect_slow", "sustained_closure"),
    ):
        for species, e in _species_effects(subject_differences(puffs, value)).items():
            rows.append(
                dict(
                    _row(
                        term,
                        species,
                        e.est,
                        e.se,
                        e.df,
                        e.n,
                        "fraction",
                        f"eyelid {value.replace('_', ' ')}, ketamine minus control, per-subject means",
                    ),
                    measure="eyelid",
                )
            )
    if ieeg_responses is not None and len(ieeg_responses):
        rows.extend(_hfb_rows(ieeg_responses))
    rows.extend(shape_similarity(timecourses, window_s=window_s, n_boot=n_boot, seed=seed))
    out = result_frame(rows)
    out["analysis"] = "cross_species.timing_signature"
    return out


def _hfb_rows(responses: pd.DataFrame) -> list[dict]:
    """Human iEEG fast and slow components as relative change (ketamine / baseline - 1) of each
    subject's mean fast-peak amplitude and slow-phase duration over the channels that have the
    component in both conditions, paired over subjects; the CI is the delta method on the ratio.

    Channel selection is symmetric, as in ``ieeg.fast_phase_latency``. A channel whose component
    is not detected under ketamine is left out rather than counted as 0: detection on a noisy
    epoch average fails for low-SNR channels and for phases that ketamine shortens, so a 0 mixes
    detection into the duration (it pulled the slow change from -0.47 to -0.54 over 24 seeds of
    ``behaviour_small``) and into the amplitude (a fast change of -0.04 where none is planted).
    Selecting at baseline only is not enough: those channels passed the threshold with the help
    of their baseline noise, and regression to the mean makes the ketamine value look lower. The
    ``note`` counts the baseline channels left out. The slow-phase duration is the half-maximum
    width of the HFB power increase (:func:`ketamap.ieeg._measures`); its constant offset from
    the planted half-amplitude width does not cancel in a ratio, which the synthetic truth
    accounts for (:func:`ketamap.synth.behaviour.truth`).
    """
    rows = []
    keys = ["subject_id", "channel"]
    for term, value, flag, what in (
        ("ketamine_effect_fast", "fast_peak_amplitude_z", "responsive_fast", "fast peak"),
        ("ketamine_effect_slow", "slow_duration_s", "responsive_slow", "slow phase"),
    ):
        has = responses[responses[flag].astype(bool)]
        base = has.loc[has["condition"] == "baseline", keys]
        keep = base.merge(has.loc[has["condition"] == "ketamine", keys], on=keys)
        both = responses.merge(keep, on=keys)
        means = both.pivot_table(
            index="subject_id", columns="condition", values=value, aggfunc="mean"
        )
        if not {"baseline", "ketamine"} <= set(means.columns):
            continue
        means = means.dropna(subset=["baseline", "ketamine"])
        n = len(means)
        if n < 2:
            continue
        b = means["baseline"].to_numpy(dtype=float)
        k = means["ketamine"].to_numpy(dtype=float)
        ratio = k.mean() / b.mean()
        # Delta-method SE of the ratio of paired means.
        cov = np.cov(np.vstack([k, b]), ddof=1) / n
        grad = np.array([1 / b.mean(), -k.mean() / b.mean() ** 2])
        se = float(np.sqrt(grad @ cov @ grad))
        measured = (
            "slow-phase duration (half-maximum width of the HFB power increase)"
            if flag == "responsive_slow"
            else value.replace("_", " ")
        )
        rows.append(
            dict(
                _row(
                    term,
                    "human",
                    float(ratio - 1),
                    se,
                    float(n - 1),
                    n,
                    "relative change",
                    f"iEEG {measured}: mean ketamine / mean baseline - 1 over subjects, channels "
                    f"with a {what} in both conditions; delta-method SE, t with n - 1 df",
                ),
                measure="hfb",
                note=(
                    f"{len(keep)} channels; {len(base) - len(keep)} of the {len(base)} with a "
                    f"{what} at baseline have none under ketamine and are left out"
                ),
            )
        )
    return rows


# ------------------------------------------------------------------------------ workflow steps
# Named by ketamap.pooled.ANALYSES / FIGURES; each takes the tables it reads and its options
# (ketamap.pooled.analysis_options) and returns what to write.


def _behaviour_outcome(result: pd.DataFrame, options: dict[str, Any], rule: str | None) -> Outcome:
    from ketamap import figures

    if rule is None:
        windows = "; ".join(
            f"{sp} {list(w)} s" for sp, w in sorted(options["behaviour.sustained_window_s"].items())
        )
        rule = (
            f"reflex window {list(options['behaviour.reflex_window_s'])} s, "
            f"sustained window {windows}, "
            f"tracking cutoff {float(options['behaviour.likelihood_cutoff']):g}"
        )
    result = result.assign(method=result["method"].astype(str) + "; " + rule)
    labels = result.apply(
        lambda r: " ".join(
            str(v) for v in (r["term"], r["species"], r["measure"]) if isinstance(v, str)
        ),
        axis=1,
    )
    labelled = result.assign(region=labels)
    return Outcome(
        result,
        figure=lambda path: figures.forest_plot(labelled, path),
        summary=f"{len(result)} rows, {int((result['q_value'] < 0.05).sum())} with q < 0.05",
    )


def step_reflex_blink(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    from ketamap.config import with_defaults

    spec = with_defaults(options["analysis"], "analyses", "behaviour.reflex_blink")
    result = analyze_reflex_blink(
        tables["behaviour_puffs"], margin=float(spec["equivalence_margin"])
    )
    return _behaviour_outcome(result, options, None)


def step_sustained_closure(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    return _behaviour_outcome(analyze_sustained_closure(tables["behaviour_puffs"]), options, None)


def step_reward_seeking(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    return _behaviour_outcome(
        analyze_reward_seeking(tables["reward_seeking"]),
        options,
        "anticipatory lick = a lick between reward cue and water",
    )


def step_timing_signature(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    from ketamap.config import with_defaults

    spec = with_defaults(options["analysis"], "analyses", "cross_species.timing_signature")
    window = spec["similarity_window_s"]
    result = analyze_timing_signature(
        tables["behaviour_puffs"],
        tables["behaviour_timecourses"],
        tables.get("ieeg_responses"),
        window_s=(float(window[0]), float(window[1])),
        n_boot=int(spec["bootstrap"]),
        seed=int(options["seed"]),
    )
    return _behaviour_outcome(result, options, None)


def figure_eyelid(timecourses: pd.DataFrame, output: Path) -> None:
    """Eyelid closure by species and drug."""
    from ketamap import figures

    figures.eyelid_plot(timecourses, output)


def figure_reward(cues: pd.DataFrame, output: Path) -> None:
    """Reward seeking around the puff train."""
    from ketamap import figures

    figures.reward_plot(cues, output)


def figure_cross_species(
    timecourses: pd.DataFrame,
    signature: pd.DataFrame,
    output: Path,
    ieeg_timecourses: pd.DataFrame | None = None,
) -> None:
    """The cross-species panel: eyelid (and iEEG) time courses beside the timing signature."""
    from ketamap import figures

    figures.cross_species_panel(timecourses, ieeg_timecourses, signature, output)
