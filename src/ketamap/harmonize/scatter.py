"""One job per session (scatter), one per site (gather).

A harmonizer with a ``sessions`` datatype (:class:`ketamap.harmonize.Harmonizer`) is run as

- one **session job** per BIDS session folder ``sub-<label>/ses-<label>/`` holding that datatype:
  it verifies and reads only its session (and the site's top-level files, where
  ``participants.tsv`` is), and writes one **piece** (:func:`write_piece`);
- one **gather job** per site, which checks the pieces together against the site's folders
  (site-level checks: every recording has its piece, one recording per participant and
  condition, pseudonyms) and writes the per-site tables, byte-identical to reading the whole
  site in one process.

Which sessions a site has is read from its fetch manifest (``resources/raw/<site>.fetch.json``,
every file the fetch wrote, with its md5 and size) while the workflow is planned: no tree walk,
one read per site and planning process. A session job's params carry the md5 listing of its own
files only, so a release that changes one session reruns that session's job and its site's
gather, and an identical refetch reruns nothing.

This module is imported while the workflow is planned: it imports nothing heavy at module level.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A BIDS label is alphanumeric, so "sub-01_ses-base" names one session folder unambiguously.
SESSION_ID = r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+"
# a file in a session folder: participant, session, and the datatype folder if it is in one
_IN_SESSION = re.compile(r"^(sub-[A-Za-z0-9]+)/(ses-[A-Za-z0-9]+)/(?:([^/]+)/)?")
PIECE_VERSION = 1
# Fixed member dates: a piece's bytes depend on its content only.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

Piece = tuple[dict[str, Any], dict[str, "pd.DataFrame"], dict[str, "np.ndarray"]]


class _Listing:
    """A fetch manifest's file list, indexed by session folder once (planning asks for each
    session's files several times: a site of 10,000 sessions must not be scanned per session)."""

    def __init__(self, files: list[dict[str, Any]]) -> None:
        self.files = files
        self.top = [f for f in files if "/" not in f["path"]]
        self.by_session: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.datatypes: dict[str, set[tuple[str, str]]] = {}
        for f in files:
            m = _IN_SESSION.match(f["path"])
            if m:
                folder = (m.group(1), m.group(2))
                self.by_session.setdefault(folder, []).append(f)
                if m.group(3):
                    self.datatypes.setdefault(m.group(3), set()).add(folder)


# (manifest path, mtime, size) -> its listing: one read per site and planning process.
_LISTINGS: dict[tuple[str, int, int], _Listing] = {}
_EMPTY = _Listing([])


