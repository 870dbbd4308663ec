"""Reading BIDS-iEEG recordings: format sniffing, payload checks, sidecars, the MNE read.

The format is identified from the file's content, not its name: EDF starts with ``"0       "``,
a BrainVision header with ``"Brain Vision Data Exchange Header File"``. The signal payload is
checked against its header before MNE reads it, so an empty ``.eeg`` or a truncated EDF (seen in
real BIDS examples: valid headers, 0-2 samples of data) is a :class:`SiteDataError` naming the file
and the problem instead of an MNE traceback or a silently short recording.

Privacy: EDF headers can hold the patient's name, birth date, hospital code and the recording
device. None of it is read into anything ketamap keeps: ``raw.info['subject_info']`` and
``device_info`` are dropped right after reading, MNE runs with ``verbose='error'`` and nothing here
logs header text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mne
import pandas as pd

from ketamap.errors import SiteDataError
from ketamap.io import read_json, read_tsv, shown_path

EDF_MAGIC = b"0       "
BV_MAGIC = b"Brain Vision Data Exchange Header File"
BV_BYTES = {"INT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4, "IEEE_FLOAT_64": 8, "UINT_16": 2}
MIN_SECONDS = 0.5
SIDECAR_FIELDS = ["TaskName", "SamplingFrequency", "PowerLineFrequency"]


@dataclass
class Recording:
    """One BIDS recording: the MNE raw (privacy fields removed) and its sidecars."""

    raw: mne.io.BaseRaw
    sidecar: dict[str, Any]
    channels: pd.DataFrame
    events: pd.DataFrame
    shown: str
    fmt: str


def sniff_format(path: Path, *, site: str, root: Path | None = None) -> str:
    """``edf`` or ``brainvision`` from the first bytes; anything else is an error."""
    shown = shown_path(path, root)
    if not path.is_file():
        raise SiteDataError("file not found", site=site, file=shown, expected="an iEEG recording")
    with path.open("rb") as fh:
        head = fh.read(64)
    if not head:
        raise SiteDataError(
            "file is empty", site=site, file=shown, expected="an EDF or BrainVision header"
        )
    if head.startswith(EDF_MAGIC):
        return "edf"
    if head.lstrip(b"\xef\xbb\xbf").startswith(BV_MAGIC):
        return "brainvision"
    raise SiteDataError(
        f"unrecognised content (starts with {head[:12]!r})",
        site=site,
        file=shown,
        expected='an EDF file (header "0       ") or a BrainVision header (.vhdr)',
    )


def check_edf_payload(path: Path, *, site: str, root: Path | None = None) -> float:
    """Check an EDF's data records against its header; returns the duration in s."""
    shown = shown_path(path, root)
    where = {"site": site, "file": shown}
    size = path.stat().st_size
    with path.open("rb") as fh:
        fixed = fh.read(256)
        try:
            n_signals = int(fixed[252:256].decode("ascii").strip())
            header_bytes = int(fixed[184:192].decode("ascii").strip())
            n_records = int(fixed[236:244].decode("ascii").strip())
            record_s = float(fixed[244:252].decode("ascii").strip())
            fh.seek(256 + n_signals * 216)
            spr = [int(fh.read(8).decode("ascii").strip()) for _ in range(n_signals)]
        except (ValueError, UnicodeDecodeError):
            raise SiteDataError(
                "the EDF header is malformed (signal count, record count or samples per record)",
                expected="an EDF header as in the EDF specification",
                **where,
            ) from None
    record_bytes = 2 * sum(spr)
    data_bytes = size - header_bytes
    if data_bytes <= 0 or record_bytes == 0:
        raise SiteDataError(
            "the EDF holds a header but no data records",
            expected="signal data after the header",
            **where,
        )
    if n_records < 0:
        n_records = data_bytes // record_bytes
    if data_bytes < n_records * record_bytes:
        raise SiteDataError(
            f"the EDF is truncated: the header announces {n_records} records "
            f"({n_records * record_bytes} bytes) but {data_bytes} bytes follow the header",
            expected="the complete file",
            **where,
        )
    duration = n_records * record_s
    if duration < MIN_SECONDS:
        raise SiteDataError(
            f"the EDF holds only {duration:g} s of signal",
            expected=f"at least {MIN_SECONDS:g} s",
            **where,
        )
    return duration


