"""How large a file of each kind a reader accepts, checked before the file is read.

A corrupt header, a sparse multi-gigabyte file or a runaway export must fail naming the site,
the file and the limit, never exhaust memory. The limits come from the config's ``limits``
section (defaults in ``schemas/config.schema.yaml``); :func:`configure` sets them for the process
(the workflow adapter does, from the job's config), and readers called without a workflow use the
schema's defaults.

A limit decides only whether a file is read, never what a table holds, so it is not a param of any
job: editing one reruns nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ketamap.errors import SiteDataError

KINDS = ("tsv", "json", "image", "ieeg", "tracking")
_current: dict[str, float] | None = None


def configure(limits: dict[str, Any] | None) -> None:
    """Use ``limits`` (the config's ``limits`` section, defaults filled) for this process."""
    from ketamap.config import with_defaults

    global _current
    _current = {k: float(v) for k, v in with_defaults(limits, "limits").items()}


def limit_mb(kind: str) -> float:
    """The largest accepted size of a ``kind`` file, in MB."""
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; expected one of {KINDS}")
    if _current is None:
        configure(None)
    assert _current is not None
    return _current[f"{kind}_mb"]


def check_size(
    paths: str | Path | list[Path], kind: str, *, site: str | None, file: str | None = None
) -> int:
    """Raise a :class:`SiteDataError` when ``paths`` (one file or all files of one recording)
    together exceed the ``kind`` limit; return their size in bytes. Reads no content."""
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    size = sum(p.stat().st_size for p in files if p.is_file())
    limit = limit_mb(kind)
    if size > limit * 1e6:
        raise SiteDataError(
            f"file is {size / 1e6:,.1f} MB, above the {limit:g} MB limit for {kind} files",
            site=site,
            file=file if file is not None else str(files[0]),
            field="size",
            expected=f"at most {limit:g} MB",
            hint=f"check the file is not corrupt; a larger one needs `limits: {{{kind}_mb: ...}}` "
            "in the config",
        )
    return size


def excerpt(text: str | bytes, n: int = 40) -> str:
    """At most ``n`` characters of ``text`` for a message, printable only, marked when cut.

    Messages quote a short excerpt of a bad value, never a whole line or a header block (which may
    hold patient fields)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    clean = "".join(c if c.isprintable() else "?" for c in text[: n + 1])
    return repr(clean[:n] + ("..." if len(clean) > n else ""))
