"""The provider on a real registry (git + DVC, local folder remote, tagged releases)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from snakemake.io import IOCache
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.tests import TestStorageBase

from dvcplugin_helpers import md5_of, two_releases
from snakemake_storage_plugin_dvc import StorageProvider, StorageProviderSettings
from snakemake_storage_plugin_dvc.query import QueryError, parse
from snakemake_storage_plugin_dvc.release import Out, Release

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_releases(tmp_path_factory.mktemp("dvcreg"))


def provider(tmp_path: Path, **settings) -> StorageProvider:
    settings.setdefault("cache", str(tmp_path / "cache"))
    return StorageProvider(
        local_prefix=tmp_path / "local",
        logger=log,
        settings=StorageProviderSettings(**settings),
    )


def q(registry: dict[str, Path], path: str, rev: str = "v1") -> str:
    return f"dvc://{registry['registry']}@{rev}//{path}"


# -- the interface's own test suite ---------------------------------------------------------


class TestInterface(TestStorageBase):
    __test__ = True
    retrieve_only = True
    files_only = True

    @pytest.fixture(autouse=True)
    def _registry(self, registry):
        self.reg = registry

    def get_storage_provider_cls(self):
        return StorageProvider

    def get_storage_provider_settings(self):
        return StorageProviderSettings(cache=str(self.reg["base"] / "iface-cache"))

    def get_query(self, tmp_path) -> str:
        return q(self.reg, "datasets/site_a/participants.tsv")

    def get_query_not_existing(self, tmp_path) -> str:
        return q(self.reg, "datasets/site_a/nothing.tsv")


# -- query syntax -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "registry", "rev", "path"),
    [
        ("dvc:///srv/reg@v1//datasets/a/x.tsv", "/srv/reg", "v1", "datasets/a/x.tsv"),
        ("dvc://../reg@v1//datasets/a", "../reg", "v1", "datasets/a"),
        (
            "dvc://git@github.com:org/reg.git@v2.1//datasets/a/x.tsv",
            "git@github.com:org/reg.git",
            "v2.1",
            "datasets/a/x.tsv",
        ),
        (
            "dvc://https://host.org/org/reg.git@release/2024//datasets/a",
            "https://host.org/org/reg.git",
            "release/2024",
            "datasets/a",
        ),
        (
            "dvc://ssh://git@host:2222/srv/reg@3f2a9c1//datasets/{site}/participants.tsv",
            "ssh://git@host:2222/srv/reg",
            "3f2a9c1",
            "datasets/{site}/participants.tsv",
        ),
    ],
)
def test_query_syntax(query, registry, rev, path) -> None:
    parsed = parse(query)
    assert (parsed.registry, parsed.rev, parsed.path) == (registry, rev, path)
    assert str(parsed) == query
    assert StorageProvider.is_valid_query(query)


def test_a_path_alone_takes_registry_and_revision_from_the_settings() -> None:
    parsed = parse("datasets/site_a/sub-01/ses-pre", "/srv/reg", "v2")
    assert (parsed.registry, parsed.rev, parsed.path, parsed.short) == (
        "/srv/reg",
        "v2",
        "datasets/site_a/sub-01/ses-pre",
        True,
    )
    assert StorageProvider.is_valid_query("datasets/site_a/participants.tsv")
    with pytest.raises(QueryError, match="no `registry` and `revision` settings"):
        parse("datasets/site_a/participants.tsv")
    with pytest.raises(QueryError, match=r"'\.\.' segment"):
        parse("datasets/../secret", "/srv/reg", "v2")
    with pytest.raises(QueryError, match="starts with 'dvc://'"):
        parse("s3://bucket/x", "/srv/reg", "v2")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("s3://bucket/x", "starts with 'dvc://'"),
        ("dvc:///srv/reg@v1/datasets/a", "no '//' before the path"),
        ("dvc:///srv/reg//datasets/a", r"no '@<revision>'"),
        ("dvc://@v1//datasets/a", "the registry .* is empty"),
        ("dvc:///srv/reg@//datasets/a", "revision after '@' is empty"),
        ("dvc:///srv/reg@v1//", "path after '//' is empty"),
        ("dvc:///srv/reg@v1//datasets/a/", "ends with '/'"),
        ("dvc:///srv/reg@v1//datasets/../secret", r"'\.\.' segment"),
        ("dvc:///srv/reg@v1//.dvc/config", r"inside the registry's \.dvc folder"),
    ],
)
def test_invalid_queries_say_why(query, reason) -> None:
    res = StorageProvider.is_valid_query(query)
    assert not res
    import re

    assert re.search(reason, res.reason), res.reason


# -- metadata ---------------------------------------------------------------------------------


def test_exists_size_mtime_checksum(registry, tmp_path) -> None:
    p = provider(tmp_path)
    f = p.object(q(registry, "datasets/site_a/participants.tsv"))
    assert f.exists()
    content = "participant_id\tage\nsub-01\t34\nsub-02\t41\n"
    assert f.size() == len(content)
    assert f.checksum() == "md5:" + md5_of(registry["registry"], "datasets/site_a/participants.tsv")
    # mtime: when this workflow first saw this content; the same on every later call.
    assert f.mtime() == provider(tmp_path).object(f.query).mtime()
    folder = p.object(q(registry, "datasets/site_a/phenotype"))
    assert folder.exists() and folder.size() == 0 and folder.checksum() is None
    assert not p.object(q(registry, "datasets/site_a/nothing.tsv")).exists()
    assert not p.object(q(registry, "datasets/site_c")).exists()
    # Two paths of one dataset cost one listing: the .dir object, fetched once.
    assert p.release(parse(q(registry, "datasets/site_a"))).fetched == [
        p.release(parse(q(registry, "datasets/site_a"))).out_of("datasets/site_a").md5
    ]


def test_mtime_stays_while_the_content_stays(registry, tmp_path) -> None:
    p = provider(tmp_path)
    a1 = p.object(q(registry, "datasets/site_a/participants.tsv", "v1"))
    a2 = p.object(q(registry, "datasets/site_a/participants.tsv", "v2"))
    assert a1.mtime() == a2.mtime()  # site_a is the same in v2: whatever the revision is called
    assert a1.checksum() == a2.checksum()
    b1 = p.object(q(registry, "datasets/site_b/participants.tsv", "v1"))
    b2 = p.object(q(registry, "datasets/site_b/participants.tsv", "v2"))
    t1 = b1.mtime()
    assert b2.mtime() > t1  # site_b changed in v2: later than anything seen before
    assert b2.mtime() == b2.mtime()
    # Another workflow (local prefix) keeps its own record.
    other = StorageProvider(
        local_prefix=tmp_path / "elsewhere",
        logger=log,
        settings=StorageProviderSettings(cache=str(tmp_path / "cache")),
    )
    assert other.object(b1.query).mtime() > t1


def test_inventory_lists_the_dataset_once(registry, tmp_path) -> None:
    p = provider(tmp_path)
    cache = IOCache(max_wait_time=10)
    obj = p.object(q(registry, "datasets/site_a/participants.tsv"))
    asyncio.run(obj.inventory(cache))
    parent = obj.get_inventory_parent()
    assert parent == str(tmp_path / "local" / Path(obj.local_suffix()).parent)
    assert parent in cache.exists_in_storage.has_inventory
    other = p.object(q(registry, "datasets/site_a/raw/run-07.txt"))
    assert other.get_inventory_parent() == parent
    key = str(other.local_path())
    assert cache.exists_in_storage[key]
    assert cache.checksum[key].startswith("md5:")
    assert cache.exists_in_storage[
        str(tmp_path / "local" / Path(obj.local_suffix()).parent / "raw")
    ]
    release_ = p.release(parse(q(registry, "datasets/site_a")))
    n = len(release_.fetched)
    asyncio.run(other.inventory(cache))  # already inventoried: nothing fetched again
    assert len(release_.fetched) == n == 1


def listed_release(tmp_path: Path, sessions: int) -> Release:
    """A release whose outputs and folder listing are given (no registry opened)."""
    files = {"datasets/c/participants.tsv": "p" * 32}
    for i in range(sessions):
        for name in ("scans.tsv", "anat/T1w.nii.gz", "func/bold.nii.gz", "func/bold.json"):
            files[f"datasets/c/sub-{i:05d}/ses-01/{name}"] = f"{i:05d}{name}".ljust(32, "0")
    files["datasets/c/sub-00001.json"] = "j" * 32  # sorts among the sub-00001/... files
    files["datasets/c/sub-000010/ses-01/x.tsv"] = "x" * 32  # sub-00001 is a prefix of it
    return Release(
        "registry",
        "v1",
        tmp_path,
        outs=[
            Out("datasets/c", "datasets/c.dvc", "d" * 32 + ".dir", None, _files=files),
            Out("datasets/t.tsv", "datasets/t.tsv.dvc", "t" * 32, 7),
        ],
    )


def test_entries_of_a_folder_inside_a_dataset(tmp_path) -> None:
    rel = listed_release(tmp_path, 20)
    paths = sorted(e.path for e in rel.entries("datasets/c/sub-00001"))
    assert paths == [
        "datasets/c/sub-00001/ses-01/anat/T1w.nii.gz",
        "datasets/c/sub-00001/ses-01/func/bold.json",
        "datasets/c/sub-00001/ses-01/func/bold.nii.gz",
        "datasets/c/sub-00001/ses-01/scans.tsv",
    ]
    assert sorted(e.path for e in rel.entries("datasets/c/sub-00001/ses-01/func")) == paths[1:3]
    assert [e.md5 for e in rel.entries("datasets/c/sub-00001.json")] == ["j" * 32]
    assert len(rel.entries("datasets/c")) == 20 * 4 + 3
    assert [e.path for e in rel.entries("datasets")] == [
        *(rel.outs[0]._files or {}),
        "datasets/t.tsv",
    ]
    assert [e.md5 for e in rel.entries("datasets/t.tsv")] == ["t" * 32]
    assert rel.entries("datasets/c/sub-0000") == []  # a prefix of names, not a folder
    assert rel.entries("datasets/c/sub-00001/ses-01/scans.tsv/x") == []
    assert rel.entries("datasets/t.tsv/x") == []


class _CountingListing(dict):
    """A folder listing that counts how often it is walked from end to end."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()

    def items(self):
        type(self).walks += 1
        return super().items()

    def keys(self):
        type(self).walks += 1
        return super().keys()


