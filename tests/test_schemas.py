from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from ketamap import schemas
from ketamap.errors import SchemaError


def _subjects(**overrides: object) -> pd.DataFrame:
    data = {
        "subject_id": ["KM000000000002", "KM000000000001"],
        "site": ["a", "a"],
        "trial": ["T", "T"],
        "species": ["human", "human"],
        "group": ["trd", "hc"],
        "arm": ["ketamine", None],
        "sex": ["female", None],
        "age_years": [34.0, float("nan")],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_every_table_field_is_declared_with_a_description() -> None:
    for table in schemas.load_tables().values():
        assert table.primary_key and set(table.primary_key) <= set(table.field_names)
        for column in table.columns:
            assert column.description.strip(), column.name


def test_write_is_sorted_validated_and_byte_identical(tmp_path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    schemas.write_table(_subjects(), "subjects", a)
    schemas.write_table(_subjects().iloc[::-1], "subjects", b)
    assert a.read_bytes() == b.read_bytes()
    meta = pq.read_schema(a).metadata
    assert meta[b"ketamap.table"] == b"subjects" and meta[b"ketamap.schema_version"] == b"2"
    assert pq.read_metadata(a).row_group(0).column(0).compression == "ZSTD"
    df = schemas.read_table(a, "subjects")
    assert df["subject_id"].tolist() == ["KM000000000001", "KM000000000002"]
    assert df["age_years"].isna().tolist() == [True, False]
    field = pq.read_schema(a).field("age_years")
    assert field.metadata[b"unit"] == b"years"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sex": ["female", "x"]}, r"field 'sex': values \['x'\] not allowed"),
        ({"subject_id": ["sub-01", "KM000000000001"]}, r"field 'subject_id'.*pattern"),
        ({"subject_id": ["KM000000000001", "KM000000000001"]}, r"duplicated primary keys"),
        ({"age_years": ["34", "30"]}, r"field 'age_years': values cannot be stored as float64"),
        ({"age_years": [150.0, 30.0]}, r"field 'age_years': maximum 150.0"),
        ({"group": ["trd", None]}, r"field 'group': 1 missing values"),
    ],
)
def test_invalid_tables_are_rejected(tmp_path, overrides, match) -> None:
    with pytest.raises(SchemaError, match=match):
        schemas.write_table(_subjects(**overrides), "subjects", tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind


def test_integer_columns_refuse_truncation(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "subject_id": ["KM000000000001"],
            "site": ["a"],
            "visit": ["baseline"],
            "scale": ["madrs"],
            "score_raw": [12.5],
            "madrs_equivalent": [12.5],
            "converted": [False],
        }
    )
    with pytest.raises(SchemaError, match=r"field 'score_raw'.*without loss"):
        schemas.write_table(df, "clinical_scores", tmp_path / "c.parquet")


def test_missing_and_extra_columns(tmp_path) -> None:
    with pytest.raises(SchemaError, match=r"missing \['age_years'\], unexpected \['age'\]"):
        schemas.write_table(
            _subjects().rename(columns={"age_years": "age"}), "subjects", tmp_path / "s.parquet"
        )


def test_read_checks_table_and_version(tmp_path) -> None:
    path = tmp_path / "s.parquet"
    schemas.write_table(_subjects(), "subjects", path)
    with pytest.raises(
        SchemaError, match=r"holds table 'subjects' version 2; expected table 'clinical_scores'"
    ):
        schemas.read_table(path, "clinical_scores")


def test_data_dictionary_is_current() -> None:
    from ketamap.datadict import render

    committed = (REPO / "docs" / "data_dictionary.md").read_text()
    assert committed == render(), "run `make docs` to regenerate docs/data_dictionary.md"