def _vhdr_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def check_brainvision_payload(vhdr: Path, *, site: str, root: Path | None = None) -> float:
    """Check the ``.eeg`` named by a ``.vhdr`` against the header; returns the duration in s."""
    shown = shown_path(vhdr, root)
    where = {"site": site, "file": shown}
    fields = _vhdr_fields(vhdr.read_text(encoding="utf-8", errors="replace"))
    for key in ("DataFile", "NumberOfChannels", "SamplingInterval"):
        if key not in fields:
            raise SiteDataError(
                "missing header entry", field=key, expected="a complete BrainVision header", **where
            )
    if fields.get("DataFormat", "BINARY").upper() != "BINARY":
        raise SiteDataError(
            f"DataFormat {fields['DataFormat']}", field="DataFormat", expected="BINARY", **where
        )
    fmt = fields.get("BinaryFormat", "INT_16").upper()
    if fmt not in BV_BYTES:
        raise SiteDataError(
            f"BinaryFormat {fmt}",
            field="BinaryFormat",
            expected=f"one of {sorted(BV_BYTES)}",
            **where,
        )
    try:
        n_ch = int(fields["NumberOfChannels"])
        sfreq = 1e6 / float(fields["SamplingInterval"])
    except (ValueError, ZeroDivisionError):
        raise SiteDataError(
            "NumberOfChannels or SamplingInterval is not a number", expected="numbers", **where
        ) from None
    eeg = vhdr.parent / fields["DataFile"]
    eshown = shown_path(eeg, root)
    if not eeg.is_file():
        raise SiteDataError(
            "the signal file named by DataFile is missing",
            site=site,
            file=eshown,
            expected=f"the file next to {vhdr.name}",
        )
    size = eeg.stat().st_size
    frame = n_ch * BV_BYTES[fmt]
    if size == 0:
        raise SiteDataError(
            "the signal file is empty (0 bytes) behind a valid header",
            site=site,
            file=eshown,
            expected=f"{n_ch} channels x samples of {fmt}",
        )
    if size % frame:
        raise SiteDataError(
            f"the signal file is truncated: {size} bytes is not a whole number of {n_ch}-channel {fmt} samples",
            site=site,
            file=eshown,
            expected=f"a multiple of {frame} bytes",
        )
    n_samples = size // frame
    duration = n_samples / sfreq
    if duration < MIN_SECONDS:
        raise SiteDataError(
            f"the signal file holds only {n_samples} samples ({duration:.3g} s) behind a valid header",
            site=site,
            file=eshown,
            expected=f"at least {MIN_SECONDS:g} s of signal",
        )
    return duration


def read_raw(path: Path, *, site: str, root: Path | None = None) -> tuple[mne.io.BaseRaw, str]:
    """Sniff, check the payload and read with MNE (preloaded); privacy fields removed."""
    fmt = sniff_format(path, site=site, root=root)
    shown = shown_path(path, root)
    if fmt == "edf":
        check_edf_payload(path, site=site, root=root)
        reader: Any = mne.io.read_raw_edf
    else:
        check_brainvision_payload(path, site=site, root=root)
        reader = mne.io.read_raw_brainvision
    try:
        raw = reader(path, preload=True, verbose="error")
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise SiteDataError(
            f"MNE cannot read the recording ({type(exc).__name__})", site=site, file=shown
        ) from None
    scrub(raw)
    return raw, fmt


def scrub(raw: mne.io.BaseRaw) -> None:
    """Drop what identifies the patient or the hospital from ``raw.info``."""
    with raw.info._unlock():
        raw.info["subject_info"] = None
        raw.info["device_info"] = None
        raw.info["experimenter"] = None
        raw.info["description"] = None


def stem_of(path: Path, datatype: str) -> str:
    """The BIDS entity stem of a data file (``sub-x_ses-y_task-z_run-1``)."""
    name = path.name
    for suffix in (f"_{datatype}.edf", f"_{datatype}.vhdr", f"_{datatype}.EDF"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_recording(
    path: Path, *, site: str, root: Path | None = None, datatype: str = "ieeg"
) -> Recording:
    """Read one BIDS recording (``*_<datatype>.edf|.vhdr``) with its JSON, channels and events."""
    path = Path(path)
    stem = stem_of(path, datatype)
    base = path.parent / stem
    sidecar = read_json(path.parent / f"{stem}_{datatype}.json", site=site, root=root)
    jshown = shown_path(path.parent / f"{stem}_{datatype}.json", root)
    for key in SIDECAR_FIELDS:
        if key not in sidecar:
            raise SiteDataError(
                "missing required field",
                site=site,
                file=jshown,
                field=key,
                expected="a BIDS sidecar with " + ", ".join(SIDECAR_FIELDS),
            )
    channels = read_tsv(
        Path(f"{base}_channels.tsv"), site=site, root=root, required=["name", "type"]
    )
    events = read_tsv(
        Path(f"{base}_events.tsv"), site=site, root=root, required=["onset", "duration"]
    )
    raw, fmt = read_raw(path, site=site, root=root)
    return Recording(
        raw=raw,
        sidecar=sidecar,
        channels=channels,
        events=events,
        shown=shown_path(path, root),
        fmt=fmt,
    )


def read_bids(bids_path: Any, *, site: str) -> mne.io.BaseRaw:
    """Read through :func:`mne_bids.read_raw_bids` after the same content and payload checks."""
    import mne_bids

    fpath = Path(bids_path.fpath)
    root = Path(bids_path.root)
    fmt = sniff_format(fpath, site=site, root=root)
    if fmt == "edf":
        check_edf_payload(fpath, site=site, root=root)
    else:
        check_brainvision_payload(fpath, site=site, root=root)
    raw = mne_bids.read_raw_bids(bids_path, verbose="error")
    raw.load_data(verbose="error")
    scrub(raw)
    return raw
