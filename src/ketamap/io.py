"""Reading what sites send: TSV and JSON files with the site and file in every error.

Values are read as text and interpreted by the readers, never guessed by a parser: BIDS writes
``n/a`` for missing values and real files add blanks, odd cases and missing final newlines.

Every file is checked before it is read: it must be a regular file inside the site folder (a
symbolic link that leaves the folder is refused, never followed), and no larger than the limit of
its kind (:mod:`ketamap.limits`). Messages quote short excerpts of what was found, never a whole
line, so a corrupt file cannot produce a message of its own size.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ketamap import limits
from ketamap.errors import SiteDataError

MISSING = {"n/a", ""}
INSIDE = "a regular file inside the site folder (not a symbolic link leaving it)"


def read_tsv(
    path: Path, *, site: str, root: Path | None = None, required: list[str] | None = None
) -> pd.DataFrame:
    """Read a BIDS TSV as strings, with ``n/a`` and empty cells as missing.

    Checks that the file exists, is not empty, stays inside the site folder, is within the ``tsv``
    size limit, and has every ``required`` column.
    """
    shown = shown_path(path, root)
    check_inside(path, root, site=site, file=shown)
    if not path.is_file():
        raise SiteDataError(
            "file not found", site=site, file=shown, expected="a tab-separated file"
        )
    if path.stat().st_size == 0:
        raise SiteDataError(
            "file is empty", site=site, file=shown, expected="a header row and data rows"
        )
    limits.check_size(path, "tsv", site=site, file=shown)
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding="utf-8-sig",  # MNE-BIDS and Excel write a byte-order mark
            engine="c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SiteDataError(
            f"cannot be parsed as TSV ({limits.excerpt(str(exc), 120)})",
            site=site,
            file=shown,
            expected="tab-separated UTF-8 text with a header row",
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in required or []:
        if col not in df.columns:
            raise SiteDataError(
                "missing required column",
                site=site,
                file=shown,
                field=col,
                expected=f"columns {required} (found {quote(df.columns, 12)})",
            )
    return df.apply(lambda s: s.str.strip().mask(s.str.strip().isin(MISSING)))


def read_json(path: Path, *, site: str, root: Path | None = None) -> dict[str, Any]:
    """Read a JSON sidecar (UTF-8, with or without a byte-order mark); a missing, oversized or
    malformed file is a :class:`SiteDataError`."""
    shown = shown_path(path, root)
    check_inside(path, root, site=site, file=shown)
    if not path.is_file():
        raise SiteDataError("file not found", site=site, file=shown, expected="a JSON sidecar")
    limits.check_size(path, "json", site=site, file=shown)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SiteDataError(
            f"not valid JSON ({limits.excerpt(str(exc), 120)})",
            site=site,
            file=shown,
            expected="a JSON object in UTF-8",
        ) from None
    except RecursionError:
        raise SiteDataError(
            "not valid JSON (nested too deeply)", site=site, file=shown, expected="a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise SiteDataError(
            f"not a JSON object (a {type(data).__name__})",
            site=site,
            file=shown,
            expected="a JSON object",
        )
    return data


def check_inside(path: Path, root: Path | None, *, site: str | None, file: str) -> None:
    """Refuse ``path`` when it, or a folder on its way, is a symbolic link that leaves ``root``.

    Links that stay inside the site folder are read as usual. Nothing is checked without a
    ``root`` (a reader called on a single file)."""
    if root is None:
        return
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and base not in target.parents:
        raise SiteDataError(
            "a symbolic link to a file outside the site folder (not followed)",
            site=site,
            file=file,
            field="path",
            expected=INSIDE,
        )


def quote(values: Iterable[Any], n: int = 5) -> str:
    """The first ``n`` values as a list for a message, each at most a short excerpt."""
    items = list(values)
    shown = [limits.excerpt(v) if isinstance(v, str) else repr(v) for v in items[:n]]
    more = ", ..." if len(items) > n else ""
    return "[" + ", ".join(shown) + more + "]"


def shown_path(path: Path, root: Path | None) -> str:
    """The path as messages show it: relative to the dataset root when inside it."""
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)
