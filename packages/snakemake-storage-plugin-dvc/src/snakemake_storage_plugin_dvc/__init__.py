"""Snakemake storage plugin for DVC data registries (read-only).

A query ``dvc://<registry>@<revision>//<path>`` names a file, or a folder, of a DVC-tracked
dataset in the git + DVC repository ``<registry>`` at ``<revision>``. Snakemake retrieves exactly
those files from the registry's default DVC remote, each verified against the md5 DVC recorded.
See the README for the syntax, the settings and how modification times are chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.common import Operation
from snakemake_interface_storage_plugins.io import IOCacheStorageInterface
from snakemake_interface_storage_plugins.settings import StorageProviderSettingsBase
from snakemake_interface_storage_plugins.storage_object import StorageObjectRead
from snakemake_interface_storage_plugins.storage_provider import (
    ExampleQuery,
    QueryType,
    StorageProviderBase,
    StorageQueryValidationResult,
)

from snakemake_storage_plugin_dvc.query import (
    Query,
    QueryError,
    has_wildcards,
    parse,
    registry_slug,
    rev_slug,
)
from snakemake_storage_plugin_dvc.release import DVCRegistryError, Entry, Release, iter_dirs

__all__ = [
    "DVCRegistryError",
    "StorageObject",
    "StorageProvider",
    "StorageProviderSettings",
]

DEFAULT_JOBS = 4


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snakemake-storage-plugin-dvc"


@dataclass
class StorageProviderSettings(StorageProviderSettingsBase):
    cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the content-addressed cache of verified DVC objects, shared by "
            "all registries and revisions (default: $XDG_CACHE_HOME/snakemake-storage-plugin-dvc "
            "or ~/.cache/snakemake-storage-plugin-dvc).",
            "env_var": False,
            "required": False,
        },
    )
    jobs: int | None = field(
        default=None,
        metadata={
            "help": "Queries retrieved at the same time, and files of a folder query "
            f"downloaded in parallel (default {DEFAULT_JOBS}).",
            "env_var": False,
            "required": False,
            "type": int,
        },
    )
    registry: str | None = field(
        default=None,
        metadata={
            "help": "The registry (git URL or local path) of queries written as a path alone; "
            "with `revision`, typically in a tagged `storage` directive per registry.",
            "env_var": False,
            "required": False,
        },
    )
    revision: str | None = field(
        default=None,
        metadata={
            "help": "The revision (tag, commit, branch) of queries written as a path alone. "
            "Not part of the query, so pinning another release with identical files reruns "
            "nothing even under Snakemake's `input` rerun trigger.",
            "env_var": False,
            "required": False,
        },
    )
    index: str | None = field(
        default=None,
        metadata={
            "help": "A JSON index of the registry at the revision (written by "
            "`python -m snakemake_storage_plugin_dvc index`): when the file exists and names "
            "the same registry and revision, planning answers from it without opening the "
            "registry. Retrieval still opens it and checks the index against git.",
            "env_var": False,
            "required": False,
        },
    )
    remote_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "DVC options for the registry's default remote, as `dvc remote modify` "
            "takes them (keyfile, user, port, endpointurl, ...): a mapping in a storage "
            "directive, `key=value,key=value` on the command line. They override the "
            "registry's .dvc/config and the `timeout` setting.",
            "env_var": False,
            "required": False,
        },
    )
    timeout: float | None = field(
        default=None,
        metadata={
            "help": "Seconds an SSH or S3 DVC remote may stay silent (connect/read timeout); "
            "default: DVC's own.",
            "env_var": False,
            "required": False,
            "type": float,
        },
    )


def parse_remote_options(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """The ``remote_options`` setting as a dict: a mapping as it is, ``key=value,key=value``
    split (the command line's form). Anything else is an error naming the setting."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, str):
        options = {}
        for item in value.split(","):
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise WorkflowError(
                    f"DVC storage setting remote_options: {item!r} is not key=value "
                    f"(in {value!r}; expected e.g. keyfile=~/.ssh/id_ed25519,port=2222)"
                )
            options[key.strip()] = val.strip()
        return options
    raise WorkflowError(
        f"DVC storage setting remote_options: a {type(value).__name__}, expected a mapping or "
        "key=value,key=value"
    )


def _close_ssh_on_its_own_loop() -> None:
    """Make sshfs close a collected connection on the loop the connection lives on.

    sshfs's finalizer (``SSHFileSystem._finalize``, sshfs 2026.8) creates its close task on
    ``asyncio.get_running_loop()`` of whatever thread the garbage collector happens to run in.
    Retrievals run in worker threads, and their filesystems may be collected in Snakemake's main
    thread while it runs a short event loop of its own (e.g. evaluating a job's ``input.size_mb``):
    the close then lands on that loop, can never finish there (the connection belongs to
    fsspec's loop), and Snakemake waits for it forever when its loop ends (seen once in six runs
    of ketamap's SSH per-session test: a hang after the last job; the stuck task was sshfs's
    close). This finalizer posts the close to the connection's own loop without waiting,
    whichever thread collects it. Set before any SSH filesystem is made (the provider's start).
    """
    try:
        from sshfs.spec import SSHFileSystem
    except ImportError:  # no SSH support installed: nothing to mend
        return

    def finalize(loop: Any, pool: Any, stack: Any) -> None:
        async def close() -> None:
            await pool.close()
            with contextlib.suppress(BrokenPipeError):  # a half-made client (as sshfs does)
                await stack.aclose()

        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), loop)

    SSHFileSystem._finalize = staticmethod(finalize)


