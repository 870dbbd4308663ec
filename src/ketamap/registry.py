"""The consortium data registry: site datasets versioned with git + DVC, fetched at pinned revisions.

A registry is a git repository in which every site dataset (``datasets/<site>/``) is tracked by
DVC and pushed to a DVC remote; each release is a git tag. After a release the registry keeps no
data of its own (no workspace copy, no cache): every fetch comes from the remote, exactly as it
would from a partner's registry on an SSH or S3 remote.

:func:`fetch_site` pulls one site's dataset at the revision pinned in the config through
``dvc.api.DVCFileSystem`` (only that site's objects are transferred), checks every file against
the md5 recorded by DVC, and returns a manifest of the revision, commit and hashes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ketamap import integrity
from ketamap.config import section_schema, with_defaults
from ketamap.errors import RegistryError

# Every commit and tag of a registry has the same author and committer; with a fixed date
# (``date=`` / SOURCE_DATE_EPOCH) two clean builds of the same datasets give the same hashes.
log = logging.getLogger(__name__)

GIT_NAME = "ketamap registry"
GIT_EMAIL = "registry@ketamap.invalid"

#: Seconds to wait for a DVC remote to connect or answer (SSH connection setup, S3 connect/read):
#: the default of the config's fetch.timeout, read from the schema that declares it.
DEFAULT_TIMEOUT = float(section_schema("fetch")["properties"]["timeout"]["default"])

# Remote options that hold credentials or paths of one machine: written to the registry's
# untracked .dvc/config.local, never committed (partners use their own, see the README).
LOCAL_OPTIONS = frozenset(
    {
        "keyfile",
        "password",
        "passphrase",
        "ask_password",
        "ask_passphrase",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "profile",
        "credentialpath",
        "configpath",
    }
)

# The timeout of a push is the builder's choice, as each fetch's is the fetcher's: not committed.
TIMEOUT_OPTIONS = frozenset({"timeout", "connect_timeout", "read_timeout"})

# The DVC plugin each remote scheme needs (all of them are in requirements.lock).
PLUGINS = {
    "ssh": "dvc-ssh",
    "s3": "dvc-s3",
    "gs": "dvc-gs",
    "azure": "dvc-azure",
    "http": "dvc-http",
    "https": "dvc-http",
    "webdav": "dvc-webdav",
    "oss": "dvc-oss",
    "gdrive": "dvc-gdrive",
    "hdfs": "dvc-hdfs",
    "webhdfs": "dvc-webhdfs",
}


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "local"


def timeout_options(url: str, timeout: float | None) -> dict[str, Any]:
    """The DVC remote options that bound how long ``url``'s remote may stay silent."""
    if timeout is None:
        return {}
    seconds = max(1, math.ceil(timeout))  # DVC takes whole seconds
    scheme = _scheme(url)
    if scheme == "ssh":
        return {"timeout": seconds}
    if scheme == "s3":
        return {"connect_timeout": seconds, "read_timeout": seconds}
    return {}


def _dvc_error_lines(text: str) -> list[str]:
    """DVC's own error lines, without the log prefix and the "Having any troubles?" footer."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ERROR:"):
            line = line.removeprefix("ERROR:").strip()
            line = line.removeprefix("unexpected error - ").strip()
            lines.append(line)
    if lines:
        return lines
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith(("Having any troubles", "Traceback"))
    ][-1:]


def remote_cause(message: str, url: str, timeout: float | None) -> str:
    """One sentence for what went wrong with the remote at ``url``, from an error's text."""
    text = message.strip().strip(":").strip()
    parts: list[str] = []
    for part in text.split(": "):  # DVC often repeats the cause: "X: X"
        if not parts or part != parts[-1]:
            parts.append(part)
    text = ": ".join(parts)
    low = text.lower()
    scheme = _scheme(url)
    if "is supported, but requires" in low or (
        "no module named" in low and scheme in PLUGINS and PLUGINS[scheme].replace("-", "_") in low
    ):
        package = PLUGINS.get(scheme, "the DVC plugin for " + scheme)
        reason = text.rsplit(": ", 1)[-1] if ": " in text else "not installed"
        if "is supported, but requires" in reason:
            reason = "not installed"
        return (
            f"{scheme}:// remotes need the {package} package ({reason}); install it with "
            f"`make setup` (it is in requirements.lock) or `pip install {package}`"
        )
    if "connect call failed" in low or "connection refused" in low or "errno 111" in low:
        return f"connection refused ({text})"
    if not text or low.startswith("timeout") or "timed out" in low or "timeouterror" in low:
        wait = f"within {timeout:g} s" if timeout else "in time"
        return f"the remote did not answer {wait} ({text or 'timeout'})"
    if "could not connect to the endpoint" in low:
        return f"cannot connect to the endpoint ({text})"
    if "permission denied" in low and scheme == "ssh":
        return f"SSH authentication failed ({text}); check the user and keyfile"
    return text


