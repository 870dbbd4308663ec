"""Bad-input corpus, iEEG: one-change copies of the corpus' iEEG sites (``site_a_ieeg``: EDF at
512 Hz; ``site_b_ieeg``: BrainVision at 500 Hz), harmonized as a job would.

Each case must end in one message naming the site, the file, the field and what was expected, and
never quote header bytes (the EDF patient field holds a canary name)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from badinput import Consortium
from ketamap.errors import KetamapError

EDF_SITE, BV_SITE = "site_a_ieeg", "site_b_ieeg"


def _first(d: Path, pattern: str) -> Path:
    """The first file of the site matching ``pattern`` (the first recording harmonized)."""
    return sorted(d.glob(f"sub-*/ses-*/ieeg/{pattern}"))[0]


def _edit_tsv(path: Path, change: Callable[[list[list[str]]], None]) -> None:
    text = path.read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()]
    change(rows)
    end = "\n" if text.endswith("\n") else ""
    path.write_text("\n".join("\t".join(r) for r in rows) + end, encoding="utf-8")


def _set_cell(pattern: str, row: int, column: str, value: Callable[[str], str]) -> Callable:
    """Set data row ``row`` (1-based) of ``column`` in the first ``pattern`` file."""

    def change(d: Path) -> None:
        def edit(rows: list[list[str]]) -> None:
            i = rows[0].index(column)
            rows[row][i] = value(rows[row][i])

        _edit_tsv(_first(d, pattern), edit)

    return change


def _all_onsets_ms(d: Path) -> None:
    def edit(rows: list[list[str]]) -> None:
        i = rows[0].index("onset")
        for r in rows[1:]:
            r[i] = f"{float(r[i]) * 1000:g}"

    _edit_tsv(_first(d, "*_events.tsv"), edit)


def _sidecar(key: str, value: object) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        path = _first(d, "*_ieeg.json")
        data = json.loads(path.read_text())
        if value is None:
            del data[key]
        else:
            data[key] = value(data[key]) if callable(value) else value
        path.write_text(json.dumps(data, indent=2))

    return change


def _drop_last_row(pattern: str) -> Callable[[Path], None]:
    return lambda d: _edit_tsv(_first(d, pattern), lambda rows: rows.pop())


def _add_channel(d: Path) -> None:
    _edit_tsv(
        _first(d, "*_channels.tsv"),
        lambda rows: rows.append(["ZZ9", "SEEG", *rows[1][2:]]),
    )


def _bytes(pattern: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        path = _first(d, pattern)
        path.write_bytes(change(path.read_bytes()))

    return edit


def _sparse(pattern: str, size: int) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        with _first(d, pattern).open("r+b") as fh:
            fh.truncate(size)  # sparse: no disk used, nothing to read

    return edit


def _delete(pattern: str) -> Callable[[Path], None]:
    return lambda d: _first(d, pattern).unlink()


EVENTS = "_events.tsv'"
# (case id, site, change(site folder), substrings the message must hold besides site/file/field;
# "!text": must not hold)
CASES: list[tuple[str, str, Callable[[Path], None], list[str]]] = [
    (
        "events_onsets_in_milliseconds",
        EDF_SITE,
        _all_onsets_ms,
        [
            EVENTS,
            "field 'onset'",
            "row 1:",
            "expected seconds within the recording's 0-79",
            "milliseconds",
        ],
    ),
    (
        "events_onsets_in_milliseconds_brainvision",
        BV_SITE,
        _all_onsets_ms,
        [EVENTS, "field 'onset'", "row 1:", "look like milliseconds"],
    ),
    (
        "events_onset_not_a_number",
        BV_SITE,
        _set_cell("*_events.tsv", 3, "onset", lambda v: "3,5"),
        [EVENTS, "field 'onset'", "row 3: onset '3,5' is not a number", "expected seconds"],
    ),
    (
        "events_onset_negative",
        EDF_SITE,
        _set_cell("*_events.tsv", 2, "onset", lambda v: "-" + v),
        [EVENTS, "field 'onset'", "row 2:", "outside the recording"],
    ),
    (
        "events_onset_past_the_end",
        EDF_SITE,
        _set_cell("*_events.tsv", 5, "onset", lambda v: "500"),
        [EVENTS, "field 'onset'", "row 5: onset 500 is outside", "0-79 s", "!milliseconds"],
    ),
    (
        "events_onset_disagrees_with_sample",
        BV_SITE,
        _set_cell("*_events.tsv", 4, "sample", lambda v: str(int(v) + 250)),
        [EVENTS, "field 'onset'", "row 4:", "agree with the sample column"],
    ),
    (
        "events_without_onset_column",
        EDF_SITE,
        _bytes("*_events.tsv", lambda b: b.replace(b"onset", b"time", 1)),
        [EVENTS, "field 'onset'", "expected columns"],
    ),
    (
        "sidecar_sampling_rate_disagrees_with_header",
        EDF_SITE,
        _sidecar("SamplingFrequency", 1024),
        ["_ieeg.json'", "field 'SamplingFrequency'", "disagrees with the recording's 512 Hz"],
    ),
    (
        "sidecar_duration_longer_than_the_signal",
        BV_SITE,
        _sidecar("RecordingDuration", lambda v: v + 30),
        ["_ieeg.json'", "field 'RecordingDuration'", "holds", "s of signal"],
    ),
    (
        "sidecar_seeg_count_disagrees_with_channels_tsv",
        EDF_SITE,
        _sidecar("SEEGChannelCount", lambda v: v + 1),
        ["_ieeg.json'", "field 'SEEGChannelCount'", "SEEGChannelCount 33 but", "expected 32"],
    ),
    (
        "sidecar_without_power_line_frequency",
        BV_SITE,
        _sidecar("PowerLineFrequency", None),
        ["_ieeg.json'", "field 'PowerLineFrequency'", "missing required field"],
    ),
    (
        "sidecar_power_line_55",
        EDF_SITE,
        _sidecar("PowerLineFrequency", 55),
        ["_ieeg.json'", "field 'PowerLineFrequency'", "expected 50 or 60"],
    ),
    (
        "channels_tsv_misses_a_recorded_channel",
        BV_SITE,
        _drop_last_row("*_channels.tsv"),
        ["_channels.tsv'", "field 'name'", "39 rows for a recording of 40 channels; not listed:"],
    ),
    (
        "channels_tsv_lists_a_channel_not_recorded",
        EDF_SITE,
        _add_channel,
        ["_channels.tsv'", "field 'name'", "['ZZ9'] are listed in channels.tsv but not in"],
    ),
    (
        "channels_tsv_unknown_status",
        BV_SITE,
        _set_cell("*_channels.tsv", 2, "status", lambda v: "broken"),
        ["_channels.tsv'", "field 'status'", "expected good or bad"],
    ),
    (
        "edf_cut_in_transfer",
        EDF_SITE,
        _bytes("*_ieeg.edf", lambda b: b[: len(b) // 2]),
        ["_ieeg.edf'", "field 'number of data records'", "expected the complete file"],
    ),
    (
        "edf_header_garbled_after_the_patient_field",
        EDF_SITE,
        _bytes("*_ieeg.edf", lambda b: b[:168] + b"\x00" * 88 + b[256:]),
        ["_ieeg.edf'", "field 'header'", "cannot read it as EDF"],
    ),
    (
        "edf_not_an_edf",
        EDF_SITE,
        _bytes("*_ieeg.edf", lambda b: b"<html><body>Not Found</body></html>"),
        ["_ieeg.edf'", "field 'header'", "cannot read it as EDF"],
    ),
    (
        "edf_oversized",
        EDF_SITE,
        _sparse("*_ieeg.edf", 9_000_000_000),
        ["_ieeg.edf'", "field 'size'", "above the 8192 MB limit for ieeg files"],
    ),
    (
        "brainvision_payload_oversized",
        BV_SITE,
        _sparse("*_ieeg.eeg", 9_000_000_000),
        ["_ieeg.vhdr (with ", "_ieeg.eeg, ", "field 'size'", "above the 8192 MB limit for ieeg"],
    ),
    (
        "brainvision_payload_partial_sample",
        BV_SITE,
        _bytes("*_ieeg.eeg", lambda b: b[:-3]),
        ["_ieeg.eeg'", "field 'size'", "truncated", "a multiple of 80 bytes"],
    ),
    (
        "brainvision_payload_empty",
        BV_SITE,
        _bytes("*_ieeg.eeg", lambda b: b""),
        ["_ieeg.eeg'", "field 'size'", "the file is empty (0 bytes)"],
    ),
    (
        "brainvision_payload_missing",
        BV_SITE,
        _delete("*_ieeg.eeg"),
        ["_ieeg.eeg'", "field 'file'", "a file the header names is missing"],
    ),
    (
        "brainvision_header_garbled",
        BV_SITE,
        _bytes("*_ieeg.vhdr", lambda b: b.replace(b"NumberOfChannels=40", b"NumberOfChannels=")),
        ["_ieeg.vhdr'", "field 'header'", "cannot read it as BrainVision"],
    ),
    (
        "electrodes_coordinate_not_a_number",
        EDF_SITE,
        _set_cell("*_electrodes.tsv", 1, "x", lambda v: "12,5"),
        ["_electrodes.tsv'", "field 'x'", "expected mm coordinates"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_ieeg_input_gets_one_clear_message(corpus: Consortium, tmp_path: Path, case) -> None:
    _, site, change, needles = case
    raw = corpus.copy(site, tmp_path)
    canaries = [
        line.split()[3]
        for p in raw.glob("sub-*/ses-*/ieeg/*_ieeg.edf")
        if (line := p.read_bytes()[8:88].decode("ascii")).strip()
    ]
    change(raw)
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(site, raw)
    message = str(err.value)
    for needle in [f"site '{site}'", "file '", "field '", "expected", *needles]:
        if needle.startswith("!"):
            assert needle[1:] not in message, message
        else:
            assert needle in message, message
    for canary in canaries:
        assert canary not in message, message


def test_other_brainvision_header_spelling_is_accepted(corpus: Consortium, tmp_path: Path) -> None:
    """``BrainVision Data Exchange Header File`` (no space), which MNE reads, gives the same
    tables as the file as written."""
    raw = corpus.copy(BV_SITE, tmp_path)
    for vhdr in raw.glob("sub-*/ses-*/ieeg/*_ieeg.vhdr"):
        vhdr.write_bytes(vhdr.read_bytes().replace(b"Brain Vision Data", b"BrainVision Data", 1))
    got = corpus.harmonize(BV_SITE, raw)
    expected = corpus.harmonize(BV_SITE, corpus.root / BV_SITE)
    for name, table in expected.items():
        assert got[name].equals(table), name