class StorageProvider(StorageProviderBase):
    settings: StorageProviderSettings

    def __post_init__(self) -> None:
        settings = self.settings or StorageProviderSettings()
        self.cache_dir = (
            Path(settings.cache).expanduser() if settings.cache else default_cache_dir()
        )
        self.jobs = max(1, settings.jobs or DEFAULT_JOBS)
        self.timeout = settings.timeout
        self.remote_options = parse_remote_options(settings.remote_options)
        self.registry = settings.registry
        self.revision = None if settings.revision is None else str(settings.revision)
        self.index = Path(settings.index).expanduser() if settings.index else None
        self._releases: dict[tuple[str, str], Release] = {}
        self._lock = threading.Lock()
        _close_ssh_on_its_own_loop()
        self._retrievals: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @classmethod
    def example_queries(cls) -> list[ExampleQuery]:
        return [
            ExampleQuery(
                query="dvc://git@github.com:org/registry.git@v2//datasets/site_a/participants.tsv",
                description="One file of the dataset datasets/site_a at tag v2 of a registry "
                "on GitHub (SSH).",
                type=QueryType.INPUT,
            ),
            ExampleQuery(
                query="dvc://https://example.org/registry.git@v2//datasets/site_a/phenotype",
                description="A folder inside a DVC-tracked dataset (every file under it).",
                type=QueryType.INPUT,
            ),
            ExampleQuery(
                query="dvc:///srv/registry@3f2a9c1//datasets/site_b",
                description="A whole dataset of a registry in a local folder, at a commit.",
                type=QueryType.INPUT,
            ),
        ]

    def rate_limiter_key(self, query: str, operation: Operation) -> Any:
        return None

    def default_max_requests_per_second(self) -> float:
        return 100.0

    def use_rate_limiter(self) -> bool:
        return False

    @classmethod
    def is_valid_query(cls, query: str) -> StorageQueryValidationResult:
        try:
            # syntax only: a path alone is valid here, the provider's settings complete it
            parse(query, registry="<registry>", rev="<revision>")
        except QueryError as exc:
            return StorageQueryValidationResult(query=query, valid=False, reason=str(exc))
        return StorageQueryValidationResult(query=query, valid=True)

    def safe_print(self, query: str) -> str:
        # https://user:token@host/... : keep the user, hide the secret.
        import re

        return re.sub(r"(://[^/@:]+):[^/@]+@", r"\1:***@", query)

    def seen_path(self, path: str | Path) -> str:
        """A local path as the ``seen`` records name it: relative to the working directory when
        the cache folder lies inside it (the records then move with the workflow folder, as its
        outputs do: a copied or moved project sees nothing new), else absolute (a cache shared by
        several workflow folders keeps one record per folder)."""
        where = Path(path).resolve()
        base = Path.cwd().resolve()
        if self.cache_dir.resolve().is_relative_to(base) and where.is_relative_to(base):
            return where.relative_to(base).as_posix()
        return str(where)

    def seen_registry(self, registry: str) -> str:
        """A registry as the ``seen`` records name it: a URL as it is, a local folder as
        :meth:`seen_path` names it."""
        if "://" in registry or registry.startswith("git@"):
            return registry
        return self.seen_path(registry)

    def seen(self, key: str, content: str) -> float:
        """The time ``content`` was first seen for ``key`` (recorded in the cache folder)."""
        record = self.cache_dir / "seen" / (hashlib.sha1(key.encode()).hexdigest() + ".json")
        with self._lock:
            try:
                known = json.loads(record.read_text())
            except (OSError, ValueError):
                known = {}
            if known.get("key") == key and known.get("content") == content:
                return float(known["mtime"])
            stamp = max(time.time(), float(known.get("mtime", 0.0)) + 0.001)
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f".{record.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"key": key, "content": content, "mtime": stamp}))
            os.replace(tmp, record)
            return stamp

    def retrievals(self) -> asyncio.Semaphore:
        """At most `jobs` retrievals of this provider at a time (per event loop)."""
        loop = asyncio.get_running_loop()
        if self._retrievals is None or self._retrievals[0] is not loop:
            self._retrievals = (loop, asyncio.Semaphore(self.jobs))
        return self._retrievals[1]

    def release(self, query: Query) -> Release:
        """The registry at the query's revision, opened once per run of Snakemake, or read from
        the `index` setting's file when that describes the same registry and revision."""
        with self._lock:
            release = self._releases.get(query.release)
            if release is None:
                release = self._indexed(query)
                if release is None:
                    release = Release(
                        query.registry,
                        query.rev,
                        self.cache_dir,
                        timeout=self.timeout,
                        remote_options=self.remote_options,
                    ).open()
                self._releases[query.release] = release
            return release

    def _indexed(self, query: Query) -> Release | None:
        if self.index is None or not self.index.is_file():
            return None  # not written yet (e.g. before the job that writes it): the registry
        from snakemake_storage_plugin_dvc.index import load

        index = load(self.index)
        if (index.registry, index.revision) != query.release:
            # another release (e.g. the revision setting changed since the index was written)
            self.logger.debug(
                f"DVC index {self.index} describes {index.registry}@{index.revision}, not "
                f"{query.registry}@{query.rev}: the registry is opened instead"
            )
            return None
        return Release.from_index(
            index, self.cache_dir, timeout=self.timeout, remote_options=self.remote_options
        )


