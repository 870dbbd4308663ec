"""The data registry for real: git + DVC with a local directory remote, fetched through DVC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_site, write_tsv
from ketamap.errors import RegistryError
from ketamap.registry import _dvc_error_lines, build_registry, fetch_site, remote_cause


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("registry")
    sites = base / "sites"
    make_site(sites / "site_a")
    make_site(sites / "site_b", scale="HAM-D-17")
    (sites / "ground_truth.json").write_text("{}")  # files beside the site folders are not datasets
    build_registry(sites, base / "registry", str(base / "remote"), "v1")
    # Release 2 changes one file of site_a only.
    write_tsv(
        sites / "site_a" / "phenotype" / "scores.tsv",
        [["participant_id", "session_id", "total"], ["sub-01", "ses-pre", "29"]],
    )
    build_registry(sites, base / "registry", str(base / "remote"), "v2")
    return {"base": base, "registry": base / "registry", "remote": base / "remote"}


def _site(registry: Path, site_id: str = "site_a", revision: str = "v1") -> dict:
    return {"id": site_id, "registry": str(registry), "revision": revision}


def test_registry_is_git_plus_dvc_with_tagged_releases(registry) -> None:
    reg = registry["registry"]
    tags = subprocess.run(
        ["git", "tag", "--list"], cwd=reg, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tags == ["v1", "v2"]
    assert (reg / "datasets" / "site_a.dvc").is_file() and (
        reg / "datasets" / "site_b.dvc"
    ).is_file()
    assert not (reg / "datasets" / "ground_truth.json.dvc").exists()
    # The registry holds metadata only: the data lives on the remote.
    assert not (reg / "datasets" / "site_a").exists() and not (reg / ".dvc" / "cache").exists()
    assert any(registry["remote"].rglob("*"))


def test_fetch_pins_revision_and_verifies_hashes(registry, tmp_path) -> None:
    v1 = fetch_site(_site(registry["registry"], revision="v1"), tmp_path / "a1")
    v2 = fetch_site(_site(registry["registry"], revision="v2"), tmp_path / "a2")
    assert "29" not in (tmp_path / "a1" / "phenotype" / "scores.tsv").read_text()
    assert "29" in (tmp_path / "a2" / "phenotype" / "scores.tsv").read_text()
    assert v1["commit"] != v2["commit"] and v1["dvc_md5"] != v2["dvc_md5"]
    assert v1["n_files"] == len([p for p in (tmp_path / "a1").rglob("*") if p.is_file()])
    assert all(len(f["md5"]) == 32 for f in v1["files"])
    json.dumps(v1)  # the manifest is plain JSON


def test_fetch_by_commit(registry, tmp_path) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "v1^{commit}"],
        cwd=registry["registry"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    got = fetch_site(_site(registry["registry"], revision=commit), tmp_path / "a")
    assert got["commit"] == commit


def test_absent_revision_is_named(registry, tmp_path) -> None:
    with pytest.raises(
        RegistryError,
        match=r"site 'site_a', file '.*registry', field 'revision': revision 'v9' is not in the registry; expected one of the registry's tags \['v1', 'v2'\]",
    ):
        fetch_site(_site(registry["registry"], revision="v9"), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_absent_dataset_is_named(registry, tmp_path) -> None:
    with pytest.raises(
        RegistryError, match=r"field 'path': no DVC-tracked dataset at 'datasets/site_z'"
    ):
        fetch_site(_site(registry["registry"], site_id="site_z"), tmp_path / "z")


def test_pulling_one_site_touches_only_its_data(registry, tmp_path) -> None:
    """With site_b's objects gone from a copy of the remote, site_a still fetches; site_b fails clearly."""
    remote_objects = {p.name for p in registry["remote"].rglob("*") if p.is_file()}
    b = fetch_site(_site(registry["registry"], site_id="site_b"), tmp_path / "b_probe")
    a = fetch_site(_site(registry["registry"]), tmp_path / "a_probe")
    b_only = {f["md5"][2:] for f in b["files"]} - {f["md5"][2:] for f in a["files"]}
    assert b_only and b_only <= remote_objects
    for p in registry["remote"].rglob("*"):
        if p.is_file() and p.name in b_only:
            p.rename(p.with_name(p.name + ".hidden"))
    try:
        fetch_site(_site(registry["registry"]), tmp_path / "a")
        assert (tmp_path / "a" / "participants.tsv").is_file()
        with pytest.raises(
            RegistryError,
            match=r"site 'site_b'.*field 'remote': the DVC remote .*remote cannot provide the data of revision 'v1': an object is missing \(datasets/site_b/",
        ):
            fetch_site(_site(registry["registry"], site_id="site_b"), tmp_path / "b")
        assert not (tmp_path / "b").exists()
    finally:
        for p in registry["remote"].rglob("*.hidden"):
            p.rename(p.with_name(p.name.removesuffix(".hidden")))


