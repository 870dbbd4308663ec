"""Reading what sites send: TSV and JSON files with the site and file in every error.

Values are read as text and interpreted by the readers, never guessed by a parser: BIDS writes
``n/a`` for missing values and real files add blanks, odd cases and missing final newlines.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ketamap.errors import SiteDataError

MISSING = {"n/a", ""}


def read_tsv(
    path: Path, *, site: str, root: Path | None = None, required: list[str] | None = None
) -> pd.DataFrame:
    """Read a BIDS TSV as strings, with ``n/a`` and empty cells as missing.

    Checks that the file exists, is not empty, and has every ``required`` column.
    """
    shown = shown_path(path, root)
    if not path.is_file():
        raise SiteDataError(
            "file not found", site=site, file=shown, expected="a tab-separated file"
        )
    if path.stat().st_size == 0:
        raise SiteDataError(
            "file is empty", site=site, file=shown, expected="a header row and data rows"
        )
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding="utf-8-sig",  # MNE-BIDS and Excel write a byte-order mark
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SiteDataError(f"cannot be parsed as TSV ({exc})", site=site, file=shown) from None
    df.columns = [c.strip() for c in df.columns]
    for col in required or []:
        if col not in df.columns:
            raise SiteDataError(
                "missing required column",
                site=site,
                file=shown,
                field=col,
                expected=f"columns {required} (found {list(df.columns)})",
            )
    return df.apply(lambda s: s.str.strip().mask(s.str.strip().isin(MISSING)))


def read_json(path: Path, *, site: str, root: Path | None = None) -> dict[str, Any]:
    """Read a JSON sidecar; a missing or malformed file is a :class:`SiteDataError`."""
    shown = shown_path(path, root)
    if not path.is_file():
        raise SiteDataError("file not found", site=site, file=shown, expected="a JSON sidecar")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SiteDataError(f"not valid JSON ({exc})", site=site, file=shown) from None
    if not isinstance(data, dict):
        raise SiteDataError("not a JSON object", site=site, file=shown)
    return data


def shown_path(path: Path, root: Path | None) -> str:
    """The path as messages show it: relative to the dataset root when inside it."""
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)
