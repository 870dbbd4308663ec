"""Figures for the pooled results, ready for the report (matplotlib, Agg backend, no timestamps)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ketamap import integrity

_PNG = {"Software": None}


def forest_plot(
    result: pd.DataFrame, path: str | Path, *, title: str | None = None, null: float = 0.0
) -> None:
    """One row per region (or term): estimate and 95 % CI; rows with q < 0.05 drawn in colour.

    Rows without an estimate (a confounded design, too few responders) are listed and marked
    "not estimated"; a note shared by every row (the design check's verdict) is printed, wrapped,
    below the axes, with room made for it.
    """
    footnote = _footnote(result)
    height = 0.32 * len(result) + 1.4
    extra = 0.16 * len(footnote)
    fig, ax = plt.subplots(figsize=(6.4, height + extra))
    _forest(fig, ax, result, title=title, null=null)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))
    _draw_footnote(fig, footnote)
    _save(fig, path)


def _footnote(result: pd.DataFrame, width: int = 110) -> list[str]:
    notes = result["note"].dropna().unique()
    if len(notes) == 1 and notes[0]:  # a note shared by every row, such as the design check
        return textwrap.wrap(str(notes[0]), width=width)
    return []


def _draw_footnote(fig: plt.Figure, lines: list[str]) -> None:
    for i, line in enumerate(lines):
        fig.text(
            0.01,
            0.01 + 0.16 * (len(lines) - 1 - i) / fig.get_figheight(),
            line,
            fontsize=6.5,
            color="0.25",
            va="bottom",
        )


def _forest(
    fig: plt.Figure, ax: plt.Axes, result: pd.DataFrame, *, title: str | None, null: float
) -> None:
    df = result.copy()
    df["label"] = df["region"].fillna(df["term"]).astype(str)
    df = df.sort_values("estimate", na_position="last").reset_index(drop=True)
    y = np.arange(len(df))
    significant = (df["q_value"] < 0.05).to_numpy()
    est = df["estimate"].to_numpy(dtype=float)
    low = df["ci_low"].to_numpy(dtype=float)
    high = df["ci_high"].to_numpy(dtype=float)
    shown = np.isfinite(est) & np.isfinite(low) & np.isfinite(high)
    for mask, colour in ((~significant & shown, "0.45"), (significant & shown, "tab:red")):
        ax.errorbar(
            est[mask],
            y[mask],
            xerr=[est[mask] - low[mask], high[mask] - est[mask]],
            fmt="o",
            color=colour,
            capsize=2,
            lw=1,
        )
    for i in np.flatnonzero(~shown):
        ax.text(null, y[i], "not estimated", ha="center", va="center", fontsize=7, color="0.35")
    ax.axvline(null, color="0.7", lw=0.8, ls="--")
    ax.set_yticks(y, df["label"])
    ax.set_ylim(-0.7, len(df) - 0.3)
    unit = df["unit"].dropna().iloc[0] if df["unit"].notna().any() else ""
    what = "95 % CI" if shown.any() else "no interval"
    ax.set_xlabel(f"estimate ({unit}), {what}; red: q < 0.05")
    ax.set_title(title or str(df["analysis"].iloc[0]), fontsize=10)


def paired_forest_plot(
    result: pd.DataFrame,
    per_subject: pd.DataFrame,
    ylabel: str,
    path: str | Path,
    *,
    order: tuple[str, ...] = ("baseline", "saline", "ketamine"),
) -> None:
    """Per-subject values of each condition joined by a line (left) beside the forest plot (right).

    ``per_subject`` has columns subject_id, condition and value; conditions are drawn in ``order``.
    """
    footnote = _footnote(result, width=150)
    height = max(3.2, 0.32 * len(result) + 1.6)
    extra = 0.16 * len(footnote)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, height + extra), width_ratios=[1, 1.4])
    conds = [c for c in order if c in set(per_subject["condition"])]
    wide = per_subject.pivot_table(
        index="subject_id", columns="condition", values="value", aggfunc="first"
    ).reindex(columns=conds)
    x = np.arange(len(conds))
    for _, row in wide.iterrows():  # one line per subject (a few dozen at most)
        left.plot(x, row.to_numpy(dtype=float), "-o", color="0.5", ms=3, lw=0.8)
    left.plot(x, wide.mean().to_numpy(dtype=float), "-o", color="tab:red", lw=2, label="mean")
    left.set_xticks(x, conds)
    left.set_xlim(-0.4, len(conds) - 0.6)
    left.set_ylabel(ylabel)
    left.set_title(f"per subject (n = {len(wide)})", fontsize=10)
    left.legend(fontsize=8, frameon=False)
    _forest(fig, right, result, title=None, null=0.0)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))
    _draw_footnote(fig, footnote)
    _save(fig, path)


def change_scatter(
    pct_change: pd.DataFrame,
    improvement: pd.Series,
    result: pd.DataFrame,
    path: str | Path,
    *,
    n_regions: int = 4,
) -> None:
    """Regional % change against MADRS improvement for the regions with the strongest association."""
    top = result.sort_values("p_value").head(n_regions)
    fig, axes = plt.subplots(1, len(top), figsize=(3.2 * len(top), 3.2), squeeze=False)
    for ax, (_, row) in zip(axes[0], top.iterrows(), strict=False):
        x = improvement.reindex(pct_change.index).to_numpy(dtype=float)
        y = pct_change[row["region"]].to_numpy(dtype=float)
        ax.scatter(x, y, s=14, color="tab:blue")
        ax.plot(np.sort(x), np.polyval(np.polyfit(x, y, 1), np.sort(x)), color="tab:red", lw=1)
        ax.set_title(
            f"{row['region']}: slope {row['estimate']:.2f}, q = {row['q_value']:.3f}", fontsize=9
        )
        ax.set_xlabel("MADRS improvement (points)")
        ax.set_ylabel("SUVR change (%)")
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, like every output: a killed job never leaves half a PNG that passes for a figure.
    integrity.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, metadata=_PNG))
    plt.close(fig)


def timecourse_plot(timecourses: pd.DataFrame, path: str | Path) -> None:
    """Puff-locked mean z envelope per region group (panels) and condition (lines), channel-weighted."""
    df = timecourses.copy()
    df["region_group"] = df["region_group"].fillna("unassigned").astype(str)
    n = df["n_channels"].astype(float)
    df["_sum"] = n * df["mean_z"].astype(float)
    df["_n"] = n
    g = (
        df.groupby(["region_group", "condition", "time_s"], sort=True)[["_sum", "_n"]]
        .sum()
        .reset_index()
    )
    g["mean_z"] = g["_sum"] / g["_n"]
    groups = sorted(g["region_group"].unique())
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False, sharey=True
    )
    colours = {"baseline": "0.3", "ketamine": "tab:red"}
    for ax, group in zip(axes[0], groups, strict=True):
        for condition, part in g[g["region_group"] == group].groupby("condition", sort=True):
            ax.plot(
                part["time_s"],
                part["mean_z"],
                color=colours.get(str(condition), "tab:blue"),
                lw=1.2,
                label=str(condition),
            )
        ax.axvline(0, color="0.7", lw=0.8, ls="--")
        ax.set_title(f"{group} regions", fontsize=10)
        ax.set_xlabel("time from puff (s)")
    axes[0][0].set_ylabel("70-150 Hz envelope (baseline z)")
    axes[0][0].legend(fontsize=8, frameon=True, loc="best")
    fig.tight_layout()
    _save(fig, path)


_DRUG_COLOURS = {"baseline": "0.3", "saline": "0.3", "ketamine": "tab:red"}


def _subject_mean_curves(tc: pd.DataFrame) -> pd.DataFrame:
    """Mean and SEM over subjects of the per-subject closure curves, per species and condition."""
    g = tc.groupby(["species", "condition", "time_s"], sort=True)["closure"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["sem"] = out["std"] / np.sqrt(out["count"].clip(lower=1))
    return out


def eyelid_plot(timecourses: pd.DataFrame, path: str | Path) -> None:
    """Puff-locked eyelid closure by species (panels) and drug (lines), mean +/- SEM over subjects."""
    curves = _subject_mean_curves(timecourses)
    species = sorted(curves["species"].unique())
    fig, axes = plt.subplots(
        1, max(1, len(species)), figsize=(4.4 * max(1, len(species)), 3.2), squeeze=False
    )
    for ax, sp in zip(axes[0], species, strict=False):
        for condition, part in curves[curves["species"] == sp].groupby("condition", sort=True):
            colour = _DRUG_COLOURS.get(str(condition), "tab:blue")
            ax.plot(part["time_s"], part["mean"], color=colour, lw=1.3, label=str(condition))
            ax.fill_between(
                part["time_s"],
                part["mean"] - part["sem"],
                part["mean"] + part["sem"],
                color=colour,
                alpha=0.2,
                lw=0,
            )
        ax.axvline(0, color="0.7", lw=0.8, ls="--")
        n = timecourses.loc[timecourses["species"] == sp, "subject_id"].nunique()
        ax.set_title(f"{sp} (n = {n})", fontsize=10)
        ax.set_xlabel("time from puff (s)")
        ax.legend(fontsize=8, frameon=False)
    axes[0][0].set_ylabel("eyelid closure (0 open, 1 shut)")
    fig.tight_layout()
    _save(fig, path)


def reward_plot(cues: pd.DataFrame, path: str | Path, *, bin_s: float = 60.0) -> None:
    """Anticipatory licking around the eight-puff train: fraction of cues with an anticipatory
    lick in time bins relative to the train, per drug (mean +/- SEM over mice)."""
    df = cues.copy()
    df["bin"] = np.floor(df["time_from_train_s"] / bin_s) * bin_s + bin_s / 2
    df["anticipatory"] = df["anticipatory"].astype(float)
    per_mouse = (
        df.groupby(["condition", "subject_id", "bin"], sort=True)["anticipatory"]
        .mean()
        .reset_index()
    )
    g = per_mouse.groupby(["condition", "bin"], sort=True)["anticipatory"].agg(
        ["mean", "std", "count"]
    )
    g = g.reset_index()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    for condition, part in g.groupby("condition", sort=True):
        colour = _DRUG_COLOURS.get(str(condition), "tab:blue")
        sem = (part["std"] / np.sqrt(part["count"].clip(lower=1))).to_numpy(
            dtype=float, na_value=np.nan
        )
        ax.errorbar(
            part["bin"].to_numpy(dtype=float) / 60,
            part["mean"].to_numpy(dtype=float, na_value=np.nan),
            yerr=np.nan_to_num(sem),
            color=colour,
            marker="o",
            ms=3,
            lw=1.2,
            capsize=2,
            label=str(condition),
        )
    ax.axvline(0, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("time from the first puff of the train (min)")
    ax.set_ylabel("cues with an anticipatory lick")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(
        f"reward seeking around the train (n = {df['subject_id'].nunique()} mice)", fontsize=10
    )
    fig.tight_layout()
    _save(fig, path)


def cross_species_panel(
    eyelid: pd.DataFrame,
    hfb: pd.DataFrame | None,
    signature: pd.DataFrame,
    path: str | Path,
) -> None:
    """The cross-species panel: on one time base the human emotion-region HFB response, the human
    and the mouse eyelid closure (each scaled to its control peak), by drug; and the ketamine
    effects on the fast and the slow component side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=[1.5, 1])
    ax = axes[0]
    styles = {"human": "-", "mouse": ":"}
    curves = _subject_mean_curves(eyelid)
    for (sp, condition), part in curves.groupby(["species", "condition"], sort=True):
        control = curves[(curves["species"] == sp) & (curves["condition"] != "ketamine")]
        scale = float(np.nanmax(control["mean"])) if len(control) else 1.0
        ax.plot(
            part["time_s"],
            part["mean"] / (scale or 1.0),
            styles.get(str(sp), "-"),
            color=_DRUG_COLOURS.get(str(condition), "tab:blue"),
            lw=1.3,
            label=f"{sp} eyelid, {condition}",
        )
    if hfb is not None and len(hfb):
        emo = hfb[hfb["region_group"] == "emotion"].copy()
        n = emo["n_channels"].astype(float)
        emo["_s"] = n * emo["mean_z"].astype(float)
        emo["_n"] = n
        g = emo.groupby(["condition", "time_s"], sort=True)[["_s", "_n"]].sum().reset_index()
        g["z"] = g["_s"] / g["_n"]
        base_peak = float(np.nanmax(g.loc[g["condition"] == "baseline", "z"])) if len(g) else 1.0
        for condition, part in g.groupby("condition", sort=True):
            ax.plot(
                part["time_s"],
                part["z"] / (base_peak or 1.0),
                "--",
                color=_DRUG_COLOURS.get(str(condition), "tab:blue"),
                lw=1.0,
                alpha=0.8,
                label=f"human HFB (emotion), {condition!s}",
            )
    ax.axvline(0, color="0.7", lw=0.8, ls="--")
    ax.set_xlim(-0.5, 3.0)
    ax.set_xlabel("time from puff (s)")
    ax.set_ylabel("response / control peak")
    ax.legend(fontsize=6, frameon=False, ncol=2)

    ax = axes[1]
    rows = signature[signature["term"].str.startswith("ketamine_effect")].copy()
    rows = rows.sort_values(["measure", "species", "term"]).reset_index(drop=True)
    y = np.arange(len(rows))
    colours = np.where(rows["term"].str.endswith("fast"), "tab:blue", "tab:orange")
    for i, r in rows.iterrows():
        ax.errorbar(
            r["estimate"],
            i,
            xerr=[[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]],
            fmt="o",
            color=colours[int(str(i))],
            capsize=2,
        )
    ax.set_yticks(
        y,
        [
            f"{sp} {me} {str(te).rsplit('_', 1)[-1]} ({un})"
            for sp, me, te, un in zip(
                rows["species"], rows["measure"], rows["term"], rows["unit"], strict=True
            )
        ],
        fontsize=7,
    )
    ax.axvline(0, color="0.7", lw=0.8, ls="--")
    sim = signature[signature["term"].str.startswith("shape_similarity")]
    text = ", ".join(
        f"{t.replace('shape_similarity_', '')} r = {e:.2f}"
        for t, e in zip(sim["term"], sim["estimate"], strict=True)
    )
    ax.set_title("ketamine effect: fast (blue) vs slow (orange)", fontsize=10)
    ax.set_xlabel("estimate, 95 % CI (unit per row)", fontsize=8)
    axes[0].set_title(
        f"puff responses on one time base; human-mouse eyelid shape {text}", fontsize=8
    )
    fig.tight_layout()
    _save(fig, path)