def test_entries_do_not_scan_the_whole_listing(tmp_path) -> None:
    """One query per session: each look-up is a search in the sorted listing, not a scan of all
    of it. The listing is walked once (to sort it), however many sessions are looked up; the
    scan it replaced walked it on every call (2,000 calls over 40,000 files took 154 s)."""
    sessions = 10_000
    rel = listed_release(tmp_path, sessions)
    out = rel.outs[0]
    out._files = _CountingListing(out._files or {})
    _CountingListing.walks = 0
    for i in range(0, sessions, 5):
        assert len(rel.entries(f"datasets/c/sub-{i:05d}/ses-01")) == 4
    assert _CountingListing.walks <= 1


# -- retrieval --------------------------------------------------------------------------------


def test_retrieve_one_file_fetches_only_its_object(registry, tmp_path) -> None:
    p = provider(tmp_path)
    f = p.object(q(registry, "datasets/site_a/raw/run-03.txt"))
    f.retrieve_object()
    local = f.local_path()
    assert local.read_text() == "run 3\n" * 50
    assert local.stat().st_mtime == f.mtime()
    fetched = p.release(f.parsed).fetched
    # One .dir listing plus the file itself, out of 43 files in the dataset.
    assert len(fetched) == 2 and fetched[1] == md5_of(registry["registry"], f.parsed.path)


