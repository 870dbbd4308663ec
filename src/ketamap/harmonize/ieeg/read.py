"""Reading BIDS-iEEG recordings: format dispatch, size and payload checks, sidecars, the MNE read.

Formats (:data:`FORMATS`): the BIDS file extension picks the MNE reader and MNE's own parser opens
the file, so every header spelling MNE accepts is accepted here (BrainVision ``Brain Vision`` /
``BrainVision`` / ``Brain Vision Core``, Version 1.0 or 2.0; EDF and EDF+; BDF; Persyst ``.lay`` +
``.dat``; Nihon Kohden ``.eeg`` + ``.21e``/``.pnt``/``.log``; FIF; EEGLAB ``.set``). No hand-written
format sniffing: MNE's readers are maintained against real files from many vendors, ours was not.
A ``*_ieeg.eeg`` beside a ``*_ieeg.vhdr`` of the same stem is the BrainVision payload, not a Nihon
Kohden recording.

Before a byte is read, all files of the recording together are checked against the ``ieeg`` size
limit (:func:`ketamap.limits.check_size`) and each is checked to be non-empty. The recording is
then opened lazily (``preload=False``: headers only), the files MNE will read are size-checked
again (a BrainVision ``DataFile`` may name another file), and the payload is checked against the
header (truncated EDF/BDF, a partial sample frame, fewer bytes than the header announces, less than
:data:`MIN_SECONDS` of signal) before the data are loaded. Every library exception becomes one
:class:`SiteDataError` naming the site, the file, the field and what was expected. MNE's messages
are not quoted (some quote header text); the hint says how to see them.

Privacy: headers can hold the patient's name, birth date, hospital id, the recording device's
serial number, the experimenter and free-text annotations. :func:`scrub` drops them right after
reading: ``subject_info``, ``device_info``, ``experimenter`` and ``description`` are cleared,
annotations (free text typed during the recording) are removed and MNE's own
:meth:`~mne.io.Raw.anonymize` clears the rest it knows of (project, helium/device serials, file
ids, the measurement date). MNE's warnings are captured, never shown, and logged only as a short
excerpt; no message here quotes header bytes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ketamap.errors import SiteDataError
from ketamap.io import read_json, read_tsv, shown_path
from ketamap.limits import check_size, excerpt

if TYPE_CHECKING:  # MNE is imported where a recording is opened (the gather opens none)
    import mne

log = logging.getLogger(__name__)

MIN_SECONDS = 0.5
SIDECAR_FIELDS = ["TaskName", "SamplingFrequency", "PowerLineFrequency"]
# How far a sidecar's RecordingDuration may differ from the recording (BIDS writes it in seconds,
# often rounded to whole seconds); a larger gap means a cut or padded data file.
DURATION_TOLERANCE_S = 1.0
# MNE warns and reads what is there when an EDF/BDF holds fewer records than its header announces.
TRUNCATION_WARNINGS = ("does not match the file size",)


@dataclass(frozen=True)
class Format:
    """One recording format: its name in messages, the MNE reader and its companion files."""

    name: str  # short id (qc, Recording.fmt)
    label: str  # as messages show it
    reader: str  # the mne.io function that opens it
    companions: tuple[str, ...] = ()  # extensions of the files beside it with the same stem


FORMATS: dict[str, Format] = {
    ".edf": Format("edf", "EDF/EDF+", "read_raw_edf"),
    ".bdf": Format("bdf", "BDF", "read_raw_bdf"),
    ".vhdr": Format("brainvision", "BrainVision", "read_raw_brainvision", (".eeg", ".vmrk")),
    ".lay": Format("persyst", "Persyst", "read_raw_persyst", (".dat",)),
    ".eeg": Format("nihon", "Nihon Kohden", "read_raw_nihon", (".21e", ".pnt", ".log")),
    ".fif": Format("fif", "FIF", "read_raw_fif"),
    ".set": Format("eeglab", "EEGLAB", "read_raw_eeglab", (".fdt",)),
}
# Sample sizes of the raw binary payloads MNE reads without a per-record header: BrainVision (its
# ``fmt`` names, as in mne.io.brainvision) and Persyst (a numpy dtype in ``_raw_extras``).
BV_SAMPLE_BYTES = {"short": 2, "int": 4, "single": 4, "double": 8}


def recording_patterns(datatype: str = "ieeg") -> tuple[str, ...]:
    """Glob patterns of the recording (header) files of every accepted format."""
    return tuple(f"*_{datatype}{e}" for ext in FORMATS for e in dict.fromkeys((ext, ext.upper())))


def is_recording(path: Path) -> bool:
    """True for a recording's entry file; False for a BrainVision ``.eeg`` payload beside its
    ``.vhdr`` (the same extension as a Nihon Kohden recording)."""
    if path.suffix.lower() not in FORMATS:
        return False
    if path.suffix.lower() == ".eeg":
        return not any(path.with_suffix(s).exists() for s in (".vhdr", ".VHDR"))
    return True


@dataclass
class Recording:
    """One BIDS recording: the MNE raw (privacy fields removed) and its sidecars."""

    raw: mne.io.BaseRaw
    sidecar: dict[str, Any]
    channels: pd.DataFrame
    events: pd.DataFrame
    shown: str
    fmt: str
    rates: dict[str, float] | None = None  # per channel, Hz, where the format allows several


def channel_rates(raw: mne.io.BaseRaw, fmt: str) -> dict[str, float] | None:
    """Each channel's own sampling rate in an EDF/BDF, where signals may differ (MNE upsamples
    the slower ones to the fastest, which the header's rate then hides); None for other formats."""
    if fmt not in ("edf", "bdf") or not raw._raw_extras:
        return None
    extras = raw._raw_extras[0]
    n_samps = np.asarray(extras["n_samps"], dtype=float)[np.asarray(extras["sel"])]
    record_s = float(np.asarray(extras["record_length"]).ravel()[0])
    return dict(zip(raw.ch_names, n_samps / record_s, strict=True))


