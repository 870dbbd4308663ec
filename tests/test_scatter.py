"""Per-session harmonization (ketamap.harmonize.scatter): session jobs write pieces, the site's
gather writes the tables, byte-identical to one job reading the whole site; the site-level checks
and the integrity of pieces and of each session's fetched files."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from badinput import Consortium
from ketamap import harmonize, integrity, schemas
from ketamap.errors import KetamapError, SiteDataError
from ketamap.harmonize import scatter
from ketamap.integrity import IntegrityError

SITES = ("site_a_ieeg", "site_b_ieeg")  # EDF and BrainVision


def _fetch_manifest(raw: Path, site: dict) -> None:
    """The manifest a fetch writes: every file with its md5 and size, and the pinned release."""
    files = [
        {
            "path": p.relative_to(raw).as_posix(),
            "md5": integrity.file_hash(p, "md5"),
            "bytes": p.stat().st_size,
        }
        for p in sorted(raw.rglob("*"))
        if p.is_file()
    ]
    manifest = {k: site[k] for k in ("registry", "path", "revision") if k in site}
    manifest["files"] = files
    Path(f"{raw}.fetch.json").write_text(json.dumps(manifest))


@pytest.fixture
def site_copy(corpus: Consortium, tmp_path: Path, request) -> tuple[dict, Path]:
    site_id = getattr(request, "param", SITES[0])
    raw = corpus.copy(site_id, tmp_path / "raw")
    site = corpus.site(site_id)
    _fetch_manifest(raw, site)
    return site, raw


def _bytes(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, frame in tables.items():
        schemas.write_table(frame, name, out / f"{name}.parquet")
        digests[name] = hashlib.sha256((out / f"{name}.parquet").read_bytes()).hexdigest()
    return digests


# a session's estimated work: one second per MB (so a batch's seconds are its MB)
MB_AS_SECONDS = (0.0, 1.0)


def _run_sessions(
    site: dict, raw: Path, config: dict, out: Path, batch_mb: float = 0
) -> dict[str, str]:
    """Every session job of the site (one per session by default): batch -> its piece file."""
    pieces = {}
    for batch in scatter.batches(raw, "ieeg", batch_mb, MB_AS_SECONDS):
        pieces[batch] = str(out / f"{batch}.zip")
        harmonize.run_session("ieeg", site, raw, batch, pieces[batch], config)
    return pieces


@pytest.mark.parametrize("site_copy", SITES, indirect=True)
def test_session_jobs_and_gather_write_the_site_jobs_bytes(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw = site_copy
    config = corpus.config
    sessions = scatter.sessions(raw, "ieeg")
    # every session folder with iEEG files, in the readers' order
    on_disk = sorted({(p.parts[-4], p.parts[-3]) for p in raw.glob("sub-*/ses-*/ieeg/*")})
    assert sessions == [f"{a}_{b}" for a, b in on_disk] and len(sessions) >= 4

    whole = {
        t: str(tmp_path / "whole" / f"{t}.parquet") for t in harmonize.HARMONIZERS["ieeg"].tables
    }
    harmonize.run("ieeg", site, raw, whole, config)
    # one job per session, and the same sessions packed into two or three jobs
    total_mb = sum(sum(scatter.sizes(raw, "ieeg", s)) for s in sessions) / 2**20
    for batch_mb in (0, total_mb / 3):
        pieces = _run_sessions(site, raw, config, tmp_path / f"pieces{batch_mb}", batch_mb)
        assert (len(pieces) == len(sessions)) == (batch_mb == 0), pieces
        gathered = {t: str(tmp_path / f"gathered{batch_mb}" / f"{t}.parquet") for t in whole}
        harmonize.run("ieeg", site, raw, gathered, config, pieces=list(pieces.values()))
        for t in whole:
            assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), (t, batch_mb)
    assert len(schemas.read_table(gathered["ieeg_responses"], "ieeg_responses")) > 0


def test_threads_run_the_ffts_on_workers_and_change_no_byte(
    site_copy, corpus: Consortium, tmp_path: Path, monkeypatch
) -> None:
    """A session job given 2 threads (jobs.session_threads) runs the HFB envelope with 2
    scipy.fft workers set (its channel blocks on 2 threads) and writes the same piece bytes."""
    from scipy import fft

    from ketamap.harmonize.ieeg import signal

    site, raw = site_copy
    batch = scatter.sessions(raw, "ieeg")[0]
    seen: list[int] = []
    real = signal.hfb_envelope

    def spy(*args, **kwargs):
        seen.append(fft.get_workers())
        return real(*args, **kwargs)

    monkeypatch.setattr(signal, "hfb_envelope", spy)
    digests = {}
    for threads in (1, 2):
        out = tmp_path / f"{threads}.zip"
        harmonize.run_session("ieeg", site, raw, batch, str(out), corpus.config, threads=threads)
        digests[threads] = hashlib.sha256(out.read_bytes()).hexdigest()
    assert seen and set(seen) == {1, 2}, seen
    assert digests[1] == digests[2]
    assert fft.get_workers() == 1  # the job's setting does not outlive its steps


def _rename_participant(raw: Path, old: str, new: str) -> None:
    """Rename participant ``old`` to ``new`` in a site folder (folders, file names, tables)."""
    for path in sorted(raw.rglob(f"*{old}*"), key=lambda p: -len(p.parts)):
        path.rename(path.with_name(path.name.replace(old, new)))
    for table in [raw / "participants.tsv", *raw.glob("phenotype/*.tsv")]:
        table.write_text(table.read_text().replace(f"{old}\t", f"{new}\t"))


def test_the_gather_keeps_the_readers_order_of_unpadded_labels(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    """Labels that sort otherwise as text than as folders ("sub-EPA010_" < "sub-EPA01_"): the
    gather assembles the recordings in the whole-site job's order, so the time courses (means of
    stacked curves, whose float sums depend on the order) keep its bytes."""
    site, raw = site_copy
    _rename_participant(raw, "sub-EPA02", "sub-EPA010")
    _rename_participant(raw, "sub-EPA03", "sub-EPA01A")
    _fetch_manifest(raw, site)
    sessions = scatter.sessions(raw, "ieeg")
    assert [s.split("_")[0] for s in sessions[::2]] == ["sub-EPA01", "sub-EPA010", "sub-EPA01A"]
    assert sorted(sessions) != sessions
    tables = harmonize.HARMONIZERS["ieeg"].tables
    whole = {t: str(tmp_path / "whole" / f"{t}.parquet") for t in tables}
    harmonize.run("ieeg", site, raw, whole, corpus.config)
    pieces = _run_sessions(site, raw, corpus.config, tmp_path / "pieces")
    gathered = {t: str(tmp_path / "gathered" / f"{t}.parquet") for t in tables}
    harmonize.run("ieeg", site, raw, gathered, corpus.config, pieces=list(pieces.values()))
    for t in tables:
        assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), t


def test_pieces_are_deterministic_and_lossless(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "channel": ["A1-A2", "B1-B2"],
            "region": ["amygdala", None],
            "x_mm": [1.5, np.nan],
            "n": np.array([3, 4], dtype="int32"),
            "ok": [True, False],
        }
    )
    arrays = {"times": np.linspace(-0.5, 1.5, 7), "z": np.array([np.nan, 1e-300, -2.0])}
    piece = ({"pid": "KM1", "qc": {"warnings": ""}}, {"info": frame}, arrays)
    two = {"sub-1_ses-a": piece, "sub-1_ses-b": ({"pid": "KM1"}, {}, {})}
    scatter.write_pieces(tmp_path / "a.zip", two)
    scatter.write_pieces(tmp_path / "b.zip", two)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    back = scatter.read_pieces(tmp_path / "a.zip", site="s")
    assert list(back) == list(two)
    meta, frames, got = back["sub-1_ses-a"]
    assert meta["pid"] == "KM1" and meta["version"] == scatter.PIECE_VERSION
    pd.testing.assert_frame_equal(frames["info"], frame)
    assert frames["info"]["n"].dtype == np.int32
    for name, array in arrays.items():
        assert got[name].tobytes() == array.tobytes()


def test_an_altered_or_unreadable_piece_is_refused(tmp_path: Path) -> None:
    piece = ({"pid": "KM1"}, {}, {"t": np.arange(4.0)})
    path = tmp_path / "sub-01_ses-a.zip"
    scatter.write_pieces(path, {"sub-01_ses-a": piece})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        scatter.read_pieces(path, site="site_x")
    assert "sha256" in str(err.value) and path.name in str(err.value)
    # consistent record, but not a piece: one message, no zipfile traceback
    path.write_bytes(b"not a zip")
    integrity.record(path)
    with pytest.raises(KetamapError) as err:
        scatter.read_pieces(path, site="site_x")
    assert "site 'site_x'" in str(err.value) and "field 'piece'" in str(err.value)
    # a zip without session members, and one of another piece version
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "x")
    integrity.record(path)
    with pytest.raises(KetamapError, match="no session in the piece file"):
        scatter.read_pieces(path, site="site_x")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sub-01_ses-a/meta.json", json.dumps({"version": 1}))
    integrity.record(path)
    with pytest.raises(KetamapError, match="field 'version'"):
        scatter.read_pieces(path, site="site_x")


def test_the_gather_refuses_a_missing_or_foreign_piece(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw = site_copy
    pieces = _run_sessions(site, raw, corpus.config, tmp_path / "pieces")
    out = {t: str(tmp_path / "t" / f"{t}.parquet") for t in harmonize.HARMONIZERS["ieeg"].tables}
    missing = dict(pieces)
    gone = sorted(missing)[1]
    del missing[gone]
    with pytest.raises(SiteDataError) as err:
        harmonize.run("ieeg", site, raw, out, corpus.config, pieces=list(missing.values()))
    text = str(err.value)
    assert f"site '{site['id']}'" in text and gone in text and "none" in text
    # one session's piece under another session's name: another participant or condition
    first, second = sorted(pieces)[:2]
    read = {s: scatter.read_pieces(p, site=site["id"])[s] for s, p in pieces.items()}
    scatter.write_pieces(tmp_path / "swapped.zip", {first: read[second], second: read[first]})
    swapped = [p for s, p in pieces.items() if s not in (first, second)]
    with pytest.raises(SiteDataError) as err:
        harmonize.run(
            "ieeg", site, raw, out, corpus.config, pieces=[*swapped, str(tmp_path / "swapped.zip")]
        )
    assert "participant or condition" in str(err.value)
    # a session in two piece files (one left by other batches): named, never used twice
    with pytest.raises(SiteDataError) as err:
        harmonize.run(
            "ieeg", site, raw, out, corpus.config, pieces=[*pieces.values(), pieces[first]]
        )
    assert first in str(err.value) and "two files" in str(err.value)
    assert not any(Path(p).exists() for p in out.values())


def test_a_session_job_verifies_its_own_files_only(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw = site_copy
    first, second = scatter.sessions(raw, "ieeg")[:2]
    sub, ses = scatter.session_folder(second)
    victim = sorted((raw / sub / ses / "ieeg").glob("*_events.tsv"))[0]
    victim.write_text(victim.read_text() + "\n")
    # the first session's job does not hash the second session's files
    harmonize.run_session("ieeg", site, raw, first, str(tmp_path / "1.zip"), corpus.config)
    with pytest.raises(IntegrityError) as err:
        harmonize.run_session("ieeg", site, raw, second, str(tmp_path / "2.zip"), corpus.config)
    assert victim.name in str(err.value) and "field 'md5'" in str(err.value)
    # a file added to a session folder, and an altered participants.tsv, are seen too
    sub, ses = scatter.session_folder(first)
    (raw / sub / ses / "ieeg" / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match="added after the fetch"):
        harmonize.run_session("ieeg", site, raw, first, str(tmp_path / "1.zip"), corpus.config)
    (raw / sub / ses / "ieeg" / "extra.txt").unlink()
    participants = raw / "participants.tsv"
    participants.write_text(participants.read_text().replace("\n", "\r\n", 1))
    with pytest.raises(IntegrityError, match=r"participants\.tsv"):
        harmonize.run_session("ieeg", site, raw, first, str(tmp_path / "1.zip"), corpus.config)


def test_session_listing_content_and_sizes_follow_the_fetch_manifest(
    site_copy, tmp_path: Path
) -> None:
    _, raw = site_copy
    sessions = scatter.sessions(raw, "ieeg")
    first, second = sessions[:2]
    scope = scatter.scope(raw, "ieeg", first)
    assert scope[0] == "/".join(scatter.session_folder(first)) and "participants.tsv" in scope
    before = {s: scatter.content(raw, "ieeg", s) for s in sessions}
    assert len(set(before.values())) == len(sessions)
    sizes = scatter.sizes(raw, "ieeg", first)
    sub, ses = scatter.session_folder(first)
    on_disk = [p.stat().st_size for p in (raw / sub / ses).rglob("*") if p.is_file()]
    assert sum(sizes) == sum(on_disk) + sum(p.stat().st_size for p in raw.glob("*") if p.is_file())
    # a release that changes one file of one session changes that session's content only
    manifest = json.loads(Path(f"{raw}.fetch.json").read_text())
    sub, ses = scatter.session_folder(second)
    for f in manifest["files"]:
        if f["path"].startswith(f"{sub}/{ses}/"):
            f["md5"] = "0" * 32
            break
    Path(f"{raw}.fetch.json").write_text(json.dumps(manifest))
    after = {s: scatter.content(raw, "ieeg", s) for s in sessions}
    assert [s for s in sessions if after[s] != before[s]] == [second]
    # before a fetch: no sessions (the gather is planned again when the fetch has finished)
    assert scatter.sessions(tmp_path / "never_fetched", "ieeg") == []
    assert scatter.sessions(raw, "pet") == []


def test_copies_of_a_site_keep_their_sessions_apart(site_copy, tmp_path: Path) -> None:
    """The planning cache is keyed by the manifest file: two sites never share a listing."""
    site, raw = site_copy
    other = tmp_path / "other"
    shutil.copytree(raw, other)
    shutil.rmtree(other / scatter.session_folder(scatter.sessions(raw, "ieeg")[0])[0])
    _fetch_manifest(other, site)
    assert len(scatter.sessions(other, "ieeg")) == len(scatter.sessions(raw, "ieeg")) - 2


def test_ketamap_verify_checks_session_pieces(tmp_path: Path) -> None:
    from ketamap.integrity import verify_run

    piece = tmp_path / "resources/pieces/site_x/ieeg/sub-01_ses-a.zip"
    scatter.write_pieces(piece, {"sub-01_ses-a": ({"pid": "KM1"}, {}, {"t": np.arange(3.0)})})
    (tmp_path / "results").mkdir()
    problems, counts = verify_run(tmp_path)
    assert problems == [] and counts["session pieces"] == 1
    data = bytearray(piece.read_bytes())
    data[-30] ^= 0x01
    piece.write_bytes(bytes(data))
    (piece.parent / f".{piece.name}{integrity.TEMP_MARK}x").write_text("partial")
    problems, _ = verify_run(tmp_path)
    assert len(problems) == 2 and "sub-01_ses-a.zip" in problems[0] and "sha256" in problems[0]
    assert "interrupted write" in problems[1]


def test_session_index_from_a_manifest(tmp_path: Path) -> None:
    """Sessions, scopes and contents from the manifest alone (no tree): files directly in a
    session folder belong to its scope, other datatypes do not make a session."""
    raw = tmp_path / "site"
    files = [
        "participants.tsv",
        "sub-2/ses-a/ieeg/sub-2_ses-a_ieeg.edf",
        "sub-10/ses-a/ieeg/sub-10_ses-a_ieeg.edf",
        "sub-10/ses-a/sub-10_ses-a_scans.tsv",
        "sub-10/ses-b/beh/sub-10_ses-b_beh.tsv",
        "sub-10/anat/sub-10_T1w.nii.gz",
    ]
    manifest = {
        "files": [{"path": p, "md5": f"{i:032x}", "bytes": 10 * i} for i, p in enumerate(files)]
    }
    Path(f"{raw}.fetch.json").write_text(json.dumps(manifest))
    assert scatter.sessions(raw, "ieeg") == ["sub-10_ses-a", "sub-2_ses-a"]
    assert scatter.sessions(raw, "beh") == ["sub-10_ses-b"]
    assert [f["path"] for f in scatter.scope_files(raw, "ieeg", "sub-10_ses-a")] == [
        "participants.tsv",
        "sub-10/ses-a/ieeg/sub-10_ses-a_ieeg.edf",
        "sub-10/ses-a/sub-10_ses-a_scans.tsv",
    ]
    assert scatter.sizes(raw, "ieeg", "sub-10_ses-a") == [0, 20, 30]
    before = scatter.content(raw, "ieeg", "sub-10_ses-a")
    manifest["files"][3]["md5"] = "f" * 32  # the scans file, outside the ieeg folder
    Path(f"{raw}.fetch.json").write_text(json.dumps(manifest) + " ")
    assert scatter.content(raw, "ieeg", "sub-10_ses-a") != before


def _sized_manifest(raw: Path, sizes_mb: list[float]) -> list[str]:
    """A fetch manifest of one recording per session with these sizes; the sessions in order."""
    files = [{"path": "participants.tsv", "md5": "0" * 32, "bytes": 100}]
    names = []
    for i, mb in enumerate(sizes_mb):
        sub = f"sub-{i:03d}"
        names.append(f"{sub}_ses-a")
        files.append(
            {
                "path": f"{sub}/ses-a/ieeg/{sub}_ses-a_ieeg.edf",
                "md5": f"{i:032x}",
                "bytes": int(mb * 2**20),
            }
        )
    Path(f"{raw}.fetch.json").write_text(json.dumps({"files": files}))
    return names


def _members(raw: Path, batches: list[str]) -> list[list[str]]:
    return [scatter.batch_sessions(raw, "ieeg", b) for b in batches]


def test_batches_cover_every_session_once_in_order_and_by_size(tmp_path: Path) -> None:
    raw = tmp_path / "site"
    names = _sized_manifest(raw, [2.0] * 40)
    # 80 MB in jobs of at least 20 MB: four jobs of ten sessions, contiguous, in folder order
    batches = scatter.batches(raw, "ieeg", 20, MB_AS_SECONDS)
    runs = _members(raw, batches)
    assert [len(r) for r in runs] == [10, 10, 10, 10]
    assert [s for r in runs for s in r] == names
    assert batches[0] == f"{names[0]}--{names[9]}"
    # the batch's scope is its session folders and the top-level files; its content and sizes
    scope = scatter.scope(raw, "ieeg", batches[1])
    assert scope == [
        *("/".join(scatter.session_folder(s)) for s in names[10:20]),
        "participants.tsv",
    ]
    assert sum(scatter.sizes(raw, "ieeg", batches[1])) == 10 * 2 * 2**20 + 100
    # 0: one job per session; a batch larger than the site: one job; the same data, the same jobs
    assert scatter.batches(raw, "ieeg", 0, MB_AS_SECONDS) == names
    assert _members(raw, scatter.batches(raw, "ieeg", 1000, MB_AS_SECONDS)) == [names]
    assert scatter.batches(raw, "ieeg", 20, MB_AS_SECONDS) == batches
    # a large session is a job of its own, the short ones around it share
    names = _sized_manifest(raw, [1, 1, 1, 60, 1, 1, 1, 1])
    runs = _members(raw, scatter.batches(raw, "ieeg", 20, MB_AS_SECONDS))
    assert [names[3]] in runs and [s for r in runs for s in r] == names
    assert all(len(r) > 1 for r in runs if names[3] not in r)
    # a fixed cost per session packs sessions of no size too: 40 x 0.5 s in jobs of 5 s
    names = _sized_manifest(raw, [0.0] * 40)
    assert [len(r) for r in _members(raw, scatter.batches(raw, "ieeg", 5, (0.5, 1.0)))] == [10] * 4
    assert scatter.batches(raw, "ieeg", 5, MB_AS_SECONDS) == names  # no work to estimate
    # a name whose first or last session is gone names no session (the job refuses it)
    assert scatter.batch_sessions(raw, "ieeg", "sub-999_ses-a--sub-001_ses-a") == []
    assert scatter.batch_sessions(raw, "ieeg", f"{names[5]}--{names[1]}") == []
    assert scatter.content(raw, "ieeg", "sub-999_ses-a") == scatter.content(raw, "ieeg", "x") != ""


def test_a_session_job_refuses_a_batch_the_manifest_does_not_hold(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw = site_copy
    with pytest.raises(SiteDataError) as err:
        harmonize.run_session(
            "ieeg", site, raw, "sub-nobody_ses-a", str(tmp_path / "p.zip"), corpus.config
        )
    text = str(err.value)
    assert f"site '{site['id']}'" in text and "fetch.json" in text and "sub-nobody" in text
    assert not (tmp_path / "p.zip").exists()


def test_a_gather_removes_the_piece_files_of_earlier_batches(tmp_path: Path) -> None:
    folder = tmp_path / "resources/pieces/site_x/ieeg"
    piece = ({"pid": "KM1"}, {}, {})
    for name in ("sub-1_ses-a", "sub-1_ses-b", "sub-1_ses-a--sub-1_ses-b"):
        scatter.write_pieces(folder / f"{name}.zip", {"sub-1_ses-a": piece})
    (folder / "notes.zip").write_text("not a piece: never touched")
    kept = [str(folder / "sub-1_ses-a.zip"), str(folder / "sub-1_ses-b.zip")]
    assert scatter.remove_stale_pieces(kept) == ["sub-1_ses-a--sub-1_ses-b.zip"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "notes.zip",
        "sub-1_ses-a.zip",
        "sub-1_ses-a.zip.sha256",
        "sub-1_ses-b.zip",
        "sub-1_ses-b.zip.sha256",
    ]


def _split_for_per_session(raw: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``raw`` as a per-session fetch leaves it: the site's own files in ``site/<name>`` with a
    manifest listing every file, and the session folders where the storage plugin puts them."""
    manifest = json.loads(Path(f"{raw}.fetch.json").read_text())
    site, storage = tmp_path / "site" / raw.name, tmp_path / "storage"
    shutil.copytree(raw, storage)
    shutil.copytree(raw, site, ignore=shutil.ignore_patterns("ses-*"))
    manifest["listing"] = manifest["files"]
    manifest["files"] = [f for f in manifest["files"] if not scatter.in_session_folder(f["path"])]
    assert {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()} == {
        f["path"] for f in manifest["files"]
    }
    Path(f"{site}.fetch.json").write_text(json.dumps(manifest))
    return site, storage


