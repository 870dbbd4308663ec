"""Pooled iEEG analyses of the puff response, ketamine vs baseline, in the shared result shape.

- ``ieeg.slow_phase_duration``: slow-phase duration (half-maximum width of the HFB power
  increase) of the channels with a slow phase in both conditions, ketamine minus baseline, from a
  MixedLM with a random intercept per subject; overall and per region group. A channel whose slow
  phase is not detected under ketamine is left out (the note counts them): counting it as 0 s
  measured detection, not duration (detection on an epoch average fails for low-SNR channels and
  more often for shortened phases), and moved the estimate by -0.045 s over 24 seeds of
  ``behaviour_small``.
- ``ieeg.fast_phase_latency``: fast-peak latency of channels with a fast response in both
  conditions, ketamine minus baseline (the same model), plus a two one-sided tests (TOST)
  equivalence row against a margin from the config.
- ``ieeg.synchrony``: cross-channel synchrony of single-trial slow-phase amplitudes (table
  ``ieeg_synchrony``), ketamine minus baseline: the same model on Fisher z, reported in r at the
  baseline level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# scipy.stats, statsmodels and patsy are imported by the functions that use them: the figure
# jobs import this module too, and those imports cost them 1-2 s (benchmarks/overhead.py).
import numpy as np
import pandas as pd

from ketamap.errors import KetamapError
from ketamap.pooled import Outcome
from ketamap.pooled.stats import fit_mixed, result_frame

TERM = "ketamine_minus_baseline"


def _paired(responses: pd.DataFrame) -> pd.DataFrame:
    """One row per subject and channel with both conditions side by side."""
    wide = responses.pivot_table(
        index=["subject_id", "channel", "region_group"],
        columns="condition",
        values=["slow_duration_s", "fast_peak_latency_s", "responsive_slow", "responsive_fast"],
        aggfunc="first",
        observed=True,
    )
    wide.columns = [f"{col[0]}_{col[1]}" for col in wide.columns]
    needed = [
        f"{v}_{c}" for v in ("responsive_slow", "responsive_fast") for c in ("baseline", "ketamine")
    ]
    missing = [c for c in needed if c not in wide.columns]
    if missing:
        raise KetamapError(
            "iEEG responses lack a condition",
            field="condition",
            expected="baseline and ketamine sessions",
        )
    return wide.reset_index()


def _slow_in_both(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The paired channels with a slow phase in both conditions, and the region group of each
    channel with one at baseline only (left out)."""
    base = pairs["responsive_slow_baseline"].astype(bool)
    ket = pairs["responsive_slow_ketamine"].astype(bool)
    return pairs[base & ket].copy(), pairs.loc[base & ~ket, "region_group"]


def _fit_difference(
    long: pd.DataFrame, value: str
) -> tuple[float, float, float, int, int, str | None]:
    """Ketamine minus baseline of ``value``, channels nested in subjects.

    Each channel's difference (ketamine - baseline) enters a MixedLM ``d ~ 1`` with a random
    intercept per subject: the subject-specific drug effect. This is the random-intercept model on
    the paired differences, i.e. a random condition slope in the long form; a model with only a
    random intercept on the levels treats every channel as an independent replicate of the drug
    effect and gives intervals far too narrow when the effect varies between subjects (the null
    scenarios showed q < 0.05 at two of nine seeds). Inference uses a t with subjects - 1 degrees of
    freedom (the drug effect is replicated across subjects, not channels). When the mixed model
    cannot be fitted, the contrast falls back to the subject-level paired t on each subject's mean
    difference, and the note says so. Returns estimate, SE, df, subjects, channels and note.
    """
    import statsmodels.formula.api as smf

    wide = long.pivot_table(
        index=["subject_id", "channel"], columns="ketamine", values=value, aggfunc="first"
    )
    if not {0.0, 1.0} <= set(wide.columns):
        raise KetamapError(f"no {value} pairs", field=value, expected="both conditions")
    d = (wide[1.0] - wide[0.0]).dropna().rename("d").reset_index()
    n_channels, n_subjects = len(d), int(d["subject_id"].nunique())
    if n_subjects < 2:
        raise KetamapError(
            f"the {value} contrast cannot be estimated",
            field=value,
            expected="two or more subjects with channels in both conditions",
        )
    df = float(n_subjects - 1)
    try:
        fit, note = fit_mixed(
            # Derivative-free Powell first: statsmodels' L-BFGS diverges on this intercept-only
            # model when the subject variance is near 0 (an estimate outside the data's range).
            lambda: smf.mixedlm("d ~ 1", data=d, groups=d["subject_id"]).fit(
                reml=True, method=["powell", "nm"]
            )
        )
        beta, se = float(fit.params["Intercept"]), float(fit.bse["Intercept"])
        in_range = d["d"].min() - 1e-9 <= beta <= d["d"].max() + 1e-9
        if np.isfinite(beta) and np.isfinite(se) and se > 0 and in_range:
            return beta, se, df, n_subjects, n_channels, note
    except (np.linalg.LinAlgError, ValueError):
        pass
    per_subject = d.groupby("subject_id")["d"].mean().to_numpy(dtype=float)
    note = "MixedLM could not be fitted; subject-level paired t on per-subject mean differences"
    return (
        float(per_subject.mean()),
        float(per_subject.std(ddof=1) / np.sqrt(n_subjects)),
        df,
        n_subjects,
        n_channels,
        note,
    )


