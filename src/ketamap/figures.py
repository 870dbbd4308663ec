"""Figures for the pooled results, ready for the report (matplotlib, Agg backend, no timestamps)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

_PNG = {"Software": None}


def forest_plot(
    result: pd.DataFrame, path: str | Path, *, title: str | None = None, null: float = 0.0
) -> None:
    """One row per region (or term): estimate and 95 % CI; rows with q < 0.05 drawn in colour."""
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(result) + 1.4))
    _forest(fig, ax, result, title=title, null=null)
    fig.tight_layout()
    _save(fig, path)


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
    for mask, colour in ((~significant, "0.45"), (significant, "tab:red")):
        ax.errorbar(
            est[mask],
            y[mask],
            xerr=[est[mask] - low[mask], high[mask] - est[mask]],
            fmt="o",
            color=colour,
            capsize=2,
            lw=1,
        )
    ax.axvline(null, color="0.7", lw=0.8, ls="--")
    ax.set_yticks(y, df["label"])
    unit = df["unit"].dropna().iloc[0] if df["unit"].notna().any() else ""
    ax.set_xlabel(f"estimate ({unit}), 95 % CI; red: q < 0.05")
    ax.set_title(title or str(df["analysis"].iloc[0]), fontsize=10)
    notes = df["note"].dropna().unique()
    if (
        len(notes) == 1 and notes[0]
    ):  # a note shared by every row, such as the design check's verdict
        fig.text(0.01, 0.005, str(notes[0])[:160], fontsize=6, color="0.3")


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
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(9, max(3.2, 0.32 * len(result) + 1.6)), width_ratios=[1, 1.4]
    )
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
    fig.tight_layout()
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
    fig.savefig(path, dpi=120, metadata=_PNG)
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
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path)
