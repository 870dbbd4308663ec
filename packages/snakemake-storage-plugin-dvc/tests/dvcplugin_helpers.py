"""Build a real data registry for the tests: git + ``dvc init`` + ``dvc add`` + ``dvc push`` to a
local folder remote, one tag per release, and no data left in the registry afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Commit dates of the releases (fixed, so modification times are known).
DATES = {"v1": 1_700_000_000, "v2": 1_700_100_000, "v3": 1_700_200_000}


def _env(date: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="registry",
        GIT_AUTHOR_EMAIL="registry@example.invalid",
        GIT_COMMITTER_NAME="registry",
        GIT_COMMITTER_EMAIL="registry@example.invalid",
        GIT_AUTHOR_DATE=f"@{date} +0000",
        GIT_COMMITTER_DATE=f"@{date} +0000",
        DVC_NO_ANALYTICS="1",
    )
    return env


def run(cmd: list[str], cwd: Path, date: int = DATES["v1"]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(date))
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed: {proc.stderr}{proc.stdout}")
    return proc.stdout


def git(args: list[str], cwd: Path, date: int = DATES["v1"]) -> str:
    return run(["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args], cwd, date)


def dvc(args: list[str], cwd: Path, date: int = DATES["v1"]) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, date)


def write_sites(sites: Path, release: str) -> None:
    """site_a: many small files (unchanged after v1 except in v3); site_b changes every release."""
    a = sites / "site_a"
    (a / "phenotype").mkdir(parents=True, exist_ok=True)
    (a / "participants.tsv").write_text("participant_id\tage\nsub-01\t34\nsub-02\t41\n")
    total = "29" if release == "v3" else "21"
    (a / "phenotype" / "scores.tsv").write_text(f"participant_id\ttotal\nsub-01\t{total}\n")
    (a / "phenotype" / "scores.json").write_text('{"total": {"Description": "MADRS"}}\n')
    (a / "raw").mkdir(exist_ok=True)
    for i in range(40):
        (a / "raw" / f"run-{i:02d}.txt").write_text(f"run {i}\n" * 50)
    b = sites / "site_b"
    b.mkdir(parents=True, exist_ok=True)
    (b / "participants.tsv").write_text(f"participant_id\nsub-{release}\n")


def release(registry: Path, remote: Path, sites: Path, tag: str) -> None:
    """Add both sites to ``registry`` as release ``tag`` (creating the registry if needed)."""
    date = DATES[tag]
    if not (registry / ".git").exists():
        registry.mkdir(parents=True)
        git(["init", "-q", "-b", "main"], registry, date)
        dvc(["init", "-q"], registry, date)
        dvc(["remote", "add", "-d", "storage", str(remote)], registry, date)
        git(["add", "-A"], registry, date)
        git(["commit", "-q", "-m", "init"], registry, date)
    write_sites(sites, tag)
    (registry / "datasets").mkdir(exist_ok=True)
    for site in ("site_a", "site_b"):
        shutil.rmtree(registry / "datasets" / site, ignore_errors=True)
        shutil.copytree(sites / site, registry / "datasets" / site)
    dvc(["add", "-q", "datasets/site_a", "datasets/site_b"], registry, date)
    dvc(["push", "-q"], registry, date)
    git(["add", "-A"], registry, date)
    git(["commit", "-q", "--allow-empty", "-m", f"release {tag}"], registry, date)
    git(["tag", "-a", tag, "-m", f"release {tag}"], registry, date)
    # Metadata only: every fetch must come from the remote.
    for site in ("site_a", "site_b"):
        shutil.rmtree(registry / "datasets" / site)
    shutil.rmtree(registry / ".dvc" / "cache", ignore_errors=True)


def md5_of(registry: Path, path: str, rev: str = "v1") -> str:
    """The md5 DVC recorded for a file (from the remote's listing, via DVC's own API)."""
    from dvc.api import DVCFileSystem

    return str(DVCFileSystem(str(registry), rev=rev).info(path)["md5"])


def two_releases(base: Path) -> dict[str, Path]:
    """A registry in ``base`` with releases v1 and v2 of both sites (site_b differs), its remote."""
    reg, remote, sites = base / "registry", base / "remote", base / "sites"
    release(reg, remote, sites, "v1")
    release(reg, remote, sites, "v2")
    return {"registry": reg, "remote": remote, "base": base}
