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
from typing import Any

import yaml
from snakemake_interface_common.exceptions import WorkflowError


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
    commit: str = ""
    remote_url: str = ""
    outs: list[Out] = field(default_factory=list)
    #: Objects fetched from the remote by this release (``.dir`` listings and files).
    fetched: list[str] = field(default_factory=list)
    _fs: Any = None
    _odb: Any = None
    _sizes: dict[str, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- opening ------------------------------------------------------------------------------

    def where(self, path: str | None = None) -> str:
        text = f"registry {self.registry}, revision {self.rev!r}"
        return f"{text}, path {path!r}" if path is not None else text

    def open(self) -> Release:
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
        self.remote_url = str(remote.get("url") or "")
        options = _timeout_options(self.remote_url, self.timeout)
        if options:
            fs = DVCFileSystem(self.registry, rev=self.rev, remote_config=options)
        self._fs = fs
        self.outs = self._list_outs()
        return self

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
        return None

    def outs_under(self, path: str) -> list[Out]:
        """The outputs inside the folder ``path`` (a folder that holds several datasets)."""
        return [o for o in self.outs if o.path.startswith(path + "/")]

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