def test_retrieve_folder(registry, tmp_path) -> None:
    p = provider(tmp_path, jobs=3)
    d = p.object(q(registry, "datasets/site_a/phenotype"))
    d.retrieve_object()
    got = sorted(x.name for x in d.local_path().iterdir())
    assert got == ["scores.json", "scores.tsv"]
    assert (d.local_path() / "scores.tsv").read_text().endswith("21\n")
    whole = p.object(q(registry, "datasets/site_a", "v2"))
    whole.retrieve_object()
    assert len([x for x in whole.local_path().rglob("*") if x.is_file()]) == 43
    assert whole.local_footprint() > 0


def test_cache_is_shared_across_revisions(registry, tmp_path) -> None:
    p = provider(tmp_path)
    p.object(q(registry, "datasets/site_a/participants.tsv", "v1")).retrieve_object()
    f2 = p.object(q(registry, "datasets/site_a/participants.tsv", "v2"))
    f2.retrieve_object()
    assert f2.local_path().is_file()
    assert p.release(f2.parsed).fetched == []  # identical content: nothing downloaded


def test_corrupted_remote_object_is_refused(registry, tmp_path) -> None:
    path = "datasets/site_a/participants.tsv"
    md5 = md5_of(registry["registry"], path)
    obj = registry["remote"] / "files" / "md5" / md5[:2] / md5[2:]
    original = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(original.replace(b"sub-01", b"sub-99"))
    try:
        p = provider(tmp_path)
        f = p.object(q(registry, path))
        with pytest.raises(WorkflowError) as err:
            f.retrieve_object()
        text = str(err.value)
        assert str(registry["registry"]) in text and "'v1'" in text and path in text
        assert f"expected {md5}" in text and "got " in text
        assert not f.local_path().exists()
        assert not any((tmp_path / "cache").rglob(md5[2:]))  # nothing corrupt kept
        assert not [x for x in f.local_path().parent.iterdir() if x.name.startswith(".")]
    finally:
        obj.write_bytes(original)
    f.retrieve_object()  # repaired remote: works
    assert f.local_path().read_bytes() == original


