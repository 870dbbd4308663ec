"""The iEEG reader on real third-party files (../shared/realdata; skipped when absent)."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest

from ketamap.errors import SiteDataError
from ketamap.harmonize.ieeg import bipolar_pairs, hfb_envelope
from ketamap.harmonize.ieeg.read import format_of, read_bids, read_recording
from ketamap.io import read_json, read_tsv

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
pytestmark = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real third-party files not available at {REALDATA}"
)
BIDS_IEEG = ["ieeg_visual", "ieeg_motorMiller2007"]


def _vhdrs(dataset: str) -> list[Path]:
    return sorted((REALDATA / "bids-examples" / dataset).glob("sub-*/ses-*/ieeg/*_ieeg.vhdr"))


def _vhdr_channel_count(vhdr: Path) -> int:
    """NumberOfChannels of a BrainVision header (an INI file after its first line)."""
    cfg = configparser.ConfigParser(interpolation=None)
    text = vhdr.read_text(encoding="utf-8", errors="replace")
    cfg.read_string(text[text.index("[") :])
    return cfg.getint("Common Infos", "NumberOfChannels")


def test_sample_ecog_fif_hfb() -> None:
    import mne

    raw = mne.io.read_raw_fif(
        REALDATA / "mne-misc-data" / "ecog" / "sample_ecog_ieeg.fif", preload=True, verbose="error"
    )
    sfreq = raw.info["sfreq"]
    picks = mne.pick_types(raw.info, ecog=True, seeg=True)
    data = raw.get_data(picks=picks)
    assert sfreq == pytest.approx(160.0, rel=0.01) and data.shape[1] < 2 * sfreq
    with pytest.raises(ValueError, match=r"70-150 Hz does not fit below the Nyquist frequency"):
        hfb_envelope(data, sfreq)
    env = hfb_envelope(data, sfreq, band=(30.0, 70.0), width=10.0)
    assert env.shape[0] == len(picks) and np.isfinite(env).all()
    assert env.shape[1] == pytest.approx(data.shape[1] * 100 / sfreq, abs=1)
    assert np.nanmean(env) == pytest.approx(1.0, rel=0.2)  # each sub-band is mean-normalised


@pytest.mark.parametrize("dataset", BIDS_IEEG)
def test_bids_ieeg_headers_parse(dataset: str) -> None:
    vhdrs = _vhdrs(dataset)
    assert vhdrs
    for vhdr in vhdrs:
        root = REALDATA / "bids-examples" / dataset
        stem = vhdr.name[: -len("_ieeg.vhdr")]
        assert format_of(vhdr, site="real").name == "brainvision"
        sidecar = read_json(vhdr.parent / f"{stem}_ieeg.json", site="real")
        assert sidecar["PowerLineFrequency"] in (50, 60)
        channels = read_tsv(
            vhdr.parent / f"{stem}_channels.tsv", site="real", root=root, required=["name", "type"]
        )
        events = read_tsv(
            vhdr.parent / f"{stem}_events.tsv",
            site="real",
            root=root,
            required=["onset", "duration"],
        )
        assert len(events) > 0
        assert _vhdr_channel_count(vhdr) == len(channels)
        electrodes = sorted(vhdr.parent.glob("*_electrodes.tsv"))
        assert electrodes
        for e in electrodes:
            el = read_tsv(e, site="real", root=root, required=["name", "x", "y", "z"])
            assert len(el) > 0
        # ECoG grids numbered 1..n pair along consecutive numbers
        ecog = channels[channels["type"].str.upper() == "ECOG"]["name"].tolist()
        if ecog:
            assert len(bipolar_pairs(ecog)) >= len(ecog) // 2


@pytest.mark.parametrize("dataset", BIDS_IEEG)
def test_bids_ieeg_empty_payloads_rejected(dataset: str) -> None:
    for vhdr in _vhdrs(dataset):
        root = REALDATA / "bids-examples" / dataset
        with pytest.raises(SiteDataError) as err:
            read_recording(vhdr, site="real", root=root)
        msg = str(err.value)
        assert "_ieeg.eeg'" in msg, msg
        assert ("empty (0 bytes)" in msg) or ("holds only" in msg) or ("truncated" in msg), msg
        assert "field '" in msg and "expected" in msg, msg
        print(msg)


def test_tiny_bids_reads_end_to_end() -> None:
    import mne_bids

    root = REALDATA / "mne-bids" / "tiny_bids"
    vhdr = root / "sub-01" / "ses-eeg" / "eeg" / "sub-01_ses-eeg_task-rest_eeg.vhdr"
    rec = read_recording(vhdr, site="real", root=root, datatype="eeg")
    assert rec.fmt == "brainvision"
    assert rec.sidecar["SamplingFrequency"] == 5000.0
    assert list(rec.events.columns[:2]) == ["onset", "duration"]  # BOM in the TSV handled
    assert len(rec.channels) == len(rec.raw.ch_names)
    bids_path = mne_bids.BIDSPath(
        subject="01",
        session="eeg",
        task="rest",
        datatype="eeg",
        suffix="eeg",
        extension=".vhdr",
        root=root,
    )
    raw = read_bids(bids_path, site="real")
    assert raw.info["subject_info"] is None
    assert raw.info["line_freq"] == 60
    np.testing.assert_allclose(raw.get_data(), rec.raw.get_data())
