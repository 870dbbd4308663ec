"""What every modality reads the same way from a BIDS-like site folder.

One folder walker (``sub-<label>/ses-<label>/<datatype>/`` files whose names start with their
folders), one session resolver (participant and session label -> pseudonym and shared
visit/condition), ``participants.tsv``, puff onsets from ``_events.tsv``, and the pattern region
names follow. The modality subpackages use these; none repeats them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ketamap.errors import SiteDataError
from ketamap.io import check_inside, quote, read_tsv, shown_path
from ketamap.limits import check_size, excerpt
from ketamap.schemas import load_columns, normalize_values

# Region names in atlases, electrode tables and every region column.
REGION_PATTERN = r"^[a-z][a-z0-9_]*$"
PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "group"]
AGE_PATTERN = r"^(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|year|years)?$"


@dataclass(frozen=True)
class SessionFile:
    """One data file in a session folder, with the labels its folders give."""

    participant_id: str
    session_id: str
    path: Path
    shown: str  # the path as messages show it (relative to the site folder)


def session_files(
    site_id: str,
    root: Path,
    datatype: str | None,
    patterns: tuple[str, ...],
    only: tuple[str, str] | None = None,
) -> Iterator[SessionFile]:
    """Every file whose name matches one of the glob ``patterns`` in ``sub-*/ses-*/<datatype>/``
    (or directly in the session folder when ``datatype`` is None), sessions and files in name
    order; hidden files are skipped, as a glob would.

    A file whose name does not start with ``<participant>_<session>_`` is an error: the folders
    give the labels, and a file copied into the wrong folder would otherwise be read as someone
    else's. So is a file that is, or lies in a folder that is, a symbolic link leaving the site
    folder: it is never followed.

    With ``only`` (a participant and a session label), that session folder alone is walked.
    """
    sub, ses = only or ("sub-*", "ses-*")
    pattern = f"{sub}/{ses}/{datatype}" if datatype else f"{sub}/{ses}"
    for folder in sorted(p for p in root.glob(pattern) if p.is_dir()):
        rel = folder.relative_to(root).parts
        participant, session = rel[0], rel[1]
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not any(fnmatchcase(path.name, p) for p in patterns):
                continue
            shown = shown_path(path, root)
            check_inside(path, root, site=site_id, file=shown)
            if not path.name.startswith(f"{participant}_{session}_"):
                raise SiteDataError(
                    "the file name does not match its folders",
                    site=site_id,
                    file=shown,
                    expected=f"a name starting with {participant}_{session}_",
                )
            yield SessionFile(participant, session, path, shown)


def puff_onsets(
    path: Path,
    site_id: str,
    root: Path,
    *,
    duration_s: float | None = None,
    sfreq: float | None = None,
) -> np.ndarray:
    """Onsets (s) of the ``trial_type`` puff rows of a BIDS ``_events.tsv`` (every row when the
    file has no ``trial_type``).

    Each onset must be a number of seconds, and with ``duration_s`` (the recording's length) lie
    within ``0 - duration_s``: onsets written in milliseconds fail here, blamed on this file with
    the row, not later on the recording. With ``sfreq``, a ``sample`` column (BIDS: the onset in
    samples) must agree with ``onset x sfreq`` within one sample. Rows count data rows from 1 (the
    header is line 1, row 1 is line 2)."""
    shown = shown_path(path, root)
    check_size(path, "tsv", site=site_id, file=shown)
    df = read_tsv(path, site=site_id, root=root, required=["onset", "duration"])
    where = {"site": site_id, "file": shown, "field": "onset"}
    if "trial_type" in df.columns:
        df = df[df["trial_type"].str.lower() == "puff"]
    rows = df.index.to_numpy() + 1
    onsets = pd.to_numeric(df["onset"], errors="coerce")
    bad = onsets.isna().to_numpy() | ~np.isfinite(onsets.to_numpy(dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SiteDataError(
            f"row {rows[i]}: onset {excerpt(str(df['onset'].iloc[i]))} is not a number"
            + (f" ({int(bad.sum())} such rows)" if bad.sum() > 1 else ""),
            expected="seconds from the recording start",
            **where,
        )
    if onsets.empty:
        raise SiteDataError(
            "no puff events",
            site=site_id,
            file=shown,
            field="trial_type",
            expected="rows with trial_type puff",
        )
    values = onsets.to_numpy(dtype=float)
    limit = f"seconds within the recording's 0-{duration_s:g} s" if duration_s else "seconds >= 0"
    outside = (values < 0) | (values > duration_s if duration_s is not None else False)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        # Most onsets past the end, all of them inside once divided by 1000: milliseconds.
        looks_ms = (
            duration_s is not None
            and values.min() >= 0
            and outside.sum() > len(values) / 2
            and values.max() / 1000.0 <= duration_s
        )
        raise SiteDataError(
            f"row {rows[i]}: onset {values[i]:g} is outside the recording"
            + (f" ({int(outside.sum())} such rows)" if outside.sum() > 1 else ""),
            expected=limit,
            hint="the onsets look like milliseconds; BIDS onsets are in seconds"
            if looks_ms
            else None,
            **where,
        )
    if sfreq is not None and "sample" in df.columns:
        # A constant offset is allowed (MNE-BIDS counts samples from the file's first sample,
        # which need not be 0 for FIF); a varying one means onsets in other units or a wrong rate.
        samples = pd.to_numeric(df["sample"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(samples)
        offset = samples - values * sfreq
        off = ok & (np.abs(offset - np.median(offset[ok]) if ok.any() else 0.0) > 1.0)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise SiteDataError(
                f"row {rows[i]}: onset {values[i]:g} s is sample {values[i] * sfreq:.6g} at "
                f"{sfreq:g} Hz but the row's sample is {samples[i]:.6g}"
                + (f" ({int(off.sum())} such rows)" if off.sum() > 1 else ""),
                expected="onsets in seconds that agree with the sample column "
                "(onset x sampling rate = sample, within one sample)",
                **where,
            )
    return values


@dataclass
class SessionResolver:
    """One site's session resolver: each file's participant and session label -> (pseudonym,
    shared label) with :func:`resolve_session`, remembering the pairs already seen, so a second
    file for the same participant and visit or condition is an error."""

    site: str
    pseudonyms: dict[str, str]
    mapping: dict[str, str]
    mapping_key: str
    what: str
    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def __call__(self, item: Any) -> tuple[str, str]:
        """``item``: anything with ``participant_id``, ``session_id`` and ``shown``."""
        return resolve_session(
            site=self.site,
            shown=item.shown,
            participant_id=item.participant_id,
            session_id=item.session_id,
            pseudonyms=self.pseudonyms,
            mapping=self.mapping,
            mapping_key=self.mapping_key,
            seen=self.seen,
            what=self.what,
        )


def resolve_session(
    *,
    site: str,
    shown: str,
    participant_id: str,
    session_id: str,
    pseudonyms: dict[str, str],
    mapping: dict[str, str],
    mapping_key: str,
    seen: dict[tuple[str, str], str],
    what: str,
) -> tuple[str, str]:
    """Map one recording's participant and session to (pseudonym, shared label), checking both.

    ``mapping`` is the site's session-label map (``reader.visits`` or ``reader.conditions``);
    ``seen`` collects (participant, label) pairs so a second file for the same pair is an error.
    """
    where = {"site": site, "file": shown}
    if participant_id not in pseudonyms:
        raise SiteDataError(
            f"participant {participant_id} is not in participants.tsv",
            field="participant_id",
            expected=f"every participant with a {what} listed in participants.tsv",
            **where,
        )
    if session_id not in mapping:
        raise SiteDataError(
            f"session {session_id} is not mapped to a {mapping_key.rstrip('s')}",
            field="session_id",
            expected=f"one of {sorted(mapping)}",
            hint=f"add the session to sites[].reader.{mapping_key} in the config",
            **where,
        )
    label = mapping[session_id]
    pair = (participant_id, label)
    if pair in seen:
        raise SiteDataError(
            f"a second {what} for {participant_id}, {mapping_key.rstrip('s')} {label!r} (the first is {seen[pair]})",
            expected=f"one {what} per participant and {mapping_key.rstrip('s')}",
            **where,
        )
    seen[pair] = shown
    return pseudonyms[participant_id], label


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
                f"ages {quote(df.loc[weeks.isna() & df['age_weeks'].notna(), 'age_weeks'])} cannot be read",
                site=site_id,
                file="participants.tsv",
                field="age_weeks",
                expected="a number of weeks or n/a",
            )
        df["age"] = (weeks * 7 / 365.25).map(lambda v: None if pd.isna(v) else repr(float(v)))
        age_field = "age_weeks"
    else:
        age_field = "age"
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
            f"ids {quote(bad_ids, 3)} are not BIDS participant labels",
            field="participant_id",
            expected="sub-<alphanumeric label>",
            **where,
        )
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        raise SiteDataError(
            f"duplicate subject ids {quote(dupes)}",
            field="participant_id",
            expected="each participant listed once",
            **where,
        )
    out = pd.DataFrame({"participant_id": ids})
    out["age_years"] = _parse_age(df["age"], df[age_field], ids, age_field, **where)
    sex_raw = df["sex"]
    codes = {str(k): v for k, v in (site.get("reader", {}).get("sex_codes") or {}).items()}
    if codes:
        sex_raw = sex_raw.map(lambda v: codes.get(v, v) if isinstance(v, str) else v)
    out["sex"] = categorical(
        sex_raw, "sex", hint="map numeric codes with sites[].reader.sex_codes", **where
    )
    out["group"] = categorical(df["group"], "group", **where)
    if out["group"].isna().any():
        raise SiteDataError(
            "group is n/a for some participants",
            field="group",
            expected="a diagnosis for everyone",
            **where,
        )
    arm_raw = df["arm"] if "arm" in df.columns else pd.Series([None] * len(df), index=df.index)
    out["arm"] = categorical(arm_raw, "arm", **where)
    return out


def _parse_age(
    values: pd.Series, raw: pd.Series, ids: pd.Series, field: str, *, site: str, file: str
) -> pd.Series:
    """Ages in years; unreadable ones and ones outside the ``age_years`` column's range are errors
    naming the first such line of the file (the header is line 1)."""
    text = values.str.lower()
    number = text.str.extract(AGE_PATTERN, expand=False)
    bad = values[values.notna() & number.isna()].unique().tolist()
    if bad:
        raise SiteDataError(
            f"ages {quote(bad)} cannot be read",
            site=site,
            file=file,
            field=field,
            expected="years such as 34, 34.5, 34y or n/a"
            if field == "age"
            else "a number of weeks or n/a",
        )
    years = pd.to_numeric(number).astype(float)
    spec = load_columns()["age_years"]
    low = float(spec.min) if spec.min is not None else 0.0
    high = float(spec.max) if spec.max is not None else float("inf")
    outside = (years < low) | (years > high)
    if outside.any():
        first = int(np.flatnonzero(outside.to_numpy())[0])
        shown = excerpt(str(raw.iloc[first]))
        raise SiteDataError(
            f"implausible {field} {shown} in row {first + 1} ({excerpt(str(ids.iloc[first]))})"
            + (f" and {int(outside.sum()) - 1} more rows" if outside.sum() > 1 else ""),
            site=site,
            file=file,
            field=field,
            expected=f"an age of {low:g}-{high:g} years (the range of age_years in "
            "schemas/columns.yaml) or n/a",
        )
    return years


def categorical(
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
            f"values {quote(bad)} cannot be mapped",
            site=site,
            file=file,
            field=column,
            expected=f"one of {list(allowed)} or a known spelling ({sorted(load_columns()[column].aliases)})",
            hint=hint,
        )
    return mapped