def _long(pairs: pd.DataFrame, baseline: str, ketamine: str, name: str) -> pd.DataFrame:
    """Stack the two conditions of each channel into long form (ketamine = 0 or 1)."""
    keys = ["subject_id", "channel", "region_group"]
    parts = []
    for column, flag in ((baseline, 0.0), (ketamine, 1.0)):
        part = pairs[keys].copy()
        part[name] = pairs[column].astype(float)
        part["ketamine"] = flag
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _row(long: pd.DataFrame, value: str, group: str | None, unit: str, what: str) -> dict:
    from scipy import stats

    beta, se, df, n_subjects, n_obs, note = _fit_difference(long, value)
    tcrit = stats.t.ppf(0.975, df)
    return dict(
        term=TERM,
        region_group=group,
        estimate=beta,
        ci_low=beta - tcrit * se,
        ci_high=beta + tcrit * se,
        p_value=2 * stats.t.sf(abs(beta / se), df),
        n=n_subjects,
        unit=unit,
        statistic=beta / se,
        df=df,
        method=(
            f"MixedLM of the per-channel ketamine - baseline {what}, random intercept per subject "
            f"(subject-specific drug effect), REML; t with subjects - 1 df; {n_obs} channels"
        ),
        note=note,
    )


def analyze_slow_phase_duration(responses: pd.DataFrame) -> pd.DataFrame:
    """``ieeg.slow_phase_duration``: ketamine minus baseline slow-phase duration (s), overall and per region group."""
    pairs = _paired(responses)
    slow, lost = _slow_in_both(pairs)
    if slow["subject_id"].nunique() < 2:
        raise KetamapError(
            "fewer than 2 subjects with slow-phase channels in both conditions",
            field="responsive_slow",
        )
    long = _long(slow, "slow_duration_s_baseline", "slow_duration_s_ketamine", "duration")
    what = "slow-phase duration (half-maximum width of the HFB power increase)"
    rows = [_row(long, "duration", None, "s", what)]
    for group, part in long.groupby("region_group", sort=True, observed=True):
        if part["subject_id"].nunique() >= 2:
            rows.append(_row(part, "duration", str(group), "s", what))
    for row in rows:
        group = row["region_group"]
        n_lost = int(len(lost) if group is None else (lost == group).sum())
        left_out = (
            f"{n_lost} channel(s) with a slow phase at baseline, none under ketamine: left out"
        )
        row["note"] = left_out if row["note"] is None else f"{row['note']}; {left_out}"
    out = result_frame(rows)
    out["analysis"] = "ieeg.slow_phase_duration"
    return out


