"""Reading behaviour files as sites send them: DeepLabCut, NWB (own layout and ndx-pose), eyelid CSV, logs.

Every reader checks what it reads (file present and not empty, required columns, numbers where
numbers are expected, times that never go backwards) and raises a :class:`SiteDataError` naming
the site, the file, the field and what was expected. Nothing here decides a measure: the
harmonizer (:mod:`ketamap.behaviour`) applies the likelihood cutoff and the windows.

Pose data come back in one form whatever the source: a DataFrame whose columns are a
``(bodyparts, coords)`` MultiIndex with coords ``x``, ``y``, ``likelihood``, indexed by frame
(``frame``) or by time in seconds (``time_s``).

Privacy: NWB files can hold names (``subject.description``, ``experimenter``, ``lab`` ...). The
NWB readers only touch the objects they need (series, trials, the processing module), never the
subject or file metadata, and log nothing from the file but counts.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ketamap.errors import SiteDataError
from ketamap.io import MISSING, read_json, shown_path
from ketamap.limits import check_size, excerpt

__all__ = [
    "NwbSession",
    "check_increasing",
    "check_probability",
    "frame_index_like",
    "keypoint_distance",
    "read_behaviour_nwb",
    "read_dlc",
    "read_event_log",
    "read_eyelid_csv",
    "read_pose_nwb",
]

log = logging.getLogger(__name__)

COORDS = ("x", "y", "likelihood")
DLC_HEADER = ("scorer", "bodyparts", "coords")
NAMESPACE_WARNING = re.compile(r"Ignoring the following cached namespace", re.IGNORECASE)
LINE_BYTES = 1 << 20  # the longest CSV line a reader accepts (a DeepLabCut row is < 10 kB)
HEADER_BYTES = 1 << 17  # the longest header line (csv's default field size limit)


# ------------------------------------------------------------------------------------ helpers
def _require_file(
    path: Path, *, site: str, root: Path | None, expected: str, kind: str = "tracking"
) -> str:
    """The path as messages show it, once the file is there, not empty and within the ``kind``
    size limit (:mod:`ketamap.limits`), before anything is read."""
    shown = shown_path(path, root)
    if not path.is_file():
        raise SiteDataError("file not found", site=site, file=shown, expected=expected)
    if path.stat().st_size == 0:
        raise SiteDataError("file is empty", site=site, file=shown, expected=expected)
    check_size(path, kind, site=site, file=shown)
    return shown


def check_increasing(
    values: np.ndarray, *, strict: bool, site: str, file: str, field: str, what: str
) -> None:
    """Raise when ``values`` go backwards (or repeat, when ``strict``); NaN is an error too."""
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():
        i = int(np.flatnonzero(np.isnan(values))[0])
        raise SiteDataError(
            f"{what} missing at row {i + 1}", site=site, file=file, field=field, expected="numbers"
        )
    step = np.diff(values)
    bad = np.flatnonzero(step <= 0) if strict else np.flatnonzero(step < 0)
    if bad.size:
        i = int(bad[0])
        raise SiteDataError(
            f"{what} go backwards: {values[i]:g} then {values[i + 1]:g} (row {i + 2})",
            site=site,
            file=file,
            field=field,
            expected=f"{'strictly ' if strict else ''}increasing times",
        )


def frame_index_like(timestamps: np.ndarray) -> bool:
    """True when timestamps are frame numbers: integer-valued, starting at 0, step 1."""
    ts = np.asarray(timestamps, dtype=float)
    if ts.size < 2 or not np.isfinite(ts).all():
        return False
    return bool(ts[0] == 0 and np.all(np.diff(ts) == 1) and np.all(ts == np.round(ts)))


def check_probability(
    values: np.ndarray, *, site: str, file: str, field: str, what: str, first_line: int = 1
) -> None:
    """Raise unless every present value lies in [0, 1] (a DeepLabCut likelihood, a tracker's
    confidence). A 0-100 scale is named as such: the cutoff is a probability, and rescaling a
    guessed scale would decide which frames pass."""
    values = np.asarray(values, dtype=float)
    bad = np.flatnonzero(np.isfinite(values) & ((values < 0) | (values > 1)))
    if not bad.size:
        return
    top = float(np.nanmax(values))
    scale = (
        f" (maximum {top:g}: a 0-100 scale?)"
        if 1 < top <= 100 and float(np.nanmin(values)) >= 0
        else ""
    )
    raise SiteDataError(
        f"{what} {values[bad[0]]:g} on line {int(bad[0]) + first_line}{scale}; "
        f"{bad.size} values outside [0, 1]",
        site=site,
        file=file,
        field=field,
        expected=f"{what} between 0 and 1",
        hint="export the tracker's 0-1 score (divide a percentage by 100 at the site); the "
        "likelihood cutoff is a probability and is not applied to a guessed scale",
    )


def check_integers(
    values: np.ndarray, *, site: str, file: str, field: str, first_line: int = 1
) -> None:
    """Raise when a frame number is not a whole number (missing values are checked elsewhere)."""
    values = np.asarray(values, dtype=float)
    bad = np.flatnonzero(np.isfinite(values) & (values != np.round(values)))
    if bad.size:
        raise SiteDataError(
            f"frame number {values[bad[0]]:g} on line {int(bad[0]) + first_line}",
            site=site,
            file=file,
            field=field,
            expected="whole frame numbers counted from 0",
        )


def _header_rows(path: Path, n: int, where: dict[str, Any]) -> list[list[str]]:
    """The first ``n`` lines of a CSV as fields, reading at most ``n`` x 128 kB."""
    lines = []
    with path.open("rb") as fh:
        for i in range(n):
            line = fh.readline(HEADER_BYTES + 1)
            if not line:
                break
            if len(line) > HEADER_BYTES or b"\0" in line:
                raise SiteDataError(
                    f"header line {i + 1} is "
                    + ("binary (NUL bytes)" if b"\0" in line else "longer than 128 kB")
                    + f", starting {excerpt(line)}",
                    field="header",
                    expected="a text CSV with a short header",
                    hint="check the file is not corrupt or truncated",
                    **where,
                )
            lines.append(line)
    try:
        text = b"".join(lines).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SiteDataError(
            f"header is not UTF-8 text (byte {exc.start})",
            field="header",
            expected="a UTF-8 text CSV",
            **where,
        ) from None
    return [[c.strip() for c in row] for row in csv.reader(text.splitlines())]


_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"column #(\d+)")
_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+)")
_VALUE = re.compile(r"invalid value '(.*)'\s*$", re.DOTALL)


def read_numeric_csv(
    path: Path,
    *,
    skip: int,
    n_columns: int,
    keep: dict[int, str],
    where: dict[str, Any],
) -> pd.DataFrame:
    """The ``keep`` columns (position -> field name) of a comma-separated file as float64, after
    ``skip`` header lines; ``n/a`` or empty is NaN.

    Streamed in 1 MB blocks by pyarrow, so memory stays bounded by the kept columns whatever the
    file holds: a line longer than 1 MB (a sparse or binary file), a row with the wrong number of
    fields (a file cut short mid-row), a non-numeric or infinite value is an error naming its line
    and quoting at most a short excerpt.
    """
    names = [f"c{i}" for i in range(n_columns)]
    read = pacsv.ReadOptions(
        skip_rows=skip, column_names=names, block_size=LINE_BYTES, use_threads=False
    )
    convert = pacsv.ConvertOptions(
        column_types={names[i]: pa.float64() for i in keep},
        include_columns=[names[i] for i in keep],
        null_values=sorted(MISSING),
        quoted_strings_can_be_null=True,
    )
    parse = pacsv.ParseOptions(newlines_in_values=False)
    batches = []
    n_rows = 0
    try:
        with pacsv.open_csv(
            path, read_options=read, parse_options=parse, convert_options=convert
        ) as reader:
            for batch in reader:
                batches.append(batch)
                n_rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise _csv_error(str(exc), skip + n_rows, n_columns, keep, where) from None
    table = pa.Table.from_batches(batches, schema=reader.schema) if batches else None
    out = pd.DataFrame(
        {
            name: (
                table.column(names[i]).to_numpy().astype(float)
                if table is not None
                else np.zeros(0)
            )
            for i, name in keep.items()
        }
    )
    for name in out.columns:
        inf = np.flatnonzero(np.isinf(out[name].to_numpy()))
        if inf.size:
            raise SiteDataError(
                f"infinite value on line {int(inf[0]) + skip + 1}",
                field=name,
                expected="finite numbers (or empty / n/a for a missing value)",
                **where,
            )
    return out


def _csv_error(
    message: str, lines_read: int, n_columns: int, keep: dict[int, str], where: dict[str, Any]
) -> SiteDataError:
    row = _ROW.search(message)
    line = f"line {row.group(1)}" if row else f"a line after line {lines_read}"
    if "straddl" in message:
        return SiteDataError(
            f"a line longer than {LINE_BYTES // (1 << 20)} MB after line {lines_read} "
            "(a corrupt, sparse or binary file?)",
            field="row",
            expected=f"rows of {n_columns} comma-separated numbers",
            hint="check the file is not corrupt; re-export it from the tracker",
            **where,
        )
    fields = _FIELDS.search(message)
    if fields:
        return SiteDataError(
            f"{line} has {fields.group(2)} fields (a file cut short mid-row, or a broken row)",
            field="row",
            expected=f"{fields.group(1)} comma-separated fields per row, as in the header",
            hint="check the export finished; a truncated file must be re-exported",
            **where,
        )
    column = _COLUMN.search(message)
    value = _VALUE.search(message)
    if column and value:
        return SiteDataError(
            f"non-numeric values [{excerpt(value.group(1))}] ({line})",
            field=keep.get(int(column.group(1)), f"column {int(column.group(1)) + 1}"),
            expected="numbers (or empty / n/a for a missing value)",
            **where,
        )
    return SiteDataError(
        f"cannot be parsed as CSV ({excerpt(message, 120)})",
        expected=f"rows of {n_columns} comma-separated numbers",
        **where,
    )


def read_event_log(
    path: Path,
    columns: list[str],
    *,
    site: str,
    root: Path | None = None,
    what: str = "events",
) -> pd.DataFrame:
    """Read a comma-separated log (puffs, licks, cues) into float columns; empty logs are errors."""
    shown = _require_file(
        path, site=site, root=root, expected=f"a CSV log of {what} ({columns})", kind="tsv"
    )
    out = _read_columns(path, columns, {"site": site, "file": shown})
    out = out.dropna(how="all").reset_index(drop=True)
    if out.empty:
        raise SiteDataError(
            f"no {what} in the log",
            site=site,
            file=shown,
            field=columns[0],
            expected=f"at least one row of {what}",
        )
    for col in columns:
        if out[col].isna().any():
            raise SiteDataError(
                f"missing value on line {int(np.flatnonzero(out[col].isna())[0]) + 2}",
                site=site,
                file=shown,
                field=col,
                expected="a number on every row",
            )
    return out


def _read_columns(path: Path, columns: list[str], where: dict[str, Any]) -> pd.DataFrame:
    """The named float columns of a CSV with one header line (any other columns are skipped)."""
    header = _header_rows(path, 1, where)
    found = header[0] if header else []
    for col in columns:
        if col not in found:
            raise SiteDataError(
                "missing required column",
                field=col,
                expected=f"columns {columns} (found {excerpt(','.join(found), 120)})",
                **where,
            )
    keep = {found.index(col): col for col in columns}
    out = read_numeric_csv(path, skip=1, n_columns=len(found), keep=keep, where=where)
    return out[columns]


# ------------------------------------------------------------------------------------ DeepLabCut
def read_dlc(
    path: Path,
    *,
    site: str = "?",
    root: Path | None = None,
    frame_rate_hz: float | None = None,
    bodyparts: list[str] | None = None,
) -> pd.DataFrame:
    """Read a DeepLabCut prediction (``.csv`` with 3 header rows, or ``.h5``).

    Returns columns ``(bodyparts, coords)`` indexed by ``frame`` (0, 1, ...), or by ``time_s``
    (frame / ``frame_rate_hz``) when a rate is given. Single-animal files only (a multi-animal
    file with one individual is accepted). With ``bodyparts``, a CSV is read for those only (the
    others are skipped unparsed). Likelihoods must be probabilities (0-1) and frame numbers whole.
    """
    shown = _require_file(path, site=site, root=root, expected="a DeepLabCut .csv or .h5 file")
    where = {"site": site, "file": shown}
    if path.suffix.lower() in (".h5", ".hdf5"):
        df = _read_dlc_h5(path, where)
        first_line = 1
    else:
        df = _read_dlc_csv(path, where, bodyparts)
        first_line = df.columns.nlevels + 2
    levels = list(df.columns.names)
    if "individuals" in levels:
        individuals = df.columns.get_level_values("individuals").unique()
        if len(individuals) > 1:
            raise SiteDataError(
                f"multi-animal prediction with individuals {list(individuals)[:4]}",
                field="individuals",
                expected="one animal per file",
                **where,
            )
        df = df.droplevel("individuals", axis=1)
    if "scorer" in df.columns.names:
        df = df.droplevel("scorer", axis=1)
    df.columns = df.columns.set_names(["bodyparts", "coords"])
    coords = set(df.columns.get_level_values("coords"))
    if not {"x", "y"} <= coords:
        raise SiteDataError(
            f"coords {sorted(coords)}",
            field="coords",
            expected="x, y and likelihood per body part",
            **where,
        )
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise SiteDataError(
            f"{dup[0]} {dup[1]} appears twice in the header",
            field=f"{dup[0]}/{dup[1]}",
            expected="each body part's x, y and likelihood once",
            **where,
        )
    for bp in df.columns.get_level_values("bodyparts").unique():
        if (bp, "likelihood") in df.columns:
            check_probability(
                df[(bp, "likelihood")].to_numpy(dtype=float),
                field=f"{bp}/likelihood",
                what="likelihood",
                first_line=first_line,
                **where,
            )
    frames = pd.to_numeric(pd.Series(df.index), errors="coerce").to_numpy(dtype=float)
    check_increasing(frames, strict=True, field="frame", what="frame numbers", **where)
    check_integers(frames, field="frame", first_line=first_line, **where)
    df.index = pd.Index(frames.astype(np.int64), name="frame")
    if frame_rate_hz is not None:
        df.index = pd.Index(df.index.to_numpy() / float(frame_rate_hz), name="time_s")
    return df


def _read_dlc_h5(path: Path, where: dict[str, Any]) -> pd.DataFrame:
    try:
        obj = pd.read_hdf(path)
    except Exception as exc:  # PyTables raises many types for a bad file
        raise SiteDataError(
            f"cannot be read as a DeepLabCut .h5 ({type(exc).__name__})",
            expected="a pandas HDF5 table written by DeepLabCut",
            **where,
        ) from None
    if not isinstance(obj, pd.DataFrame) or not isinstance(obj.columns, pd.MultiIndex):
        raise SiteDataError(
            "not a DeepLabCut table",
            expected="columns scorer / bodyparts / coords",
            **where,
        )
    df = obj.astype(float)
    names = list(df.columns.names)
    if names[-2:] != ["bodyparts", "coords"]:
        raise SiteDataError(
            f"column levels {names}",
            field="columns",
            expected="levels scorer / bodyparts / coords",
            **where,
        )
    return df


def _read_dlc_csv(
    path: Path, where: dict[str, Any], bodyparts: list[str] | None = None
) -> pd.DataFrame:
    head = _header_rows(path, 4, where)
    labels = [row[0].strip().lower() if row else "" for row in head]
    n_header = 4 if len(labels) > 1 and labels[1] == "individuals" else 3
    expected_labels = (
        ["scorer", "individuals", "bodyparts", "coords"] if n_header == 4 else list(DLC_HEADER)
    )
    if labels[:n_header] != expected_labels:
        raise SiteDataError(
            f"header rows start with {excerpt(str(labels[:n_header]), 80)}",
            field="header",
            expected="three DeepLabCut header rows: scorer, bodyparts, coords",
            **where,
        )
    rows = head[:n_header]
    n_columns = len(rows[-1])
    if any(len(r) != n_columns for r in rows) or n_columns < 2:
        raise SiteDataError(
            f"header rows of {[len(r) for r in rows]} fields",
            field="header",
            expected="scorer, bodyparts and coords rows of equal length",
            **where,
        )
    parts = rows[-2]
    keep = [i for i in range(1, n_columns) if bodyparts is None or parts[i] in bodyparts]
    if not keep:
        raise SiteDataError(
            f"none of the body parts {bodyparts} "
            f"(found {excerpt(', '.join(sorted(set(parts[1:]))), 120)})",
            field="bodyparts",
            expected=f"x, y, likelihood of {', '.join(bodyparts or [])}",
            **where,
        )
    data = read_numeric_csv(
        path,
        skip=n_header,
        n_columns=n_columns,
        keep={0: "frame", **{i: f"{parts[i]}/{rows[-1][i]}" for i in keep}},
        where=where,
    )
    if data.empty:
        raise SiteDataError(
            "no frames after the header", field="frame", expected="one row per frame", **where
        )
    columns = pd.MultiIndex.from_tuples(
        [tuple(r[i] for r in rows) for i in keep], names=expected_labels
    )
    values = data.drop(columns="frame").to_numpy(dtype=float)
    return pd.DataFrame(values, index=pd.Index(data["frame"].to_numpy()), columns=columns)


# ------------------------------------------------------------------------------------ NWB
def _open_nwb(path: Path, where: dict[str, Any]) -> Any:
    """Open read-only; the cached-namespace version warning of hdmf is logged, not raised."""
    import ndx_pose  # noqa: F401  (registers PoseEstimation before the file is read)
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io = None
        try:
            io = NWBHDF5IO(str(path), mode="r", load_namespaces=True)
            nwb = io.read()
        except Exception as exc:  # h5py/hdmf raise many types for a bad file
            if io is not None:
                io.close()
            raise SiteDataError(
                f"cannot be read as NWB ({type(exc).__name__})",
                expected="an NWB 2 (HDF5) file",
                **where,
            ) from None
    for w in caught:
        if issubclass(w.category, UserWarning) and NAMESPACE_WARNING.search(str(w.message)):
            log.info("%s: %s", where["file"], " ".join(str(w.message).split()))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return io, nwb


def _series_times(
    series: Any,
    n: int,
    *,
    frame_rate_hz: float | None,
    where: dict[str, Any],
    field: str,
) -> tuple[np.ndarray, float]:
    """Times in s of a TimeSeries-like object and its frame rate (frame-index stamps converted)."""
    if series.timestamps is not None:
        ts = np.asarray(series.timestamps[:], dtype=float)
        if ts.size != n:
            raise SiteDataError(
                f"{ts.size} timestamps for {n} samples",
                field=f"{field}/timestamps",
                expected="one timestamp per sample",
                **where,
            )
        if frame_index_like(ts):
            if frame_rate_hz is None:
                raise SiteDataError(
                    "the timestamps look like frame indices (0, 1, 2, ...), not seconds",
                    field=f"{field}/timestamps",
                    expected="timestamps in seconds, or the video frame rate",
                    hint="set sites[].reader.frame_rate_hz (frame_rate_hz) to convert frame indices to seconds",
                    **where,
                )
            return ts / float(frame_rate_hz), float(frame_rate_hz)
        check_increasing(ts, strict=True, field=f"{field}/timestamps", what="timestamps", **where)
        rate = 1.0 / float(np.median(np.diff(ts))) if ts.size > 1 else float("nan")
        return ts, rate
    rate = series.rate
    if rate is None or not float(rate) > 0:
        raise SiteDataError(
            "neither timestamps nor a rate",
            field=field,
            expected="timestamps, or rate + starting_time",
            **where,
        )
    start = float(series.starting_time or 0.0)
    return start + np.arange(n) / float(rate), float(rate)


def _pose_frame(pose: Any, *, frame_rate_hz: float | None, where: dict[str, Any]) -> pd.DataFrame:
    series = dict(pose.pose_estimation_series)
    if not series:
        raise SiteDataError(
            "PoseEstimation holds no series", field="PoseEstimation", expected="keypoints", **where
        )
    names = sorted(series)
    # DLC2NWB prefixes the individual ("ind1_snout"); drop a prefix all series share
    parts = [n.split("_", 1) for n in names]
    if all(len(p) == 2 for p in parts) and len({p[0] for p in parts}) == 1:
        if re.fullmatch(r"ind\d+|animal\d*|individual\d*", parts[0][0]):
            bodyparts = [p[1] for p in parts]
        else:
            bodyparts = names
    else:
        bodyparts = names
    times = None
    columns: dict[tuple[str, str], np.ndarray] = {}
    for name, bp in zip(names, bodyparts, strict=True):
        s = series[name]
        data = np.asarray(s.data[:], dtype=float)
        if data.ndim != 2 or data.shape[1] < 2:
            raise SiteDataError(
                f"data of shape {data.shape}",
                field=f"PoseEstimation/{name}/data",
                expected="frames x (x, y[, z])",
                **where,
            )
        t, _ = _series_times(
            s,
            len(data),
            frame_rate_hz=frame_rate_hz,
            where=where,
            field=f"PoseEstimation/{name}",
        )
        if times is None:
            times = t
        elif len(t) != len(times) or not np.allclose(t, times):
            raise SiteDataError(
                "body parts have different timestamps",
                field=f"PoseEstimation/{name}/timestamps",
                expected="one clock for all body parts",
                **where,
            )
        conf = (
            np.asarray(s.confidence[:], dtype=float)
            if s.confidence is not None
            else np.full(len(data), np.nan)
        )
        check_probability(
            conf, field=f"PoseEstimation/{name}/confidence", what="confidence", **where
        )
        columns[(bp, "x")] = data[:, 0]
        columns[(bp, "y")] = data[:, 1]
        columns[(bp, "likelihood")] = conf
    assert times is not None
    df = pd.DataFrame(columns, index=pd.Index(times, name="time_s"))
    df.columns = pd.MultiIndex.from_tuples(list(columns), names=["bodyparts", "coords"])
    return df


def _find_pose(nwb: Any) -> Any | None:
    from ndx_pose import PoseEstimation

    for module in nwb.processing.values():
        for obj in module.data_interfaces.values():
            if isinstance(obj, PoseEstimation):
                return obj
    return None


def read_pose_nwb(
    path: Path,
    *,
    frame_rate_hz: float | None,
    site: str = "?",
    root: Path | None = None,
) -> pd.DataFrame:
    """Read the keypoints of an ndx-pose ``PoseEstimation`` into the DeepLabCut form (time in s).

    Timestamps that are frame indices (integer-valued, from 0, step 1; DLC2NWB writes those) are
    converted with ``frame_rate_hz``; without a rate that is an error saying so.
    """
    shown = _require_file(path, site=site, root=root, expected="an NWB file with ndx-pose")
    where = {"site": site, "file": shown}
    io, nwb = _open_nwb(path, where)
    try:
        pose = _find_pose(nwb)
        if pose is None:
            raise SiteDataError(
                "no PoseEstimation in any processing module",
                field="processing/*/PoseEstimation",
                expected="ndx-pose keypoints",
                **where,
            )
        return _pose_frame(pose, frame_rate_hz=frame_rate_hz, where=where)
    finally:
        io.close()


@dataclass
class NwbSession:
    """What a mouse-lab NWB file contributes (times in s from session start)."""

    times_s: np.ndarray
    aperture_px: np.ndarray
    confidence: np.ndarray
    frame_rate_hz: float
    licks_s: np.ndarray
    puffs_s: np.ndarray
    cues_s: np.ndarray
    water_s: np.ndarray
    source: str


def _interface(module: Any, name: str, where: dict[str, Any], expected: str) -> Any:
    if name not in module.data_interfaces:
        raise SiteDataError(
            f"no {name} in the behavior module (found {sorted(module.data_interfaces)})",
            field=f"processing/behavior/{name}",
            expected=expected,
            **where,
        )
    return module.data_interfaces[name]


def _series(container: Any, name: str, where: dict[str, Any], field: str) -> Any:
    found = dict(container.time_series)
    if name not in found:
        raise SiteDataError(
            f"no {name} series (found {sorted(found)})",
            field=f"{field}/{name}",
            expected=f"a TimeSeries named {name}",
            **where,
        )
    return found[name]


def read_behaviour_nwb(
    path: Path,
    *,
    site: str = "?",
    root: Path | None = None,
    frame_rate_hz: float | None = None,
) -> NwbSession:
    """Read a mouse-lab NWB file (docs/site_data.md, NWB habit).

    Eyelid aperture and tracking confidence from ``processing/behavior/EyelidTracking``; when
    that is absent, ``upper_eyelid``/``lower_eyelid`` keypoints of an ndx-pose ``PoseEstimation``
    are accepted (aperture = their distance, confidence = the lower of the two likelihoods).
    Licks from ``processing/behavior/Licks``; puffs and cues from the ``trials`` table.
    """
    shown = _require_file(path, site=site, root=root, expected="an NWB file (behavior)")
    where = {"site": site, "file": shown}
    io, nwb = _open_nwb(path, where)
    try:
        if "behavior" not in nwb.processing:
            raise SiteDataError(
                f"no behavior processing module (found {sorted(nwb.processing)})",
                field="processing/behavior",
                expected="a processing module named behavior",
                **where,
            )
        module = nwb.processing["behavior"]
        if "EyelidTracking" in module.data_interfaces:
            eyelid = module.data_interfaces["EyelidTracking"]
            field = "processing/behavior/EyelidTracking"
            ap_series = _series(eyelid, "eyelid_aperture", where, field)
            conf_series = _series(eyelid, "tracking_confidence", where, field)
            aperture = np.asarray(ap_series.data[:], dtype=float).reshape(-1)
            confidence = np.asarray(conf_series.data[:], dtype=float).reshape(-1)
            if confidence.shape != aperture.shape:
                raise SiteDataError(
                    f"{confidence.size} confidence values for {aperture.size} aperture samples",
                    field=f"{field}/tracking_confidence",
                    expected="the same timing as eyelid_aperture",
                    **where,
                )
            check_probability(
                confidence,
                field=f"{field}/tracking_confidence",
                what="tracking confidence",
                first_line=0,
                **where,
            )
            times, rate = _series_times(
                ap_series,
                aperture.size,
                frame_rate_hz=frame_rate_hz,
                where=where,
                field=f"{field}/eyelid_aperture",
            )
            source = "NWB EyelidTracking eyelid_aperture"
        else:
            pose = _find_pose(nwb)
            if pose is None:
                raise SiteDataError(
                    f"no EyelidTracking in the behavior module (found {sorted(module.data_interfaces)})",
                    field="processing/behavior/EyelidTracking",
                    expected="BehavioralTimeSeries EyelidTracking (or ndx-pose eyelid keypoints)",
                    **where,
                )
            df = _pose_frame(pose, frame_rate_hz=frame_rate_hz, where=where)
            times = df.index.to_numpy(dtype=float)
            aperture, ok = keypoint_distance(df, where=where)
            lik = np.fmin(
                df[("upper_eyelid", "likelihood")].to_numpy(float),
                df[("lower_eyelid", "likelihood")].to_numpy(float),
            )
            confidence = np.where(ok, lik, np.nan)
            rate = 1.0 / float(np.median(np.diff(times))) if times.size > 1 else float("nan")
            source = "NWB ndx-pose upper_eyelid-lower_eyelid distance"

        licks_if = _interface(module, "Licks", where, "BehavioralEvents Licks")
        lick_series = _series(licks_if, "licks", where, "processing/behavior/Licks")
        if lick_series.timestamps is None:
            raise SiteDataError(
                "licks without timestamps",
                field="processing/behavior/Licks/licks/timestamps",
                expected="lick times in s",
                **where,
            )
        licks = np.asarray(lick_series.timestamps[:], dtype=float).reshape(-1)
        if licks.size == 0:
            raise SiteDataError(
                "no licks in the lick log",
                field="processing/behavior/Licks/licks/timestamps",
                expected="at least one lick time",
                **where,
            )
        check_increasing(
            licks,
            strict=False,
            field="processing/behavior/Licks/licks/timestamps",
            what="lick times",
            **where,
        )

        if nwb.trials is None:
            raise SiteDataError(
                "no trials table",
                field="trials",
                expected="trials with start_time, stop_time, trial_type (puff | cue)",
                **where,
            )
        trials = nwb.trials
        if "trial_type" not in trials.colnames:
            raise SiteDataError(
                f"no trial_type column (found {list(trials.colnames)})",
                field="trials/trial_type",
                expected="trial_type puff or cue",
                **where,
            )
        start = np.asarray(trials["start_time"][:], dtype=float)
        stop = np.asarray(trials["stop_time"][:], dtype=float)
        kind = np.array([str(v).strip().lower() for v in trials["trial_type"][:]], dtype=object)
    finally:
        io.close()
    unknown = sorted(set(kind) - {"puff", "cue"})
    if unknown:
        raise SiteDataError(
            f"trial types {unknown[:3]}",
            field="trials/trial_type",
            expected="puff or cue",
            **where,
        )
    is_puff, is_cue = kind == "puff", kind == "cue"
    order = np.argsort(start[is_cue], kind="stable")
    return NwbSession(
        times_s=times,
        aperture_px=aperture,
        confidence=confidence,
        frame_rate_hz=rate,
        licks_s=licks,
        puffs_s=np.sort(start[is_puff]),
        cues_s=start[is_cue][order],
        water_s=stop[is_cue][order],
        source=source,
    )


def keypoint_distance(
    pose: pd.DataFrame,
    *,
    where: dict[str, Any],
    cutoff: float | None = None,
    upper: str = "upper_eyelid",
    lower: str = "lower_eyelid",
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean upper-lower eyelid distance per frame and whether the frame passed.

    A frame fails when a coordinate is missing or (with ``cutoff``) either likelihood is below
    it; a failed frame's distance is NaN. A missing keypoint column is an error.
    """
    have = set(pose.columns.get_level_values("bodyparts"))
    for bp in (upper, lower):
        for coord in ("x", "y") + (("likelihood",) if cutoff is not None else ()):
            if (bp, coord) not in pose.columns:
                raise SiteDataError(
                    f"no {bp} {coord} column (body parts: {sorted(have)})",
                    field=f"{bp}/{coord}",
                    expected=f"x, y, likelihood of {upper} and {lower}",
                    **where,
                )
    ux, uy = pose[(upper, "x")].to_numpy(float), pose[(upper, "y")].to_numpy(float)
    lx, ly = pose[(lower, "x")].to_numpy(float), pose[(lower, "y")].to_numpy(float)
    dist = np.hypot(ux - lx, uy - ly)
    ok = np.isfinite(dist)
    if cutoff is not None:
        lu = pose[(upper, "likelihood")].to_numpy(float)
        ll = pose[(lower, "likelihood")].to_numpy(float)
        with np.errstate(invalid="ignore"):
            ok &= (lu >= cutoff) & (ll >= cutoff)
    return np.where(ok, dist, np.nan), ok


