"""The data registry for real: git + DVC with a local directory remote, fetched through DVC."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import make_site, write_tsv
from ketamap.errors import RegistryError
from ketamap.registry import build_registry, fetch_site


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
