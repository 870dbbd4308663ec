"""Clinical reader and harmonizer: BIDS participants, sessions and phenotype scores -> tables.

read -> harmonize -> table, like every modality: :func:`harmonize_site` reads one site's dataset
as the site sent it (see docs/site_data.md), checks it, and returns the rows of the ``subjects``
and ``clinical_scores`` tables with pseudonymous ids. Nothing from the site is guessed: a value the
reader cannot map is an error naming the site, the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ketamap import scales
from ketamap.errors import SiteDataError
from ketamap.ids import pseudonymize
from ketamap.io import read_json, read_tsv
from ketamap.schemas import load_columns, normalize_values

PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "group"]
AGE_PATTERN = r"^(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|year|years)?$"
DEFAULT_SCORES = "phenotype/depression.tsv"
DEFAULT_SCORE_COLUMN = "total"


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


def read_participants(site: dict, root: Path) -> pd.DataFrame:
    """Read and check ``participants.tsv``: ids unique, every value mapped to the shared vocabulary."""
    site_id = site["id"]
    path = root / "participants.tsv"
    mouse = site.get("species") == "mouse"
    # Animal facilities state age in weeks (age_weeks) rather than BIDS' age in years.
    required = [c for c in PARTICIPANT_COLUMNS if not (mouse and c == "age")]
    df = read_tsv(path, site=site_id, root=root, required=required)
    if mouse and "age" not in df.columns:
        if "age_weeks" not in df.columns:
            raise SiteDataError(
                "participants.tsv has neither age nor age_weeks",
                site=site_id,
                file="participants.tsv",
                field="age_weeks",
                expected="the animals' age in weeks (age_weeks) or years (age)",
            )
        weeks = pd.to_numeric(df["age_weeks"], errors="coerce")
        if (weeks.isna() & df["age_weeks"].notna()).any():
            raise SiteDataError(
                f"ages {df.loc[weeks.isna() & df['age_weeks'].notna(), 'age_weeks'].tolist()[:5]} cannot be read",
                site=site_id,
                file="participants.tsv",
                field="age_weeks",
                expected="a number of weeks or n/a",
            )
        df["age"] = (weeks * 7 / 365.25).map(lambda v: None if pd.isna(v) else repr(float(v)))
    where = {"site": site_id, "file": "participants.tsv"}
    ids = df["participant_id"]
    if ids.isna().any():
        rows = (np.flatnonzero(ids.isna()) + 2).tolist()
        raise SiteDataError(
            f"empty participant_id on lines {rows}", field="participant_id", **where
        )
    bad_ids = ids[~ids.str.fullmatch(r"sub-[A-Za-z0-9]+")].tolist()
    if bad_ids:
        raise SiteDataError(
            f"ids {bad_ids[:3]} are not BIDS participant labels",
            field="participant_id",
            expected="sub-<alphanumeric label>",
            **where,
        )
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        raise SiteDataError(
            f"duplicate subject ids {dupes[:5]}",
            field="participant_id",
            expected="each participant listed once",
            **where,
        )
    out = pd.DataFrame({"participant_id": ids})
    out["age_years"] = _parse_age(df["age"], **where)
    sex_raw = df["sex"]
    codes = {str(k): v for k, v in (site.get("reader", {}).get("sex_codes") or {}).items()}
    if codes:
        sex_raw = sex_raw.map(lambda v: codes.get(v, v) if isinstance(v, str) else v)
    out["sex"] = _categorical(
        sex_raw, "sex", hint="map numeric codes with sites[].reader.sex_codes", **where
    )
    out["group"] = _categorical(df["group"], "group", **where)
    if out["group"].isna().any():
        raise SiteDataError(
            "group is n/a for some participants",
            field="group",
            expected="a diagnosis for everyone",
            **where,
        )
    arm_raw = df["arm"] if "arm" in df.columns else pd.Series([None] * len(df), index=df.index)
    out["arm"] = _categorical(arm_raw, "arm", **where)
    return out


def read_scores(site: dict, root: Path, participants: pd.DataFrame) -> pd.DataFrame:
    """Read the symptom-score file, its scale from the sidecar, and map sessions to shared visits."""
    site_id = site["id"]
    reader = site.get("reader", {})
    rel = reader.get("scores", DEFAULT_SCORES)
    score_column = reader.get("score_column", DEFAULT_SCORE_COLUMN)
    visits: dict[str, str] = reader["visits"]
    path = root / rel
    df = read_tsv(
        path, site=site_id, root=root, required=["participant_id", "session_id", score_column]
    )
    where = {"site": site_id, "file": rel}

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
            f"scores for participants not in participants.tsv: {unknown[:5]}",
            field="participant_id",
            expected="every scored participant listed in participants.tsv",
            **where,
        )
    unmapped = sorted(set(df["session_id"].dropna()) - set(visits))
    if unmapped or df["session_id"].isna().any():
        raise SiteDataError(
            f"sessions {unmapped or ['n/a']} are not mapped to a visit",
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
            f"non-numeric scores {not_numbers[:5]}",
            field=score_column,
            expected=f"integers {low:g}-{high:g} or n/a",
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
                f"scored sessions {missing} are not listed",
                site=site_id,
                file=rel,
                field="session_id",
                expected="every session that has a score",
            )


def _parse_age(values: pd.Series, *, site: str, file: str) -> pd.Series:
    text = values.str.lower()
    number = text.str.extract(AGE_PATTERN, expand=False)
    bad = values[values.notna() & number.isna()].unique().tolist()
    if bad:
        raise SiteDataError(
            f"ages {bad[:5]} cannot be read",
            site=site,
            file=file,
            field="age",
            expected="years such as 34, 34.5, 34y or n/a",
        )
    return pd.to_numeric(number).astype(float)


def _categorical(
    values: pd.Series, column: str, *, site: str, file: str, hint: str | None = None
) -> pd.Series:
    mapped = normalize_values(values, column)
    allowed = load_columns()[column].enum or ()
    bad = sorted(
        {
            str(v)
            for v, m in zip(values, mapped, strict=True)
            if isinstance(m, str) and m not in allowed
        }
    )
    if bad:
        raise SiteDataError(
            f"values {bad[:5]} cannot be mapped",
            site=site,
            file=file,
            field=column,
            expected=f"one of {list(allowed)} or a known spelling ({sorted(load_columns()[column].aliases)})",
            hint=hint,
        )
    return mapped