def format_of(path: Path, *, site: str, root: Path | None = None) -> Format:
    """The :class:`Format` of a recording, from its BIDS file extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SiteDataError(
            f"the extension {excerpt(path.suffix, 12)} is not an iEEG recording format",
            site=site,
            file=shown_path(path, root),
            field="extension",
            expected="one of " + ", ".join(FORMATS),
        )
    return fmt


def _companions(path: Path, fmt: Format) -> list[Path]:
    out = [path]
    for ext in fmt.companions:
        for e in dict.fromkeys((ext, ext.upper())):
            if path.with_suffix(e).is_file():
                out.append(path.with_suffix(e))
    return out


def _check_files(
    files: list[Path], shown: str, fmt: Format, *, site: str, root: Path | None
) -> None:
    """Every file of the recording: the size limit (together), then none of them empty."""
    others = ", ".join(f.name for f in files[1:])
    check_size(files, "ieeg", site=site, file=f"{shown} (with {others})" if others else shown)
    for f in files:
        if f.is_file() and f.stat().st_size == 0:
            raise SiteDataError(
                "the file is empty (0 bytes)",
                site=site,
                file=shown_path(f, root),
                field="size",
                expected=f"a {fmt.label} file with its header and signal",
            )


@contextmanager
def _mne_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """MNE's warnings while reading, as a list: recorded, never printed. MNE also sends a warning
    to its logger's handlers in some setups (a log file, a test runner), where header-derived text
    must not go; a filter on its logger drops those records for the duration."""
    mne_logger = logging.getLogger("mne")
    drop = logging.Filter("mne.never")  # passes only records of a logger that does not exist
    mne_logger.addFilter(drop)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        mne_logger.removeFilter(drop)


def open_raw(path: Path, *, site: str, root: Path | None = None) -> tuple[mne.io.BaseRaw, Format]:
    """Check sizes, open the recording lazily with MNE (headers only) and check the payload
    against the header. Returns the unloaded raw (not yet scrubbed) and its format."""
    path = Path(path)
    shown = shown_path(path, root)
    where = {"site": site, "file": shown}
    if not path.is_file():
        raise SiteDataError("file not found", expected="an iEEG recording", **where)
    fmt = format_of(path, site=site, root=root)
    files = _companions(path, fmt)
    _check_files(files, shown, fmt, site=site, root=root)
    import mne

    reader = getattr(mne.io, fmt.reader)
    with _mne_warnings() as caught:
        try:
            raw = reader(path, preload=False, verbose="warning")
        except ImportError as exc:
            raise SiteDataError(
                f"reading {fmt.label} needs the Python package {exc.name or 'that MNE names'}",
                field="format",
                expected="a format this installation reads (EDF, BDF, BrainVision, Persyst, "
                "Nihon Kohden, FIF)",
                **where,
            ) from None
        # Any exception: MNE's parsers raise ValueError, RuntimeError, OSError, KeyError,
        # IndexError, UnicodeDecodeError, struct.error... on malformed bytes; each is this one
        # error, without MNE's text (it can quote header fields).
        except Exception as exc:
            missing = getattr(exc, "filename", None)
            if isinstance(exc, FileNotFoundError) and missing:
                raise SiteDataError(
                    "a file the header names is missing",
                    site=site,
                    file=shown_path(Path(missing), root),
                    field="file",
                    expected=f"every file of the {fmt.label} recording next to {path.name}",
                ) from None
            raise SiteDataError(
                f"MNE cannot read it as {fmt.label} ({type(exc).__name__})",
                field="header",
                expected=f"a valid {fmt.label} recording (mne.io.{fmt.reader} reads it)",
                hint=f"open it with mne.io.{fmt.reader} to see MNE's own message",
                **where,
            ) from None
    data_files = [Path(f) for f in raw.filenames if f is not None]
    if any(f not in files for f in data_files):  # e.g. a DataFile named differently
        files = files + [f for f in data_files if f not in files]
        _check_files(files, shown, fmt, site=site, root=root)
    texts = [str(w.message) for w in caught]
    for text in texts:
        if any(t in text for t in TRUNCATION_WARNINGS):
            raise SiteDataError(
                f"the {fmt.label} file's size does not match the number of data records its "
                "header announces (a truncated or cut file)",
                field="number of data records",
                expected="the complete file",
                **where,
            )
    for text in texts:
        log.info("MNE warned while reading a %s recording: %s", fmt.label, excerpt(text, 120))
    _check_payload(raw, fmt, site=site, root=root, shown=shown)
    return raw, fmt


def _check_payload(
    raw: mne.io.BaseRaw, fmt: Format, *, site: str, root: Path | None, shown: str
) -> None:
    """A raw binary payload is a whole number of sample frames and as long as the header says;
    the recording holds at least :data:`MIN_SECONDS` of signal."""
    extras = raw._raw_extras[0] if raw._raw_extras else {}
    data_file = Path(raw.filenames[0]) if raw.filenames and raw.filenames[0] else None
    dshown = shown_path(data_file, root) if data_file is not None else shown
    itemsize = None
    if fmt.name == "brainvision" and extras.get("offsets") is None:
        itemsize = BV_SAMPLE_BYTES.get(str(extras.get("fmt")))
        n_ch = int(extras.get("orig_nchan", len(raw.ch_names)))
    elif fmt.name == "persyst":
        itemsize = np.dtype(extras["dtype"]).itemsize
        n_ch = int(extras["n_chs"])
    if itemsize is not None and data_file is not None:
        size = data_file.stat().st_size
        frame = itemsize * n_ch
        if size % frame:
            raise SiteDataError(
                f"the signal file is truncated: {size} bytes is not a whole number of "
                f"{n_ch}-channel samples of {itemsize} bytes",
                site=site,
                file=dshown,
                field="size",
                expected=f"a multiple of {frame} bytes",
            )
        if size < raw.n_times * frame:
            raise SiteDataError(
                f"the signal file is truncated: {size // frame} samples where the header "
                f"announces {raw.n_times}",
                site=site,
                file=dshown,
                field="size",
                expected=f"{raw.n_times * frame} bytes",
            )
    seconds = raw.n_times / float(raw.info["sfreq"])
    if seconds < MIN_SECONDS:
        raise SiteDataError(
            f"the recording holds only {raw.n_times} samples ({seconds:.3g} s) of signal",
            site=site,
            file=dshown,
            field="n_times",
            expected=f"at least {MIN_SECONDS:g} s of signal",
        )


def read_raw(path: Path, *, site: str, root: Path | None = None) -> tuple[mne.io.BaseRaw, str]:
    """Check, read with MNE (preloaded) and scrub; returns the raw and the format id."""
    raw, fmt = open_raw(path, site=site, root=root)
    try:
        raw.load_data(verbose="error")
    # Any exception of MNE's data reader, as in open_raw.
    except Exception as exc:
        raise SiteDataError(
            f"MNE cannot read the signal of this {fmt.label} recording ({type(exc).__name__})",
            site=site,
            file=shown_path(Path(path), root),
            field="data",
            expected=f"signal data as the {fmt.label} header describes",
            hint=f"open it with mne.io.{fmt.reader} to see MNE's own message",
        ) from None
    scrub(raw)
    return raw, fmt.name


def scrub(raw: mne.io.BaseRaw) -> None:
    """Drop what identifies the patient, the staff, the hospital or the device from ``raw``."""
    raw.set_annotations(None)
    with raw.info._unlock():
        raw.info["subject_info"] = None
        raw.info["device_info"] = None
        raw.info["experimenter"] = None
        raw.info["description"] = None
    raw.anonymize(daysback=None, keep_his=False, verbose="error")
    with raw.info._unlock():
        raw.info["subject_info"] = None  # anonymize leaves a placeholder record


def stem_of(path: Path, datatype: str) -> str:
    """The BIDS entity stem of a data file (``sub-x_ses-y_task-z_run-1``)."""
    name = path.name
    suffix = f"_{datatype}{path.suffix}"
    if name.endswith(suffix):
        return name[: -len(suffix)]
    return path.stem


def read_recording(
    path: Path, *, site: str, root: Path | None = None, datatype: str = "ieeg"
) -> Recording:
    """Read one BIDS recording (``*_<datatype>.<ext>``, :data:`FORMATS`) with its JSON sidecar,
    ``_channels.tsv`` and ``_events.tsv``; each file's size is checked before it is read."""
    path = Path(path)
    stem = stem_of(path, datatype)
    base = path.parent / stem
    json_path = path.parent / f"{stem}_{datatype}.json"
    jshown = shown_path(json_path, root)
    check_size(json_path, "json", site=site, file=jshown)
    sidecar = read_json(json_path, site=site, root=root)
    for key in SIDECAR_FIELDS:
        if key not in sidecar:
            raise SiteDataError(
                "missing required field",
                site=site,
                file=jshown,
                field=key,
                expected="a BIDS sidecar with " + ", ".join(SIDECAR_FIELDS),
            )
    ch_path, ev_path = Path(f"{base}_channels.tsv"), Path(f"{base}_events.tsv")
    for p in (ch_path, ev_path):
        check_size(p, "tsv", site=site, file=shown_path(p, root))
    channels = read_tsv(ch_path, site=site, root=root, required=["name", "type"])
    events = read_tsv(ev_path, site=site, root=root, required=["onset", "duration"])
    raw, fmt = read_raw(path, site=site, root=root)
    return Recording(
        raw=raw,
        sidecar=sidecar,
        channels=channels,
        events=events,
        shown=shown_path(path, root),
        fmt=fmt,
        rates=channel_rates(raw, fmt),
    )


def read_bids(bids_path: Any, *, site: str) -> mne.io.BaseRaw:
    """Read through :func:`mne_bids.read_raw_bids` after the same size and payload checks."""
    import mne_bids

    fpath = Path(bids_path.fpath)
    open_raw(fpath, site=site, root=Path(bids_path.root))
    raw = mne_bids.read_raw_bids(bids_path, verbose="error")
    raw.load_data(verbose="error")
    scrub(raw)
    return raw
