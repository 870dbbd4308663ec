"""Session jobs (scatter), one gather per site.

A harmonizer with a ``sessions`` datatype (:class:`ketamap.harmonize.Harmonizer`) is run as

- **session jobs**, each harmonizing one or more BIDS session folders ``sub-<label>/ses-<label>/``
  holding that datatype (``pet``, ``ieeg``; behaviour's ``beh|.``: a ``beh/`` folder or files
  directly in the session folder) (a **batch**, :func:`batches`): it verifies and reads only its sessions
  (and the site's top-level files, where ``participants.tsv`` is), and writes one **piece file**
  with one piece per session (:func:`write_pieces`);
- one **gather job** per site, which checks the pieces together against the site's folders
  (site-level checks: every recording has its piece, one recording per participant and
  condition, pseudonyms) and writes the per-site tables, byte-identical to reading the whole
  site in one process, whatever the batches.

**Batches.** A job costs about 2 s before its step starts (interpreter, Snakemake's preamble,
NumPy/pandas/SciPy/MNE imports), and a short recording takes less than that to harmonize. So
sessions are packed, in folder order, into batches of about the config's
``jobs.session_batch_seconds`` of work, estimated from their files' sizes and the modality's
measured cost (:attr:`ketamap.harmonize.Harmonizer.session_cost`): a longer session is a job of
its own, short ones share one. The batches depend on the fetched files' sizes and the config
only (never on the machine or the cores), so the same data always makes the same jobs. 0 makes
one job per session. A batch is named by its first and last
session (``sub-01_ses-a--sub-04_ses-b``; one session: its own id).

Which sessions a site has is read from its fetch manifest (``resources/raw/<site>.fetch.json``,
every file the fetch wrote, with its md5 and size) while the workflow is planned: no tree walk,
one read per site and planning process. A session job's params carry the md5 listing of its own
files only, so a release that changes one session reruns that session's job and its site's
gather, and an identical refetch reruns nothing.

This module is imported while the workflow is planned: it imports nothing heavy at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketamap.harmonize import PIN_KEYS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A BIDS label is alphanumeric, so "sub-01_ses-base" names one session folder unambiguously.
SESSION_ID = r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+"
# a batch: its first session, and ``--`` its last one when it holds more than one
BATCH_ID = rf"{SESSION_ID}(?:--{SESSION_ID})?"
# a file in a session folder: participant, session, and the datatype folder if it is in one
_IN_SESSION = re.compile(r"^(sub-[A-Za-z0-9]+)/(ses-[A-Za-z0-9]+)/(?:([^/]+)/)?")
PIECE_VERSION = 2
# Fixed member dates: a piece's bytes depend on its content only.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

Piece = tuple[dict[str, Any], dict[str, "pd.DataFrame"], dict[str, "np.ndarray"]]


class _Listing:
    """A fetch manifest's file list, indexed by session folder once (planning asks for each
    session's files several times: a site of 10,000 sessions must not be scanned per session)."""

    def __init__(self, files: list[dict[str, Any]], pin: tuple[str, ...] = ()) -> None:
        self.files = files
        self.pin = pin
        self.top = [f for f in files if "/" not in f["path"]]
        self.by_session: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.datatypes: dict[str, set[tuple[str, str]]] = {}
        for f in files:
            m = _IN_SESSION.match(f["path"])
            if m:
                folder = (m.group(1), m.group(2))
                self.by_session.setdefault(folder, []).append(f)
                # a file directly in the session folder (a layout without datatype folders,
                # e.g. a mouse's NWB file) counts as datatype "."
                self.datatypes.setdefault(m.group(3) or ".", set()).add(folder)
        self._ordered: dict[str, tuple[list[str], dict[str, int]]] = {}
        self.batches: dict[tuple[Any, ...], list[str]] = {}

    def ordered(self, datatype: str) -> tuple[list[str], dict[str, int]]:
        """The ``datatype`` sessions in folder order, and each one's position (sorted once).
        ``datatype`` may name alternatives, ``beh|.``: sessions holding either."""
        if datatype not in self._ordered:
            folders: set[tuple[str, str]] = set()
            for name in datatype.split("|"):
                folders |= self.datatypes.get(name, set())
            found = [f"{sub}_{ses}" for sub, ses in sorted(folders)]
            self._ordered[datatype] = (found, {s: i for i, s in enumerate(found)})
        return self._ordered[datatype]


