"""Clinical reader and harmonizer: BIDS participants, sessions and phenotype scores -> tables.

read -> harmonize -> table, like every modality: :func:`harmonize_site` reads one site's dataset
as the site sent it (see docs/site_data.md), checks it, and returns the rows of the ``subjects``
and ``clinical_scores`` tables with pseudonymous ids. Nothing from the site is guessed: a value the
reader cannot map is an error naming the site, the file and the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ketamap import scales
from ketamap.config import with_defaults
from ketamap.errors import SiteDataError
from ketamap.harmonize.bids import read_participants
from ketamap.ids import pseudonymize
from ketamap.io import quote, read_json, read_tsv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteTables:
    """The harmonized rows one site contributes."""

    subjects: pd.DataFrame
    clinical_scores: pd.DataFrame


def harmonize_site(site: dict, root: Path, key: bytes) -> SiteTables:
    """Read one site's clinical dataset at ``root`` into ``subjects`` and ``clinical_scores`` rows."""
    participants = read_participants(site, root)
    local_ids = participants["participant_id"].tolist()
    pseudonyms = dict(zip(local_ids, pseudonymize(site["id"], local_ids, key), strict=True))
    subjects = pd.DataFrame(
        {
            "subject_id": participants["participant_id"].map(pseudonyms),
            "site": site["id"],
            "trial": site["trial"],
            "species": site["species"],
            "group": participants["group"],
            "arm": participants["arm"],
            "sex": participants["sex"],
            "age_years": participants["age_years"],
        }
    )
    reader = site.get("reader", {})
    if "visits" in reader:
        scores = read_scores(site, root, participants)
        scores["subject_id"] = scores.pop("participant_id").map(pseudonyms)
        scores = scores[
            ["subject_id", "site", "visit", "scale", "score_raw", "madrs_equivalent", "converted"]
        ]
    else:
        scores = pd.DataFrame(
            columns=[
                "subject_id",
                "site",
                "visit",
                "scale",
                "score_raw",
                "madrs_equivalent",
                "converted",
            ]
        )
    return SiteTables(
        subjects=subjects.reset_index(drop=True), clinical_scores=scores.reset_index(drop=True)
    )


