"""Every iEEG format MNE reads, through the ketamap reader: written by MNE where MNE can export
(EDF, BrainVision, FIF), by hand after MNE's reader where it cannot (BDF, Persyst, EEGLAB), and real files
(../shared/realdata). Each format must read, keep no header privacy field, fail with one clear
message when broken, and give the same tables as the BrainVision original."""

from __future__ import annotations

import datetime
import logging
import pickle
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from conftest import DEMO_KEY
from ketamap import limits
from ketamap.errors import SiteDataError
from ketamap.harmonize.ieeg import harmonize_site
from ketamap.harmonize.ieeg.read import FORMATS, is_recording, read_raw, recording_patterns
from test_ieeg import make_ieeg_site, site_entry

CANARY = "CANARYFMT"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TINY = REALDATA / "mne-bids" / "tiny_bids" / "sub-01" / "ses-eeg" / "eeg"


# --------------------------------------------------------------------------- writers
def _raw(n_ch: int = 4, seconds: float = 3.0, sfreq: float = 256.0) -> mne.io.RawArray:
    rng = np.random.default_rng(3)
    info = mne.create_info([f"LA{i + 1}" for i in range(n_ch)], sfreq, "seeg")
    raw = mne.io.RawArray(
        rng.standard_normal((n_ch, int(seconds * sfreq))) * 5e-5, info, verbose="error"
    )
    raw.set_meas_date(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    return raw


def _with_privacy(raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
    with raw.info._unlock():
        raw.info["subject_info"] = {
            "his_id": CANARY + "H",
            "last_name": CANARY,
            "first_name": "Zed",
            "birthday": datetime.date(1970, 1, 2),
            "sex": 1,
        }
        raw.info["experimenter"] = CANARY + "E"
        raw.info["description"] = CANARY + "D"
        raw.info["device_info"] = {"type": "amp", "serial": CANARY + "S", "site": CANARY}
    raw.set_annotations(mne.Annotations([0.1], [0.05], [CANARY + " note"]))
    return raw


def write_edf(path: Path, raw: mne.io.BaseRaw) -> Path:
    mne.export.export_raw(path, _with_privacy(raw.copy()), fmt="edf", verbose="error")
    return path


def write_brainvision(path: Path, raw: mne.io.BaseRaw) -> Path:
    mne.export.export_raw(path, raw, fmt="brainvision", verbose="error")
    return path


def write_fif(path: Path, raw: mne.io.BaseRaw) -> Path:
    _with_privacy(raw.copy()).save(path, verbose="error")
    return path


def write_bdf(path: Path, raw: mne.io.BaseRaw) -> Path:
    """A BDF (24-bit EDF, BioSemi) as MNE's EDF reader parses it: MNE cannot export BDF."""
    sf = round(raw.info["sfreq"])
    x = raw.get_data() * 1e6  # uV
    n_rec = x.shape[1] // sf
    x = x[:, : n_rec * sf]
    ns = x.shape[0]
    pmin, pmax = np.floor(x.min(axis=1)) - 1, np.ceil(x.max(axis=1)) + 1
    dmin, dmax = -8388608, 8388607
    dig = np.round((x - pmin[:, None]) / (pmax - pmin)[:, None] * (dmax - dmin) + dmin)

    def f(v: object, n: int) -> bytes:
        return str(v).ljust(n)[:n].encode("ascii")

    head = b"\xffBIOSEMI" + f(f"X M 02-JAN-1970 {CANARY}", 80) + f("Startdate X X X X", 80)
    head += f("01.01.20", 8) + f("10.00.00", 8) + f(256 * (ns + 1), 8) + f("24BIT", 44)
    head += f(n_rec, 8) + f(1, 8) + f(ns, 4)
    columns: list[tuple[list[object], int]] = [
        (list(raw.ch_names), 16),
        ([CANARY + "T"] * ns, 80),
        (["uV"] * ns, 8),
        ([int(v) for v in pmin], 8),
        ([int(v) for v in pmax], 8),
        ([dmin] * ns, 8),
        ([dmax] * ns, 8),
        ([""] * ns, 80),
        ([sf] * ns, 8),
        ([""] * ns, 32),
    ]
    for values, n in columns:
        head += b"".join(f(v, n) for v in values)
    records = dig.astype("<i4").reshape(ns, n_rec, sf).transpose(1, 0, 2).reshape(-1)
    path.write_bytes(head + records.view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
    return path


def write_persyst(path: Path, raw: mne.io.BaseRaw) -> Path:
    """A Persyst recording: an INI-style ``.lay`` and interleaved int16 ``.dat``, as
    mne.io.read_raw_persyst reads them (MNE cannot export Persyst)."""
    x = raw.get_data() * 1e6  # uV
    cal = float(np.abs(x).max() / 30000.0)
    dat = path.with_suffix(".dat")
    np.round(x / cal).astype("<i2").T.tofile(dat)
    chmap = "\n".join(f"{n}-Ref={i + 1}" for i, n in enumerate(raw.ch_names))
    path.write_text(
        "[FileInfo]\n"
        f"File={dat.name}\nFileType=Interleaved\nSamplingRate={raw.info['sfreq']:g}\n"
        f"HeaderLength=0\nCalibration={cal!r}\nWaveformCount={len(raw.ch_names)}\nDataType=0\n"
        "[Patient]\n"
        f"First=Zed\nLast={CANARY}\nID={CANARY}H\nSex=M\nHand=R\nBirthDate=01/02/70\n"
        f"Physician={CANARY}P\nTestDate=01/01/2020\nTestTime=10:00:00\n"
        f"[ChannelMap]\n{chmap}\n"
        f"[Comments]\n0.1,0.05,0,100,{CANARY} note\n"
    )
    return path


def write_eeglab(path: Path, raw: mne.io.BaseRaw) -> Path:
    """An EEGLAB ``.set`` (a MATLAB struct, data inside) with scipy: MNE's EEGLAB export needs
    eeglabio, which is not a dependency; its reader needs only scipy/pymatreader."""
    import scipy.io

    n, n_times = len(raw.ch_names), raw.n_times
    chanlocs = np.zeros(n, dtype=[("labels", object), ("type", object)])
    for i, name in enumerate(raw.ch_names):
        chanlocs[i] = (name, "SEEG")
    sfreq = float(raw.info["sfreq"])
    eeg = {
        "setname": "x",
        "filename": path.name,
        "filepath": "",
        "subject": CANARY,
        "comments": CANARY + " comment",
        "nbchan": float(n),
        "trials": 1.0,
        "pnts": float(n_times),
        "srate": sfreq,
        "xmin": 0.0,
        "xmax": (n_times - 1) / sfreq,
        "times": np.arange(n_times) / sfreq * 1000,
        "data": (raw.get_data() * 1e6).astype("float32"),
        "chanlocs": chanlocs,
        "event": np.zeros((0,)),
        "chaninfo": {"plotrad": 0.5},
        "icawinv": np.zeros((0,)),
        "ref": "common",
    }
    scipy.io.savemat(path, {"EEG": eeg}, appendmat=False)
    return path


WRITERS = {
    "edf": (".edf", write_edf),
    "bdf": (".bdf", write_bdf),
    "brainvision": (".vhdr", write_brainvision),
    "fif": (".fif", write_fif),
    "persyst": (".lay", write_persyst),
    "eeglab": (".set", write_eeglab),
}


def _leaks(raw: mne.io.BaseRaw) -> str:
    """Everything of a read recording that could hold header text, as one string."""
    return (
        repr(pickle.dumps(raw.info))
        + repr(raw._raw_extras)
        + repr(list(raw.annotations.description))
        + repr(raw.info)
    )


# --------------------------------------------------------------------------- reading
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_format_reads_and_keeps_no_privacy_field(
    fmt: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    ext, write = WRITERS[fmt]
    orig = _raw()
    path = write(tmp_path / f"sub-1_ses-1_task-puff_ieeg{ext}", orig)
    header = b"".join(p.read_bytes()[:4096] for p in tmp_path.iterdir())
    if fmt not in ("brainvision", "eeglab"):  # the canary is really in the file (eeglab: zlib)
        assert CANARY.encode() in header
    with caplog.at_level(logging.DEBUG):
        raw, name = read_raw(path, site="s")
    assert name == FORMATS[ext].name
    assert raw.ch_names == orig.ch_names
    assert raw.info["sfreq"] == orig.info["sfreq"]
    n = raw.n_times
    assert n >= orig.n_times - orig.info["sfreq"]  # EDF/BDF whole records
    np.testing.assert_allclose(
        raw.get_data()[:, : n - 1], orig.get_data()[:, : n - 1], atol=2e-3 * 5e-5 * 6
    )
    assert raw.info["subject_info"] is None and raw.info["device_info"] is None
    assert raw.info["experimenter"] in (None, "mne_anonymize") and len(raw.annotations) == 0
    out = capsys.readouterr()
    for text in (_leaks(raw), caplog.text, out.out, out.err):
        assert CANARY not in text and "Zed" not in text and "1970" not in text


def test_brainvision_header_spellings(tmp_path: Path) -> None:
    """MNE accepts every spelling BrainVision wrote over the years; so does ketamap."""
    vhdr = write_brainvision(tmp_path / "x_ieeg.vhdr", _raw())
    text = vhdr.read_text()
    first, rest = text.split("\n", 1)
    assert first.startswith("Brain Vision Data Exchange Header File")
    for spelling in (
        "BrainVision Data Exchange Header File Version 1.0",
        "Brain Vision Data Exchange Header File Version 2.0",
        "Brain Vision Core Data Exchange Header File Version 1.0",
        "\ufeffBrainVision Data Exchange Header File Version 1.0",
    ):
        vhdr.write_text(spelling + "\n" + rest, encoding="utf-8")
        raw, name = read_raw(vhdr, site="s")
        assert name == "brainvision" and raw.n_times == 768, spelling


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real files not available at {TINY}")
def test_real_brainvision_with_the_unspaced_header_spelling(tmp_path: Path) -> None:
    """A real BrainVision recording (MNE-BIDS' tiny_bids) whose first line is rewritten to the
    held-out file's spelling, ``BrainVision Data Exchange Header File``."""
    for f in TINY.glob("sub-01_ses-eeg_task-rest_eeg.*"):
        shutil.copy(f, tmp_path / f.name)
    vhdr = tmp_path / "sub-01_ses-eeg_task-rest_eeg.vhdr"
    orig, _ = read_raw(vhdr, site="real")
    lines = vhdr.read_bytes().split(b"\n", 1)
    assert b"Brain Vision" in lines[0]
    vhdr.write_bytes(lines[0].replace(b"Brain Vision", b"BrainVision") + b"\n" + lines[1])
    raw, name = read_raw(vhdr, site="real")
    assert name == "brainvision"
    np.testing.assert_array_equal(raw.get_data(), orig.get_data())


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real files not available at {REALDATA}")
def test_real_fif_ecog_reads() -> None:
    fif = REALDATA / "mne-misc-data" / "ecog" / "sample_ecog_ieeg.fif"
    raw, name = read_raw(fif, site="real")
    assert name == "fif" and raw.info["subject_info"] is None
    assert raw.info["sfreq"] == pytest.approx(160.0, rel=0.01)


def test_recording_files_are_found_by_extension(tmp_path: Path) -> None:
    assert "*_ieeg.lay" in recording_patterns() and "*_ieeg.EDF" in recording_patterns()
    bv = write_brainvision(tmp_path / "a_ieeg.vhdr", _raw())
    nk = tmp_path / "b_ieeg.eeg"
    nk.write_bytes(b"EEG-1100A V01.00" + bytes(100))
    assert is_recording(bv) and is_recording(nk)
    assert not is_recording(bv.with_suffix(".eeg"))  # the BrainVision payload
    assert not is_recording(bv.with_suffix(".vmrk"))


# --------------------------------------------------------------------------- broken files
def _message(path: Path) -> str:
    with pytest.raises(SiteDataError) as err:
        read_raw(path, site="s", root=path.parent)
    msg = str(err.value)
    assert msg.startswith("site 's', file '") and "field '" in msg and "expected" in msg, msg
    assert CANARY not in msg and "Zed" not in msg, msg
    return msg


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_corrupt_header_of_each_format(fmt: str, tmp_path: Path) -> None:
    ext, write = WRITERS[fmt]
    path = write(tmp_path / f"r_ieeg{ext}", _raw())
    blob = path.read_bytes()
    if fmt == "persyst":  # a malformed line that MNE quotes in its own message
        path.write_text(path.read_text().replace("Sex=M", f"{CANARY} Zed 02-JAN-1970"))
    elif fmt == "brainvision":
        path.write_bytes(blob.replace(b"NumberOfChannels=4", b"NumberOfChannels=x"))
    else:  # the header after the patient field
        path.write_bytes(blob[:100] + b"\x00garbage" * 40)
    msg = _message(path)
    assert f"file 'r_ieeg{ext}'" in msg, msg
    assert f"cannot read it as {FORMATS[ext].label}" in msg, msg


def test_nihon_kohden_dispatch_without_a_valid_file(tmp_path: Path) -> None:
    """No valid Nihon Kohden file can be made here: the reader is reached and its failure named."""
    nk = tmp_path / "r_ieeg.eeg"
    nk.write_bytes(b"EEG-1100A V01.00" + bytes(2000))
    for ext in (".21e", ".pnt", ".log"):
        nk.with_suffix(ext).write_bytes(bytes(64))
    msg = _message(nk)
    assert "Nihon Kohden" in msg, msg


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_edf_cut_at_a_record_boundary(fmt: str, tmp_path: Path) -> None:
    """MNE reads what is there and only warns; ketamap rejects it."""
    ext, write = WRITERS[fmt]
    path = write(tmp_path / f"r_ieeg{ext}", _raw(seconds=4.0))
    header = int(path.read_bytes()[184:192])
    per_record = (path.stat().st_size - header) // 4
    path.write_bytes(path.read_bytes()[: header + 2 * per_record])
    msg = _message(path)
    assert "field 'number of data records'" in msg and "size does not match" in msg, msg


@pytest.mark.parametrize("fmt", ["brainvision", "persyst"])
def test_partial_sample_frame(fmt: str, tmp_path: Path) -> None:
    ext, write = WRITERS[fmt]
    path = write(tmp_path / f"r_ieeg{ext}", _raw())
    data = path.with_suffix(".eeg" if fmt == "brainvision" else ".dat")
    data.write_bytes(data.read_bytes()[:-3])
    msg = _message(path)
    assert f"file '{data.name}', field 'size'" in msg and "truncated" in msg, msg


def test_empty_companion_and_too_short(tmp_path: Path) -> None:
    path = write_persyst(tmp_path / "r_ieeg.lay", _raw())
    path.with_suffix(".dat").write_bytes(b"")
    assert "file 'r_ieeg.dat', field 'size': the file is empty" in _message(path)
    path = write_fif(tmp_path / "s_ieeg.fif", _raw(seconds=0.25))
    assert "field 'n_times'" in _message(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "r_ieeg.xyz"
    path.write_bytes(b"0       " + CANARY.encode())
    assert "field 'extension'" in _message(path)


@pytest.mark.parametrize("fmt", ["edf", "brainvision"])
def test_oversized_recording_fails_before_reading(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 GB recording (sparse: no disk used) fails on its size; MNE is never called."""
    monkeypatch.setattr(limits, "_current", None)
    limits.configure({"ieeg_mb": 1000})
    ext, write = WRITERS[fmt]
    path = write(tmp_path / f"r_ieeg{ext}", _raw())
    big = path if fmt == "edf" else path.with_suffix(".eeg")
    with big.open("r+b") as fh:
        fh.truncate(2_000_000_000)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reader must not be called")

    monkeypatch.setattr(mne.io, FORMATS[ext].reader, boom)
    msg = _message(path)
    assert f"file 'r_ieeg{ext}" in msg and "field 'size': file is 2,000" in msg, msg
    assert "above the 1000 MB limit for ieeg files" in msg, msg


def test_fif_cut_in_transfer(tmp_path: Path) -> None:
    path = write_fif(tmp_path / "r_ieeg.fif", _raw(seconds=10.0))
    path.write_bytes(path.read_bytes()[:-100])
    assert "field 'data': MNE cannot read the signal of this FIF" in _message(path)


def test_edf_with_a_slower_ieeg_channel(tmp_path: Path) -> None:
    """MNE upsamples an EDF signal sampled slower than the others; the harmonizer rejects it."""
    from edfio import Edf, EdfSignal

    root = make_ieeg_site(tmp_path / "s", fmt="edf", subjects=("sub-Q1",), sessions=("ses-base",))
    edf = next(root.glob("sub-*/ses-*/ieeg/*_ieeg.edf"))
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    data, sfreq = raw.get_data() * 1e6, int(raw.info["sfreq"])
    n = data.shape[1] // sfreq * sfreq
    signals = [
        EdfSignal(
            row[:n:2] if i == 2 else row[:n],
            sfreq // 2 if i == 2 else sfreq,
            label=name,
            physical_range=(-5000, 5000),
            physical_dimension="uV",
        )
        for i, (row, name) in enumerate(zip(data, raw.ch_names, strict=True))
    ]
    Edf(signals, data_record_duration=1).write(edf)
    with pytest.raises(SiteDataError) as err:
        harmonize_site(site_entry("ieeg_f", **{"ses-base": "baseline"}), root, DEMO_KEY, {})
    msg = str(err.value)
    assert "_ieeg.edf', field 'samples per data record'" in msg, msg
    assert f"sampled at {sfreq // 2:g} Hz in a {sfreq:g} Hz recording" in msg, msg


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def bv_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = make_ieeg_site(
        tmp_path_factory.mktemp("fmt") / "bv",
        fmt="brainvision",
        subjects=("sub-Q1",),
        sessions=("ses-base",),
    )
    return root, _tables(root)


def _tables(root: Path) -> dict:
    t = harmonize_site(site_entry("ieeg_f", **{"ses-base": "baseline"}), root, DEMO_KEY, {})
    return {"channels": t.channels, "responses": t.responses, "qc": t.qc}


@pytest.mark.parametrize("fmt", ["edf", "bdf", "fif", "persyst", "eeglab"])
def test_same_tables_from_every_format(fmt: str, bv_site, tmp_path: Path) -> None:
    """The BrainVision site converted to another format harmonizes to the same tables (up to
    the target format's quantisation)."""
    src, expected = bv_site
    root = shutil.copytree(src, tmp_path / "site")
    ext, write = WRITERS[fmt]
    for vhdr in root.glob("sub-*/ses-*/ieeg/*_ieeg.vhdr"):
        raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
        for e in (".vhdr", ".eeg", ".vmrk"):
            vhdr.with_suffix(e).unlink()
        write(vhdr.with_suffix(ext), raw)
    got = _tables(root)
    assert got["qc"]["format"].tolist() == [FORMATS[ext].name]
    assert got["channels"].equals(expected["channels"])
    a, b = got["responses"], expected["responses"]
    assert a["channel"].tolist() == b["channel"].tolist()
    assert (a["responsive_fast"] == b["responsive_fast"]).all()
    assert (a["responsive_slow"] == b["responsive_slow"]).all()
    for col in ("fast_peak_latency_s", "slow_onset_s", "slow_duration_s"):
        np.testing.assert_allclose(a[col], b[col], atol=0.02, err_msg=col)
    np.testing.assert_allclose(a["fast_peak_amplitude_z"], b["fast_peak_amplitude_z"], rtol=0.05)
    for df in got.values():
        assert CANARY not in df.to_csv()
