"""Per-session PET harmonization (ketamap.harmonize.scatter): one session job per PET session
folder reads its scans against the shared atlas and writes a piece; the site's gather writes
``pet_regional`` and ``pet_sessions`` byte-identical to one job reading the whole site, with the
site-level checks; each job verifies its own files and the atlas files it reads."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from badinput import Consortium
from ketamap import harmonize, schemas
from ketamap.errors import SiteDataError
from ketamap.harmonize import scatter
from ketamap.integrity import IntegrityError
from test_scatter import _fetch_manifest, _rename_participant

SITES = ("keio_hc", "ycu_obs", "ycu_rct")  # the small scenario's PET sites
TABLES = harmonize.HARMONIZERS["pet"].tables


@pytest.fixture
def pet_copy(corpus: Consortium, tmp_path: Path, request) -> tuple[dict, Path, Path]:
    """A fetched copy of one PET site and of the atlas, each with its fetch manifest."""
    site_id = getattr(request, "param", "ycu_rct")
    raw = corpus.copy(site_id, tmp_path / "raw")
    site = corpus.site(site_id)
    _fetch_manifest(raw, site)
    atlas = tmp_path / "raw" / "atlas"
    shutil.copytree(corpus.atlas, atlas)
    _fetch_manifest(atlas, corpus.config["atlas"])
    return site, raw, atlas


# a session's estimated work: one second per MB (so a batch's seconds are its MB)
MB_AS_SECONDS = (0.0, 1.0)


def _run_sessions(
    site: dict, raw: Path, atlas: Path, config: dict, out: Path, batch_mb: float = 0
) -> dict[str, str]:
    """Every session job of the site (one per session by default): batch -> its piece file."""
    pieces = {}
    for batch in scatter.batches(raw, "pet", batch_mb, MB_AS_SECONDS):
        pieces[batch] = str(out / f"{batch}.zip")
        harmonize.run_session("pet", site, raw, batch, pieces[batch], config, atlas=atlas)
    return pieces


def _outputs(out: Path) -> dict[str, str]:
    return {t: str(out / f"{t}.parquet") for t in TABLES}


@pytest.mark.parametrize("pet_copy", SITES, indirect=True)
def test_pet_session_jobs_and_gather_write_the_site_jobs_bytes(
    pet_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw, atlas = pet_copy
    config = corpus.config
    sessions = scatter.sessions(raw, "pet")
    # one session per PET session folder, in the reader's order
    on_disk = sorted({(p.parts[-4], p.parts[-3]) for p in raw.glob("sub-*/ses-*/pet/*")})
    assert sessions == [f"{a}_{b}" for a, b in on_disk] and len(sessions) >= 6

    whole = _outputs(tmp_path / "whole")
    harmonize.run("pet", site, raw, whole, config, atlas=atlas)
    # one job per session, and the sessions packed into two or three jobs
    total_mb = sum(sum(scatter.sizes(raw, "pet", s)) for s in sessions) / 2**20
    for batch_mb in (0, total_mb / 3):
        pieces = _run_sessions(site, raw, atlas, config, tmp_path / f"p{batch_mb}", batch_mb)
        assert (len(pieces) == len(sessions)) == (batch_mb == 0), pieces
        gathered = _outputs(tmp_path / f"gathered{batch_mb}")
        harmonize.run("pet", site, raw, gathered, config, atlas=atlas, pieces=[*pieces.values()])
        for t in TABLES:
            assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), (t, batch_mb)
    scans = schemas.read_table(gathered["pet_sessions"], "pet_sessions")
    assert len(scans) == len(sessions)  # one scan per session folder here
    assert len(schemas.read_table(gathered["pet_regional"], "pet_regional")) > len(scans)
    # the pieces are deterministic: a session job run again writes the same bytes
    first = next(iter(pieces))
    assert "--" in first  # a job of several sessions
    digest = hashlib.sha256(Path(pieces[first]).read_bytes()).hexdigest()
    again = tmp_path / "again.zip"
    harmonize.run_session("pet", site, raw, first, str(again), config, atlas=atlas)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("pet_copy", ["ycu_obs"], indirect=True)
def test_the_pet_gather_keeps_the_readers_order_of_unpadded_labels(
    pet_copy, corpus: Consortium, tmp_path: Path
) -> None:
    """Labels that sort otherwise as text than as folders (``sub-hc1``, ``sub-hc10``,
    ``sub-hc1A``; "sub-hc10_" < "sub-hc1_"): sessions are listed in the reader's folder order and
    the gather writes the whole-site job's bytes."""
    site, raw, atlas = pet_copy
    _rename_participant(raw, "sub-hc2", "sub-hc10")
    _rename_participant(raw, "sub-hc3", "sub-hc1A")
    _fetch_manifest(raw, site)
    sessions = scatter.sessions(raw, "pet")
    assert sessions[:3] == [
        "sub-hc1_ses-baseline",
        "sub-hc10_ses-baseline",
        "sub-hc1A_ses-baseline",
    ]
    assert sorted(sessions) != sessions
    whole = _outputs(tmp_path / "whole")
    harmonize.run("pet", site, raw, whole, corpus.config, atlas=atlas)
    pieces = _run_sessions(site, raw, atlas, corpus.config, tmp_path / "pieces")
    gathered = _outputs(tmp_path / "gathered")
    harmonize.run("pet", site, raw, gathered, corpus.config, atlas=atlas, pieces=[*pieces.values()])
    for t in TABLES:
        assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), t


