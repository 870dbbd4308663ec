"""Byte-stable writers for the files a site delivers.

The generator must write byte-identical files for the same scenario, so the writers fix
everything that could vary: UTF-8, LF line endings, the column order given by the caller, JSON with
sorted keys and an indent of 2. TSVs may deliberately lack the final newline (a site option that
reproduces a real-world export trap).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_tsv(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    trailing_newline: bool = True,
) -> None:
    """Write a tab-separated table of already-formatted strings.

    Parameters
    ----------
    path
        Target file; parent folders are created.
    header
        Column names in the order they must appear.
    rows
        One sequence of cell strings per row, same length as ``header``; missing values must
        already be written as ``"n/a"``.
    trailing_newline
        False writes the table without the final newline, as some site exports do.

    Raises
    ------
    ValueError
        If a row has the wrong length or a cell holds a tab or a line break (a generator bug).
    """
    lines = ["\t".join(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path}: row {row!r} does not match header {list(header)!r}")
        for cell in row:
            if any(ch in cell for ch in "\t\r\n"):
                raise ValueError(f"{path}: cell {cell!r} holds a tab or line break")
        lines.append("\t".join(row))
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write JSON with sorted keys, an indent of 2 and a final newline.

    Parameters
    ----------
    path
        Target file; parent folders are created.
    data
        JSON-serialisable data (floats are written with Python's shortest round-trip repr).
    """
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