class StorageObject(StorageObjectRead):
    provider: StorageProvider

    def __post_init__(self) -> None:
        self.parse_error = ""
        try:
            self.parsed: Query | None = parse(
                self.query, self.provider.registry, self.provider.revision
            )
        except QueryError as exc:
            self.parsed = None  # Snakemake reports is_valid_query's reason, _q() this one
            self.parse_error = str(exc)

    # -- helpers ------------------------------------------------------------------------------

    def _q(self) -> Query:
        if self.parsed is None:
            raise WorkflowError(
                f"invalid DVC query {self.print_query}: {self.parse_error or self.is_valid_query()}"
            )
        return self.parsed

    def _release(self) -> Release:
        return self.provider.release(self._q())

    def _entries(self) -> list[Entry]:
        return self._release().entries(self._q().path)

    def _is_file(self, release: Release) -> bool:
        out = release.out_of(self._q().path)
        return out is not None and self._q().path in release.files(out)

    # -- identity -----------------------------------------------------------------------------

    def local_suffix(self) -> str:
        return self._suffix(self._q(), self._q().path)

    @staticmethod
    def _suffix(q: Query, path: str) -> str:
        """Where ``path`` of the query's release lands under the provider's local prefix."""
        if q.short:
            # The provider (a tagged storage directive) is one registry at one revision: its
            # local prefix is its own, and the path alone keeps a re-release's files in place.
            return path
        return f"{registry_slug(q.registry)}/{rev_slug(q.rev)}/{path}"

    def get_inventory_parent(self) -> str | None:
        """The DVC output (dataset) holding the query: one inventory lists all of its files."""
        q = self.parsed
        if q is None or has_wildcards(str(q)):
            return None
        try:
            out = self.provider.release(q).out_of(q.path)
        except WorkflowError:
            return None
        if out is None:
            return None
        return self.cache_key(self._suffix(q, out.path))

    async def inventory(self, cache: IOCacheStorageInterface) -> None:
        """Record every file and folder of the dataset holding the query, with its size (where
        known without asking the remote) and md5, from one ``.dir`` listing. Modification times
        are left to :meth:`mtime` (one small local record per queried path)."""
        parent = self.get_inventory_parent()
        if parent is None or parent in cache.exists_in_storage:
            return
        q = self._q()
        release = self.provider.release(q)
        out = release.out_of(q.path)
        assert out is not None
        folders: set[str] = set()
        for path, md5 in release.files(out).items():
            key = self.cache_key(self._suffix(q, path))
            cache.exists_in_storage[key] = True
            cache.checksum[key] = f"md5:{md5}"
            if not out.is_dir and out.size is not None:
                cache.size[key] = int(out.size)
            folders.update(
                d for d in iter_dirs(path) if d == out.path or d.startswith(out.path + "/")
            )
        for folder in folders:
            key = self.cache_key(self._suffix(q, folder))
            cache.exists_in_storage[key] = True
            cache.size[key] = 0
        cache.exists_in_storage[parent] = True
        has_inventory = getattr(cache.exists_in_storage, "has_inventory", None)
        if has_inventory is not None:
            has_inventory.add(parent)

    def cleanup(self) -> None:
        pass

    # -- metadata -----------------------------------------------------------------------------

    def exists(self) -> bool:
        # A registry or revision that cannot be opened is an error, not a missing file.
        return bool(self._entries())

    def mtime(self) -> float:
        """When this workflow first saw the content the query names now (see the README).

        The same for as long as the content stays the same, whatever the revision is called; a
        new time, later than every earlier one, when the content differs from what was last seen
        for this registry and path."""
        entries = self._entries()
        if not entries:
            raise self._not_found()
        q = self._q()
        listing = sorted((e.path, e.md5) for e in entries)
        content = hashlib.md5(json.dumps(listing).encode(), usedforsecurity=False).hexdigest()
        key = "|".join(
            (
                self.provider.seen_path(self.provider.local_prefix),
                self.provider.seen_registry(q.registry),
                q.path,
            )
        )
        return self.provider.seen(key, content)

    def size(self) -> int:
        release = self._release()
        if not self._is_file(release):
            if not self._entries():
                raise self._not_found()
            return 0
        return release.size(self._entries()[0])

    def local_footprint(self) -> int:
        release = self._release()
        return sum(release.size(e) for e in self._entries())

    def checksum(self) -> str | None:
        release = self._release()
        if not self._is_file(release):
            return None
        return f"md5:{self._entries()[0].md5}"

    def _not_found(self) -> DVCRegistryError:
        release = self._release()
        tracked = ", ".join(o.path for o in release.outs) or "none"
        return DVCRegistryError(
            f"{release.where(self._q().path)}: no DVC-tracked file or folder at this path "
            f"(DVC-tracked outputs at this revision: {tracked})"
        )

    # -- retrieval ----------------------------------------------------------------------------

    async def managed_retrieve(self) -> None:
        """The interface's managed_retrieve, with :meth:`retrieve_object` in a worker thread.

        Snakemake starts the retrievals of the jobs it is about to run as asyncio tasks, but the
        interface calls the blocking retrieve_object inside the event loop, so a site's sessions
        would arrive one after the other (one SSH or S3 round trip per object). Here up to `jobs`
        queries of a provider download together, each folder's files `jobs` at a time."""
        await self.wait_for_free_space()
        try:
            self.local_path().parent.mkdir(parents=True, exist_ok=True)
            async with self._rate_limiter(Operation.RETRIEVE), self.provider.retrievals():
                await asyncio.to_thread(self.retrieve_object)
        except Exception as exc:
            # retrieve_object leaves nothing of a failed retrieval in place; an older copy at the
            # destination goes too, as with the interface's own managed_retrieve.
            local = self.local_path()
            if local.is_dir() and not local.is_symlink():
                shutil.rmtree(local, ignore_errors=True)
            elif local.exists() or local.is_symlink():
                local.unlink()
            raise WorkflowError(
                f"Failed to retrieve storage object from {self.print_query}", exc
            ) from None

    def retrieve_object(self) -> None:
        """Put the query's files at local_path(), every one md5-verified; on any failure nothing
        of this retrieval is left in place."""
        # Opened even when an index answered the planning: git at the revision must pin what
        # the index says before any of its md5 is trusted (see Release.open).
        release = self._release().open()
        entries = self._entries()
        if not entries:
            raise self._not_found()
        mtime = self.mtime()
        dest = self.local_path()
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            if self._is_file(release):
                target = staging / "file"
                release.materialize(entries[0], target)
                os.utime(target, (mtime, mtime))
            else:
                target = staging / "dir"
                root = self._q().path

                def one(entry: Entry) -> None:
                    local = target / entry.path[len(root) + 1 :]
                    local.parent.mkdir(parents=True, exist_ok=True)
                    release.materialize(entry, local)
                    os.utime(local, (mtime, mtime))

                with ThreadPoolExecutor(max_workers=self.provider.jobs) as pool:
                    for future in [pool.submit(one, e) for e in entries]:
                        future.result()
                for folder in sorted(target.rglob("*"), reverse=True):
                    if folder.is_dir():
                        os.utime(folder, (mtime, mtime))
                os.utime(target, (mtime, mtime))
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(target, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
