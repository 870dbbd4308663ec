from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import DEMO_KEY, make_site, site_entry, write_tsv
from ketamap import scales
from ketamap.errors import SiteDataError
from ketamap.harmonize.clinical import harmonize_site
from ketamap.ids import pseudonymize


def test_harmonize_maps_the_mess_to_the_shared_vocabulary(site_dir) -> None:
    tables = harmonize_site(site_entry(), site_dir, DEMO_KEY)
    s = tables.subjects.set_index("subject_id")
    ids = dict(
        zip(
            [f"sub-0{i}" for i in range(1, 7)],
            pseudonymize("test_site", [f"sub-0{i}" for i in range(1, 7)], DEMO_KEY),
            strict=True,
        )
    )
    assert s.loc[ids["sub-01"], "sex"] == "female" and s.loc[ids["sub-02"], "sex"] == "male"
    assert s.loc[ids["sub-03"], "sex"] == "female"  # numeric code 2 via sex_codes
    assert pd.isna(s.loc[ids["sub-06"], "sex"])
    assert s.loc[ids["sub-02"], "age_years"] == 41 and s.loc[ids["sub-04"], "age_years"] == 52.5
    assert np.isnan(s.loc[ids["sub-03"], "age_years"])
    assert s.loc[ids["sub-02"], "group"] == "trd" and s.loc[ids["sub-06"], "group"] == "hc"
    assert s.loc[ids["sub-02"], "arm"] == "ketamine" and s.loc[ids["sub-04"], "arm"] == "placebo"
    assert pd.isna(s.loc[ids["sub-05"], "arm"])
    scores = tables.clinical_scores
    assert len(scores) == 10 and set(scores["visit"]) == {"baseline", "post"}
    assert not scores["converted"].any()
    assert scores["score_raw"].isna().sum() == 1  # the n/a post score is kept as missing


def test_site_ids_never_reach_the_tables(site_dir) -> None:
    tables = harmonize_site(site_entry(), site_dir, DEMO_KEY)
    text = tables.subjects.to_csv() + tables.clinical_scores.to_csv()
    assert "sub-0" not in text
    assert tables.subjects["subject_id"].str.fullmatch(r"KM[0-9A-F]{12}").all()


def test_pseudonyms_are_stable_and_keyed() -> None:
    assert pseudonymize("a", ["sub-1"], b"k") == pseudonymize("a", ["sub-1"], b"k")
    assert pseudonymize("a", ["sub-1"], b"k") != pseudonymize("a", ["sub-1"], b"other")
    assert pseudonymize("a", ["sub-1"], b"k") != pseudonymize("b", ["sub-1"], b"k")


def test_hamd_scores_are_converted_and_flagged(tmp_path) -> None:
    root = make_site(tmp_path / "s", scale="HAM-D-17")
    scores = harmonize_site(site_entry(), root, DEMO_KEY).clinical_scores
    assert scores["scale"].eq("hamd17").all() and scores["converted"].all()
    row = scores[scores["score_raw"] == 30].iloc[0]
    assert row["madrs_equivalent"] == pytest.approx(39.0)


def test_leucht_anchor_points_and_monotonicity() -> None:
    np.testing.assert_allclose(
        scales.to_madrs(np.array([10, 20, 30, 40]), "hamd17"), [13, 26, 39, 52]
    )
    grid = np.arange(0, 53)
    converted = scales.to_madrs(grid, "hamd17")
    assert np.all(np.diff(converted) >= 0) and converted.max() <= 60
    np.testing.assert_allclose(
        scales.from_madrs(scales.to_madrs(np.arange(0, 46), "hamd17"), "hamd17"),
        np.arange(0, 46),
        atol=1e-9,
    )
    assert scales.identify_scale("Montgomery-Asberg Depression Rating Scale") == "madrs"
    assert scales.identify_scale("HAMD 17") == "hamd17"
    assert scales.identify_scale("BDI-II") is None


def _break(root, rel, rows, newline=True):
    write_tsv(root / rel, rows, newline=newline)


def test_missing_required_column(site_dir) -> None:
    _break(
        site_dir, "participants.tsv", [["participant_id", "age", "group"], ["sub-01", "30", "TRD"]]
    )
    with pytest.raises(
        SiteDataError,
        match=r"site 'test_site', file 'participants.tsv', field 'sex': missing required column",
    ):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


def test_duplicate_subject_ids(site_dir) -> None:
    _break(
        site_dir,
        "participants.tsv",
        [
            ["participant_id", "age", "sex", "group"],
            ["sub-01", "30", "F", "TRD"],
            ["sub-01", "31", "F", "TRD"],
        ],
    )
    with pytest.raises(
        SiteDataError,
        match=r"file 'participants.tsv', field 'participant_id': duplicate subject ids \['sub-01'\]",
    ):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