def read_scores(site: dict, root: Path, participants: pd.DataFrame) -> pd.DataFrame:
    """Read the symptom-score file, its scale from the sidecar, and map sessions to shared visits."""
    site_id = site["id"]
    reader = site.get("reader", {})
    reader = with_defaults(reader, "sites", "reader")
    rel = reader["scores"]
    score_column = reader["score_column"]
    visits: dict[str, str] = reader["visits"]
    path = root / rel
    df = read_tsv(
        path, site=site_id, root=root, required=["participant_id", "session_id", score_column]
    )
    where = {"site": site_id, "file": rel}
    if df.empty:
        raise SiteDataError(
            "the score file has a header but no rows",
            field=score_column,
            expected="one row per scored participant and session (the config names this file "
            "as the site's score file)",
            hint="send the scores, or remove sites[].reader.scores and .visits for a site without "
            "symptom scores",
            **where,
        )

    sidecar_rel = str(Path(rel).with_suffix(".json"))
    sidecar = read_json(root / sidecar_rel, site=site_id, root=root)
    described = (sidecar.get("MeasurementToolMetadata") or {}).get("Description")
    known = [s["label"] for s in scales.load_scales()["scales"].values()]
    if not isinstance(described, str) or not described.strip():
        raise SiteDataError(
            "the sidecar does not name the scale",
            site=site_id,
            file=sidecar_rel,
            field="MeasurementToolMetadata.Description",
            expected=f"one of {known}",
        )
    scale = scales.identify_scale(described)
    if scale is None:
        raise SiteDataError(
            f"unknown scale {described!r}",
            site=site_id,
            file=sidecar_rel,
            field="MeasurementToolMetadata.Description",
            expected=f"one of {known}",
        )

    unknown = sorted(set(df["participant_id"].dropna()) - set(participants["participant_id"]))
    if unknown:
        raise SiteDataError(
            f"scores for participants not in participants.tsv: {quote(unknown)}",
            field="participant_id",
            expected="every scored participant listed in participants.tsv",
            **where,
        )
    unmapped = sorted(set(df["session_id"].dropna()) - set(visits))
    if unmapped or df["session_id"].isna().any():
        raise SiteDataError(
            f"sessions {quote(unmapped or ['n/a'])} are not mapped to a visit",
            field="session_id",
            expected=f"one of {sorted(visits)}",
            hint="add the session to sites[].reader.visits in the config",
            **where,
        )
    _check_sessions_exist(site_id, root, df)

    raw = df[score_column]
    numeric = pd.to_numeric(raw, errors="coerce")
    not_numbers = raw[raw.notna() & numeric.isna()].unique().tolist()
    low, high = scales.scale_range(scale)
    if not_numbers:
        raise SiteDataError(
            f"non-numeric scores {quote(not_numbers)}",
            field=score_column,
            expected=f"integers {low:g}-{high:g} or n/a",
            **where,
        )
    if numeric.isna().all():
        raise SiteDataError(
            f"all {len(numeric)} scores are n/a",
            field=score_column,
            expected=f"{scale} totals ({low:g}-{high:g}) for the assessments that took place",
            **where,
        )
    fractional = numeric[numeric.notna() & (numeric != np.round(numeric))].tolist()
    out_of_range = numeric[(numeric < low) | (numeric > high)].tolist()
    if fractional or out_of_range:
        raise SiteDataError(
            f"scores {(fractional + out_of_range)[:5]} are not valid {scale} totals",
            field=score_column,
            expected=f"integers {low:g}-{high:g}",
            **where,
        )
    out = pd.DataFrame(
        {
            "participant_id": df["participant_id"],
            "site": site_id,
            "visit": df["session_id"].map(visits),
            "scale": scale,
            "score_raw": numeric,
            "madrs_equivalent": scales.to_madrs(numeric.to_numpy(dtype=float), scale),
            "converted": scale != "madrs",
        }
    )
    dupes = out[out.duplicated(["participant_id", "visit"], keep=False)]
    if len(dupes):
        first = dupes.iloc[0]
        raise SiteDataError(
            f"participant {first['participant_id']} has {len(dupes[dupes['participant_id'] == first['participant_id']])} scores for visit {first['visit']!r}",
            field="session_id",
            expected="one score per participant and visit",
            **where,
        )
    return out


def _check_sessions_exist(site_id: str, root: Path, scores: pd.DataFrame) -> None:
    """Every scored session must be listed in the participant's sessions file."""
    for pid, sessions in scores.groupby("participant_id", sort=True)["session_id"]:
        rel = f"{pid}/{pid}_sessions.tsv"
        listed = read_tsv(root / rel, site=site_id, root=root, required=["session_id"])[
            "session_id"
        ]
        missing = sorted(set(sessions) - set(listed.dropna()))
        if missing:
            raise SiteDataError(
                f"scored sessions {quote(missing)} are not listed",
                site=site_id,
                file=rel,
                field="session_id",
                expected="every session that has a score",
            )


def step(
    site: dict, raw: Path, key: bytes, options: None = None, atlas: Path | None = None
) -> dict[str, pd.DataFrame]:
    """The workflow's harmonize step for one site (see :mod:`ketamap.harmonize`)."""
    tables = harmonize_site(site, raw, key)
    scores = tables.clinical_scores
    converted = int(scores["converted"].sum()) if len(scores) else 0
    log.info(
        "site %s: %d subjects, %d scores (%d converted to MADRS)",
        site["id"],
        len(tables.subjects),
        len(scores),
        converted,
    )
    return {"subjects": tables.subjects, "clinical_scores": scores}