# (manifest path, mtime, size) -> its listing: one read per site and planning process.
_LISTINGS: dict[tuple[str, int, int], _Listing] = {}
_EMPTY = _Listing([])
# manifest path -> the listing last read from it (see _listing)
_LAST: dict[str, _Listing] = {}


def in_session_folder(path: str) -> bool:
    """Whether a dataset file (a path relative to the site) lies in a session folder."""
    return _IN_SESSION.match(path) is not None


def _listing(raw: str | Path) -> _Listing:
    manifest = f"{Path(raw)}.fetch.json"
    try:
        st = os.stat(manifest)
    except OSError:
        # While the site is fetched again its outputs are gone, and Snakemake may plan its jobs
        # then (when another checkpoint, e.g. the atlas' fetch, ends first): they are planned
        # from the listing this process read before, and again from the new one once the fetch
        # has ended. Nothing read before: the site was never fetched.
        return _LAST.get(manifest, _EMPTY)
    key = (manifest, st.st_mtime_ns, st.st_size)
    if key not in _LISTINGS:
        pin: tuple[str, ...] = ()
        try:
            # a fetch of the site's own files only (fetch.per_session) lists every file apart
            data = json.loads(Path(manifest).read_text())
            files = data.get("listing") or data.get("files")
            pin = tuple(str(data.get(k)) for k in PIN_KEYS)
        except (OSError, ValueError, AttributeError):
            files = None
        _LISTINGS[key] = _Listing(
            [f for f in files or [] if isinstance(f, dict) and isinstance(f.get("path"), str)],
            pin,
        )
    _LAST[manifest] = _LISTINGS[key]
    return _LISTINGS[key]


@contextlib.contextmanager
def session_view(raw: str | Path, sessions: list[str]) -> Iterator[Path]:
    """The site folder a job reads when the fetch pulled the site's own files only
    (``fetch.per_session``): the files of ``raw`` and the session folders ``sessions`` (the local
    copies the DVC storage plugin retrieved for the job, each ``.../sub-<label>/ses-<label>``),
    hard-linked (copied across file systems) into a temporary folder named like ``raw``, with a
    fetch manifest beside it listing exactly those files. The readers and
    :func:`ketamap.integrity.verify_fetched` read it as they read a fetched site; it is removed
    when the job is done.

    Only the files the fetch listed are taken from a session folder, so a stray file there is
    never read, and a missing one is reported by the verification."""
    raw = Path(raw)
    manifest = json.loads(Path(f"{raw}.fetch.json").read_text())
    by_session = _listing(raw).by_session
    where = raw.parent / ".views"
    where.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{raw.name}.", dir=where))
    view = work / raw.name
    try:
        files = list(manifest["files"])
        for f in files:
            _link(raw / f["path"], view / f["path"])
        for folder in map(Path, sessions):
            for f in by_session.get((folder.parent.name, folder.name), []):
                _link(folder / f["path"].split("/", 2)[2], view / f["path"])
                files.append(f)
        view.mkdir(exist_ok=True)
        manifest["files"] = sorted(files, key=lambda f: f["path"])
        Path(f"{view}.fetch.json").write_text(json.dumps(manifest, sort_keys=True))
        yield view
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _link(src: Path, dest: Path) -> None:
    """``src`` at ``dest`` without copying its bytes where the file system allows; nothing where
    ``src`` is missing (the verification names it)."""
    if not src.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def listing(raw: str | Path) -> list[dict[str, Any]]:
    """The files the fetch of ``raw`` recorded (``path``, ``md5``, ``bytes``); [] before a fetch."""
    return _listing(raw).files


def fetched_pin(raw: str | Path) -> tuple[str, ...]:
    """The pin (``PIN_KEYS``) the fetch of ``raw`` recorded; () before a fetch. Equal to
    :func:`ketamap.harmonize.site_pin` of the site's entry when the fetched data is the one the
    config asks for."""
    return _listing(raw).pin


def sessions(raw: str | Path, datatype: str) -> list[str]:
    """Session ids (``sub-<label>_ses-<label>``) whose folder holds ``<datatype>/`` files (``.``:
    files directly in the session folder; ``a|b``: either), in the order the readers walk them
    (participant, then session)."""
    return list(_listing(raw).ordered(datatype)[0])


def session_folder(session: str) -> tuple[str, str]:
    """``sub-01_ses-base`` -> ``("sub-01", "ses-base")``."""
    sub, _, ses = session.partition("_")
    return sub, ses


