"""Bad-input corpus, clinical: one-change copies of a synthetic site, harmonized as a job would.

Each case must end in one message naming the site, the file, the field and what was expected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from badinput import Consortium
from ketamap.errors import KetamapError


def _drop_column(path: Path, column: str) -> None:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    idx = rows[0].index(column)
    path.write_text(
        "\n".join("\t".join(c for i, c in enumerate(r) if i != idx) for r in rows) + "\n"
    )


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell; ``row`` counts data rows from 1 (the header is not a row)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    rows[row][rows[0].index(column)] = value
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")


def _set_column(path: Path, column: str, value: str) -> None:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    idx = rows[0].index(column)
    for r in rows[1:]:
        r[idx] = value
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _append_row(path: Path, *cells: str) -> None:
    path.write_text(path.read_text().rstrip("\n") + "\n" + "\t".join(cells) + "\n")


def _sparse(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)


def _link_outside(path: Path) -> None:
    outside = path.parents[2] / f"outside-{path.name}"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


RCT = "ycu_rct"  # randomised, MADRS in phenotype/madrs.tsv (column total), visits ses-pre/ses-post
HC = "keio_hc"  # HAM-D-17 in phenotype/hamd17.tsv (column hamd17_total), ages written as 56y
MICE = "lab_nwb_mice"  # age_weeks instead of age

# (case id, site, change(site folder), substrings the message must hold)
CASES: list[tuple[str, str, Callable[[Path], None], list[str]]] = [
    (
        "participants_without_sex",
        HC,
        lambda d: _drop_column(d / "participants.tsv", "sex"),
        ["site 'keio_hc'", "file 'participants.tsv'", "field 'sex'", "expected"],
    ),
    (
        "score_file_header_only",
        RCT,
        lambda d: _header_only(d / "phenotype" / "madrs.tsv"),
        ["site 'ycu_rct'", "file 'phenotype/madrs.tsv'", "field 'total'", "no rows", "expected"],
    ),
    (
        "every_score_na",
        HC,
        lambda d: _set_column(d / "phenotype" / "hamd17.tsv", "hamd17_total", "n/a"),
        ["site 'keio_hc'", "file 'phenotype/hamd17.tsv'", "field 'hamd17_total'", "expected"],
    ),
    (
        "age_400",
        RCT,
        lambda d: _set_cell(d / "participants.tsv", 3, "age", "400"),
        [
            "site 'ycu_rct'",
            "file 'participants.tsv'",
            "field 'age'",
            "'400' in row 3 ('sub-YCU003')",
            "expected an age of 0-120 years",
        ],
    ),
    (
        "age_150_years_with_unit",
        HC,
        lambda d: _set_cell(d / "participants.tsv", 2, "age", "150y"),
        ["site 'keio_hc'", "file 'participants.tsv'", "field 'age'", "row 2", "0-120"],
    ),
    (
        "mouse_age_weeks_10000",
        MICE,
        lambda d: _set_cell(d / "participants.tsv", 1, "age_weeks", "10000"),
        ["site 'lab_nwb_mice'", "file 'participants.tsv'", "field 'age_weeks'", "row 1", "0-120"],
    ),
    (
        "participants_over_size_limit",
        HC,
        lambda d: _sparse(d / "participants.tsv", 300_000_000),
        ["site 'keio_hc'", "file 'participants.tsv'", "field 'size'", "expected at most 256 MB"],
    ),
    (
        "participants_links_outside",
        RCT,
        lambda d: _link_outside(d / "participants.tsv"),
        ["site 'ycu_rct'", "file 'participants.tsv'", "field 'path'", "inside the site folder"],
    ),
    (
        "score_sidecar_links_outside",
        HC,
        lambda d: _link_outside(d / "phenotype" / "hamd17.json"),
        ["site 'keio_hc'", "file 'phenotype/hamd17.json'", "field 'path'", "expected a regular"],
    ),
    (
        "score_sidecar_over_size_limit",
        RCT,
        lambda d: _sparse(d / "phenotype" / "madrs.json", 2_000_000_000),
        ["site 'ycu_rct'", "file 'phenotype/madrs.json'", "field 'size'", "at most 16 MB"],
    ),
    (
        "madrs_score_99",
        RCT,
        lambda d: _set_cell(d / "phenotype" / "madrs.tsv", 5, "total", "99"),
        ["site 'ycu_rct'", "file 'phenotype/madrs.tsv'", "field 'total'", "integers 0-60"],
    ),
    (
        "scores_for_unknown_participant",
        HC,
        lambda d: _append_row(d / "phenotype" / "hamd17.tsv", "sub-K99", "ses-01", "5"),
        ["site 'keio_hc'", "file 'phenotype/hamd17.tsv'", "field 'participant_id'", "expected"],
    ),
    (
        "unmapped_score_session",
        RCT,
        lambda d: _set_cell(d / "phenotype" / "madrs.tsv", 2, "session_id", "ses-week6"),
        ["site 'ycu_rct'", "file 'phenotype/madrs.tsv'", "field 'session_id'", "expected one of"],
    ),
    (
        "duplicate_participant",
        HC,
        lambda d: _set_cell(d / "participants.tsv", 2, "participant_id", "sub-K01"),
        ["site 'keio_hc'", "file 'participants.tsv'", "field 'participant_id'", "expected"],
    ),
    (
        "unmappable_group",
        RCT,
        lambda d: _set_cell(d / "participants.tsv", 4, "group", "bipolar"),
        ["site 'ycu_rct'", "file 'participants.tsv'", "field 'group'", "expected one of"],
    ),
    (
        "score_sidecar_without_scale",
        HC,
        lambda d: _edit_json(
            d / "phenotype" / "hamd17.json", lambda j: j.pop("MeasurementToolMetadata")
        ),
        [
            "site 'keio_hc'",
            "file 'phenotype/hamd17.json'",
            "field 'MeasurementToolMetadata.Description'",
            "expected one of",
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_clinical_input_gets_one_clear_message(
    corpus: Consortium, tmp_path: Path, case
) -> None:
    _, site, change, needles = case
    raw = corpus.copy(site, tmp_path)
    change(raw)
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(site, raw)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    assert len(message) < 1000, message


def test_a_huge_value_gets_a_short_message(corpus: Consortium, tmp_path: Path) -> None:
    """A 2 MB cell (a runaway export) is quoted as a short excerpt, not whole."""
    raw = corpus.copy(HC, tmp_path)
    _set_cell(raw / "participants.tsv", 1, "age", "9" * 2_000_000 + "x")
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(HC, raw)
    message = str(err.value)
    assert "site 'keio_hc', file 'participants.tsv', field 'age'" in message
    assert "'99999" in message and "...'" in message
    assert len(message) < 500, len(message)


def test_a_score_sidecar_with_a_byte_order_mark_is_read(corpus: Consortium, tmp_path: Path) -> None:
    raw = corpus.copy(HC, tmp_path)
    sidecar = raw / "phenotype" / "hamd17.json"
    sidecar.write_bytes(b"\xef\xbb\xbf" + sidecar.read_bytes())
    tables = corpus.harmonize(HC, raw)
    reference = corpus.harmonize(HC, corpus.root / HC)
    for name in ("subjects", "clinical_scores"):
        assert tables[name].equals(reference[name]), name


def test_the_unchanged_corpus_sites_harmonize(corpus: Consortium, tmp_path: Path) -> None:
    """The corpus' baseline: every unchanged site harmonizes, so each case's failure is its change."""
    for site in [s["id"] for s in corpus.config["sites"]]:
        tables = corpus.harmonize(site, corpus.root / site)
        assert tables and all(len(t) for name, t in tables.items() if name == "subjects"), site