def analyze_fast_phase_latency(responses: pd.DataFrame, *, margin_s: float) -> pd.DataFrame:
    """``ieeg.fast_phase_latency``: ketamine minus baseline fast-peak latency (s), with a TOST equivalence row."""
    from scipy import stats

    pairs = _paired(responses)
    fast = pairs[
        pairs["responsive_fast_baseline"].astype(bool)
        & pairs["responsive_fast_ketamine"].astype(bool)
    ]
    if fast["subject_id"].nunique() < 2:
        raise KetamapError(
            "fewer than 2 subjects with fast-response channels in both conditions",
            field="responsive_fast",
        )
    long = _long(fast, "fast_peak_latency_s_baseline", "fast_peak_latency_s_ketamine", "latency")
    diff = _row(long, "latency", None, "s", "fast-peak latency")
    _, se, df, *_ = _fit_difference(long, "latency")
    # Two one-sided tests against +/- margin: equivalence when both reject.
    p_lower = stats.t.sf((diff["estimate"] + margin_s) / se, df)
    p_upper = stats.t.cdf((diff["estimate"] - margin_s) / se, df)
    tcrit90 = stats.t.ppf(0.95, df)
    tost = dict(
        diff,
        term="equivalence_tost",
        ci_low=diff["estimate"] - tcrit90 * se,
        ci_high=diff["estimate"] + tcrit90 * se,
        p_value=float(max(p_lower, p_upper)),
        statistic=float(
            min((diff["estimate"] + margin_s) / se, (margin_s - diff["estimate"]) / se)
        ),
        method=f"TOST of the same contrast against +/- {margin_s:g} s; interval is the 90 % CI (equivalent when inside the margin)",
        note=f"equivalence margin +/- {margin_s:g} s; a small p means the latencies are equivalent",
    )
    out = result_frame([diff, tost])
    # The TOST p answers another question; keep it out of the FDR family of difference tests.
    out.loc[out["term"] == "equivalence_tost", "q_value"] = out.loc[
        out["term"] == "equivalence_tost", "p_value"
    ]
    out.loc[out["term"] == TERM, "q_value"] = out.loc[out["term"] == TERM, "p_value"]
    out["analysis"] = "ieeg.fast_phase_latency"
    return out


def analyze_synchrony(synchrony: pd.DataFrame) -> pd.DataFrame:
    """``ieeg.synchrony``: ketamine minus baseline cross-channel synchrony of the slow phase.

    Each subject's synchrony (mean Fisher z over channel pairs) in both conditions enters the
    random-intercept model z ~ condition, which with two balanced observations per subject is the
    paired t (computed directly). The estimate and its interval are mapped back to r at the mean baseline level:
    ``tanh(z_base + b) - tanh(z_base)``.
    """
    from scipy import stats

    ok = synchrony.dropna(subset=["synchrony_r"])
    wide = ok.pivot_table(
        index="subject_id", columns="condition", values="synchrony_r", aggfunc="first"
    )
    if not {"baseline", "ketamine"} <= set(wide.columns):
        raise KetamapError(
            "iEEG synchrony lacks a condition", field="condition", expected="baseline and ketamine"
        )
    wide = wide.dropna(subset=["baseline", "ketamine"])
    if len(wide) < 2:
        raise KetamapError(
            "fewer than 2 subjects with a synchrony value in both conditions",
            field="synchrony_r",
            expected="at least two subjects with two or more slow-phase channels",
        )
    z = pd.DataFrame(
        np.arctanh(wide.clip(-0.999999, 0.999999).to_numpy(dtype=float)),
        index=wide.index,
        columns=wide.columns,
    )
    # Two balanced observations per subject: the random-intercept model's REML estimate and t are
    # exactly the paired t on the differences (statsmodels' MixedLM can fail to invert this
    # saturated design), so the paired t is computed directly.
    diff = (z["ketamine"] - z["baseline"]).to_numpy(dtype=float)
    n_subjects = len(diff)
    beta = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(n_subjects))
    df = float(n_subjects - 1)
    note = None
    tcrit = stats.t.ppf(0.975, df)
    z_base = float(z["baseline"].mean())

    def to_r(delta: float) -> float:
        return float(np.tanh(z_base + delta) - np.tanh(z_base))

    row = dict(
        term=TERM,
        estimate=to_r(beta),
        ci_low=to_r(beta - tcrit * se),
        ci_high=to_r(beta + tcrit * se),
        p_value=2 * stats.t.sf(abs(beta / se), df),
        n=n_subjects,
        unit="r",
        statistic=beta / se,
        df=df,
        method=(
            "Fisher z of each subject's cross-channel synchrony, ketamine minus baseline: random "
            "intercept per subject with two balanced conditions, i.e. the paired t; difference "
            "mapped back to r at "
            f"the mean baseline synchrony r = {np.tanh(z_base):.3f}"
        ),
        note=note,
    )
    out = result_frame([row])
    out["analysis"] = "ieeg.synchrony"
    return out