def test_unknown_scale(site_dir) -> None:
    (site_dir / "phenotype" / "scores.json").write_text(
        json.dumps({"MeasurementToolMetadata": {"Description": "BDI-II"}})
    )
    with pytest.raises(
        SiteDataError,
        match=r"file 'phenotype/scores.json', field 'MeasurementToolMetadata.Description': unknown scale 'BDI-II'",
    ):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [["participant_id", "age", "sex", "group"], ["sub-01", "thirty", "F", "TRD"]],
            r"field 'age': ages \['thirty'\] cannot be read",
        ),
        (
            [["participant_id", "age", "sex", "group"], ["sub-01", "30", "3", "TRD"]],
            r"field 'sex': values \['3'\] cannot be mapped",
        ),
        (
            [["participant_id", "age", "sex", "group"], ["sub-01", "30", "F", "bipolar"]],
            r"field 'group': values \['bipolar'\]",
        ),
        (
            [["participant_id", "age", "sex", "group"], ["01", "30", "F", "TRD"]],
            r"field 'participant_id'.*not BIDS participant labels",
        ),
    ],
)
def test_unreadable_participant_values(site_dir, rows, match) -> None:
    _break(site_dir, "participants.tsv", rows)
    with pytest.raises(SiteDataError, match=match):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [["participant_id", "session_id", "total"], ["sub-01", "ses-pre", "61"]],
            r"field 'total': scores \[61\] are not valid madrs totals",
        ),
        (
            [["participant_id", "session_id", "total"], ["sub-01", "ses-pre", "ten"]],
            r"field 'total': non-numeric scores \['ten'\]",
        ),
        (
            [["participant_id", "session_id", "total"], ["sub-01", "ses-week4", "10"]],
            r"field 'session_id': sessions \['ses-week4'\] are not mapped",
        ),
        (
            [["participant_id", "session_id", "total"], ["sub-99", "ses-pre", "10"]],
            r"participants not in participants.tsv: \['sub-99'\]",
        ),
        (
            [
                ["participant_id", "session_id", "total"],
                ["sub-01", "ses-pre", "10"],
                ["sub-01", "ses-pre", "11"],
            ],
            r"has 2 scores for visit 'baseline'",
        ),
        (
            [["participant_id", "session_id", "score"], ["sub-01", "ses-pre", "10"]],
            r"field 'total': missing required column",
        ),
    ],
)
def test_unreadable_scores(site_dir, rows, match) -> None:
    _break(site_dir, "phenotype/scores.tsv", rows)
    with pytest.raises(SiteDataError, match=match):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


def test_scored_session_must_exist(site_dir) -> None:
    _break(site_dir, "sub-01/sub-01_sessions.tsv", [["session_id"], ["ses-pre"]])
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/sub-01_sessions.tsv', field 'session_id': scored sessions \['ses-post'\] are not listed",
    ):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


def test_missing_final_newline_and_empty_file(site_dir) -> None:
    _break(
        site_dir,
        "participants.tsv",
        [["participant_id", "age", "sex", "group"], ["sub-01", "30", "F", "TRD"]],
        newline=False,
    )
    _break(
        site_dir,
        "phenotype/scores.tsv",
        [["participant_id", "session_id", "total"], ["sub-01", "ses-pre", "10"]],
        newline=False,
    )
    tables = harmonize_site(site_entry(), site_dir, DEMO_KEY)
    assert len(tables.subjects) == 1 and tables.clinical_scores["score_raw"].tolist() == [10]
    (site_dir / "participants.tsv").write_text("")
    with pytest.raises(SiteDataError, match=r"file 'participants.tsv': file is empty"):
        harmonize_site(site_entry(), site_dir, DEMO_KEY)


def test_mouse_participants_age_in_weeks_and_naive_group(tmp_path) -> None:

    (tmp_path / "participants.tsv").write_text(
        "participant_id\tspecies\tstrain\tsex\tage_weeks\tgroup\n"
        "sub-m001\tMus musculus\tC57BL/6J\tM\t12\tnaive\n"
        "sub-m002\tMus musculus\tC57BL/6J\tF\tn/a\twildtype\n"
    )
    site = {"id": "lab_a", "trial": "mouse-puff", "species": "mouse", "modality": "behaviour"}
    tables = harmonize_site(site, tmp_path, b"k")
    subjects = tables.subjects.set_index("sex")
    assert list(tables.subjects["group"]) == ["naive", "naive"]
    assert subjects.loc["male", "age_years"] == pytest.approx(12 * 7 / 365.25)
    assert np.isnan(subjects.loc["female", "age_years"])
    assert tables.clinical_scores.empty
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tsex\tage_weeks\tgroup\nsub-m001\tM\ttwelve\tnaive\n"
    )
    with pytest.raises(SiteDataError, match="age_weeks"):
        harmonize_site(site, tmp_path, b"k")
