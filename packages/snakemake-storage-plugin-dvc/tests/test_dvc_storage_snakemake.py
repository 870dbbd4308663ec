"""A real ``snakemake --cores 1`` on a Snakefile declaring ``storage.dvc(...)`` inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dvcplugin_helpers import release

SNAKEFILE = """
REG = config["registry"]
REV = config["rev"]


rule all:
    input:
        "out/participants.txt",
        "out/phenotype.txt",


rule participants:
    input:
        storage.dvc(f"dvc://{REG}@{REV}//datasets/site_a/participants.tsv"),
    output:
        "out/participants.txt",
    shell:
        "wc -l < {input} > {output}"


rule phenotype:
    input:
        storage.dvc(f"dvc://{REG}@{REV}//datasets/site_a/phenotype"),
    output:
        "out/phenotype.txt",
    shell:
        "cat {input}/scores.tsv > {output}"
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    reg, remote, sites = tmp_path / "registry", tmp_path / "remote", tmp_path / "sites"
    release(reg, remote, sites, "v1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    return {"registry": reg, "remote": remote, "sites": sites, "work": work, "base": tmp_path}


def run_snakemake(s: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "1",
        "--storage-dvc-cache",
        str(s["base"] / "cache"),
        *args,
    ]
    return subprocess.run(cmd, cwd=s["work"], capture_output=True, text=True, timeout=300)


def snakemake(s: dict[str, Path], rev: str, *extra: str) -> str:
    proc = run_snakemake(s, "--config", f"registry={s['registry']}", f"rev={rev}", *extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def planned(out: str) -> bool:
    return "Nothing to be done" not in out


def test_retrieves_and_second_run_plans_nothing(setup) -> None:
    out = snakemake(setup, "v1")
    assert "Retrieving from storage" in out
    assert (setup["work"] / "out" / "participants.txt").read_text().strip() == "3"
    assert (setup["work"] / "out" / "phenotype.txt").read_text().endswith("21\n")
    assert not planned(snakemake(setup, "v1", "--dry-run"))
    assert not planned(snakemake(setup, "v1"))


def test_moving_ref_rerelease_with_same_content_plans_nothing(setup) -> None:
    """`@main` follows the releases: identical site_a content in v2 reruns nothing; changed
    content in v3 reruns what reads it."""
    snakemake(setup, "main")
    release(setup["registry"], setup["remote"], setup["sites"], "v2")  # site_b only
    assert not planned(snakemake(setup, "main", "--dry-run"))
    release(setup["registry"], setup["remote"], setup["sites"], "v3")  # site_a scores change
    out = snakemake(setup, "main")
    assert "phenotype" in out and (setup["work"] / "out" / "phenotype.txt").read_text().endswith(
        "29\n"
    )


def test_pinned_tag_rerelease_with_same_content(setup) -> None:
    """Pinning v1 then v2 changes the query: Snakemake's `input` rerun trigger reruns on any
    changed input query. On the modification times alone (the `mtime` trigger), an identical
    re-release plans nothing."""
    snakemake(setup, "v1")
    release(setup["registry"], setup["remote"], setup["sites"], "v2")  # site_a unchanged
    out = snakemake(setup, "v2", "--dry-run", "--rerun-triggers", "mtime", "params", "code")
    assert not planned(out), out
    out = snakemake(setup, "v2", "--dry-run")
    assert planned(out), out  # the default triggers: the changed input query reruns


# The same rules through a tagged provider holding the registry and the revision: paths alone.
TAGGED = """
storage site_a:
    provider="dvc",
    registry=config["registry"],
    revision=config["rev"],


""" + SNAKEFILE.split("\n\n\n", 1)[1].replace(
    'storage.dvc(f"dvc://{REG}@{REV}//', 'storage.site_a("'
)


def test_revision_as_a_setting_keeps_an_identical_rerelease_from_rerunning(setup) -> None:
    """Registry and revision as settings of a tagged provider, queries as paths: pinning v2
    (site_a identical) plans nothing under Snakemake's default rerun triggers; pinning v3 (the
    scores changed) reruns the job reading them and nothing else, with v3's bytes."""
    (setup["work"] / "Snakefile").write_text(TAGGED)
    out = snakemake(setup, "v1")
    assert "Retrieving from storage" in out
    local = setup["work"] / ".snakemake/storage/site_a/datasets/site_a/participants.tsv"
    assert not local.exists()  # local copies are removed after the run (Snakemake's default)
    release(setup["registry"], setup["remote"], setup["sites"], "v2")  # site_a unchanged
    assert not planned(snakemake(setup, "v2", "--dry-run"))
    release(setup["registry"], setup["remote"], setup["sites"], "v3")  # site_a scores change
    out = snakemake(setup, "v3")
    assert re.findall(r"^(?:local)?rule (\w+):", out, re.M) == ["phenotype", "all"], out
    assert (setup["work"] / "out" / "phenotype.txt").read_text().endswith("29\n")
    assert not planned(snakemake(setup, "v3", "--dry-run"))


def test_a_path_alone_without_the_settings_is_refused_with_the_reason(setup) -> None:
    (setup["work"] / "Snakefile").write_text(
        'rule a:\n    input:\n        storage.dvc("datasets/site_a/participants.tsv"),\n'
        '    output:\n        "out/a.txt",\n    shell:\n        "cp {input} {output}"\n'
    )
    proc = run_snakemake(setup)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "datasets/site_a/participants.tsv" in out and "`revision` settings" in out, out


@pytest.mark.parametrize("cache", ["inside", "shared"])
def test_a_copied_workflow_folder_plans_nothing_when_its_cache_moves_with_it(setup, cache) -> None:
    """The `seen` records behind mtimes name the workflow folder relative to the working
    directory when the cache lies inside it: a project copied with its outputs and cache (`cp -a`)
    plans nothing. A cache outside the folder, shared by several folders, keeps one record per
    absolute folder: the copy is another workflow, its inputs are new to it and it reruns (safe)."""
    import shutil

    where = "cache" if cache == "inside" else str(setup["base"] / "cache")
    extra = ("--storage-dvc-cache", where)
    snakemake(setup, "v1", *extra)
    copy = setup["base"] / "copy"
    shutil.copytree(setup["work"], copy, symlinks=True)  # copy2: mtimes kept, as `cp -a`
    setup["work"] = copy
    out = snakemake(setup, "v1", "--dry-run", *extra)
    if cache == "inside":
        assert not planned(out), out
    else:
        assert planned(out) and "Updated input files" in out, out
