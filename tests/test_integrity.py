"""Issue 12: content is what its hash says. Fetched data, tables and results are verified before
they are read; writes are atomic with ordinary permissions; `ketamap verify` names every drift; a
stale Snakemake lock is cleared by the next run while a live run is refused."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ketamap import integrity, schemas
from ketamap.errors import KetamapError, RegistryError, SchemaError
from ketamap.integrity import IntegrityError

SUBJECTS = pd.DataFrame(
    {
        "subject_id": ["KM0123456789AB", "KMABCDEF012345"],
        "site": ["s1", "s1"],
        "trial": ["t", "t"],
        "species": ["human", "human"],
        "group": ["trd", "trd"],
        "arm": ["ketamine", "placebo"],
        "sex": ["female", "male"],
        "age_years": [40.0, 50.0],
    }
)


def _subjects(tmp_path: Path) -> Path:
    path = tmp_path / "results" / "tables" / "subjects.parquet"
    schemas.write_table(SUBJECTS, "subjects", path)
    return path


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    stamp = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # size and mtime unchanged


def test_a_table_carries_its_hash_and_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = _subjects(tmp_path)
    finally:
        os.umask(old)
    digest = integrity.digest_path(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest.read_text() == f"{sha}  subjects.parquet\n"  # `sha256sum -c` format
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(digest.stat().st_mode) == 0o644
    assert not list(path.parent.glob(".*"))  # no temporary file left
    assert len(schemas.read_table(path, "subjects")) == 2


@pytest.mark.parametrize("where", ["data", "footer"])
def test_a_flipped_table_is_refused_before_it_is_read(tmp_path: Path, where: str) -> None:
    path = _subjects(tmp_path)
    size = path.stat().st_size
    _flip(path, 40 if where == "data" else size - 12)
    with pytest.raises(IntegrityError) as err:
        schemas.read_table(path, "subjects")
    text = str(err.value)
    assert f"file '{path}'" in text and "field 'sha256'" in text and "expected" in text
    assert "content changed after it was written" in text


def test_a_table_without_its_recorded_hash_is_refused(tmp_path: Path) -> None:
    path = _subjects(tmp_path)
    integrity.digest_path(path).unlink()
    with pytest.raises(IntegrityError, match="no recorded hash"):
        schemas.read_table(path, "subjects")


def test_unreadable_parquet_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    """Bytes that are no Parquet at all, with a consistent record: the reader's ArrowInvalid
    becomes one SchemaError naming the file."""
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    integrity.record(path)
    with pytest.raises(SchemaError, match=r"file '.*t\.parquet': cannot be read as Parquet"):
        schemas.read_table(path, "subjects")


def test_a_killed_write_leaves_nothing_the_next_write_keeps(tmp_path: Path) -> None:
    path = _subjects(tmp_path)
    leftover = path.with_name(f".{path.name}{integrity.TEMP_MARK}x1y2z3")
    leftover.write_bytes(b"half a table")
    assert list(integrity.leftovers(tmp_path)) == [leftover]
    _subjects(tmp_path)
    assert not leftover.exists()


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    integrity.atomic_write_text(path, "old\n")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        integrity.atomic_write(path, broken)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# -- fetched data ----------------------------------------------------------------------------


def _fetched(tmp_path: Path) -> tuple[dict, Path]:
    """A fetched dataset and its fetch manifest, as the fetch step writes them."""
    raw = tmp_path / "raw" / "site_a"
    (raw / "sub-01").mkdir(parents=True)
    (raw / "participants.tsv").write_text("participant_id\tage\nsub-01\t56\n")
    (raw / "sub-01" / "scan.json").write_text('{"a": 1}\n')
    files = [
        {"path": p.relative_to(raw).as_posix(), "md5": integrity.file_hash(p, "md5")}
        for p in sorted(raw.rglob("*"))
        if p.is_file()
    ]
    site = {"id": "site_a", "registry": "reg", "path": "datasets/site_a", "revision": "v1"}
    manifest = {**{k: site[k] for k in ("registry", "path", "revision")}, "files": files}
    integrity.fetch_manifest_path(raw).write_text(json.dumps(manifest))
    integrity.remember_verified(raw)
    return site, raw


def test_untouched_fetched_data_verifies(tmp_path: Path) -> None:
    site, raw = _fetched(tmp_path)
    integrity.verify_fetched(site, raw)
    assert integrity.stale_fetch(site, raw) is None


@pytest.mark.parametrize(
    "change, file, field, problem",
    [
        ("edit", "participants.tsv", "md5", "altered after it was fetched"),
        ("flip_keep_stat", "participants.tsv", "md5", "altered after it was fetched"),
        ("add", "extra.tsv", "path", "was added after the fetch"),
        ("delete", "sub-01/scan.json", "path", "was deleted after the fetch"),
        ("symlink", "sub-01/link.json", "path", "is a symlink"),
        ("revision", "site_a.fetch.json", "revision", "the config pins revision 'v2'"),
    ],
)
def test_changed_fetched_data_is_refused_and_fetched_again(
    tmp_path: Path, change: str, file: str, field: str, problem: str
) -> None:
    site, raw = _fetched(tmp_path)
    if change == "edit":
        (raw / "participants.tsv").write_text("participant_id\tage\nsub-01\t46\n")
    elif change == "flip_keep_stat":
        _flip(raw / "participants.tsv", 26)  # age 56 -> 46
    elif change == "add":
        (raw / "extra.tsv").write_text("x\n")
    elif change == "delete":
        (raw / "sub-01" / "scan.json").unlink()
    elif change == "symlink":
        (raw / "sub-01" / "link.json").symlink_to(tmp_path / "elsewhere.json")
    elif change == "revision":
        site = {**site, "revision": "v2"}
    stamp = integrity.stamp_path(raw)
    if change == "flip_keep_stat":
        # Sizes and mtimes kept: the cheap planning check trusts the tree it verified last...
        assert integrity.refresh_fetch_stamp(site, raw) is None
    with pytest.raises(IntegrityError) as err:
        integrity.verify_fetched(site, raw)  # ...the job's full md5 check does not
    text = str(err.value)
    assert f"site 'site_a', file '{file}'" in text or f"file '{raw}.fetch.json'" in text, text
    assert f"field '{field}'" in text and problem in text and "make run" in text, text
    # The next planning finds the change (the job dropped the verified state) and rewrites the
    # fetch's stamp, a newer input of the fetch job, so Snakemake fetches the site again.
    before = stamp.stat().st_mtime_ns if stamp.exists() else 0
    if change == "revision":
        # Another pin is a param of the fetch job, which Snakemake compares itself: the stamp
        # stays (a dry run with another pin marks nothing for a refetch).
        assert integrity.refresh_fetch_stamp(site, raw) is None
        return
    assert integrity.refresh_fetch_stamp(site, raw)
    assert stamp.stat().st_mtime_ns > before


def test_a_deleted_fetched_folder_is_fetched_again(tmp_path: Path) -> None:
    import shutil

    site, raw = _fetched(tmp_path)
    shutil.rmtree(raw)
    assert integrity.refresh_fetch_stamp(site, raw) == "the fetched folder was deleted"


def test_a_new_stamp_plans_nothing(tmp_path: Path) -> None:
    site, raw = _fetched(tmp_path)
    assert integrity.refresh_fetch_stamp(site, raw) is None
    assert integrity.stamp_path(raw).stat().st_mtime == 0  # older than any fetch


def test_a_release_never_follows_a_symlink_out_of_the_site(tmp_path: Path) -> None:
    from ketamap.registry import build_registry

    sites = tmp_path / "sites"
    (sites / "a").mkdir(parents=True)
    (sites / "b").mkdir()
    (sites / "b" / "secret.nii.gz").write_bytes(b"another site's image")
    (sites / "a" / "participants.tsv").write_text("participant_id\nsub-01\n")
    (sites / "a" / "image.nii.gz").symlink_to(sites / "b" / "secret.nii.gz")
    with pytest.raises(RegistryError) as err:
        build_registry(sites, tmp_path / "registry", str(tmp_path / "remote"), "v1")
    assert "site 'a', file 'image.nii.gz', field 'path'" in str(err.value)
    assert not (tmp_path / "registry").exists()


# -- ketamap verify ---------------------------------------------------------------------------


def _ketamap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketamap.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_verify_names_every_drifted_file(tmp_path: Path) -> None:
    _, raw = _fetched(tmp_path / "resources")
    table = _subjects(tmp_path)
    rel = table.relative_to(tmp_path).as_posix()
    (tmp_path / "results" / "manifest.json").write_text(
        json.dumps({"outputs": [{"path": rel, "sha256": integrity.file_hash(table)}]})
    )
    ok = _ketamap("verify", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (
        "verified 1 fetched datasets, 0 session pieces, 1 tables and results, 1 manifest entries"
        in ok.stdout
    )

    _flip(table, 40)
    (raw / "participants.tsv").write_text("participant_id\tage\nsub-01\t46\n")
    (tmp_path / "results" / "tables" / f".x.parquet{integrity.TEMP_MARK}abc").write_text("x")
    bad = _ketamap("verify", cwd=tmp_path)
    assert bad.returncode != 0
    drift = [line for line in bad.stdout.splitlines() if line.startswith("DRIFT")]
    assert len(drift) == 4, bad.stdout
    assert any("site 'site_a', file 'participants.tsv', field 'md5'" in d for d in drift)
    assert any(f"file '{rel}', field 'sha256': content changed" in d for d in drift)
    assert any("differs from results/manifest.json" in d for d in drift)
    assert any("temporary file of an interrupted write" in d for d in drift)
    assert "4 file(s) differ" in bad.stderr


# -- run guard --------------------------------------------------------------------------------


def _guard(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketamap.runguard", "--", "true"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_stale_snakemake_lock_is_cleared(tmp_path: Path) -> None:
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("/some/file\n")
    done = _guard(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "removed 1 stale Snakemake lock(s)" in done.stderr
    assert not list(locks.iterdir())


def test_a_live_run_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / ".snakemake" / "ketamap-run.lock"
    lock.parent.mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks").mkdir()
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    with open(lock, "w") as fh:
        fh.write("4242\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX)
        refused = _guard(tmp_path)
    assert refused.returncode != 0
    assert "another run is in progress" in refused.stderr and "pid 4242" in refused.stderr
    assert (tmp_path / ".snakemake" / "locks" / "0.input.lock").exists()  # not touched


def test_every_error_is_a_ketamap_error() -> None:
    assert issubclass(IntegrityError, KetamapError)


def test_run_manifest_hashes_what_decides_the_results_not_how_the_run_was_cut(
    tmp_path: Path,
) -> None:
    """`jobs` (how harmonization is cut into jobs), `fetch` and the key leave the manifest as it
    is; a key that decides a table changes its config hash."""
    from ketamap.manifest import write_run_manifest

    base = {"seed": 1, "pet": {"reference_region": "cerebellum"}}

    def manifest(config: dict, name: str) -> str:
        out = tmp_path / f"{name}.json"
        write_run_manifest(config, [], [], out, workdir=tmp_path)
        return json.loads(out.read_text())["config_sha256"]

    reference = manifest(base, "base")
    assert manifest({**base, "jobs": {"session_batch_seconds": 0}}, "jobs") == reference
    assert manifest({**base, "fetch": {"timeout": 5}}, "fetch") == reference
    assert manifest({**base, "pseudonymization": {"key": "k"}}, "key") == reference
    assert manifest({**base, "pet": {"reference_region": "pons"}}, "pet") != reference