def batches(raw: str | Path, datatype: str, seconds: float, cost: tuple[float, float]) -> list[str]:
    """The session jobs of a site: names of contiguous runs of its ``datatype`` sessions (folder
    order) of about ``seconds`` of estimated work each, balanced by that estimate.

    A session's work is estimated as ``cost[0]`` seconds plus its files' MB over ``cost[1]`` MB
    per second (:attr:`ketamap.harmonize.Harmonizer.session_cost`). There are
    ``floor(total work / seconds)`` batches (at least one, at most one per session); session
    ``i`` goes to the batch its work's midpoint falls in, so a session longer than a batch is
    alone and short ones share. ``seconds`` <= 0, or no work to estimate: one batch per
    session."""
    index = _listing(raw)
    key = (datatype, seconds, tuple(cost))
    if key not in index.batches:  # planning asks once per session job (its threads) and gather
        index.batches[key] = _batches(index, datatype, seconds, cost)
    return list(index.batches[key])


def _batches(
    index: _Listing, datatype: str, seconds: float, cost: tuple[float, float]
) -> list[str]:
    found = index.ordered(datatype)[0]
    fixed, mb_per_s = cost
    work = [
        fixed
        + sum(int(f.get("bytes") or 0) for f in index.by_session.get(session_folder(s), []))
        / 2**20
        / mb_per_s
        for s in found
    ]
    total = sum(work)
    if seconds <= 0 or total <= 0:
        return list(found)
    n = min(len(found), max(1, int(total // seconds)))
    runs: list[list[str]] = [[] for _ in range(n)]
    before = 0.0
    for session, w in zip(found, work, strict=True):
        runs[min(n - 1, int((before + w / 2) * n / total))].append(session)
        before += w
    return [run[0] if len(run) == 1 else f"{run[0]}--{run[-1]}" for run in runs if run]


def batch_sessions(raw: str | Path, datatype: str, batch: str) -> list[str]:
    """The sessions of the batch named ``batch`` (:func:`batches`) in the site's fetch manifest:
    its first, its last and every ``datatype`` session between them; [] when either is gone."""
    found, position = _listing(raw).ordered(datatype)
    first, _, last = batch.partition("--")
    i, j = position.get(first), position.get(last or first)
    return [] if i is None or j is None or j < i else list(found[i : j + 1])


def scope(raw: str | Path, datatype: str, batch: str) -> list[str]:
    """What a session job reads, relative to the site folder: its sessions' folders and the
    site's top-level files (``participants.tsv`` and its sidecar, ``dataset_description.json``)."""
    folders = ["/".join(session_folder(s)) for s in batch_sessions(raw, datatype, batch)]
    return [*folders, *sorted(f["path"] for f in _listing(raw).top)]


def scope_files(raw: str | Path, datatype: str, batch: str) -> list[dict[str, Any]]:
    """The fetch manifest's entries of the files in the batch's scope, sorted by path."""
    index = _listing(raw)
    own = [
        f
        for s in batch_sessions(raw, datatype, batch)
        for f in index.by_session.get(session_folder(s), [])
    ]
    return sorted([*index.top, *own], key=lambda f: f["path"])


def content(raw: str | Path, datatype: str, batch: str) -> str:
    """md5 of the batch's scope as fetched (each file's path and md5): the session job's param."""
    text = "".join(f"{f['path']}\t{f.get('md5', '')}\n" for f in scope_files(raw, datatype, batch))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest() if text else ""


def sizes(raw: str | Path, datatype: str, batch: str) -> list[int]:
    """Sizes in bytes of the files in the batch's scope (for its job's mem_mb and runtime)."""
    return [int(f.get("bytes") or 0) for f in scope_files(raw, datatype, batch)]


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


def pair_by_condition(
    site_id: str,
    found: list[Any],
    pieces: dict[str, list[Any]],
    what: str,
    resolve: Callable[[Any], tuple[str, str]],
) -> Iterator[Any]:
    """:func:`pair_with_pieces` for readers whose session results carry ``pid`` and
    ``condition`` (iEEG, behaviour): each result, checked against the participant and condition
    ``resolve`` gives its item now (participants.tsv, the configured conditions)."""
    from ketamap.errors import SiteDataError

    for item, result in pair_with_pieces(site_id, found, pieces, what):
        subject_id, condition = resolve(item)
        if (result.pid, result.condition) != (subject_id, condition):
            raise SiteDataError(
                "the session job's participant or condition differs from the site's",
                site=site_id,
                file=item.shown,
                expected=f"{subject_id} {condition} (participants.tsv and the conditions "
                "as configured now)",
            )
        yield result


# -- pieces -----------------------------------------------------------------------------------


def write_pieces(path: str | Path, pieces: dict[str, Piece]) -> None:
    """Write a session job's piece file: a zip holding, for each session ``<s>``, ``<s>/meta.json``,
    one ``<s>/frames/<name>.parquet`` per frame and one ``<s>/arrays/<name>.npy`` per array (no
    pickle: reading a piece runs no code), with a ``.sha256`` record.

    Frames keep their dtypes and index through Parquet, arrays their bits through ``.npy``: the
    gather computes from exactly what the session job computed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ketamap import integrity

    members: dict[str, bytes] = {}
    for session, (meta, frames, arrays) in pieces.items():
        members[f"{session}/meta.json"] = json.dumps(
            {"version": PIECE_VERSION, **meta}, sort_keys=True, allow_nan=True
        ).encode()
        for name, frame in frames.items():
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), buf)
            members[f"{session}/frames/{name}.parquet"] = buf.getvalue()
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(array), allow_pickle=False)
            members[f"{session}/arrays/{name}.npy"] = buf.getvalue()

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name in sorted(members):
                zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), members[name])

    integrity.atomic_write(path, write)
    integrity.record(path)


def read_pieces(path: str | Path, *, site: str) -> dict[str, Piece]:
    """The pieces of a file written by :func:`write_pieces` (session id -> piece, in the file's
    order), verified against its ``.sha256`` record first."""
    import numpy as np
    import pyarrow.parquet as pq

    from ketamap import integrity
    from ketamap.errors import SchemaError

    def bad(problem: str, field: str, expected: str) -> SchemaError:
        return SchemaError(
            problem,
            site=site,
            file=str(path),
            field=field,
            expected=expected,
            hint="delete it; `make run` makes it again",
        )

    integrity.verify_recorded(path, f"site {site}: session piece")
    pieces: dict[str, Piece] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for member in names:
                session, _, rest = member.partition("/")
                if rest != "meta.json":
                    continue
                if not re.fullmatch(SESSION_ID, session):
                    raise bad(f"member {member!r}", "piece", "<session id>/meta.json members")
                meta = json.loads(zf.read(member))
                if meta.get("version") != PIECE_VERSION:
                    raise bad(
                        f"session piece version {meta.get('version')!r}",
                        "version",
                        str(PIECE_VERSION),
                    )
                frames = {
                    n[len(f"{session}/frames/") : -len(".parquet")]: pq.read_table(
                        io.BytesIO(zf.read(n))
                    ).to_pandas()
                    for n in names
                    if n.startswith(f"{session}/frames/")
                }
                arrays = {
                    n[len(f"{session}/arrays/") : -len(".npy")]: np.load(
                        io.BytesIO(zf.read(n)), allow_pickle=False
                    )
                    for n in names
                    if n.startswith(f"{session}/arrays/")
                }
                pieces[session] = (meta, frames, arrays)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise bad(
            f"unreadable session piece ({type(exc).__name__})",
            "piece",
            "a piece written by a session job of this version",
        ) from None
    if not pieces:
        raise bad("no session in the piece file", "piece", "one piece per session of its job")
    return pieces


def read_all_pieces(paths: list[str], *, site: str) -> dict[str, Piece]:
    """The gather's pieces: every session's piece from the site's piece files; a session in two
    files (a piece file left by other batches) is an error naming both."""
    from ketamap.errors import SiteDataError

    pieces: dict[str, Piece] = {}
    where: dict[str, str] = {}
    for path in paths:
        for session, piece in read_pieces(path, site=site).items():
            if session in pieces:
                raise SiteDataError(
                    f"session {session} has a piece in two files ({where[session]} and {path})",
                    site=site,
                    file=str(path),
                    expected="each session in the piece file of exactly one session job",
                )
            pieces[session], where[session] = piece, str(path)
    return pieces


def remove_stale_pieces(pieces: list[str]) -> list[str]:
    """After a gather: delete the piece files (and records) in its pieces' folders that it did not
    read, left by jobs of earlier batches (another ``jobs.session_batch_seconds``, sessions gone
    from a release). Returns their names. Only ``<batch id>.zip`` files are touched."""
    keep = {Path(p).resolve() for p in pieces}
    removed = []
    for folder in sorted({Path(p).parent for p in pieces}):
        for path in sorted(folder.glob("*.zip")):
            if path.resolve() in keep or not re.fullmatch(BATCH_ID, path.stem):
                continue
            path.unlink()
            Path(f"{path}.sha256").unlink(missing_ok=True)
            removed.append(path.name)
    return removed
