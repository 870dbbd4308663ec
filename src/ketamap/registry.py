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

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ketamap.errors import RegistryError

GIT_IDENTITY = ["-c", "user.name=ketamap registry", "-c", "user.email=registry@ketamap.invalid"]


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RegistryError(
            f"{what} failed: {detail[-1] if detail else 'exit ' + str(proc.returncode)}",
            file=str(cwd),
        )
    return proc.stdout


def _dvc(args: list[str], cwd: Path, what: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, what)


def _git(args: list[str], cwd: Path, what: str) -> str:
    return _run(["git", *GIT_IDENTITY, *args], cwd, what)


def build_registry(sites_dir: Path, out: Path, remote: str, release: str) -> list[str]:
    """Add every site dataset in ``sites_dir`` to the registry at ``out`` as release ``release``.

    Creates the registry (git + DVC, default remote ``remote``) when it does not exist. Each
    sub-folder of ``sites_dir`` is one site's dataset. Returns the site ids released.
    """
    sites_dir, out = Path(sites_dir), Path(out)
    sites = sorted(p.name for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sites:
        raise RegistryError(
            "no site datasets found", file=str(sites_dir), expected="one folder per site"
        )
    remote_url = remote if "://" in remote else str(Path(remote).resolve())
    if not (out / ".git").exists():
        out.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q", "-b", "main"], out, "git init")
        _dvc(["init", "-q"], out, "dvc init")
        _dvc(["config", "core.autostage", "true"], out, "dvc config")
        _dvc(["remote", "add", "-d", "storage", remote_url], out, "dvc remote add")
        _git(["add", "-A"], out, "git add")
        _git(["commit", "-q", "-m", "Initialise the consortium data registry"], out, "git commit")
    tags = _git(["tag", "--list"], out, "git tag").split()
    if release in tags:
        raise RegistryError(
            f"release {release!r} already exists",
            file=str(out),
            field="release",
            expected="a new tag",
            hint="choose another release name",
        )
    (out / "datasets").mkdir(exist_ok=True)
    for site in sites:
        target = out / "datasets" / site
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(sites_dir / site, target)
    _dvc(["add", "-q", *[f"datasets/{s}" for s in sites]], out, "dvc add")
    _dvc(["push", "-q"], out, "dvc push")
    _git(["add", "-A"], out, "git add")
    _git(
        ["commit", "-q", "--allow-empty", "-m", f"Release {release}: {', '.join(sites)}"],
        out,
        "git commit",
    )
    _git(["tag", "-a", release, "-m", f"Consortium data release {release}"], out, "git tag")
    # The registry is metadata only: data lives on the remote.
    for site in sites:
        shutil.rmtree(out / "datasets" / site)
    shutil.rmtree(out / ".dvc" / "cache", ignore_errors=True)
    return sites


def fetch_site(site: dict[str, Any], dest: Path, *, base: Path | None = None) -> dict[str, Any]:
    """Pull ``site``'s dataset at its configured revision into ``dest`` and verify every file.

    ``dest`` appears only when the whole dataset arrived and matched its hashes. Returns the
    fetch manifest (registry, path, revision, resolved commit, DVC directory hash, per-file md5).
    """
    from dvc.api import DVCFileSystem
    from dvc.scm import RevError, SCMError

    site_id = site["id"]
    url = _resolve_url(site["registry"], base)
    rev = str(site["revision"])
    path = site.get("path") or f"datasets/{site_id}"
    where = {"site": site_id, "file": url}
    try:
        fs = DVCFileSystem(url, rev=rev)
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
        ) from None
    if not fs.exists(f"{path}.dvc"):
        raise RegistryError(
            f"no DVC-tracked dataset at {path!r} in revision {rev!r}",
            field="path",
            expected=f"{path}.dvc in the registry",
            **where,
        )
    dvc_file = yaml.safe_load(fs.read_text(f"{path}.dvc"))
    dir_md5 = dvc_file["outs"][0].get("md5", "")
    entries = fs.find(path, detail=True)
    expected = {
        str(Path(p).relative_to(path)): info["md5"]
        for p, info in entries.items()
        if info.get("type") == "file"
    }

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            fs.get(path, str(staging / "data"), recursive=True)
        except (FileNotFoundError, OSError) as exc:
            raise RegistryError(
                f"the DVC remote cannot provide the data of revision {rev!r} ({exc})",
                field="remote",
                expected="every object of the dataset on the registry's DVC remote",
                hint="ask the site to `dvc push` the release",
                **where,
            ) from None
        files = []
        for rel, md5 in sorted(expected.items()):
            local = staging / "data" / rel
            got = _md5(local) if local.is_file() else "missing"
            if got != md5:
                raise RegistryError(
                    f"content hash mismatch for {rel}: got {got}",
                    field="md5",
                    expected=md5,
                    **where,
                )
            files.append({"path": rel, "md5": md5, "bytes": local.stat().st_size})
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / "data", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
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


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write a manifest as canonical JSON (sorted keys, no timestamps) so reruns are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _resolve_url(url: str, base: Path | None) -> str:
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


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