def _listing(raw: str | Path) -> _Listing:
    manifest = f"{Path(raw)}.fetch.json"
    try:
        st = os.stat(manifest)
    except OSError:
        return _EMPTY
    key = (manifest, st.st_mtime_ns, st.st_size)
    if key not in _LISTINGS:
        try:
            files = json.loads(Path(manifest).read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            files = None
        _LISTINGS[key] = _Listing(
            [f for f in files or [] if isinstance(f, dict) and isinstance(f.get("path"), str)]
        )
    return _LISTINGS[key]


def listing(raw: str | Path) -> list[dict[str, Any]]:
    """The files the fetch of ``raw`` recorded (``path``, ``md5``, ``bytes``); [] before a fetch."""
    return _listing(raw).files


def sessions(raw: str | Path, datatype: str) -> list[str]:
    """Session ids (``sub-<label>_ses-<label>``) whose folder holds ``<datatype>/`` files, in the
    order the readers walk them (participant, then session)."""
    found = _listing(raw).datatypes.get(datatype, set())
    return [f"{sub}_{ses}" for sub, ses in sorted(found)]


def session_folder(session: str) -> tuple[str, str]:
    """``sub-01_ses-base`` -> ``("sub-01", "ses-base")``."""
    sub, _, ses = session.partition("_")
    return sub, ses


def session_scope(raw: str | Path, session: str) -> list[str]:
    """What a session job reads, relative to the site folder: its session folder and the site's
    top-level files (``participants.tsv`` and its sidecar, ``dataset_description.json``)."""
    sub, ses = session_folder(session)
    return [f"{sub}/{ses}", *sorted(f["path"] for f in _listing(raw).top)]


def scope_files(raw: str | Path, session: str) -> list[dict[str, Any]]:
    """The fetch manifest's entries of the files in ``session``'s scope, sorted by path."""
    index = _listing(raw)
    own = index.by_session.get(session_folder(session), [])
    return sorted([*index.top, *own], key=lambda f: f["path"])


def session_content(raw: str | Path, session: str) -> str:
    """md5 of the session's scope as fetched (each file's path and md5): the session job's param."""
    text = "".join(f"{f['path']}\t{f.get('md5', '')}\n" for f in scope_files(raw, session))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest() if text else ""


def session_sizes(raw: str | Path, session: str) -> list[int]:
    """Sizes in bytes of the files in the session's scope (for its job's mem_mb and runtime)."""
    return [int(f.get("bytes") or 0) for f in scope_files(raw, session)]


def pair_with_pieces(
    site_id: str, found: list[Any], pieces: dict[str, list[Any]], what: str
) -> Iterator[tuple[Any, Any]]:
    """The gather's first site-level check: each item the site holds now (a recording, a scan:
    anything with ``participant_id``, ``session_id`` and ``shown``) paired with its session
    piece's result, in the order the whole-site job reads them (folder order: ``sub-1`` before
    ``sub-10``, which sort the other way round as session ids).

    A session whose piece is missing, or holds another number of results than the session has
    items, is an error naming the site, the session's file and ``what`` (e.g. "recording(s)")."""
    from ketamap.errors import SiteDataError

    by_session: dict[str, list[Any]] = {}
    for item in found:
        by_session.setdefault(f"{item.participant_id}_{item.session_id}", []).append(item)
    for session in [*by_session, *sorted(set(pieces) - set(by_session))]:
        items, made = by_session.get(session, []), pieces.get(session)
        if made is None or len(made) != len(items):
            raise SiteDataError(
                f"session {session} has {len(items)} {what} but its session job read "
                f"{'none' if made is None else len(made)}",
                site=site_id,
                file=(items[0].shown if items else session.replace("_", "/", 1)),
                expected=f"one piece per session folder with {what}, made from the data "
                "fetched now (`make run` makes the missing ones)",
            )
        yield from zip(items, made, strict=True)


# -- pieces -----------------------------------------------------------------------------------


def write_piece(path: str | Path, piece: Piece) -> None:
    """Write a session job's piece: a zip of ``meta.json``, one Parquet file per frame and one
    ``.npy`` per array (no pickle: reading a piece runs no code), with a ``.sha256`` record.

    Frames keep their dtypes and index through Parquet, arrays their bits through ``.npy``: the
    gather computes from exactly what the session job computed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ketamap import integrity

    meta, frames, arrays = piece
    members: dict[str, bytes] = {
        "meta.json": json.dumps(
            {"version": PIECE_VERSION, **meta}, sort_keys=True, allow_nan=True
        ).encode()
    }
    for name, frame in frames.items():
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), buf)
        members[f"frames/{name}.parquet"] = buf.getvalue()
    for name, array in arrays.items():
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        members[f"arrays/{name}.npy"] = buf.getvalue()

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name in sorted(members):
                zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), members[name])

    integrity.atomic_write(path, write)
    integrity.record(path)


def read_piece(path: str | Path, *, site: str) -> Piece:
    """A piece written by :func:`write_piece`, verified against its ``.sha256`` record first."""
    import numpy as np
    import pyarrow.parquet as pq

    from ketamap import integrity
    from ketamap.errors import SchemaError

    integrity.verify_recorded(path, f"site {site}: session piece")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            frames = {
                n[len("frames/") : -len(".parquet")]: pq.read_table(
                    io.BytesIO(zf.read(n))
                ).to_pandas()
                for n in zf.namelist()
                if n.startswith("frames/")
            }
            arrays = {
                n[len("arrays/") : -len(".npy")]: np.load(
                    io.BytesIO(zf.read(n)), allow_pickle=False
                )
                for n in zf.namelist()
                if n.startswith("arrays/")
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise SchemaError(
            f"unreadable session piece ({type(exc).__name__})",
            site=site,
            file=str(path),
            field="piece",
            expected="a piece written by a session job of this version",
            hint="delete it; `make run` makes it again",
        ) from None
    if meta.get("version") != PIECE_VERSION:
        raise SchemaError(
            f"session piece version {meta.get('version')!r}",
            site=site,
            file=str(path),
            field="version",
            expected=str(PIECE_VERSION),
            hint="delete it; `make run` makes it again",
        )
    return meta, frames, arrays
