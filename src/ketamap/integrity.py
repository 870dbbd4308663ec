"""Content is what its hash says: every file ketamap reads again is checked first.

- **Fetched data.** A fetch records the md5 of every file it pulled (``<site>.fetch.json``, the
  hashes DVC holds). Before a harmonize job reads a byte, :func:`verify_fetched` re-checks the
  tree: no file altered, missing or added, no symlink, the revision the config pins. While the
  workflow is planned, :func:`stale_fetch` asks the same question cheaply (file sizes and
  modification times against what was last verified, hashing only what changed, as DVC's state
  database does), so an altered or deleted tree is fetched again by the next ``make run``.
- **Tables and results.** Every Parquet file ketamap writes gets a ``<file>.sha256`` beside it (the
  format ``sha256sum -c`` reads); :func:`verify_recorded` checks it before the file is read again.
- **Writes.** :func:`atomic_write` writes beside the target and renames, with the permissions of
  any other file the user creates (``0666 & ~umask``), and leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ketamap.errors import KetamapError

DIGEST_SUFFIX = ".sha256"
TEMP_MARK = ".tmp-"
SNAKEMAKE_MARK = ".snakemake_timestamp"  # Snakemake's own stamp in a directory() output  # the prefix of atomic_write's temporary files: .<name>.tmp-<random>


class IntegrityError(KetamapError):
    """A file's bytes differ from the hash recorded when it was fetched or written."""


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Create ``path`` by ``write(temporary path)`` then a rename: readers see the old file or the
    whole new one, never part of it, and a crash leaves no temporary file the next write keeps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs are like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_leftovers(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` that a killed writer left (``.<name>.tmp-*``)."""
    gone = []
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}{TEMP_MARK}*"):
            leftover.unlink(missing_ok=True)
            gone.append(leftover)
    return gone


def leftovers(root: Path) -> Iterator[Path]:
    """Temporary files of interrupted writes anywhere under ``root``."""
    yield from (p for p in root.rglob(f".*{TEMP_MARK}*") if p.is_file())


# -- tables and results ----------------------------------------------------------------------


def digest_path(path: str | Path) -> Path:
    return Path(f"{path}{DIGEST_SUFFIX}")


def record(path: str | Path, sha256: str | None = None) -> str:
    """Write ``<path>.sha256`` (``sha256sum`` format) with the hash of ``path`` as written."""
    path = Path(path)
    sha256 = sha256 or file_hash(path)
    atomic_write_text(digest_path(path), f"{sha256}  {path.name}\n")
    return sha256


def recorded(path: str | Path) -> str | None:
    """The hash recorded for ``path`` when it was written, or None when there is no record."""
    try:
        text = digest_path(path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    head = text.split(maxsplit=1)
    return head[0] if head and len(head[0]) == 64 else None


def verify_recorded(path: str | Path, what: str) -> str:
    """Raise an :class:`IntegrityError` unless ``path`` hashes to what was recorded at its write.

    ``what`` names the file's role for the message (e.g. ``table subjects``). Returns the hash."""
    path = Path(path)
    want = recorded(path)
    if want is None:
        raise IntegrityError(
            f"no recorded hash ({digest_path(path).name} is missing or unreadable), so its content "
            "cannot be trusted",
            file=str(path),
            field="sha256",
            expected=f"the hash ketamap records when it writes {what}",
            hint=f"delete {path.name} and run `make run` to rebuild it, or `dvc pull` the results "
            "again",
        )
    got = file_hash(path)
    if got != want:
        raise IntegrityError(
            f"content changed after it was written (sha256 {got[:12]}...)",
            file=str(path),
            field="sha256",
            expected=f"{want[:12]}..., the hash recorded when {what} was written",
            hint=f"delete {path.name} and run `make run` to rebuild it, or `dvc pull` the results "
            "again",
        )
    return got


# -- fetched data ----------------------------------------------------------------------------


def fetch_manifest_path(raw: str | Path) -> Path:
    """``resources/raw/<site>`` -> ``resources/raw/<site>.fetch.json``."""
    return Path(f"{Path(raw)}.fetch.json")


# (folder, inode, mtime) -> its last walk: planning walks a fetched tree once per process, for
# the drift check and for the jobs' resources (ketamap.jobresources), not once for each.
_WALKS: dict[tuple[str, int, int], tuple[dict[str, os.stat_result], list[str]]] = {}


def _walk_key(root: str | Path) -> tuple[str, int, int]:
    st = os.stat(root)
    return (str(root), st.st_ino, st.st_mtime_ns)


def walk_cached(root: str | Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """The last walk of ``root`` in this process (a fetch replaces the folder, so its inode
    changes), else a new one. For planning-time estimates only (job resources): the drift check
    (:func:`stale_fetch`) always walks afresh, and leaves its walk here."""
    key = _walk_key(root)
    if key not in _WALKS:
        _WALKS[key] = _walk(Path(root))
    return _WALKS[key]


def _walk(root: Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """Every regular file under ``root`` (relative path -> lstat) and every symlink, unfollowed."""
    files: dict[str, os.stat_result] = {}
    links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if name == SNAKEMAKE_MARK and dirpath == str(root):
                continue
            full = base / name
            st = full.lstat()
            rel = full.relative_to(root).as_posix()
            if os.path.islink(full):
                links.append(rel)
            elif name in filenames:
                files[rel] = st
    return files, sorted(links)


def _load_manifest(manifest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def pinned_differs(site: dict[str, Any], fetched: dict[str, Any]) -> str | None:
    """Why the fetched data is not what the site entry pins (registry, path, revision), or None."""
    for key in ("registry", "path", "revision"):
        if key in site and key in fetched and str(site[key]) != str(fetched[key]):
            return (
                f"the config pins {key} {str(site[key])!r} but the data was fetched at "
                f"{str(fetched[key])!r}"
            )
    return None


def _under(rel: str, within: list[str]) -> bool:
    return any(rel == w or rel.startswith(w.rstrip("/") + "/") for w in within)


def _walk_within(raw: Path, within: list[str]) -> tuple[dict[str, os.stat_result], list[str]]:
    """:func:`_walk` limited to the files and folders ``within`` (relative to ``raw``)."""
    files: dict[str, os.stat_result] = {}
    links: list[str] = []
    for rel in within:
        path = raw / rel
        if path.is_symlink():
            links.append(rel)
        elif path.is_dir():
            sub_files, sub_links = _walk(path)
            files |= {f"{rel.rstrip('/')}/{k}": v for k, v in sub_files.items()}
            links += [f"{rel.rstrip('/')}/{k}" for k in sub_links]
        elif path.is_file():
            files[rel] = path.lstat()
    return files, sorted(links)


def verify_fetched(
    site: dict[str, Any],
    raw: str | Path,
    *,
    what: str | None = None,
    within: list[str] | None = None,
) -> None:
    """Refuse to read ``raw`` unless it is exactly what the fetch recorded, at the pinned revision.

    Checks every file's md5 against ``<raw>.fetch.json`` and that no file was added or removed and
    no symlink appeared. On failure the verified-state cache is dropped, so the next ``make run``
    hashes the tree again, finds the change and fetches the site again.

    ``within`` (paths relative to ``raw``, files or folders) limits all of it to the part of the
    tree a job reads: a per-session job checks its session and the site's top-level files, not
    every session of the site again."""
    raw = Path(raw)
    site_id = what or str(site.get("id", raw.name))
    manifest_file = fetch_manifest_path(raw)
    hint = "run `make run` again: it fetches the site's data again from the registry"

    def fail(problem: str, file: str, field: str, expected: str) -> IntegrityError:
        forget_verified(raw)
        return IntegrityError(
            problem, site=site_id, file=file, field=field, expected=expected, hint=hint
        )

    fetched = _load_manifest(manifest_file)
    if fetched is None:
        raise fail(
            "no readable fetch manifest",
            str(manifest_file),
            "files",
            "the manifest the fetch wrote, listing every file and its md5",
        )
    differs = pinned_differs(site, fetched)
    if differs:
        raise fail(differs, str(manifest_file), "revision", "data fetched at the pinned revision")
    if not raw.is_dir():
        raise fail("the fetched folder is missing", str(raw), "path", "the fetched dataset")
    want = {f["path"]: f["md5"] for f in fetched["files"]}
    if within is None:
        files, links = _walk(raw)
    else:
        files, links = _walk_within(raw, within)
        want = {rel: md5 for rel, md5 in want.items() if _under(rel, within)}
    added = sorted(set(files) - set(want))
    missing = sorted(set(want) - set(files))
    # (offending paths, problem, what is expected), checked in this order
    for paths, problem, expected in (
        (
            links,
            "is a symlink in the fetched data (never followed)",
            "regular files only, as the fetch wrote them",
        ),
        (
            added,
            f"was added after the fetch ({len(added)} file(s) not in the release)",
            "only the files the fetch recorded",
        ),
        (
            missing,
            f"was deleted after the fetch ({len(missing)} file(s) missing)",
            "every file the fetch recorded",
        ),
    ):
        if paths:
            raise fail(problem, paths[0], "path", expected)
    for rel in sorted(want):
        got = file_hash(raw / rel, "md5")
        if got != want[rel]:
            raise fail(
                f"altered after it was fetched (md5 {got})",
                rel,
                "md5",
                f"{want[rel]}, the md5 recorded by the fetch (DVC's hash of the release)",
            )
    if within is None:
        _save_verified(raw, files)


def _state_path(raw: Path) -> Path:
    """Where the stat signature of the last verified tree is kept (machine-local, not shared)."""
    return raw.parent / ".verified" / f"{raw.name}.json"


def _signature(files: dict[str, os.stat_result]) -> dict[str, list[int]]:
    return {rel: [st.st_size, st.st_mtime_ns, st.st_ino] for rel, st in sorted(files.items())}


def _save_verified(raw: Path, files: dict[str, os.stat_result]) -> None:
    state = _state_path(raw)
    # The cache only saves time: a read-only tree is verified every time.
    with contextlib.suppress(OSError):
        atomic_write_text(state, json.dumps(_signature(files), sort_keys=True))


def forget_verified(raw: Path) -> None:
    _state_path(Path(raw)).unlink(missing_ok=True)


def stale_fetch(site: dict[str, Any], raw: str | Path) -> str | None:
    """Why the fetched ``raw`` no longer holds what was fetched (so the workflow must fetch it
    again), or None.

    Cheap when nothing changed: file sizes, mtimes and inodes are compared with the tree verified
    last; only the files whose stat differs are hashed. A tree never fetched returns None (the
    fetch is planned anyway)."""
    raw = Path(raw)
    fetched = _load_manifest(fetch_manifest_path(raw))
    if fetched is None:
        return None
    # Another pinned revision is not checked here: it is a param of the fetch, which Snakemake
    # compares itself (a dry run with another pin must not mark the data for a refetch).
    if not raw.is_dir():
        return "the fetched folder was deleted"
    files, links = _WALKS[_walk_key(raw)] = _walk(raw)
    if links:
        return f"{links[0]} is a symlink (the fetch writes regular files only)"
    want = {f["path"]: f["md5"] for f in fetched["files"]}
    if set(files) != set(want):
        extra = sorted(set(files) - set(want))
        gone = sorted(set(want) - set(files))
        return f"{(gone or extra)[0]} was {'deleted' if gone else 'added'} after the fetch"
    try:
        known = json.loads(_state_path(raw).read_text())
    except (OSError, ValueError):
        known = {}
    signature = _signature(files)
    for rel in sorted(want):
        if known.get(rel) != signature[rel] and file_hash(raw / rel, "md5") != want[rel]:
            return f"{rel} was altered after the fetch"
    if known != signature:
        _save_verified(raw, files)
    return None


def stamp_path(raw: str | Path) -> Path:
    """The fetch's change stamp: an input of the fetch job, rewritten when the fetched tree changed."""
    raw = Path(raw)
    return raw.parent / ".state" / f"{raw.name}.changed"


def refresh_fetch_stamp(site: dict[str, Any], raw: str | Path) -> str | None:
    """While the workflow is planned: when ``raw`` no longer holds what was fetched, rewrite its
    stamp (an input of the fetch, so Snakemake fetches it again) and return why.

    A new stamp is dated 1970, older than any fetch, so it plans nothing by itself. Snakemake
    would not rerun a fetch whose output folder is merely missing when everything after it is up
    to date; a newer input with new content is what makes it fetch again."""
    stamp = stamp_path(raw)
    if not stamp.exists():
        atomic_write_text(stamp, "fetched data unchanged\n")
        os.utime(stamp, ns=(0, 0))
    reason = stale_fetch(site, raw)
    if reason:
        forget_verified(Path(raw))
        atomic_write_text(stamp, f"{reason} (detected {time.time_ns()})\n")
    return reason


def remember_verified(raw: str | Path) -> None:
    """After a fetch verified every file: record the tree's stat signature for :func:`stale_fetch`."""
    files, _ = _walk(Path(raw))
    _save_verified(Path(raw), files)


# -- ketamap verify --------------------------------------------------------------------------


def verify_run(workdir: str | Path = ".") -> tuple[list[str], dict[str, int]]:
    """Re-check a finished run in ``workdir``: every fetched dataset against its fetch manifest,
    every table and result against its recorded hash, every output against ``results/manifest.json``,
    and no temporary file of an interrupted write. Returns (one line per drifted file, counts)."""
    workdir = Path(workdir)
    problems: list[str] = []
    counts = {
        "fetched datasets": 0,
        "session pieces": 0,
        "tables and results": 0,
        "manifest entries": 0,
    }
    raw_root = workdir / "resources" / "raw"
    for manifest in sorted(raw_root.glob("*.fetch.json")) if raw_root.is_dir() else []:
        raw = manifest.with_name(manifest.name.removesuffix(".fetch.json"))
        fetched: dict[str, Any] = _load_manifest(manifest) or {}
        entry: dict[str, Any] = {
            "id": raw.name,
            **{k: fetched[k] for k in ("registry", "path", "revision") if k in fetched},
        }
        counts["fetched datasets"] += 1
        try:
            verify_fetched(entry, raw)
        except KetamapError as exc:
            problems.append(str(exc))
    pieces = workdir / "resources" / "pieces"
    results = workdir / "results"
    for what, root, pattern in (
        ("session pieces", pieces, "*.zip"),
        ("tables and results", results, "*.parquet"),
    ):
        for path in sorted(root.rglob(pattern)) if root.is_dir() else []:
            counts[what] += 1
            try:
                verify_recorded(path, "it")
            except KetamapError as exc:
                problems.append(str(exc).replace(str(workdir) + os.sep, ""))
    run_manifest = results / "manifest.json"
    if run_manifest.is_file():
        try:
            outputs = json.loads(run_manifest.read_text())["outputs"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"file '{run_manifest}': not a ketamap run manifest")
            outputs = []
        for entry in outputs:
            counts["manifest entries"] += 1
            path = workdir / entry["path"]
            if not path.is_file():
                problems.append(
                    f"file '{entry['path']}': listed in results/manifest.json but missing"
                )
            elif file_hash(path) != entry["sha256"]:
                problems.append(
                    f"file '{entry['path']}', field 'sha256': differs from results/manifest.json; "
                    f"expected {entry['sha256'][:12]}..."
                )
    for leftover in sorted(
        [*leftovers(results), *(leftovers(pieces) if pieces.is_dir() else [])]
        if results.is_dir()
        else []
    ):
        problems.append(
            f"file '{leftover.relative_to(workdir)}': temporary file of an interrupted write"
        )
    return problems, counts