def test_the_pet_gather_refuses_a_missing_or_foreign_piece(
    pet_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw, atlas = pet_copy
    config = corpus.config
    pieces = _run_sessions(site, raw, atlas, config, tmp_path / "pieces")
    out = _outputs(tmp_path / "t")

    def gather(made: dict[str, str]) -> str:
        """The gather of these pieces, each relabelled as the session its key names."""
        files = []
        for label, path in made.items():
            (piece,) = scatter.read_pieces(path, site=site["id"]).values()
            files.append(tmp_path / f"relabelled{len(list(tmp_path.glob('relab*')))}.zip")
            scatter.write_pieces(files[-1], {label: piece})
        with pytest.raises(SiteDataError) as err:
            harmonize.run("pet", site, raw, out, config, atlas=atlas, pieces=files)
        return str(err.value)

    # a session without its piece: named by site, file (the scan) and what is expected
    gone = sorted(pieces)[1]
    text = gather({s: p for s, p in pieces.items() if s != gone})
    sub, ses = scatter.session_folder(gone)
    assert f"site '{site['id']}'" in text and gone in text and "read none" in text
    assert f"file '{sub}/{ses}/pet/" in text and "one piece per session folder" in text
    # one session's piece under another session's name: another scan, participant or visit
    first, second = sorted(pieces)[:2]
    text = gather({**pieces, first: pieces[second], second: pieces[first]})
    assert f"site '{site['id']}'" in text and "differ from the site's" in text
    assert f"file '{'/'.join(scatter.session_folder(first))}/pet/" in text
    # a piece made with other PET options (a stale piece): refused, not mixed into the table
    stale = tmp_path / "stale"
    other = json.loads(json.dumps(config))
    other["pet"]["window_min"] = [30, 40]
    harmonize.run_session("pet", site, raw, first, str(stale / f"{first}.zip"), other, atlas=atlas)
    text = gather({**pieces, first: str(stale / f"{first}.zip")})
    assert "PET options" in text and "window_min" in text
    # a piece for a session folder the site does not have
    foreign = {**pieces, "sub-ghost_ses-x": pieces[first]}
    text = gather(foreign)
    assert "session sub-ghost_ses-x has 0 PET scan(s)" in text and "sub-ghost/ses-x" in text
    assert not any(Path(p).exists() for p in out.values())


def test_the_pet_gather_keeps_the_site_level_checks(
    pet_copy, corpus: Consortium, tmp_path: Path
) -> None:
    """Two sessions mapped to one visit are each fine alone; the gather sees the duplicate."""
    site, raw, atlas = pet_copy
    config = json.loads(json.dumps(corpus.config))
    site = next(s for s in config["sites"] if s["id"] == site["id"])
    visits = site["reader"]["visits"]
    first, second = sorted(visits)[:2]
    visits[second] = visits[first]
    pieces = _run_sessions(site, raw, atlas, config, tmp_path / "pieces")
    with pytest.raises(SiteDataError) as err:
        harmonize.run(
            "pet",
            site,
            raw,
            _outputs(tmp_path / "t"),
            config,
            atlas=atlas,
            pieces=[*pieces.values()],
        )
    text = str(err.value)
    assert f"site '{site['id']}'" in text and second in text
    # the whole-site job says the same
    with pytest.raises(SiteDataError) as whole:
        harmonize.run("pet", site, raw, _outputs(tmp_path / "w"), config, atlas=atlas)
    assert str(whole.value) == text


def test_a_pet_session_job_verifies_its_own_files_and_the_atlas_it_reads(
    pet_copy, corpus: Consortium, tmp_path: Path
) -> None:
    site, raw, atlas = pet_copy
    config = corpus.config
    first, second = scatter.sessions(raw, "pet")[:2]
    sub, ses = scatter.session_folder(second)
    victim = sorted((raw / sub / ses / "pet").glob("*_pet.json"))[0]
    victim.write_text(victim.read_text() + "\n")

    def session(name: str) -> None:
        harmonize.run_session("pet", site, raw, name, str(tmp_path / "p.zip"), config, atlas=atlas)

    # the first session's job does not hash the second session's files
    session(first)
    with pytest.raises(IntegrityError) as err:
        session(second)
    assert victim.name in str(err.value) and "field 'md5'" in str(err.value)
    # the atlas files a job reads are verified, and a label table added beside them is seen
    table = next(atlas.glob("*_dseg.tsv"))
    original = table.read_bytes()
    table.write_bytes(original.replace(b"\n", b"\r\n", 1))
    with pytest.raises(IntegrityError) as err:
        session(first)
    assert "site 'atlas'" in str(err.value) and table.name in str(err.value)
    table.write_bytes(original)
    (atlas / "extra_dseg.tsv").write_bytes(original)
    with pytest.raises(IntegrityError, match="added after the fetch"):
        session(first)
    (atlas / "extra_dseg.tsv").unlink()
    # a file of the atlas release no job reads is not hashed by every job
    (atlas / "README").write_text("about the atlas")
    assert harmonize.atlas_scope(atlas) == sorted(p.name for p in atlas.glob("*_dseg.*"))
    session(first)


def test_a_pet_session_jobs_memory_follows_its_largest_image(
    pet_copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ketamap.jobresources import session_mem_mb

    _, raw, _ = pet_copy
    h = harmonize.HARMONIZERS["pet"]
    assert h.sessions == "pet" and h.atlas
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources/raw").symlink_to(raw.parent)  # the workflow's layout
    monkeypatch.chdir(tmp_path)
    mem = session_mem_mb(h.sessions, **h.session_memory)
    sessions = scatter.sessions(raw, "pet")
    for batch in [*sessions[:2], f"{sessions[0]}--{sessions[-1]}"]:
        largest = max(
            p.stat().st_size
            for s in scatter.batch_sessions(raw, "pet", batch)
            for p in (raw / "/".join(scatter.session_folder(s))).rglob("*.nii*")
        )
        wildcards = type("W", (), {"site": raw.name, "batch": batch})
        assert mem(wildcards, None) == math.ceil(1000 + 2 * largest / 2**20)
