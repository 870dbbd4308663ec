"""What the Snakemake report (``make report``) says about a run beside each figure and result.

Every figure and pooled result is declared in the rules with ``report(...)``: a category per
modality, the analysis as subcategory, a caption (``workflow/report/<modality>.rst``: what the
analysis estimates and its model) and labels. The labels are read from the results when the report
is made, so they are the run's own: what the item shows, its ``n`` and the ``verdict`` (the design
check's, and whether the rows hold an estimate). The captions print the same labels, so a figure's
description states the n and verdict of the run it comes from, not of the run its text was
written after.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ketamap.errors import KetamapError

# The workflow imports this module when it parses the Snakefile: pandas only when a report is made.
if TYPE_CHECKING:
    import pandas as pd

# Report categories: one per modality, named after the first part of an analysis id.
CATEGORIES = {
    "clinical": "Clinical",
    "pet": "PET",
    "ieeg": "iEEG",
    "behaviour": "Behaviour",
    "mouse": "Behaviour",
    "cross_species": "Cross-species",
}

# How ketamap.pooled.pet.check_design's notes begin, and the verdict each one states.
DESIGN_VERDICTS = {
    "fully confounded": "fully confounded",
    "partially confounded": "partially confounded",
    "balanced": "balanced",
    "single acquisition batch": "single batch",
}
NOT_ESTIMATED = "not estimated: "


def analysis_category(analysis: str) -> str:
    """The report category of an analysis (or figure) id such as ``pet.baseline_trd_vs_hc``."""
    prefix = analysis.split(".", 1)[0]
    if prefix not in CATEGORIES:
        raise KetamapError(
            f"no report category for analysis {analysis!r}",
            expected=f"an id starting with one of {sorted(CATEGORIES)}",
        )
    return CATEGORIES[prefix]


def _count(values: pd.Series) -> str:
    """``59`` when every row has the same count, else the range, ``17-34``."""
    values = values.dropna().astype(int)
    if values.empty:
        return "none"
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"


def design_verdict(notes: pd.Series) -> str | None:
    """The design check's verdict stated in the rows' notes, if the analysis made one."""
    for note in notes.dropna().unique():
        for start, verdict in DESIGN_VERDICTS.items():
            if str(note).startswith(start):
                return verdict
    return None


def run_summary(result: pd.DataFrame) -> dict[str, str]:
    """The n and verdict of one pooled result (the shared result shape).

    ``n`` is the rows' n (a range when the rows differ, e.g. per arm and both arms). ``verdict``
    is the design check's verdict when the analysis made one, then how many rows hold an
    estimate, with the reason the others give (``not estimated: ...`` in ``method``).
    """
    estimated = result["estimate"].notna()
    reasons = sorted(
        {
            str(m).removeprefix(NOT_ESTIMATED)
            for m in result.loc[~estimated, "method"].dropna()
            if str(m).startswith(NOT_ESTIMATED)
        }
    )
    design = design_verdict(result["note"])
    parts = [design] if design else []
    rows = len(result)
    if estimated.all():
        parts.append(f"all {rows} rows estimated" if rows > 1 else "estimated")
    else:
        why = f": {'; '.join(reasons)}" if reasons and not design else ""
        if not estimated.any():
            parts.append(f"not estimated{why}")
        else:
            parts.append(f"{int(estimated.sum())} of {rows} rows estimated, the others not{why}")
    return {"n": _count(result["n"]), "verdict": "; ".join(parts)}


def _table_name(path: Path) -> str:
    import pyarrow.parquet as pq

    from ketamap import schemas

    meta = pq.read_schema(path).metadata or {}
    return meta.get(schemas.METADATA_TABLE, b"").decode()


def _subjects_per_species(table: pd.DataFrame) -> str:
    counts = table.groupby("species", observed=True)["subject_id"].nunique()
    return ", ".join(f"{n} {species}" for species, n in counts.items())


def source_summary(path: str | Path) -> dict[str, str]:
    """The run's n (and verdict, for a pooled result) read from the file a report item shows."""
    path = Path(path)
    if not path.is_file():
        raise KetamapError(
            "file not found", file=path, expected="the result a report item describes (make run)"
        )
    from ketamap import schemas

    table = _table_name(path)
    data = schemas.read_table(path, table)
    if table == "pooled_result":
        return run_summary(data)
    if table == "behaviour_timecourses":
        return {"n": _subjects_per_species(data)}
    if table == "reward_cues":
        return {"n": f"{data['subject_id'].nunique()} mice"}
    if table == "ieeg_timecourses":
        # channels per condition: each region's channel count, summed over the regions
        per_region = data.groupby(["condition", "region"], observed=True)["n_channels"].max()
        channels = per_region.groupby(level="condition", observed=True).sum()
        return {"n": f"{_count(channels)} channels"}
    raise KetamapError(
        f"no report summary for table {table!r}",
        file=path,
        expected="a pooled result, behaviour_timecourses, reward_cues or ieeg_timecourses",
    )


def run_labels(shows: str, source: str | Path) -> dict[str, str]:
    """The labels of a report item: what it ``shows`` and the run's n and verdict from ``source``.

    Snakemake formats label values as wildcard patterns, so braces are replaced.
    """
    labels = {"result": shows, **source_summary(source)}
    return {k: v.replace("{", "(").replace("}", ")") for k, v in labels.items()}