def test_corrupted_object_fails_the_hash_check(registry, tmp_path) -> None:
    a = fetch_site(_site(registry["registry"]), tmp_path / "probe")
    target = next(f for f in a["files"] if f["path"] == "participants.tsv")
    obj = next(p for p in registry["remote"].rglob(target["md5"][2:]))
    original = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(original.replace(b"sub-01", b"sub-99"))
    try:
        with pytest.raises(RegistryError, match=r"content hash mismatch for participants.tsv"):
            fetch_site(_site(registry["registry"]), tmp_path / "a")
        assert not (tmp_path / "a").exists()
    finally:
        obj.write_bytes(original)


def test_existing_release_is_refused(registry, tmp_path) -> None:
    with pytest.raises(RegistryError, match=r"release 'v1' already exists"):
        build_registry(
            registry["base"] / "sites", registry["registry"], str(registry["remote"]), "v1"
        )


def _refs(registry: Path) -> dict[str, str]:
    def rev(ref: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", ref], cwd=registry, capture_output=True, text=True, check=True
        ).stdout.strip()

    return {"HEAD": rev("HEAD"), "tag": rev("v1"), "tag_commit": rev("v1^{commit}")}


def test_two_clean_builds_give_the_same_commits(tmp_path) -> None:
    """The demo's registry, built by two labs in two places: the same commit and tag hashes,
    so the same fetch manifests (and results/manifest.json)."""
    refs, manifests = [], []
    for lab in ("lab1", "lab2"):
        base = tmp_path / lab / "resources" / "demo"
        make_site(base / "sites" / "site_a")
        make_site(base / "sites" / "site_b", scale="HAM-D-17")
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "ketamap.cli", "registry"),
                *("--sites", "resources/demo/sites", "--out", "resources/demo/registry"),
                *("--remote", "resources/demo/dvc-remote", "--release", "v1"),
                *("--date", "2026-01-01T00:00:00+00:00"),
            ],
            cwd=tmp_path / lab,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GIT_AUTHOR_NAME": f"someone in {lab}"},
        )
        assert proc.returncode == 0, proc.stderr
        refs.append(_refs(base / "registry"))
        # The remote is stored relative to the registry, so the tree does not name the lab's path.
        assert lab not in (base / "registry" / ".dvc" / "config").read_text()
        manifests.append(
            fetch_site(
                {"id": "site_a", "registry": "resources/demo/registry", "revision": "v1"},
                tmp_path / lab / "a",
                base=tmp_path / lab,
            )
        )
    assert refs[0] == refs[1]
    assert manifests[0] == manifests[1]


def test_source_date_epoch_fixes_the_dates(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    make_site(tmp_path / "sites" / "site_a")
    heads = []
    for n in (1, 2):
        build_registry(tmp_path / "sites", tmp_path / f"r{n}", "../remote", "v1")
        heads.append(_refs(tmp_path / f"r{n}"))
    assert heads[0] == heads[1]
    log = subprocess.run(
        ["git", "log", "-1", "--format=%an <%ae> %aI | %cn <%ce> %cI"],
        cwd=tmp_path / "r1",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert log == (
        "ketamap registry <registry@ketamap.invalid> 2026-01-01T00:00:00+00:00 | "
        "ketamap registry <registry@ketamap.invalid> 2026-01-01T00:00:00+00:00"
    )


def test_failed_build_leaves_no_registry(tmp_path) -> None:
    make_site(tmp_path / "sites" / "site_a")
    with pytest.raises(RegistryError, match=r"dvc push to the DVC remote .* failed"):
        build_registry(tmp_path / "sites", tmp_path / "registry", "/proc/version/remote", "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites"]


def test_dvc_errors_are_read_without_the_help_footer() -> None:
    footer = "\nHaving any troubles? Hit us up at https://dvc.org/support, we are always happy to help!\n"
    refused = (
        "ERROR: unexpected error - [Errno 111] Connect call failed ('127.0.0.1', 5)\n" + footer
    )
    assert _dvc_error_lines(refused) == ["[Errno 111] Connect call failed ('127.0.0.1', 5)"]
    url = "ssh://u@127.0.0.1:5/x"
    assert remote_cause(_dvc_error_lines(refused)[0], url, 30).startswith("connection refused")
    silent = "ERROR: unexpected error - : : \n" + footer  # what asyncssh's timeout leaves
    assert remote_cause(_dvc_error_lines(silent)[0], url, 30).startswith(
        "the remote did not answer within 30 s"
    )
    plugin = (
        "ERROR: unexpected error - s3 is supported, but requires 'dvc-s3' to be installed: "
        "No module named 'dvc_s3'\n" + footer
    )
    assert remote_cause(_dvc_error_lines(plugin)[0], "s3://b/x", 30).startswith(
        "s3:// remotes need the dvc-s3 package (No module named 'dvc_s3')"
    )