def subject_slow_durations(responses: pd.DataFrame) -> pd.DataFrame:
    """Per subject and condition, the mean slow-phase duration over the channels with a slow phase
    in both conditions, the quantity ``ieeg.slow_phase_duration`` models."""
    slow, _ = _slow_in_both(_paired(responses))
    long = _long(slow, "slow_duration_s_baseline", "slow_duration_s_ketamine", "value")
    long["condition"] = np.where(long["ketamine"] == 1.0, "ketamine", "baseline")
    return long.groupby(["subject_id", "condition"], as_index=False)[["value"]].mean()


def subject_fast_latencies(responses: pd.DataFrame) -> pd.DataFrame:
    """Per subject and condition, the mean fast-peak latency of channels fast in both conditions."""
    pairs = _paired(responses)
    fast = pairs[
        pairs["responsive_fast_baseline"].astype(bool)
        & pairs["responsive_fast_ketamine"].astype(bool)
    ]
    long = _long(fast, "fast_peak_latency_s_baseline", "fast_peak_latency_s_ketamine", "value")
    long["condition"] = np.where(long["ketamine"] == 1.0, "ketamine", "baseline")
    return long.groupby(["subject_id", "condition"], as_index=False)[["value"]].mean()


# ------------------------------------------------------------------------------ workflow steps
# Named by ketamap.pooled.ANALYSES / FIGURES; each takes the tables it reads and its options
# (ketamap.pooled.analysis_options) and returns what to write.


def _ieeg_outcome(
    result: pd.DataFrame, per_subject: pd.DataFrame, what: str, options: dict[str, Any]
) -> Outcome:
    from ketamap import figures

    result = result.assign(
        method=result["method"].astype(str)
        + "; "
        + f"responses: fast peak and slow phase above {float(options['ieeg.threshold_z']):g} z "
        f"(slow for >= {float(options['ieeg.min_duration_s']):g} s), "
        f"HFB {list(options['ieeg.band_hz'])} Hz, {options['ieeg.reference']} reference"
    )
    labelled = result.assign(region=result["region_group"].fillna("all channels"))
    return Outcome(
        result,
        figure=lambda path: figures.paired_forest_plot(labelled, per_subject, what, path),
        summary=f"{len(result)} rows, {int((result['q_value'] < 0.05).sum())} with q < 0.05",
    )


def step_slow_phase_duration(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    table = tables["ieeg_responses"]
    return _ieeg_outcome(
        analyze_slow_phase_duration(table),
        subject_slow_durations(table),
        "mean slow-phase duration (s)\nof baseline slow channels",
        options,
    )


def step_fast_phase_latency(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    from ketamap.config import with_defaults

    table = tables["ieeg_responses"]
    spec = with_defaults(options["analysis"], "analyses", "ieeg.fast_phase_latency")
    return _ieeg_outcome(
        analyze_fast_phase_latency(table, margin_s=float(spec["equivalence_margin_s"])),
        subject_fast_latencies(table),
        "mean fast-peak latency (s)",
        options,
    )


def step_synchrony(tables: dict[str, pd.DataFrame], options: dict[str, Any]) -> Outcome:
    sync = tables["ieeg_synchrony"]
    per_subject = sync.rename(columns={"synchrony_r": "value"})[
        ["subject_id", "condition", "value"]
    ]
    return _ieeg_outcome(
        analyze_synchrony(sync),
        per_subject,
        "cross-channel synchrony (r)\nof slow-phase amplitudes",
        options,
    )


def figure_timecourses(timecourses: pd.DataFrame, output: Path) -> None:
    """Puff-locked high-frequency response by region group and condition."""
    from ketamap import figures

    figures.timecourse_plot(timecourses, output)