def missing_plugin(url: str) -> str | None:
    """Why DVC cannot use ``url``'s kind of remote here (its plugin does not import), or None."""
    import importlib

    package = PLUGINS.get(_scheme(url))
    if package is None:
        return None
    try:
        importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        return remote_cause(f"is supported, but requires {package!r}: {exc}", url, None)
    return None


def probe_remote(url: str, config: dict[str, Any], timeout: float | None) -> str | None:
    """Why the server of an SSH or S3 remote cannot be used, or None when it answers.

    One connection, bounded by ``timeout`` in total: an sshd must send its greeting, an S3
    endpoint (``endpointurl`` or AWS_ENDPOINT_URL[_S3]) must answer an HTTP request. This turns a
    refused or silent server into one clear error at once, where the clients would retry for
    minutes. Servers that cannot be probed (an ~/.ssh/config alias, AWS itself) are left to DVC.
    """
    import http.client
    import socket
    from urllib.parse import urlsplit

    if timeout is None:
        return None
    scheme = _scheme(url)
    if scheme == "ssh":
        parts = urlsplit(url)
        host = config.get("host") or parts.hostname
        port = int(config.get("port") or parts.port or 22)
        if not host:
            return None
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                greeting = sock.recv(64)
        except socket.gaierror:
            return None
        except ConnectionRefusedError as exc:
            return f"connection refused ({host}:{port}: {exc.strerror})"
        except TimeoutError:
            return (
                f"the remote did not answer within {timeout:g} s ({host}:{port}: no SSH greeting)"
            )
        except OSError as exc:
            return f"cannot connect to {host}:{port} ({exc.strerror or exc})"
        if not greeting.startswith(b"SSH-"):
            return f"{host}:{port} is not an SSH server (it sent {greeting[:20]!r})"
        return None
    if scheme == "s3":
        endpoint = (
            config.get("endpointurl")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if not endpoint:
            return None
        parts = urlsplit(str(endpoint))
        if not parts.hostname:
            return None
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("HEAD", "/")
            conn.getresponse().read()
        except socket.gaierror as exc:
            return f"cannot resolve the endpoint {endpoint} ({exc.strerror or exc})"
        except ConnectionRefusedError as exc:
            return f"connection refused (endpoint {endpoint}: {exc.strerror})"
        except TimeoutError:
            return f"the remote did not answer within {timeout:g} s (endpoint {endpoint})"
        except (OSError, http.client.HTTPException):
            return None  # it answered something (TLS, HTTP): let DVC report the details
        finally:
            conn.close()
    return None


def _env(date: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME=GIT_NAME,
        GIT_AUTHOR_EMAIL=GIT_EMAIL,
        GIT_COMMITTER_NAME=GIT_NAME,
        GIT_COMMITTER_EMAIL=GIT_EMAIL,
    )
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    # DVC must not ask anything or send usage analytics from a build.
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _run(
    cmd: list[str],
    cwd: Path,
    what: str,
    *,
    date: str | None = None,
    remote: str | None = None,
    timeout: float | None = None,
) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=_env(date))
    if proc.returncode != 0:
        lines = _dvc_error_lines(proc.stderr or proc.stdout)
        detail = "; ".join(lines) if lines else f"exit {proc.returncode}"
        if remote is not None:
            raise RegistryError(
                f"{what} to the DVC remote {remote} failed: {remote_cause(detail, remote, timeout)}"
            )
        raise RegistryError(f"{what} failed: {detail}", file=str(cwd))
    return proc.stdout