# ------------------------------------------------------------------------------------ humans
def read_eyelid_csv(
    path: Path, *, site: str = "?", root: Path | None = None
) -> tuple[pd.DataFrame, float, float]:
    """Read a bedside eyelid CSV and its JSON sidecar.

    Returns the frame table (``frame``, ``aperture_px``, ``confidence``, ``time_s`` on the iEEG
    clock: StartTime + frame / SamplingFrequency), the frame rate and StartTime.
    """
    shown = _require_file(path, site=site, root=root, expected="frame, aperture_px, confidence")
    sidecar_path = path.with_suffix(".json")
    jshown = shown_path(sidecar_path, root)
    if sidecar_path.is_file():
        check_size(sidecar_path, "json", site=site, file=jshown)
    sidecar = read_json(sidecar_path, site=site, root=root)
    values = {}
    for name in ("SamplingFrequency", "StartTime"):
        raw = sidecar.get(name)
        try:
            values[name] = float(raw)  # type: ignore[arg-type]
            ok = np.isfinite(values[name])
        except (TypeError, ValueError):
            ok = False
        if not ok or (name == "SamplingFrequency" and values[name] <= 0):
            raise SiteDataError(
                f"{name} {excerpt(repr(raw))}",
                site=site,
                file=jshown,
                field=name,
                expected="a positive frame rate in Hz"
                if name == "SamplingFrequency"
                else "seconds of the first frame on the iEEG clock",
            )
    fps, start = values["SamplingFrequency"], values["StartTime"]
    where = {"site": site, "file": shown}
    out = _read_columns(path, ["frame", "aperture_px", "confidence"], where)
    if out.empty:
        raise SiteDataError("no frames", field="frame", expected="one row per video frame", **where)
    check_increasing(
        out["frame"].to_numpy(), strict=True, field="frame", what="frame numbers", **where
    )
    check_integers(out["frame"].to_numpy(), field="frame", first_line=2, **where)
    check_probability(
        out["confidence"].to_numpy(),
        field="confidence",
        what="confidence",
        first_line=2,
        **where,
    )
    negative = np.flatnonzero(out["aperture_px"].to_numpy() < 0)
    if negative.size:
        raise SiteDataError(
            f"aperture {out['aperture_px'].iloc[negative[0]]:g} px on line {int(negative[0]) + 2}",
            field="aperture_px",
            expected="a lid-to-lid distance >= 0 px (or n/a when the eye was lost)",
            **where,
        )
    out["time_s"] = start + out["frame"].to_numpy() / fps
    return out, fps, start
