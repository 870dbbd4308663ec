"""The shared schemas: columns and tables declared once, rendered to pyarrow, validated, written.

``schemas/columns.yaml`` declares every column (type, unit, description, allowed values, bounds)
and ``schemas/tables.yaml`` every table (fields, primary key, version). This module is the only
place that turns them into pyarrow schemas, and :func:`write_table` the only way a table reaches
disk: validated, sorted by primary key, zstd-compressed, the schema version in the file metadata,
and written atomically so a failed run never leaves a partial table.

Validation is done here on pyarrow arrays rather than with pandera: the checks are few (types,
nulls, allowed values, bounds, patterns, key uniqueness), they must run on the exact arrays that
are written, and doing them with ``pyarrow.compute`` keeps them vectorised with no extra
dependency tree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ketamap import integrity, yamlio
from ketamap.errors import SchemaError
from ketamap.paths import schema_dir

# Contract files this module reads (ketamap.codedeps adds them to the code input of the rules using it).
CONTRACTS = ("columns.yaml", "tables.yaml")

_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
}

METADATA_TABLE = b"ketamap.table"
METADATA_VERSION = b"ketamap.schema_version"


@dataclass(frozen=True)
class Column:
    """One column as declared in ``schemas/columns.yaml``."""

    name: str
    type: str
    description: str
    unit: str = ""
    nullable: bool = False
    enum: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    min: float | None = None
    max: float | None = None
    pattern: str | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.type]

    def arrow_field(self) -> pa.Field:
        meta = {"description": self.description}
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.arrow_type, nullable=self.nullable, metadata=meta)


@dataclass(frozen=True)
class Table:
    """One table as declared in ``schemas/tables.yaml``."""

    name: str
    version: int
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def field_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [c.arrow_field() for c in self.columns],
            metadata={
                METADATA_TABLE: self.name.encode(),
                METADATA_VERSION: str(self.version).encode(),
            },
        )


@functools.cache
def load_columns(directory: Path | None = None) -> dict[str, Column]:
    """Read every column declaration."""
    path = (directory or schema_dir()) / "columns.yaml"
    raw = yamlio.safe_load(path.read_text())["columns"]
    columns = {}
    for name, spec in raw.items():
        if spec["type"] not in _TYPES:
            raise SchemaError(
                f"unknown type {spec['type']!r}",
                file=path,
                field=name,
                expected=f"one of {sorted(_TYPES)}",
            )
        enum = spec.get("enum")
        aliases = {str(k).lower(): v for k, v in (spec.get("aliases") or {}).items()}
        columns[name] = Column(
            name=name,
            type=spec["type"],
            description=" ".join(str(spec["description"]).split()),
            unit=spec.get("unit", ""),
            nullable=bool(spec.get("nullable", False)),
            enum=tuple(enum) if enum else None,
            aliases=aliases,
            min=spec.get("min"),
            max=spec.get("max"),
            pattern=spec.get("pattern"),
        )
    return columns


@functools.cache
def load_tables(directory: Path | None = None) -> dict[str, Table]:
    """Read every table declaration, resolving its fields against the columns."""
    directory = directory or schema_dir()
    columns = load_columns(directory)
    path = directory / "tables.yaml"
    raw = yamlio.safe_load(path.read_text())["tables"]
    tables = {}
    for name, spec in raw.items():
        missing = [f for f in spec["fields"] if f not in columns]
        if missing:
            raise SchemaError(
                f"table {name!r} uses undeclared columns {missing}",
                file=path,
                field=f"tables.{name}.fields",
                expected="every field declared in schemas/columns.yaml",
            )
        # A table may allow missing values in a column that is required elsewhere (the strata of
        # pooled results: a row about no species has no species).
        optional = set(spec.get("nullable", []))
        unknown = sorted(optional - set(spec["fields"]))
        if unknown:
            raise SchemaError(
                f"table {name!r} makes columns {unknown} nullable but does not list them",
                file=path,
                field=f"tables.{name}.nullable",
                expected="a subset of the table's fields",
            )
        tables[name] = Table(
            name=name,
            version=int(spec["version"]),
            description=" ".join(str(spec["description"]).split()),
            columns=tuple(
                dataclasses.replace(columns[f], nullable=True) if f in optional else columns[f]
                for f in spec["fields"]
            ),
            primary_key=tuple(spec["primary_key"]),
        )
    return tables


def get_table(name: str) -> Table:
    """Return the declared table ``name``."""
    tables = load_tables()
    if name not in tables:
        raise SchemaError(
            f"no table {name!r} is declared",
            file="schemas/tables.yaml",
            expected=f"one of {sorted(tables)}",
        )
    return tables[name]


def normalize_values(values: pd.Series, column: str) -> pd.Series:
    """Map site spellings of a categorical value to the allowed value; unknown spellings stay as they are.

    The caller decides what an unmapped value means (usually an error naming the site and file).
    """
    col = load_columns()[column]
    lowered = values.astype("string").str.strip().str.lower()
    return lowered.map(lambda v: col.aliases.get(v, v) if isinstance(v, str) else v).astype(
        "object"
    )


def to_arrow(df: pd.DataFrame, table: str | Table) -> pa.Table:
    """Render a data frame into the declared table, validating every column; never coerces silently."""
    spec = get_table(table) if isinstance(table, str) else table
    present = list(df.columns)
    missing = [c for c in spec.field_names if c not in present]
    extra = [c for c in present if c not in spec.field_names]
    if missing or extra:
        raise SchemaError(
            f"columns do not match: missing {missing}, unexpected {extra}",
            file=f"table {spec.name}",
            expected=f"exactly {spec.field_names}",
        )
    arrays = []
    for col in spec.columns:
        series = df[col.name]
        try:
            if col.type == "string":
                values = [None if pd.isna(v) else str(v) for v in series.tolist()]
                arr = pa.array(values, type=pa.string())
            else:
                # Infer first, then a safe cast: 1.5 -> int16 or "3" -> float64 must fail, not truncate.
                inferred = pa.array(series.to_numpy(dtype=object), from_pandas=True)
                if not _compatible(inferred.type, col.arrow_type):
                    raise TypeError(f"got {inferred.type} values")
                arr = inferred.cast(col.arrow_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"values cannot be stored as {col.type} without loss ({exc})",
                file=f"table {spec.name}",
                field=col.name,
            ) from None
        _validate_array(arr, col, spec.name, lambda i: _row(df, spec, i))
        arrays.append(arr)
    out = pa.Table.from_arrays(arrays, schema=spec.arrow_schema())
    _validate_primary_key(out, spec)
    return out


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_null(got):
        return True
    if pa.types.is_boolean(want):
        return pa.types.is_boolean(got)
    numeric = pa.types.is_integer(got) or pa.types.is_floating(got)
    return numeric and not pa.types.is_boolean(got)


def _row(df: pd.DataFrame, spec: Table, i: int) -> str:
    """Row ``i`` of ``df`` for a message: its position and primary key (pseudonymized ids only)."""
    key = {k: df[k].iloc[i] for k in spec.primary_key if k in df}
    return f"row {i + 1} ({', '.join(f'{k}={v}' for k, v in key.items())})"


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _validate_array(
    arr: pa.Array, col: Column, table: str, row: Callable[[int], str] | None = None
) -> None:
    where = {"file": f"table {table}", "field": col.name}

    def at(mask: pa.Array) -> str:
        # Which row: the first offending one, named by its primary key.
        return f" at {row(_first(pc.fill_null(mask, False)))}" if row is not None else ""

    if not col.nullable and arr.null_count:
        raise SchemaError(
            f"{arr.null_count} missing values{at(arr.is_null())}",
            expected="no missing values",
            **where,
        )
    valid = pc.drop_null(arr)
    if col.enum is not None and len(valid):
        outside = pc.and_(pc.invert(pc.is_in(arr, pa.array(col.enum))), pc.is_valid(arr))
        bad = pc.unique(pc.filter(arr, pc.fill_null(outside, False))).to_pylist()
        if bad:
            raise SchemaError(
                f"values {sorted(bad)[:5]} not allowed{at(outside)}",
                expected=f"one of {list(col.enum)}",
                **where,
            )
    if col.pattern is not None and len(valid):
        ok = pc.match_substring_regex(arr, col.pattern)
        if not pc.all(pc.fill_null(ok, True)).as_py():
            bad = pc.filter(valid, pc.invert(pc.match_substring_regex(valid, col.pattern)))
            raise SchemaError(
                f"values {bad.to_pylist()[:3]} do not match the pattern{at(pc.invert(ok))}",
                expected=f"pattern {col.pattern}",
                **where,
            )
    if col.min is not None and len(valid) and pc.min(valid).as_py() < col.min:
        raise SchemaError(
            f"minimum {pc.min(valid).as_py()} below the bound{at(pc.less(arr, col.min))}",
            expected=f">= {col.min}",
            **where,
        )
    if col.max is not None and len(valid) and pc.max(valid).as_py() > col.max:
        raise SchemaError(
            f"maximum {pc.max(valid).as_py()} above the bound{at(pc.greater(arr, col.max))}",
            expected=f"<= {col.max}",
            **where,
        )


def _validate_primary_key(table: pa.Table, spec: Table) -> None:
    if table.num_rows == 0:
        return
    counts = table.group_by(list(spec.primary_key), use_threads=False).aggregate(
        [([], "count_all")]
    )
    dupes = counts.filter(pc.greater(counts["count_all"], 1))
    if dupes.num_rows:
        example = {k: dupes[k][0].as_py() for k in spec.primary_key}
        raise SchemaError(
            f"{dupes.num_rows} duplicated primary keys, e.g. {example}",
            file=f"table {spec.name}",
            field=",".join(spec.primary_key),
            expected="one row per primary key",
        )


def _sorted(table: pa.Table, spec: Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    keys = [(k, "ascending", "at_end") for k in spec.primary_key]
    return table.take(pc.sort_indices(table, sort_keys=keys))


def write_table(data: pd.DataFrame | pa.Table, table: str, path: str | Path) -> pa.Table:
    """Validate ``data`` against the declared ``table`` and write it as Parquet.

    Rows are sorted by primary key and the file carries no timestamps, so identical input gives
    byte-identical output. The file appears atomically (written beside it, then renamed).
    """
    spec = get_table(table)
    arrow = to_arrow(data.to_pandas() if isinstance(data, pa.Table) else data, spec)
    arrow = _sorted(arrow, spec)
    path = Path(path)

    def write(tmp: str) -> None:
        pq.write_table(
            arrow,
            tmp,
            compression="zstd",
            compression_level=3,
            use_dictionary=True,
            write_statistics=True,
            store_schema=True,
        )
        # The hash is recorded before the table appears: a reader finds the two consistent, or
        # (after a crash between the renames) a mismatch that Snakemake's rerun of the job repairs.
        integrity.record(path, integrity.file_hash(tmp))

    integrity.atomic_write(path, write)
    return arrow


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read a ketamap Parquet file, checking it holds ``table`` at the declared schema version."""
    spec = get_table(table)
    path = Path(path)
    if not path.is_file():
        raise SchemaError(
            "file not found", file=path, expected=f"a Parquet file of table {table!r}"
        )
    integrity.verify_recorded(path, f"table {table}")
    try:
        meta = pq.read_schema(path).metadata or {}
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(
            f"cannot be read as Parquet ({str(exc)[:200]})",
            file=path,
            expected=f"a Parquet file of table {table!r}",
            hint="rerun `make run`, which rebuilds it",
        ) from None
    name = meta.get(METADATA_TABLE, b"").decode()
    version = meta.get(METADATA_VERSION, b"").decode()
    if name != spec.name or version != str(spec.version):
        raise SchemaError(
            f"file holds table {name or '?'!r} version {version or '?'}",
            file=path,
            expected=f"table {spec.name!r} version {spec.version}",
            hint="rerun the workflow so the table is rebuilt under the current schema",
        )
    return arrow.to_pandas(types_mapper=_pandas_types)


def _pandas_types(arrow_type: pa.DataType) -> Any:
    if pa.types.is_string(arrow_type):
        return pd.StringDtype()
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


def schema_versions() -> dict[str, int]:
    """Table name -> declared version, for manifests."""
    return {name: t.version for name, t in load_tables().items()}


def describe_json() -> str:
    """The whole data dictionary as canonical JSON (used to fingerprint the schemas)."""
    tables = {
        name: {
            "version": t.version,
            "primary_key": list(t.primary_key),
            "fields": {
                c.name: {"type": c.type, "unit": c.unit, "nullable": c.nullable} for c in t.columns
            },
        }
        for name, t in load_tables().items()
    }
    return json.dumps(tables, sort_keys=True)
