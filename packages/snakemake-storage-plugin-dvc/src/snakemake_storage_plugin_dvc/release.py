"""One registry at one revision: what DVC tracks there, and its objects fetched and md5-verified.

Everything about *what* a path holds comes from git at the pinned revision (the ``.dvc`` files)
and from the ``.dir`` listings those pin (fetched from the remote and verified against the md5
git records). The data itself comes from the registry's default DVC remote, one object per file,
and is verified against the md5 DVC recorded before anything is put in place.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from snakemake_interface_common.exceptions import WorkflowError

if TYPE_CHECKING:
    from snakemake_storage_plugin_dvc.index import Index


@dataclass
class Out:
    """One DVC-tracked output (a file or a folder) of the registry at the revision."""

    path: str  # inside the registry
    dvc_file: str
    md5: str  # the object name; a folder's ends with ".dir"
    size: int | None
    _files: dict[str, str] | None = None  # folder outs: relpath -> md5, loaded on demand
    _sorted: list[str] | None = None  # the keys of _files, sorted (prefix look-ups)

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclass
class Entry:
    path: str
    md5: str
    out: Out


class DVCRegistryError(WorkflowError):
    """A failure that names the registry URL, the revision and, where known, the path."""


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _timeout_options(remote_url: str, timeout: float | None) -> dict[str, Any]:
    if timeout is None:
        return {}
    seconds = max(1, math.ceil(timeout))  # DVC takes whole seconds
    scheme = remote_url.split("://", 1)[0].lower() if "://" in remote_url else "local"
    if scheme == "ssh":
        return {"timeout": seconds}
    if scheme == "s3":
        return {"connect_timeout": seconds, "read_timeout": seconds}
    return {}


@dataclass
class Release:
    """The registry ``registry`` at revision ``rev``, opened once per provider."""

    registry: str
    rev: str
    cache_dir: Path
    timeout: float | None = None
    #: DVC remote options for the default remote (``dvc remote modify``: keyfile, endpointurl,
    #: ...); they override the timeout's options.
    remote_options: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    remote_url: str = ""
    outs: list[Out] = field(default_factory=list)
    #: Objects fetched from the remote by this release (``.dir`` listings and files).
    fetched: list[str] = field(default_factory=list)
    #: The index this release was read from (see :meth:`from_index`); None: opened from git.
    index: Path | None = None
    _fs: Any = None
    _odb: Any = None
    _sizes: dict[str, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- opening ------------------------------------------------------------------------------

    def where(self, path: str | None = None) -> str:
        text = f"registry {self.registry}, revision {self.rev!r}"
        return f"{text}, path {path!r}" if path is not None else text

    @classmethod
    def from_index(
        cls,
        index: Index,
        cache_dir: Path,
        timeout: float | None = None,
        remote_options: dict[str, Any] | None = None,
    ) -> Release:
        """The release as an index describes it, without opening the registry: what its outputs
        hold, their files' md5 and sizes. The registry is opened when a path outside the indexed
        outputs is asked for or an object is fetched (:meth:`open` then checks the index)."""
        release = cls(
            index.registry,
            index.revision,
            cache_dir,
            timeout=timeout,
            remote_options=dict(remote_options or {}),
            commit=index.commit,
        )
        release.index = index.path
        release.outs = index.outs
        release._sizes.update(index.sizes)
        return release

    @property
    def _lazy(self) -> bool:
        """Read from an index and not opened yet."""
        return self.index is not None and self._fs is None

    def open(self) -> Release:
        """Open the registry at the revision (once). A release read from an index keeps the
        index's folder listings, after checking that git pins the same outputs."""
        with self._lock:
            if self._fs is not None:
                return self
            indexed = {o.path: o for o in self.outs} if self.index is not None else {}
            self._open()
            for out in self.outs:
                known = indexed.pop(out.path, None)
                if known is None:
                    continue
                if known.md5 != out.md5:
                    raise DVCRegistryError(
                        f"{self.where(out.path)}: the index {self.index} lists other content "
                        f"(md5 {known.md5}) than git pins at this revision now ({out.md5}); the "
                        "revision moved since the index was written: write the index again"
                    )
                out._files = known._files
            if indexed:
                raise DVCRegistryError(
                    f"{self.where(sorted(indexed)[0])}: the index {self.index} lists this "
                    "output, which is not DVC-tracked at this revision now; the revision moved "
                    "since the index was written: write the index again"
                )
            return self

    def _open(self) -> None:
        from dvc.api import DVCFileSystem
        from dvc.scm import RevError, SCMError

        try:
            fs = DVCFileSystem(self.registry, rev=self.rev)
            self.commit = fs.repo.get_rev()
        except RevError:
            raise DVCRegistryError(
                f"{self.where()}: the revision is not in the registry "
                "(expected a tag, branch or commit of it)"
            ) from None
        except (SCMError, OSError) as exc:
            raise DVCRegistryError(
                f"{self.where()}: cannot open the registry as a git repository ({exc})"
            ) from None
        except Exception as exc:  # DVC's own errors (NotDvcRepoError, clone failures, ...)
            raise DVCRegistryError(f"{self.where()}: cannot open the registry ({exc})") from None
        config = fs.repo.config
        name = config["core"].get("remote")
        remote = dict(config["remote"].get(name, {})) if name else {}
        # the remote the objects come from: the `url` option, where one is given, overrides git's
        self.remote_url = str(self.remote_options.get("url") or remote.get("url") or "")
        options = {**_timeout_options(self.remote_url, self.timeout), **self.remote_options}
        if options:
            fs = DVCFileSystem(self.registry, rev=self.rev, remote_config=options)
        self._fs = fs
        self.outs = self._list_outs()

    def _list_outs(self) -> list[Out]:
        gitfs = self._fs.repo.fs
        outs = []
        for name in sorted(gitfs.find("/")):
            rel = name.lstrip("/")
            if not rel.endswith(".dvc") or rel.startswith(".dvc/"):
                continue
            try:
                meta = yaml.safe_load(gitfs.read_text(name)) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise DVCRegistryError(
                    f"{self.where(rel)}: cannot read the .dvc file ({exc})"
                ) from None
            for out in meta.get("outs") or []:
                path = posixpath.normpath(posixpath.join(posixpath.dirname(rel), out["path"]))
                md5 = out.get("md5")
                if not md5:
                    continue  # not committed yet
                if out.get("hash") != "md5":
                    raise DVCRegistryError(
                        f"{self.where(path)}: tracked by DVC 2 (no 'hash: md5' in {rel}); "
                        "this plugin reads DVC 3 registries (re-add the dataset with DVC 3)"
                    )
                outs.append(Out(path, rel, str(md5), out.get("size")))
        return outs

    # -- what a path is -----------------------------------------------------------------------

    def out_of(self, path: str) -> Out | None:
        """The output that holds ``path`` (the path itself or a file inside a folder output)."""
        for out in self.outs:
            if path == out.path or path.startswith(out.path + "/"):
                return out
        if self._lazy:  # not in the index: the registry knows
            return self.open().out_of(path)
        return None

    def outs_under(self, path: str) -> list[Out]:
        """The outputs inside the folder ``path`` (a folder that holds several datasets)."""
        if self._lazy:  # an index may list some of them only
            self.open()
        return [o for o in self.outs if o.path.startswith(path + "/")]

    def index_outs(self, paths: list[str] | None = None, jobs: int = 8) -> list[dict[str, Any]]:
        """The outputs at or under ``paths`` (default: every output) in the shape
        :func:`snakemake_storage_plugin_dvc.index.write` takes, with every file's size (one
        stat of the remote per object not in the cache, ``jobs`` at a time)."""
        from concurrent.futures import ThreadPoolExecutor

        self.open()
        chosen = [
            o
            for o in self.outs
            if paths is None or any(o.path == p or o.path.startswith(p + "/") for p in paths)
        ]
        entries = [Entry(p, md5, o) for o in chosen if o.is_dir for p, md5 in self.files(o).items()]
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            sizes = list(pool.map(self.size, entries))
        size_of = {e.path: s for e, s in zip(entries, sizes, strict=True)}
        found: list[dict[str, Any]] = []
        for out in chosen:
            if out.is_dir:
                files = {
                    p[len(out.path) + 1 :]: {"md5": md5, "size": size_of[p]}
                    for p, md5 in self.files(out).items()
                }
                found.append({"path": out.path, "md5": out.md5, "files": files})
            else:
                found.append({"path": out.path, "md5": out.md5, "size": out.size})
        return found

    def files(self, out: Out) -> dict[str, str]:
        """Every file of ``out`` (registry path -> md5); a folder's listing is fetched once."""
        if not out.is_dir:
            return {out.path: out.md5}
        with self._lock:
            if out._files is None:
                local = self._object(out.md5, what=out.path)
                listing = json.loads(local.read_text())
                out._files = {f"{out.path}/{e['relpath']}": e["md5"] for e in listing}
        return out._files

    def entries(self, path: str) -> list[Entry]:
        """The files the query ``path`` names: one file, or every file under a folder.

        Inside a folder output this is a binary search in its sorted listing (called several
        times per query: a workflow with one query per session must not scan the whole
        dataset's listing each time)."""
        out = self.out_of(path)
        if out is None:
            return [
                Entry(p, md5, o) for o in self.outs_under(path) for p, md5 in self.files(o).items()
            ]
        files = self.files(out)
        if path in files:
            return [Entry(path, files[path], out)]
        with self._lock:
            if out._sorted is None:
                out._sorted = sorted(files)
            paths = out._sorted
        prefix = path + "/"
        found = []
        i = bisect.bisect_left(paths, prefix)
        while i < len(paths) and paths[i].startswith(prefix):
            found.append(Entry(paths[i], files[paths[i]], out))
            i += 1
        return found

    def size(self, entry: Entry) -> int:
        """The size of a file, from its ``.dvc`` entry or its object on the remote."""
        if not entry.out.is_dir and entry.out.size is not None:
            return int(entry.out.size)
        with self._lock:
            if entry.md5 not in self._sizes:
                cached = self._cache_path(entry.md5)
                if cached.is_file():
                    self._sizes[entry.md5] = cached.stat().st_size
                else:
                    odb = self.odb(entry.path)
                    try:
                        info = odb.fs.info(odb.oid_to_path(entry.md5))
                    except FileNotFoundError:
                        raise self._missing(entry.path, entry.md5) from None
                    except Exception as exc:
                        raise self._remote_error(entry.path, exc) from None
                    self._sizes[entry.md5] = int(info["size"])
            return self._sizes[entry.md5]

    # -- objects ------------------------------------------------------------------------------

    def odb(self, path: str | None = None) -> Any:
        with self._lock:
            if self._lazy:
                self.open()
            if self._odb is None:
                if not self.remote_url:
                    raise DVCRegistryError(
                        f"{self.where(path)}: the registry has no default DVC remote at this "
                        "revision (expected `dvc remote add -d ...` in its .dvc/config)"
                    )
                try:
                    self._odb = self._fs.repo.cloud.get_remote_odb()
                except Exception as exc:
                    raise self._remote_error(path, exc) from None
            return self._odb

    def _cache_path(self, md5: str) -> Path:
        return self.cache_dir / "md5" / md5[:2] / md5[2:]

    def _missing(self, path: str, md5: str) -> DVCRegistryError:
        return DVCRegistryError(
            f"{self.where(path)}: the DVC remote {self.remote_url} has no object {md5} "
            "(ask the registry's maintainers to `dvc push` the release)"
        )

    def _remote_error(self, path: str | None, exc: BaseException) -> DVCRegistryError:
        text = str(exc).strip() or type(exc).__name__
        return DVCRegistryError(
            f"{self.where(path)}: cannot use the DVC remote {self.remote_url or '(none)'}: {text}"
        )

    def _object(self, md5: str, what: str) -> Path:
        """The verified object ``md5`` in the local cache, fetched from the remote if needed.

        A download whose md5 differs from ``md5`` is deleted and reported; the cache only ever
        holds verified objects (and copies out of it are verified again)."""
        cached = self._cache_path(md5)
        if cached.is_file():
            return cached
        odb = self.odb(what)
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{cached.name}.", dir=cached.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                odb.fs.get_file(odb.oid_to_path(md5), str(tmp))
            except FileNotFoundError:
                raise self._missing(what, md5) from None
            except Exception as exc:
                raise self._remote_error(what, exc) from None
            self.fetched.append(md5)
            got = _md5_file(tmp)
            if got != md5.removesuffix(".dir"):
                raise DVCRegistryError(
                    f"{self.where(what)}: md5 mismatch for the object from the DVC remote "
                    f"{self.remote_url}: expected {md5.removesuffix('.dir')}, got {got} "
                    "(the remote's copy is corrupted; nothing was kept)"
                )
            tmp.chmod(0o444)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    def materialize(self, entry: Entry, dest: Path) -> None:
        """Copy the verified content of ``entry`` to ``dest`` (which must not be in use)."""
        for attempt in range(2):
            cached = self._object(entry.md5, entry.path)
            digest = hashlib.md5(usedforsecurity=False)
            with cached.open("rb") as src, dest.open("wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() == entry.md5:
                return
            # A cache entry changed after it was verified: drop it and fetch it again, once.
            with contextlib.suppress(OSError):
                cached.unlink()
            if attempt:
                dest.unlink(missing_ok=True)
                raise DVCRegistryError(
                    f"{self.where(entry.path)}: md5 mismatch: expected {entry.md5}, "
                    f"got {digest.hexdigest()}"
                )


def iter_dirs(path: str) -> Iterator[str]:
    """The ancestors of a registry path, nearest first."""
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path