def _dvc(args: list[str], cwd: Path, what: str, **kwargs: Any) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, what, **kwargs)


# A user's git config must not sign, hook or otherwise change the registry's commits.
GIT_OPTIONS = [
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
]


def _git(args: list[str], cwd: Path, what: str, date: str | None = None) -> str:
    return _run(["git", *GIT_OPTIONS, *args], cwd, what, date=date)


def _parse_date(date: str | None) -> str | None:
    """A git date for every commit and tag: ``date`` or SOURCE_DATE_EPOCH, else None (now)."""
    if date is None and os.environ.get("SOURCE_DATE_EPOCH"):
        date = "@" + os.environ["SOURCE_DATE_EPOCH"].strip()
    if date is None:
        return None
    if date.startswith("@") and date[1:].isdigit():
        return f"{date} +0000"
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(date.replace("Z", "+00:00"))
    except ValueError:
        raise RegistryError(
            f"cannot read the date {date!r}",
            field="date",
            expected="an ISO 8601 date (2026-01-01T00:00:00Z) or @<seconds since 1970>",
        ) from None
    return parsed.isoformat()


def build_registry(
    sites_dir: Path,
    out: Path,
    remote: str,
    release: str,
    *,
    remote_options: dict[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    date: str | None = None,
) -> list[str]:
    """Add every site dataset in ``sites_dir`` to the registry at ``out`` as release ``release``.

    Creates the registry (git + DVC, default remote ``remote``) when it does not exist. Each
    sub-folder of ``sites_dir`` is one site's dataset. Returns the site ids released.

    Atomic: the release is built in a temporary copy next to ``out`` and renamed into place
    only once it is pushed, committed and tagged; on any failure ``out`` is left as it was (absent
    or at its previous release). Every run sets the registry's remote to ``remote`` and
    ``remote_options`` (credentials and machine paths such as ``keyfile`` go to the untracked
    ``.dvc/config.local``, the rest into the committed ``.dvc/config``). ``timeout`` bounds how
    long the push waits for a silent remote. ``date`` (ISO 8601 or ``@epoch``; default
    ``SOURCE_DATE_EPOCH`` when set) fixes the commit and tag dates, making the hashes reproducible.
    """
    sites_dir, out = Path(sites_dir), Path(out)
    sites = sorted(p.name for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sites:
        raise RegistryError(
            "no site datasets found", file=str(sites_dir), expected="one folder per site"
        )
    for site in sites:
        _refuse_escaping_links(sites_dir / site, site)
    git_date = _parse_date(date)
    if out.exists() and not (out / ".git").exists():
        raise RegistryError(
            "the folder exists but is not a registry (no .git)",
            file=str(out),
            hint="choose a new folder or an existing registry",
        )
    if (out / ".git").exists():
        tags = _git(["tag", "--list"], out, "git tag").split()
        if release in tags:
            raise RegistryError(
                f"release {release!r} already exists",
                file=str(out),
                field="release",
                expected="a new tag",
                hint="choose another release name",
            )
    # A missing plugin or a server that does not answer fails at once, before anything is built.
    options = {**timeout_options(remote, timeout), **(remote_options or {})}
    cause = missing_plugin(remote) or probe_remote(remote, options, timeout)
    if cause:
        raise RegistryError(f"dvc push to the DVC remote {remote} failed: {cause}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        # A relative local remote stays relative to the registry (as `dvc remote add` stores it),
        # so the registry's tree, and its hashes, do not depend on where it was built.
        if "://" in remote:
            remote_url = remote
        elif Path(remote).is_absolute():
            remote_url = str(Path(remote))
        else:
            remote_url = os.path.relpath(Path(remote).resolve(), out.resolve())
        if (out / ".git").exists():
            shutil.rmtree(work)
            shutil.copytree(out, work, symlinks=True)
            previous = _dvc(["config", "remote.storage.url"], work, "dvc config").strip()
            if previous != remote_url:
                # Another remote: nothing of the previous one survives (url, options, keys).
                (work / ".dvc" / "config.local").unlink(missing_ok=True)
                _dvc(["remote", "add", "-f", "-d", "storage", remote_url], work, "dvc remote add")
        else:
            _git(["init", "-q", "-b", "main"], work, "git init")
            _dvc(["init", "-q"], work, "dvc init")
            _dvc(["config", "core.autostage", "true"], work, "dvc config")
            _dvc(["remote", "add", "-d", "storage", remote_url], work, "dvc remote add")
            _git(["add", "-A"], work, "git add")
            _git(
                ["commit", "-q", "-m", "Initialise the consortium data registry"],
                work,
                "git commit",
                git_date,
            )
        options = {**timeout_options(remote_url, timeout), **(remote_options or {})}
        for key, value in options.items():
            level = ["--local"] if key in LOCAL_OPTIONS or key in TIMEOUT_OPTIONS else []
            _dvc(
                ["remote", "modify", *level, "storage", key, str(value)],
                work,
                f"dvc remote modify {key}",
            )
        (work / "datasets").mkdir(exist_ok=True)
        for site in sites:
            target = work / "datasets" / site
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(sites_dir / site, target)
        _dvc(["add", "-q", *[f"datasets/{s}" for s in sites]], work, "dvc add")
        _dvc(["push"], work, "dvc push", remote=remote, timeout=timeout)
        _git(["add", "-A"], work, "git add")
        _git(
            ["commit", "-q", "--allow-empty", "-m", f"Release {release}: {', '.join(sites)}"],
            work,
            "git commit",
            git_date,
        )
        _git(
            ["tag", "-a", release, "-m", f"Consortium data release {release}"],
            work,
            "git tag",
            git_date,
        )
        # The registry is metadata only: data lives on the remote.
        for site in sites:
            shutil.rmtree(work / "datasets" / site)
        shutil.rmtree(work / ".dvc" / "cache", ignore_errors=True)
        shutil.rmtree(work / ".dvc" / "tmp", ignore_errors=True)
        _swap_into_place(work, out)
    except RegistryError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if exc.file != str(work):
            raise
        # Name the registry the user asked for, not the temporary folder it was built in.
        raise RegistryError(
            exc.problem, file=str(out), field=exc.field, expected=exc.expected, hint=exc.hint
        ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return sites


def _refuse_escaping_links(folder: Path, site: str) -> None:
    """A release holds a site's own files: a symlink leaving the site's folder (another site's
    image, a home directory) is refused, never followed. Links inside the folder are copied as the
    files they point to."""
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = link.resolve()
            if not target.is_relative_to(root) or not target.exists():
                raise RegistryError(
                    "is a symlink leaving the site's folder (or dangling); it is never followed",
                    site=site,
                    file=str(link.relative_to(folder)),
                    field="path",
                    expected="a regular file inside the site's folder",
                    hint="copy the file into the site's folder, or remove the link",
                )


def _swap_into_place(work: Path, out: Path) -> None:
    """Rename the finished registry ``work`` to ``out`` (the previous one, if any, goes last)."""
    if not out.exists():
        os.rename(work, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.previous-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(work, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def fetch_site(
    site: dict[str, Any],
    dest: Path,
    *,
    base: Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    remote_options: dict[str, Any] | None = None,
    sessions: bool = True,
) -> dict[str, Any]:
    """Pull ``site``'s dataset at its configured revision into ``dest`` and verify every file
    (see :func:`_fetch_site`; ``sessions`` False: the site's own files only).

    Each fetch gets its own DVC site cache (DVC's index of the registry, a SQLite database): with
    the shared default, parallel fetches from one registry could fail with "database is locked"
    when the machine is busy. The index is only a cache; the data still comes from the remote."""
    site_cache = tempfile.mkdtemp(prefix="ketamap-dvc-site-cache-")
    try:
        return _fetch_site(
            site,
            dest,
            base=base,
            timeout=timeout,
            remote_options=remote_options,
            dvc_config={"core": {"site_cache_dir": site_cache}},
            sessions=sessions,
        )
    finally:
        shutil.rmtree(site_cache, ignore_errors=True)


def _fetch_site(
    site: dict[str, Any],
    dest: Path,
    *,
    base: Path | None,
    timeout: float | None,
    remote_options: dict[str, Any] | None,
    dvc_config: dict[str, Any],
    sessions: bool = True,
) -> dict[str, Any]:
    """Pull ``site``'s dataset at its configured revision into ``dest`` and verify every file.

    With ``sessions`` False only the site's own files are pulled (those outside the session folders
    ``sub-<label>/ses-<label>/``): the session jobs pull their sessions themselves through the
    Snakemake storage plugin for DVC. The manifest then lists the pulled files under ``files`` and
    every file of the dataset (md5, and the size of its object on the remote) under ``listing``.

    ``dest`` appears only when the whole dataset arrived and matched its hashes. Returns the
    fetch manifest (registry, path, revision, resolved commit, DVC directory hash, per-file md5).
    ``timeout`` (seconds) bounds how long an SSH or S3 remote may stay silent; ``remote_options``
    are DVC remote options (e.g. ``keyfile``) applied to the registry's default remote. Every
    failure of the remote is one :class:`RegistryError` naming the remote URL and the cause.
    """
    from dvc.api import DVCFileSystem
    from dvc.scm import RevError, SCMError

    from ketamap.harmonize import site_pin
    from ketamap.harmonize.scatter import in_session_folder

    site_id = site["id"]
    url = resolve_url(site["registry"], base)
    rev = str(site["revision"])
    path = site_pin(site)[1]
    where = {"site": site_id, "file": url}
    try:
        fs = DVCFileSystem(url, rev=rev, config=dvc_config)
        commit = fs.repo.get_rev()
    except RevError:
        raise RegistryError(
            f"revision {rev!r} is not in the registry",
            field="revision",
            expected=f"one of the registry's tags {_list_tags(url)} or a commit",
            hint="pin a revision the registry has (git tag --list in the registry)",
            **where,
        ) from None
    except (SCMError, OSError) as exc:
        raise RegistryError(
            f"cannot open the registry ({exc})",
            field="registry",
            expected="a git repository with DVC",
            **where,
        ) from None
    # Git alone says whether the dataset is tracked; the remote is not needed for that.
    if not _tracked(fs, f"{path}.dvc"):
        raise RegistryError(
            f"no DVC-tracked dataset at {path!r} in revision {rev!r}",
            field="path",
            expected=f"{path}.dvc in the registry",
            **where,
        )
    remote_url = _remote_url(fs) or "(none)"
    if remote_url == "(none)":
        raise RegistryError(
            f"revision {rev!r} of the registry has no default DVC remote",
            field="remote",
            expected="a registry made by `ketamap registry --remote ...`",
            **where,
        )
    options = {**timeout_options(remote_url, timeout), **(remote_options or {})}
    try:
        if options:
            fs = DVCFileSystem(url, rev=rev, config=dvc_config, remote_config=options)
        fs.repo.cloud.get_remote_odb()  # imports the remote's plugin, checks the options
    except Exception as exc:  # any failure of the remote is reported, never raised
        raise _remote_error(exc, remote_url, timeout, where) from None
    cause = probe_remote(remote_url, _remote_config(fs), timeout)
    if cause:
        raise RegistryError(
            f"cannot use the DVC remote {remote_url}: {cause}", field="remote", **where
        )

    dvc_file = yaml.safe_load(fs.read_text(f"{path}.dvc"))
    dir_md5 = dvc_file["outs"][0].get("md5", "")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            entries = fs.find(path, detail=True)
            expected = {
                str(Path(p).relative_to(path)): info["md5"]
                for p, info in entries.items()
                if info.get("type") == "file"
            }
            if dvc_file["outs"][0].get("hash") == "md5" and dir_md5.endswith(".dir"):
                # The listing came from the remote too: it must hash to what git pins.
                listing = _listing_md5(expected)
                if listing != dir_md5.removesuffix(".dir"):
                    raise RegistryError(
                        f"the file listing of {path} from the DVC remote {remote_url} does not "
                        f"match the registry (md5 {listing}; the remote's copy is corrupted)",
                        field="md5",
                        expected=dir_md5,
                        hint="ask the site to `dvc push` the release again",
                        **where,
                    )
            if sessions:
                fs.get(path, str(staging / "data"), recursive=True)
            else:
                everything = _remote_sizes(fs, expected)
                expected = {rel: md5 for rel, md5 in expected.items() if not in_session_folder(rel)}
                (staging / "data").mkdir()
                for rel in sorted(expected):
                    (staging / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(f"{path}/{rel}", str(staging / "data" / rel))
        except RegistryError:
            raise
        except Exception as exc:
            raise _remote_error(exc, remote_url, timeout, where, rev=rev) from None
        files = []
        for rel, md5 in sorted(expected.items()):
            local = staging / "data" / rel
            got = integrity.file_hash(local, "md5") if local.is_file() else "missing"
            if got != md5:
                _forget_cached(fs, md5)
                raise RegistryError(
                    f"content hash mismatch for {rel} from the DVC remote {remote_url}: "
                    f"got {got} (the remote's copy is corrupted; nothing was kept)",
                    field="md5",
                    expected=md5,
                    hint="ask the site to `dvc push` the release again",
                    **where,
                )
            files.append({"path": rel, "md5": md5, "bytes": local.stat().st_size})
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / "data", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "site": site_id,
        "registry": site["registry"],
        "path": path,
        "revision": rev,
        "commit": commit,
        "dvc_md5": dir_md5,
        "n_files": len(files),
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
    }
    if not sessions:
        manifest["listing"] = everything
    return manifest


def _remote_sizes(fs: Any, files: dict[str, str]) -> list[dict[str, Any]]:
    """Every file of ``files`` (path -> md5) with the size of its object on the DVC remote: a
    ``.dir`` listing holds no sizes, and the session jobs are cut by their files' sizes. One stat
    per object (files with the same content share one), 16 at a time (an SSH or S3 remote answers
    each in one round trip)."""
    from concurrent.futures import ThreadPoolExecutor

    odb = fs.repo.cloud.get_remote_odb()

    def size(md5: str) -> int:
        return int(odb.fs.info(odb.oid_to_path(md5))["size"])

    objects = sorted(set(files.values()))
    with ThreadPoolExecutor(16) as pool:
        sizes = dict(zip(objects, pool.map(size, objects), strict=True))
    return [{"path": rel, "md5": files[rel], "bytes": sizes[files[rel]]} for rel in sorted(files)]


def _tracked(fs: Any, path: str) -> bool:
    """Whether ``path`` is in the git tree of the revision ``fs`` is at (no remote access)."""
    repo = fs.repo
    return bool(repo.fs.isfile(repo.fs.join(repo.root_dir, path)))


def _remote_config(fs: Any) -> dict[str, Any]:
    """The default remote's section of the DVC config the fetch uses (options merged in)."""
    config = fs.repo.config
    name = config["core"].get("remote")
    return dict(config["remote"].get(name, {})) if name else {}


def _remote_url(fs: Any) -> str | None:
    url = _remote_config(fs).get("url")
    return str(url) if url else None


def _remote_error(
    exc: BaseException,
    remote_url: str,
    timeout: float | None,
    where: dict[str, str],
    rev: str | None = None,
) -> RegistryError:
    """One message for a failure of the registry's remote: the remote URL and the cause."""
    text = str(exc).strip()
    if isinstance(exc, ImportError) and exc.__cause__ is not None:
        text = f"{text}: {exc.__cause__}"  # why the plugin did not import
    if isinstance(exc, FileNotFoundError) or "not found" in text.lower():
        missing = exc.filename if isinstance(exc, FileNotFoundError) and exc.filename else text
        return RegistryError(
            f"the DVC remote {remote_url} cannot provide the data of revision {rev!r}: "
            f"an object is missing ({missing or type(exc).__name__})",
            field="remote",
            expected="every object of the dataset on the registry's DVC remote",
            hint="ask the site to `dvc push` the release",
            **where,
        )
    if isinstance(exc, TimeoutError) and not text:
        text = "timeout"
    cause = remote_cause(text or type(exc).__name__, remote_url, timeout)
    return RegistryError(
        f"cannot use the DVC remote {remote_url}: {cause}", field="remote", **where
    )


def _forget_cached(fs: Any, md5: str) -> None:
    """Drop an object that failed its hash check from the fetch cache, so a repaired remote works."""
    try:
        cache = fs.repo.cache.local
        cache.fs.rm(cache.oid_to_path(md5))
    except Exception:  # best effort: the object may not be cached at all
        pass


def write_plugin_index(manifest: dict[str, Any], registry: str, dest: Path) -> None:
    """The DVC storage plugin's index of the fetched dataset (one output: the site's folder, with
    every file's md5 and remote size from the manifest's ``listing``), for the provider whose
    ``registry`` setting is ``registry`` and ``revision`` the manifest's. The plugin checks that
    the listing hashes to the dataset's ``.dir`` md5 before writing it."""
    from snakemake_storage_plugin_dvc.index import write

    if not str(manifest["dvc_md5"]).endswith(".dir"):
        raise RegistryError(
            f"the dataset {manifest['path']!r} is not a DVC-tracked folder (md5 "
            f"{manifest['dvc_md5']!r}), which fetching per session needs",
            field="md5",
            expected="a folder added with DVC 3 (`dvc add <folder>`, md5 ending in .dir)",
            hint="set fetch.per_session: false to fetch the site whole",
            site=manifest["site"],
            file=registry,
        )
    files = {f["path"]: {"md5": f["md5"], "size": f["bytes"]} for f in manifest["listing"]}
    write(
        dest,
        registry=registry,
        revision=manifest["revision"],
        commit=manifest["commit"],
        outs=[{"path": manifest["path"], "md5": manifest["dvc_md5"], "files": files}],
    )


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write a manifest as canonical JSON (sorted keys, no timestamps) so reruns are byte-identical."""
    integrity.atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def resolve_url(url: str, base: Path | None) -> str:
    """A registry URL as git and DVC take it: a local path made absolute against ``base``."""
    if "://" in url or url.startswith("git@"):
        return url
    p = Path(url)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


def _list_tags(url: str) -> list[str]:
    proc = subprocess.run(
        ["git", "ls-remote", "--tags", "--refs", url], capture_output=True, text=True, check=False
    )
    return sorted(
        line.rsplit("refs/tags/", 1)[-1]
        for line in proc.stdout.splitlines()
        if "refs/tags/" in line
    )


def content_id(fetched: dict[str, Any]) -> str:
    """What a fetched dataset holds, and nothing of where it came from: the md5 of its file listing
    (path and md5 of every file), the same for every registry, revision pin or clone that gives the
    same bytes. A fetch of the site's own files only counts every file its ``listing`` holds."""
    files = fetched.get("listing") or fetched["files"]
    return _listing_md5({f["path"]: f["md5"] for f in files})


def _listing_md5(files: dict[str, str]) -> str:
    """DVC's md5 of a directory: its sorted (md5, relpath) listing as JSON (the storage plugin's
    definition, so the fetch and the plugin cannot disagree on it)."""
    from snakemake_storage_plugin_dvc.index import listing_md5

    return listing_md5(files)


def fetch_step(
    site: dict[str, Any],
    dest: str | Path,
    manifest: str | Path,
    content: str | Path | None = None,
    base: str | Path = ".",
    options: dict[str, Any] | None = None,
    sessions: bool = True,
    index: str | Path | None = None,
) -> None:
    """Pull one site's dataset at its pinned revision and write its fetch manifest, and (to
    ``content``) its content id: what the jobs reading the data compare to know whether to rerun.

    ``options`` is the config's ``fetch`` section (``timeout``, ``remote_options``); ``sessions``
    False pulls the site's own files only and lists the rest (``fetch.per_session``), and writes
    to ``index`` the storage plugin's index of the dataset (what the session jobs' storage inputs
    are planned from without opening the registry; see write_plugin_index).
    """
    options = with_defaults(options, "fetch")
    timeout = float(options["timeout"])
    log.info(
        "fetching site %s from %s at %s (remote timeout %g s)",
        site["id"],
        site["registry"],
        site["revision"],
        timeout,
    )
    result = fetch_site(
        site,
        Path(dest),
        base=Path(base),
        timeout=timeout,
        remote_options=options["remote_options"] or None,
        sessions=sessions,
    )
    if index is not None:
        write_plugin_index(result, resolve_url(site["registry"], Path(base)), Path(index))
    write_manifest(result, Path(manifest))
    if content is not None:
        integrity.atomic_write_text(content, content_id(result) + "\n")
    integrity.remember_verified(dest)
    log.info(
        "site %s: %d files, %d bytes, commit %s verified",
        site["id"],
        result["n_files"],
        result["bytes"],
        result["commit"],
    )
