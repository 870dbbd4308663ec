"""Behaviour harmonized per session (ketamap.harmonize.scatter): the session jobs of a mouse lab
(NWB or DeepLabCut files directly in each session folder) or of a human site (eyelid video in
``beh/``) and the site's gather write the bytes one job reading the whole site writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from badinput import Consortium
from ketamap import harmonize, schemas
from ketamap.errors import SiteDataError
from ketamap.harmonize import scatter
from test_scatter import MB_AS_SECONDS, _fetch_manifest

H = harmonize.HARMONIZERS["behaviour"]
MICE = ("lab_nwb_mice", "lab_dlc_mice")


def _site(corpus: Consortium, site_id: str, tmp_path: Path) -> tuple[dict, Path]:
    raw = corpus.copy(site_id, tmp_path / "raw")
    site = corpus.site(site_id)
    _fetch_manifest(raw, site)
    return site, raw


def _gather(
    site: dict, raw: Path, config: dict, out: Path, batch_mb: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Every session job of the site, then its gather: (batch -> piece file, table -> file)."""
    assert H.sessions is not None
    pieces = {}
    for batch in scatter.batches(raw, H.sessions, batch_mb, MB_AS_SECONDS):
        pieces[batch] = str(out / "pieces" / f"{batch}.zip")
        harmonize.run_session("behaviour", site, raw, batch, pieces[batch], config)
    tables = {t: str(out / f"{t}.parquet") for t in H.tables}
    harmonize.run("behaviour", site, raw, tables, config, pieces=list(pieces.values()))
    return pieces, tables


@pytest.fixture(scope="module")
def eyelid_corpus(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    """behaviour_small alone: its iEEG sites have bedside eyelid video (the shared corpus takes
    site_a_ieeg from ieeg_small, which has none)."""
    from badinput import build

    return build(tmp_path_factory.mktemp("eyelid"), scenarios=("behaviour_small",))


@pytest.mark.parametrize("site_id", [*MICE, "site_a_ieeg"])
def test_behaviour_session_jobs_and_gather_write_the_site_jobs_bytes(
    site_id: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    human = site_id == "site_a_ieeg"
    corpus = request.getfixturevalue("eyelid_corpus" if human else "corpus")
    assert not human or (corpus.site(site_id).get("reader") or {}).get("eyelid") is not None
    site, raw = _site(corpus, site_id, tmp_path)
    assert H.sessions is not None
    sessions = scatter.sessions(raw, H.sessions)
    where = "sub-*/ses-*/beh/*" if site["species"] == "human" else "sub-*/ses-*/*"
    on_disk = sorted(
        {(p.relative_to(raw).parts[0], p.relative_to(raw).parts[1]) for p in raw.glob(where)}
    )
    assert sessions == [f"{a}_{b}" for a, b in on_disk] and len(sessions) >= 4
    whole = {t: str(tmp_path / "whole" / f"{t}.parquet") for t in H.tables}
    harmonize.run("behaviour", site, raw, whole, corpus.config)
    total_mb = sum(sum(scatter.sizes(raw, H.sessions, s)) for s in sessions) / 2**20
    for batch_mb in (0, total_mb / 3):
        pieces, gathered = _gather(site, raw, corpus.config, tmp_path / f"g{batch_mb}", batch_mb)
        assert (len(pieces) == len(sessions)) == (batch_mb == 0), pieces
        for t in H.tables:
            assert Path(gathered[t]).read_bytes() == Path(whole[t]).read_bytes(), (t, batch_mb)
    puffs = schemas.read_table(whole["behaviour_puffs"], "behaviour_puffs")
    assert len(puffs) > 0 and puffs["subject_id"].nunique() >= 2
    if site_id == "lab_nwb_mice":  # the NWB labs log licks: reward rows came through the pieces
        assert len(schemas.read_table(whole["reward_seeking"], "reward_seeking")) > 0


def test_a_behaviour_gather_refuses_a_missing_or_foreign_session_and_one_without_its_file(
    corpus: Consortium, tmp_path: Path
) -> None:
    site, raw = _site(corpus, "lab_dlc_mice", tmp_path)
    assert H.sessions is not None
    pieces = {}
    for batch in scatter.batches(raw, H.sessions, 0, MB_AS_SECONDS):
        pieces[batch] = str(tmp_path / "pieces" / f"{batch}.zip")
        harmonize.run_session("behaviour", site, raw, batch, pieces[batch], corpus.config)
    out = {t: str(tmp_path / "t" / f"{t}.parquet") for t in H.tables}
    gone = sorted(pieces)[1]
    kept = [p for b, p in pieces.items() if b != gone]
    with pytest.raises(SiteDataError) as err:
        harmonize.run("behaviour", site, raw, out, corpus.config, pieces=kept)
    assert f"site '{site['id']}'" in str(err.value) and gone in str(err.value)
    assert not any(Path(p).exists() for p in out.values())
    # one session's piece under another session's name: another participant or condition
    first, second = sorted(pieces)[:2]
    read = {b: scatter.read_pieces(p, site=site["id"])[b] for b, p in pieces.items()}
    scatter.write_pieces(tmp_path / "swapped.zip", {first: read[second], second: read[first]})
    swapped = [p for b, p in pieces.items() if b not in (first, second)]
    with pytest.raises(SiteDataError, match="participant or condition") as err:
        harmonize.run(
            "behaviour",
            site,
            raw,
            out,
            corpus.config,
            pieces=[*swapped, str(tmp_path / "swapped.zip")],
        )
    assert f"site '{site['id']}'" in str(err.value)
    assert not any(Path(p).exists() for p in out.values())
    # a session folder whose DeepLabCut file is gone (the puff log stays): the site-level check
    # names it in the gather, as in the whole-site job
    sub, ses = scatter.session_folder(sorted(pieces)[0])
    for path in (raw / sub / ses).glob("*DLC_*"):
        path.unlink()
    _fetch_manifest(raw, site)
    for batch in scatter.batches(raw, H.sessions, 0, MB_AS_SECONDS):
        harmonize.run_session("behaviour", site, raw, batch, pieces[batch], corpus.config)
    with pytest.raises(SiteDataError, match="missing the DeepLabCut file") as err:
        harmonize.run("behaviour", site, raw, out, corpus.config, pieces=list(pieces.values()))
    assert f"{sub}/{ses}" in str(err.value)


def test_a_mouse_session_folder_counts_as_a_session_of_datatype_dot(tmp_path: Path) -> None:
    raw = tmp_path / "lab"
    for rel in (
        "participants.tsv",
        "sub-m1/ses-sal/sub-m1_ses-sal_behavior.nwb",
        "sub-m1/ses-ket/sub-m1_ses-ket_behavior.nwb",
        "sub-m2/ses-sal/beh/sub-m2_ses-sal_task-puff_eyelid.csv",
        "sub-m2/ses-ket/anat/sub-m2_ses-ket_T1w.nii.gz",
    ):
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_text("x")
    _fetch_manifest(raw, {})
    assert scatter.sessions(raw, ".") == ["sub-m1_ses-ket", "sub-m1_ses-sal"]
    assert scatter.sessions(raw, "beh|.") == ["sub-m1_ses-ket", "sub-m1_ses-sal", "sub-m2_ses-sal"]
    assert scatter.sessions(raw, "beh") == ["sub-m2_ses-sal"]
