"""The ``index`` setting: planning answered from an index file, no registry opened; retrieval
opens the registry and refuses an index that git at the revision does not back."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import pytest
from snakemake.io import IOCache
from snakemake_interface_common.exceptions import WorkflowError

from dvcplugin_helpers import md5_of, two_releases
from snakemake_storage_plugin_dvc import StorageProvider, StorageProviderSettings
from snakemake_storage_plugin_dvc.__main__ import main
from snakemake_storage_plugin_dvc.index import FORMAT, load, write

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_releases(tmp_path_factory.mktemp("dvcindex"))


@pytest.fixture
def reg(built, tmp_path) -> Path:
    """A copy of the registry (git metadata only) that a test may move away."""
    copy = tmp_path / "registry"
    shutil.copytree(built["registry"], copy, symlinks=True)
    return copy


def provider(tmp_path: Path, reg: Path, rev: str = "v1", **settings) -> StorageProvider:
    return StorageProvider(
        local_prefix=tmp_path / "local",
        logger=log,
        settings=StorageProviderSettings(
            cache=str(tmp_path / "cache"), registry=str(reg), revision=rev, **settings
        ),
    )


def index_of(reg: Path, rev: str, dest: Path, *paths: str) -> Path:
    assert main(["index", str(reg), rev, str(dest), *paths, "--cache", str(dest.parent)]) == 0
    return dest


def test_planning_reads_the_index_and_never_opens_the_registry(reg, tmp_path) -> None:
    index = index_of(reg, "v1", tmp_path / "v1.json", "datasets/site_a")
    away = reg.with_name("moved-away")
    reg.rename(away)  # from here on, opening the registry fails
    p = provider(tmp_path, reg, index=str(index))
    f = p.object("datasets/site_a/participants.tsv")
    assert f.exists()
    assert f.size() == len("participant_id\tage\nsub-01\t34\nsub-02\t41\n")
    assert f.checksum() == "md5:" + md5_of(away, "datasets/site_a/participants.tsv")
    assert f.mtime() > 0
    folder = p.object("datasets/site_a/raw")
    assert (
        folder.exists()
        and folder.size() == 0
        and folder.local_footprint() == sum(len(f"run {i}\n" * 50) for i in range(40))
    )
    assert not p.object("datasets/site_a/none.tsv").exists()  # inside an indexed output
    cache = IOCache(max_wait_time=10)
    asyncio.run(f.inventory(cache))
    assert cache.exists_in_storage[str(p.object("datasets/site_a/raw/run-07.txt").local_path())]
    # Outside the index the registry is asked, and it is gone: the error names it.
    with pytest.raises(WorkflowError, match=r"registry .*registry, revision 'v1': cannot open"):
        p.object("datasets/site_b/participants.tsv").exists()
    # Retrieval opens the registry too (git must back the index before a byte is trusted).
    with pytest.raises(WorkflowError, match="cannot open"):
        f.retrieve_object()
    away.rename(reg)
    f.retrieve_object()
    assert f.local_path().read_text().endswith("sub-02\t41\n")
    p.object("datasets/site_b/participants.tsv").retrieve_object()  # outside: from git


def test_the_index_is_reproducible_and_follows_the_registry(reg, tmp_path) -> None:
    a = index_of(reg, "v1", tmp_path / "a.json")
    b = index_of(reg, "v1", tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert data["format"] == FORMAT and data["revision"] == "v1"
    assert [o["path"] for o in data["outs"]] == ["datasets/site_a", "datasets/site_b"]
    assert len(data["outs"][0]["files"]) == 43
    assert all(f["size"] > 0 for f in data["outs"][0]["files"].values())


def test_an_index_of_another_revision_is_not_used(reg, tmp_path) -> None:
    index = index_of(reg, "v1", tmp_path / "v1.json")
    p = provider(tmp_path, reg, rev="v2", index=str(index))
    f = p.object("datasets/site_b/participants.tsv")
    assert f.exists()
    assert p.release(f.parsed).index is None  # opened from git
    f.retrieve_object()
    assert f.local_path().read_text() == "participant_id\nsub-v2\n"


def test_an_index_git_does_not_back_stops_the_retrieval(reg, tmp_path) -> None:
    """An index claiming v2's site_b for v1 (a tag moved since it was written): planning trusts
    it, retrieval opens git, sees other md5s and refuses, naming the index."""
    v2 = index_of(reg, "v2", tmp_path / "v2.json")
    data = json.loads(v2.read_text())
    stale = write(
        tmp_path / "stale.json",
        registry=str(reg),
        revision="v1",
        commit=data["commit"],
        outs=data["outs"],
    )
    p = provider(tmp_path, reg, index=str(stale))
    f = p.object("datasets/site_b/participants.tsv")
    assert f.exists()
    with pytest.raises(
        WorkflowError,
        match=r"path 'datasets/site_b': the index .*stale.json lists other content .* write the "
        "index again",
    ):
        f.retrieve_object()
    assert not f.local_path().exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: text.replace(FORMAT, "other/1"), "format 'other/1', expected"),
        (lambda text: text.replace('"outs"', '"outputs"'), "malformed .*KeyError"),
        (
            lambda text: text.replace('"size":300', '"size":301', 1).replace(
                json.loads(text)["outs"][0]["files"]["raw/run-00.txt"]["md5"], "0" * 32
            ),
            "the files listed for 'datasets/site_a' hash to",
        ),
    ],
    ids=["truncated", "format", "malformed", "altered-md5"],
)
def test_a_damaged_index_is_an_error_naming_it(reg, tmp_path, damage, message) -> None:
    index = index_of(reg, "v1", tmp_path / "v1.json")
    index.write_text(damage(index.read_text()))
    with pytest.raises(WorkflowError, match=message) as err:
        provider(tmp_path, reg, index=str(index)).object("datasets/site_a").exists()
    assert str(index) in str(err.value)
    with pytest.raises(WorkflowError, match=message):
        load(index)


def test_writing_an_index_refuses_a_listing_that_does_not_hash_to_its_output(tmp_path) -> None:
    with pytest.raises(WorkflowError, match=r"hash to .* not to the output's md5"):
        write(
            tmp_path / "x.json",
            registry="r",
            revision="v1",
            commit="c",
            outs=[{"path": "d", "md5": "0" * 32 + ".dir", "files": {"a": {"md5": "1", "size": 1}}}],
        )
    assert not (tmp_path / "x.json").exists()


def test_the_command_names_what_it_cannot_index(reg, tmp_path, capsys) -> None:
    assert main(["index", str(reg), "v1", str(tmp_path / "x.json"), "datasets/site_c"]) == 1
    assert "no DVC-tracked output at or under ['datasets/site_c']" in capsys.readouterr().err
    assert main(["index", str(reg), "v9", str(tmp_path / "x.json")]) == 1
    assert "revision 'v9': the revision is not in the registry" in capsys.readouterr().err


# -- remote_options -----------------------------------------------------------------------------


def test_remote_options_override_the_registry_config(built, reg, tmp_path) -> None:
    """``url`` is a DVC remote option like keyfile or endpointurl: with the registry's remote
    moved, the objects come from where the setting says (a mapping, or key=value text)."""
    moved = tmp_path / "remote-moved"
    built["remote"].rename(moved)  # the registry's own remote is gone meanwhile
    try:
        for form in ({"url": str(moved)}, f"url={moved}"):
            p = provider(tmp_path / type(form).__name__, reg, remote_options=form)
            f = p.object("datasets/site_a/phenotype")
            f.retrieve_object()
            assert (f.local_path() / "scores.tsv").read_text().endswith("21\n")
        with pytest.raises(WorkflowError, match=rf"{built['remote']} has no object"):
            provider(tmp_path / "none", reg).object("datasets/site_a").retrieve_object()
    finally:
        shutil.copytree(moved, built["remote"])
    # The setting's remote, not the registry's, is the one used: gone, it is the one named.
    shutil.rmtree(moved)
    p = provider(tmp_path / "gone", reg, remote_options={"url": str(moved)})
    with pytest.raises(WorkflowError) as err:
        p.object("datasets/site_a/participants.tsv").retrieve_object()
    assert f"the DVC remote {moved} has no object" in str(err.value)


def test_malformed_remote_options_are_named(reg, tmp_path) -> None:
    with pytest.raises(WorkflowError, match=r"remote_options: 'port' is not key=value"):
        provider(tmp_path, reg, remote_options="keyfile=/k,port")
    with pytest.raises(WorkflowError, match=r"remote_options: a list, expected a mapping"):
        provider(tmp_path, reg, remote_options=["keyfile=/k"])


# -- concurrent retrieval -----------------------------------------------------------------------


def test_retrievals_run_together_at_most_jobs_at_a_time(reg, tmp_path, monkeypatch) -> None:
    """Snakemake starts a batch's retrievals as asyncio tasks: they overlap, `jobs` at most."""
    import threading
    import time

    from snakemake_storage_plugin_dvc.release import Release

    inflight, peak, lock = [0], [0], threading.Lock()
    materialize = Release.materialize

    def slow(self, entry, dest):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.05)
        try:
            materialize(self, entry, dest)
        finally:
            with lock:
                inflight[0] -= 1

    monkeypatch.setattr(Release, "materialize", slow)
    p = provider(tmp_path, reg, jobs=3)
    objects = [p.object(f"datasets/site_a/raw/run-{i:02d}.txt") for i in range(12)]

    async def all_of_them() -> None:
        await asyncio.gather(*(o.managed_retrieve() for o in objects))

    asyncio.run(all_of_them())
    assert peak[0] == 3
    for i, o in enumerate(objects):
        assert o.local_path().read_text() == f"run {i}\n" * 50


def test_a_failed_concurrent_retrieval_is_named_and_leaves_nothing(reg, tmp_path) -> None:
    p = provider(tmp_path, reg)
    bad = p.object("datasets/site_a/none.tsv")
    with pytest.raises(WorkflowError, match="Failed to retrieve storage object") as err:
        asyncio.run(bad.managed_retrieve())
    assert "no DVC-tracked file or folder" in str(err.value)
    assert not bad.local_path().exists()