def batch_plot(
    raw: pd.DataFrame, harmonized: pd.DataFrame | None, verdict: str, path: str | Path
) -> None:
    """Mean cortical SUVR per scan by acquisition batch and group, as measured and after ComBat.

    ``raw`` and ``harmonized`` have columns batch, group and value (one row per scan). The
    harmonized panel is for looking only: the group contrast itself is estimated with batch
    fixed effects (pet.baseline_trd_vs_hc).
    """
    panels = [("as measured", raw)] + (
        [("after ComBat (for display)", harmonized)] if harmonized is not None else []
    )
    batches = sorted(raw["batch"].unique())
    width_in = 5.2 * len(panels) + 1.0
    footnote = textwrap.wrap(verdict, width=int(width_in * 17))
    height, extra = 1.2 + 0.45 * len(batches), 0.16 * len(footnote)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width_in, height + extra), squeeze=False, sharey=True
    )
    colours = {"trd": "tab:red", "hc": "tab:blue"}
    for ax, (title, df) in zip(axes[0], panels, strict=True):
        labelled: set[str] = set()
        for j, batch in enumerate(batches):
            for k, (group, colour) in enumerate(colours.items()):
                values = df.loc[(df["batch"] == batch) & (df["group"] == group), "value"]
                if len(values):
                    y = np.full(len(values), j + (k - 0.5) * 0.3)
                    ax.scatter(
                        values,
                        y,
                        s=10,
                        color=colour,
                        alpha=0.6,
                        label=None if group in labelled else group.upper(),
                    )
                    labelled.add(group)
                    ax.plot([values.mean()] * 2, [y[0] - 0.12, y[0] + 0.12], color=colour, lw=2)
        ax.set_yticks(np.arange(len(batches)), batches, fontsize=7)
        ax.set_xlabel("mean SUVR over non-reference regions")
        ax.set_title(title, fontsize=10)
    axes[0][0].legend(fontsize=8, frameon=True, loc="best")
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))
    _draw_footnote(fig, footnote)
    _save(fig, path)