def test_corrupted_cache_entry_is_fetched_again(registry, tmp_path) -> None:
    p = provider(tmp_path)
    path = "datasets/site_a/participants.tsv"
    md5 = md5_of(registry["registry"], path)
    f = p.object(q(registry, path))
    f.retrieve_object()
    cached = tmp_path / "cache" / "md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_text("tampered")
    f.retrieve_object()
    assert "sub-02" in f.local_path().read_text()


def test_missing_revision_is_named(registry, tmp_path) -> None:
    p = provider(tmp_path)
    f = p.object(q(registry, "datasets/site_a/participants.tsv", "v9"))
    with pytest.raises(
        WorkflowError,
        match=r"registry .*registry, revision 'v9': the revision is not in the registry",
    ):
        f.exists()


def test_missing_path_is_named(registry, tmp_path) -> None:
    p = provider(tmp_path)
    f = p.object(q(registry, "datasets/site_c/participants.tsv"))
    assert not f.exists()
    with pytest.raises(
        WorkflowError,
        match=r"revision 'v1', path 'datasets/site_c/participants.tsv': no DVC-tracked file or folder",
    ):
        f.retrieve_object()


def test_missing_remote_object_is_named(registry, tmp_path) -> None:
    path = "datasets/site_a/phenotype/scores.json"
    md5 = md5_of(registry["registry"], path)
    obj = registry["remote"] / "files" / "md5" / md5[:2] / md5[2:]
    hidden = obj.with_name(obj.name + ".hidden")
    os.rename(obj, hidden)
    try:
        f = provider(tmp_path).object(q(registry, path))
        with pytest.raises(
            WorkflowError, match=rf"path '{path}': the DVC remote .* has no object {md5}"
        ):
            f.retrieve_object()
    finally:
        os.rename(hidden, obj)


def test_unopenable_registry_is_named(tmp_path) -> None:
    f = provider(tmp_path).object(f"dvc://{tmp_path / 'nowhere'}@v1//datasets/a")
    with pytest.raises(WorkflowError, match=r"registry .*nowhere, revision 'v1': cannot open"):
        f.exists()