def test_per_session_fetch_jobs_read_their_retrieved_sessions_as_one_site(
    site_copy, corpus: Consortium, tmp_path: Path
) -> None:
    """fetch.per_session: session jobs and the gather read the site's own files plus the session
    folders retrieved for them (scatter.session_view), with the whole site's bytes; a stray file in
    a retrieved folder is never read, a missing or altered one is refused by name."""
    site, raw = site_copy
    config = corpus.config
    tables = harmonize.HARMONIZERS["ieeg"].tables
    whole = {t: str(tmp_path / "whole" / f"{t}.parquet") for t in tables}
    harmonize.run("ieeg", site, raw, whole, config)
    own, storage = _split_for_per_session(raw, tmp_path)
    sessions = scatter.sessions(own, "ieeg")
    assert sessions == scatter.sessions(raw, "ieeg") and len(sessions) >= 4
    folder = {s: str(storage.joinpath(*scatter.session_folder(s))) for s in sessions}
    stray = Path(folder[sessions[0]]) / "ieeg" / "stray.txt"
    stray.write_text("not in the release")
    pieces = []
    for s in sessions:
        pieces.append(str(tmp_path / "pieces" / f"{s}.zip"))
        harmonize.run_session("ieeg", site, own, s, pieces[-1], config, sessions=[folder[s]])
    gathered = {t: str(tmp_path / "gathered" / f"{t}.parquet") for t in tables}
    harmonize.run(
        "ieeg", site, own, gathered, config, pieces=pieces, sessions=list(folder.values())
    )
    for t in tables:
        assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), t
    assert not list((own.parent / ".views").iterdir())  # every job's view is removed

    def second_session_job() -> None:
        harmonize.run_session(
            "ieeg",
            site,
            own,
            sessions[1],
            str(tmp_path / "x.zip"),
            config,
            sessions=[folder[sessions[1]]],
        )

    sub, ses = scatter.session_folder(sessions[1])
    victim = sorted((storage / sub / ses / "ieeg").glob("*_events.tsv"))[0]
    victim.write_text(victim.read_text() + "\n")
    with pytest.raises(IntegrityError) as err:
        second_session_job()
    assert victim.name in str(err.value) and "field 'md5'" in str(err.value)
    victim.unlink()
    with pytest.raises(IntegrityError) as err:
        second_session_job()
    assert victim.name in str(err.value)
