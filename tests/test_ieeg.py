"""iEEG reader, signal core and harmonizer on small recordings built here with planted responses."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pybv
import pytest
from scipy import signal
from scipy.special import expit

from conftest import DEMO_KEY, write_tsv
from ketamap.config import with_defaults
from ketamap.errors import SiteDataError
from ketamap.harmonize import ieeg
from ketamap.harmonize.ieeg import (
    bipolar_pairs,
    combine_timecourses,
    harmonize_site,
    hfb_envelope,
    parse_contact,
)
from ketamap.harmonize.ieeg import signal as ieeg_signal
from ketamap.schemas import to_arrow
from ketamap.synth.ieeg_signal import slow_half_power_width

CANARY = "CANARYQZX"
SFREQ = 512.0
N_PUFFS = 20
SPACING = 4.5
FIRST = 3.0
FAST_LAT = 0.2
SLOW_ONSET = 0.5
SLOW_DUR = {"ses-base": 0.7, "ses-ket": 0.385}
# contact -> (fast, slow); a bipolar pair sees the responses of both its contacts
SHAFTS = {
    "LA": ("amygdala", "L"),
    "RIN": ("insula", "R"),
    "LT": ("lateral_temporal", "L"),
}
PLANT = {
    "LA1": (True, True),
    "LA3": (True, False),
    "RIN1": (True, True),
    "RIN3": (False, False),
    "LT1": (True, False),
    "LT3": (False, False),
}
CONTACTS = [f"{s}{i}" for s in SHAFTS for i in range(1, 5)]


def _burst_envelope(
    t: np.ndarray, onsets: np.ndarray, fast: bool, slow_dur: float | None
) -> np.ndarray:
    g = np.zeros_like(t)
    for t0 in onsets:
        if fast:
            g += np.exp(-0.5 * ((t - t0 - FAST_LAT) / 0.03) ** 2)
        if slow_dur:
            a, b = t0 + SLOW_ONSET, t0 + SLOW_ONSET + slow_dur
            ramp = 0.02
            up = np.clip((t - a) / ramp, 0, 1)
            down = np.clip((b - t) / ramp, 0, 1)
            g += 0.7 * np.minimum(up, down)
    return g


def make_signal(
    rng: np.random.Generator,
    session: str,
    *,
    line_hz: float,
    names: list[str] | None = None,
    flat: tuple[str, ...] = (),
    noisy: tuple[str, ...] = (),
    plant: dict[str, tuple[bool, bool]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    names = names or CONTACTS
    plant = PLANT if plant is None else plant
    onsets = FIRST + SPACING * np.arange(N_PUFFS) + rng.uniform(0, 0.5, N_PUFFS)
    duration = FIRST + SPACING * N_PUFFS + 3
    n = int(duration * SFREQ)
    t = np.arange(n) / SFREQ
    sigma = 20e-6
    data = rng.standard_normal((len(names), n)) * sigma
    sos = signal.butter(4, [70, 150], btype="bandpass", fs=SFREQ, output="sos")
    for i, name in enumerate(names):
        if name in plant:
            fast, slow = plant[name]
            if not (fast or slow):
                continue
            hfb = signal.sosfilt(sos, rng.standard_normal(n))
            hfb *= sigma * 3 / hfb.std()
            data[i] += hfb * _burst_envelope(t, onsets, fast, SLOW_DUR[session] if slow else None)
    data += 100e-6 * np.sin(2 * np.pi * line_hz * t)[None, :]
    data += 30e-6 * np.sin(2 * np.pi * 2 * line_hz * t + 0.3)[None, :]
    data += 30e-6 * np.sin(2 * np.pi * 3 * line_hz * t + 0.7)[None, :]
    for name in flat:
        data[names.index(name)] = 1e-12 * rng.standard_normal(n)
    for name in noisy:
        data[names.index(name)] *= 30
    return data, onsets


def write_recording(
    ieeg_dir: Path,
    stem: str,
    data: np.ndarray,
    onsets: np.ndarray,
    *,
    fmt: str,
    line_hz: float,
    names: list[str] | None = None,
    status: dict[str, str] | None = None,
    events: bool = True,
) -> Path:
    names = names or CONTACTS
    ieeg_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "edf":
        info = mne.create_info(names, SFREQ, ch_types="seeg")
        raw = mne.io.RawArray(data, info, verbose="error")
        raw.set_meas_date(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        with raw.info._unlock():
            raw.info["subject_info"] = {
                "his_id": CANARY + "H",
                "last_name": CANARY,
                "first_name": "Zed",
                "birthday": datetime.date(1970, 1, 2),
                "sex": 1,
            }
            raw.info["device_info"] = {"type": CANARY + "D"}
        path = ieeg_dir / f"{stem}_ieeg.edf"
        mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    else:
        pybv.write_brainvision(
            data=data,
            sfreq=SFREQ,
            ch_names=names,
            fname_base=f"{stem}_ieeg",
            folder_out=ieeg_dir,
            fmt="binary_float32",
            overwrite=True,
        )
        path = ieeg_dir / f"{stem}_ieeg.vhdr"
    (ieeg_dir / f"{stem}_ieeg.json").write_text(
        json.dumps(
            {
                "TaskName": "puff",
                "iEEGReference": "scalp",
                "SamplingFrequency": SFREQ,
                "PowerLineFrequency": line_hz,
                "SoftwareFilters": "n/a",
            }
        )
    )
    status = status or {}
    write_tsv(
        ieeg_dir / f"{stem}_channels.tsv",
        [["name", "type", "units", "low_cutoff", "high_cutoff", "status"]]
        + [[n, "SEEG", "V", "n/a", "n/a", status.get(n, "good")] for n in names],
    )
    if events:
        write_tsv(
            ieeg_dir / f"{stem}_events.tsv",
            [["onset", "duration", "trial_type"]]
            + [[f"{o:.4f}", "0.1", "puff"] for o in onsets]
            + [["1.0", "0", "button"]],
        )
    return path


def write_electrodes(ieeg_dir: Path, prefix: str, names: list[str]) -> None:
    rows = [["name", "x", "y", "z", "size", "region", "hemisphere"]]
    for k, n in enumerate(names):
        shaft, num = parse_contact(n) or ("", 0)
        region, hemi = SHAFTS.get(shaft, ("other_region", "L"))
        rows.append([n, f"{k * 2.0}", f"{num * 3.0}", "10", "2", region, hemi])
    write_tsv(ieeg_dir / f"{prefix}_space-ACPC_electrodes.tsv", rows)


def make_ieeg_site(
    root: Path,
    *,
    fmt: str = "edf",
    line_hz: float = 60.0,
    declared_hz: float | None = None,
    subjects: tuple[str, ...] = ("sub-P01", "sub-P02"),
    sessions: tuple[str, ...] = ("ses-base", "ses-ket"),
    seed: int = 1,
    bad: dict[str, dict[str, str]] | None = None,
    flat: tuple[str, ...] = (),
    noisy: tuple[str, ...] = (),
    events: bool = True,
) -> Path:
    rng = np.random.default_rng(seed)
    write_tsv(
        root / "participants.tsv",
        [["participant_id", "age", "sex", "group"]]
        + [[s, "30", "F", "epilepsy"] for s in subjects],
    )
    for sub in subjects:
        write_tsv(root / sub / f"{sub}_sessions.tsv", [["session_id"], *[[s] for s in sessions]])
        for ses in sessions:
            d = root / sub / ses / "ieeg"
            data, onsets = make_signal(
                rng, ses if ses in SLOW_DUR else "ses-base", line_hz=line_hz, flat=flat, noisy=noisy
            )
            write_recording(
                d,
                f"{sub}_{ses}_task-puff_run-01",
                data,
                onsets,
                fmt=fmt,
                line_hz=declared_hz or line_hz,
                status=(bad or {}).get(sub),
                events=events,
            )
            write_electrodes(d, f"{sub}_{ses}", CONTACTS)
    return root


def site_entry(site_id: str = "ieeg_a", **conditions: str) -> dict:
    return {
        "id": site_id,
        "modality": "ieeg",
        "species": "human",
        "trial": "PUFF-1",
        "reader": {"conditions": conditions or {"ses-base": "baseline", "ses-ket": "ketamine"}},
    }


@pytest.fixture(scope="module")
def edf_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ieeg") / "site_a"
    return make_ieeg_site(
        root,
        bad={"sub-P01": {"LT4": "bad"}},
        flat=(),
        noisy=(),
    )


@pytest.fixture(scope="module")
def edf_tables(edf_site: Path):
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    h = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger("ketamap"), logging.getLogger("mne")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG)
    try:
        tables = harmonize_site(site_entry(), edf_site, DEMO_KEY, {})
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.removeHandler(h)
            lg.setLevel(lvl)
    text = "\n".join(h.format(r) for r in handler_records)
    return tables, text


# ------------------------------------------------------------------------------ names, pairs
@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["LA1", "LA2", "LA3", "LB1", "LB2"], [("LA1", "LA2"), ("LA2", "LA3"), ("LB1", "LB2")]),
        (["LA01", "LA02", "LA03", "LA10"], [("LA01", "LA02"), ("LA02", "LA03")]),
        (["A'1", "A'2", "A'3", "B'1", "B'2"], [("A'1", "A'2"), ("A'2", "A'3"), ("B'1", "B'2")]),
        (["RAMY1", "RAMY2", "RHIP1", "RHIP2", "RHIP4"], [("RAMY1", "RAMY2"), ("RHIP1", "RHIP2")]),
        (["1", "2", "3", "EKG", "5"], [("1", "2"), ("2", "3")]),
        (["G1", "G2", "G3"], [("G1", "G2"), ("G2", "G3")]),
    ],
)
def test_bipolar_pairs_naming_styles(names: list[str], expected: list[tuple[str, str]]) -> None:
    assert bipolar_pairs(names) == expected


def test_parse_contact() -> None:
    assert parse_contact("LA01") == ("LA", 1)
    assert parse_contact("A'12") == ("A'", 12)
    assert parse_contact("RAMY1") == ("RAMY", 1)
    assert parse_contact("7") == ("", 7)
    assert parse_contact("EKG") is None


# ------------------------------------------------------------------------------ signal core
@pytest.mark.parametrize("sfreq", [SFREQ, 2000.0])
def test_hfb_envelope_equals_naive_loop(sfreq: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, int(60 * sfreq)))
    fast = hfb_envelope(x, sfreq, block=2)
    ref = ieeg_signal.hfb_envelope_reference(x, sfreq)
    assert fast.shape == ref.shape == (5, 6000)
    inner = slice(100, -100)  # 1 s from each end: sosfiltfilt pads, the FFT wraps
    rel = np.abs(fast[:, inner] - ref[:, inner]) / ref[:, inner].mean()
    print(f"hfb vs naive loop at {sfreq:g} Hz: max rel diff {rel.max():.2e} (interior)")
    assert rel.max() < 5e-3
    # the envelope's shape agrees to 1e-4 once the sub-band means (edge-affected) are divided out
    ratio = fast[:, inner] / ref[:, inner]
    assert (ratio.std(axis=1) < 5e-4).all()


def test_hfb_envelope_rejects_band_above_nyquist() -> None:
    with pytest.raises(ValueError, match="Nyquist frequency 80 Hz"):
        hfb_envelope(np.zeros((2, 1000)), 160.0)


def test_detect_bad_channels() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 5000))
    x[2] = 0.0
    x[4] *= 20
    x[6, 1000] = 200.0  # one spike
    status = ieeg_signal.detect_bad_channels(x)
    assert status[2] == "flat" and status[4] == "noisy" and status[6] == "noisy"
    assert (status[[0, 1, 3, 5, 7, 8, 9]] == "good").all()


@pytest.mark.parametrize("line_hz", [50.0, 60.0])
def test_notch_and_line_detection(line_hz: float) -> None:
    rng = np.random.default_rng(4)
    t = np.arange(int(30 * SFREQ)) / SFREQ
    x = (
        rng.standard_normal((3, t.size))
        + 20 * np.sin(2 * np.pi * line_hz * t)
        + 5 * np.sin(2 * np.pi * 3 * line_hz * t)
    )
    assert ieeg_signal.detect_line_frequency(x, SFREQ) == line_hz
    y = ieeg_signal.notch(x, SFREQ, line_hz)
    f, p0 = signal.welch(x, SFREQ, nperseg=2048)
    _, p1 = signal.welch(y, SFREQ, nperseg=2048)
    for h in (line_hz, 3 * line_hz):
        k = np.argmin(np.abs(f - h))
        drop_db = 10 * np.log10(p0[:, k].mean() / p1[:, k].mean())
        assert drop_db > 20, (h, drop_db)
    assert ieeg_signal.detect_line_frequency(y, SFREQ) is None


# ------------------------------------------------------------------------------ measures
TIMES = np.round(np.arange(-100, 301) / 100, 2)  # the epoch time base of the default options
CV = 0.185  # SD / mean of the baseline HFB envelope on the bundled scenarios
EDGE = 0.02


def _planted(onset: float, duration: float, edge: float = EDGE) -> np.ndarray:
    """The generator's slow-phase amplitude (plateau 1, half-maximum width ``duration``)."""
    return expit((TIMES - onset) / edge) * expit((onset + duration - TIMES) / edge)


def _z_of_power(power: np.ndarray) -> np.ndarray:
    """z of the mean HFB amplitude for a power increase: amplitude ~ sqrt(power) (Rayleigh)."""
    return (np.sqrt(1.0 + power) - 1.0) / CV


def _reference_detection(z: np.ndarray, opts: dict) -> tuple[bool, bool, float, float]:
    """The per-channel loop ``_measures`` replaced: fast flag, slow flag, latency, amplitude."""
    thr = opts["threshold_z"]
    k = max(1, int(np.ceil(float(opts["min_duration_s"]) * 100 - 1e-9)))
    f0, f1 = opts["fast_window_s"]
    times = TIMES
    fidx = np.flatnonzero((times >= f0 - 1e-9) & (times <= f1 + 1e-9))
    zf = z[fidx]
    p = int(np.nanargmax(zf)) if np.isfinite(zf).any() else 0
    fast = bool(zf[p] > thr)
    peak_i = int(fidx[p])
    start = int(np.searchsorted(TIMES, 0.3 - 1e-9))
    if fast:
        below = np.flatnonzero(z[peak_i:] < thr)
        if below.size and peak_i + below[0] <= fidx[-1]:
            start = max(start, peak_i + int(below[0]))
    above = z[start:] > thr
    runs = np.convolve(above.astype(int), np.ones(k, dtype=int), mode="valid") == k
    latency = float(TIMES[peak_i]) if fast else np.nan
    return fast, bool(runs.any()), latency, float(zf[p])


def test_vectorised_detection_equals_the_per_channel_loop() -> None:
    opts = ieeg._check_options(with_defaults({}, "ieeg"))
    rng = np.random.default_rng(3)
    n = 400
    fast_amp = rng.choice([0.0, 1.5, 3.0, 6.0], n)[:, None]
    power = fast_amp * np.exp(-0.5 * ((TIMES - rng.uniform(0.1, 0.3, (n, 1))) / 0.04) ** 2)
    slow = rng.choice([0.0, 0.5, 1.2, 3.0], n)[:, None]
    power = power + slow * _planted(0.35, 0.5) ** 2
    z = _z_of_power(power) + rng.normal(0.0, 0.6, power.shape)
    z[0] = np.nan  # a flat channel (baseline SD 0)
    got = ieeg._measures(z, power, TIMES, opts)
    for i in range(n):
        fast, has_slow, latency, amp = _reference_detection(z[i], opts)
        row = got.iloc[i]
        assert (row["responsive_fast"], row["responsive_slow"]) == (fast, has_slow), i
        assert row["fast_peak_latency_s"] == pytest.approx(latency, nan_ok=True), i
        assert row["fast_peak_amplitude_z"] == pytest.approx(amp, nan_ok=True), i
    assert 0.2 < got["responsive_slow"].mean() < 0.8 and 0.2 < got["responsive_fast"].mean() < 0.95


def test_slow_duration_is_the_half_power_width_whatever_the_snr() -> None:
    """The slow phase is timed at half its plateau in the HFB power, so its width is the planted
    power envelope's (d - 2 asinh(1) e) at every SNR, and ketamine's factor on d comes out as the
    synthetic truth says. The time above the z threshold (the measure before) depends on the SNR:
    here from 0.53 to 0.76 s for the same planted 0.7 s."""
    opts = ieeg._check_options(with_defaults({}, "ieeg"))
    snrs = np.array([0.9, 2.0, 5.0, 30.0])  # evoked / background power on the plateau
    rows = []
    for duration in (0.7, 0.385):
        for onset in (0.32, 0.4):
            for snr in snrs:
                # a fast burst before the slow phase, as most slow channels have
                burst = 3.0 * np.exp(-0.5 * ((TIMES - 0.2) / 0.042) ** 2)
                rows.append((duration, onset, snr, snr * _planted(onset, duration) ** 2 + burst))
    power = np.array([r[3] for r in rows])
    z = _z_of_power(power)
    got = ieeg._measures(z, power, TIMES, opts)
    assert got["responsive_slow"].all()
    threshold_time = ((z > opts["threshold_z"]) & (TIMES >= 0.3)).sum(axis=1) / 100
    for (duration, onset, _, _), (_, row) in zip(rows, got.iterrows(), strict=True):
        width = slow_half_power_width(duration, EDGE)
        assert row["slow_duration_s"] == pytest.approx(width, abs=0.002), (duration, onset)
        assert row["slow_onset_s"] == pytest.approx(onset + (duration - width) / 2, abs=0.002)
    spread = threshold_time[: len(snrs)].max() - threshold_time[: len(snrs)].min()
    assert spread > 0.2  # the old measure's dependence on the SNR
    base = got["slow_duration_s"].to_numpy()[: 2 * len(snrs)].mean()
    ket = got["slow_duration_s"].to_numpy()[2 * len(snrs) :].mean()
    expected = slow_half_power_width(0.385, EDGE) / slow_half_power_width(0.7, EDGE) - 1
    assert ket / base - 1 == pytest.approx(expected, abs=0.003)
    assert expected < 0.55 - 1 - 0.02  # a ratio of half-power widths is not the planted factor


def test_slow_duration_on_noisy_averages() -> None:
    """Half-maximum timing stays within a few ms of the planted half-power width with the noise
    of a 24-puff average (z SD 0.2 per sample, smoothed over 30 ms)."""
    opts = ieeg._check_options(with_defaults({}, "ieeg"))
    rng = np.random.default_rng(5)
    n = 300
    duration = rng.choice([0.7, 0.385], n)
    snr = rng.uniform(1.2, 4.0, n)[:, None]
    power = snr * np.array([_planted(0.36, d) ** 2 for d in duration])
    kernel = np.ones(3) / 3
    noise = np.apply_along_axis(np.convolve, 1, rng.normal(0, 0.35, power.shape), kernel, "same")
    z = _z_of_power(power) + noise
    power_noisy = (1 + CV * z) ** 2 - 1
    got = ieeg._measures(z, power_noisy, TIMES, opts)
    ok = got["responsive_slow"].to_numpy()
    assert ok.mean() > 0.9
    err = got["slow_duration_s"].to_numpy() - np.array(
        [slow_half_power_width(d, EDGE) for d in duration]
    )
    err = err[ok]
    assert abs(np.median(err)) < 0.003 and np.quantile(np.abs(err), 0.9) < 0.015, np.quantile(
        err, [0.05, 0.5, 0.95]
    )


# ------------------------------------------------------------------------------ harmonizer
def test_tables_match_schemas(edf_tables) -> None:
    tables, _ = edf_tables
    to_arrow(tables.channels, "ieeg_channels")
    to_arrow(tables.responses, "ieeg_responses")
    to_arrow(tables.timecourses, "ieeg_timecourses")
    to_arrow(tables.synchrony, "ieeg_synchrony")
    # one synchrony row per recording, over the baseline slow-phase channels of its subject
    assert len(tables.synchrony) == tables.responses.groupby(["subject_id", "condition"]).ngroups
    slow = tables.responses.query("condition == 'baseline' and responsive_slow")
    expected = slow.groupby("subject_id").size()
    got = tables.synchrony.set_index(["subject_id", "condition"])["n_channels"]
    for (sid, _condition), n in got.items():
        assert n == expected.get(sid, 0)
    assert set(tables.responses["condition"]) == {"baseline", "ketamine"}
    assert tables.responses["n_epochs"].eq(N_PUFFS).all()
    assert tables.responses["subject_id"].str.fullmatch(r"KM[0-9A-F]{12}").all()


def test_planted_responses_recovered(edf_tables) -> None:
    tables, _ = edf_tables
    r = tables.responses
    lat_err, onset_err, dur_err = [], [], []
    for row in r.itertuples():
        a, b = row.channel.split("-")
        pa, pb = PLANT.get(a, (False, False)), PLANT.get(b, (False, False))
        fast, slow = pa[0] or pb[0], pa[1] or pb[1]
        assert row.responsive_fast == fast, row
        assert row.responsive_slow == slow, row
        if fast:
            lat_err.append(row.fast_peak_latency_s - FAST_LAT)
        if slow:
            true = SLOW_DUR["ses-base" if row.condition == "baseline" else "ses-ket"]
            onset_err.append(row.slow_onset_s - SLOW_ONSET)
            dur_err.append(row.slow_duration_s - true)
    for name, errs in (("latency", lat_err), ("slow onset", onset_err), ("slow duration", dur_err)):
        e = np.array(errs)
        print(
            f"{name} error (s): n={e.size} min {e.min():+.3f} median {np.median(e):+.3f} max {e.max():+.3f}"
        )
    assert np.abs(lat_err).max() < 0.03
    assert np.abs(onset_err).max() < 0.06
    assert np.abs(dur_err).max() < 0.1
    # region grouping and timecourses
    assert set(r.loc[r["region"] == "amygdala", "region_group"]) == {"emotion"}
    assert set(r.loc[r["region"] == "lateral_temporal", "region_group"]) == {"other"}
    tc = tables.timecourses
    amy = tc[(tc["region"] == "amygdala") & (tc["condition"] == "baseline")].set_index("time_s")
    assert amy["mean_z"].idxmax() == pytest.approx(FAST_LAT, abs=0.03)
    assert (np.round(tc["time_s"] * 100) / 100 == tc["time_s"]).all()
    assert tc["time_s"].min() == -1.0 and tc["time_s"].max() == 3.0


def test_declared_bad_channel_excluded(edf_tables) -> None:
    tables, _ = edf_tables
    ch = tables.channels
    p01 = harmonize_site_pseudonym("sub-P01")
    row = ch[(ch["subject_id"] == p01) & (ch["channel"] == "LT3-LT4")]
    assert row["channel_status"].tolist() == ["bad_declared"]
    resp = tables.responses
    assert not ((resp["subject_id"] == p01) & (resp["channel"] == "LT3-LT4")).any()
    assert ((resp["subject_id"] == p01) & (resp["channel"] == "LT2-LT3")).any()
    # bipolar position = mean of the contacts; region of the first contact
    la = ch[(ch["subject_id"] == p01) & (ch["channel"] == "LA1-LA2")].iloc[0]
    assert (
        la["y_mm"] == pytest.approx(4.5) and la["region"] == "amygdala" and la["hemisphere"] == "L"
    )


def harmonize_site_pseudonym(pid: str) -> str:
    from ketamap.ids import pseudonymize

    return pseudonymize("ieeg_a", [pid], DEMO_KEY)[0]


def test_canary_never_in_outputs(edf_site: Path, edf_tables) -> None:
    tables, log_text = edf_tables
    edf = next(edf_site.glob("sub-*/ses-*/ieeg/*.edf"))
    assert CANARY.encode() in edf.read_bytes()[:256]  # the canary is really in the header
    assert log_text  # something was logged
    for df in (tables.channels, tables.responses, tables.timecourses, tables.qc):
        text = df.to_csv()
        assert CANARY not in text and "Zed" not in text
        assert "1970-01-02" not in text and "02-JAN-1970" not in text
        assert "sub-P01" not in text
    assert CANARY not in log_text


def test_flat_noisy_and_brainvision_50hz_car(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "site_b",
        fmt="brainvision",
        line_hz=50.0,
        subjects=("sub-Q1",),
        flat=("LT2",),
        noisy=("RIN4",),
        seed=5,
    )
    tables = harmonize_site(site_entry("ieeg_b"), root, DEMO_KEY, {"reference": "car"})
    st = tables.channels.set_index("channel")["channel_status"]
    assert st["LT2"] == "flat" and st["RIN4"] == "noisy"
    assert (st.drop(["LT2", "RIN4"]) == "good").all()
    resp = tables.responses.set_index(["condition", "channel"])
    assert "LT2" not in resp.index.get_level_values("channel")
    assert bool(resp.loc[("baseline", "LA1"), "responsive_slow"])
    assert bool(resp.loc[("ketamine", "RIN1"), "responsive_fast"])
    assert not resp.loc[("baseline", "LT3"), "responsive_fast"]
    assert "WARNING" not in tables.responses["method"].iloc[0]
    assert tables.qc["detected_line_hz"].tolist() == [50.0, 50.0]
    to_arrow(tables.channels, "ieeg_channels")


def test_line_declaration_mismatch_warns(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "site_c",
        fmt="brainvision",
        line_hz=50.0,
        declared_hz=60.0,
        subjects=("sub-Q1",),
        sessions=("ses-base",),
    )
    tables = harmonize_site(site_entry("ieeg_c"), root, DEMO_KEY, {})
    method = tables.responses["method"].iloc[0]
    assert "declared PowerLineFrequency 60 Hz but the spectrum peaks at 50 Hz" in method
    assert "declared PowerLineFrequency 60" in tables.qc["warnings"].iloc[0]


def test_unmapped_session_is_an_error(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "s", fmt="brainvision", subjects=("sub-Q1",), sessions=("ses-base", "ses-extra")
    )
    with pytest.raises(SiteDataError, match="session ses-extra is not mapped to a condition"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})


def test_missing_events_is_an_error(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "s",
        fmt="brainvision",
        subjects=("sub-Q1",),
        sessions=("ses-base",),
        events=False,
    )
    with pytest.raises(SiteDataError, match=r"events\.tsv'.*file not found"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})


def test_no_puff_events_is_an_error(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "s", fmt="brainvision", subjects=("sub-Q1",), sessions=("ses-base",)
    )
    ev = next(root.glob("sub-*/ses-*/ieeg/*_events.tsv"))
    write_tsv(ev, [["onset", "duration", "trial_type"], ["3.0", "0", "button"]])
    with pytest.raises(SiteDataError, match="no puff events"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})


def test_empty_and_truncated_payloads_rejected(tmp_path: Path) -> None:
    root = make_ieeg_site(
        tmp_path / "bv", fmt="brainvision", subjects=("sub-Q1",), sessions=("ses-base",)
    )
    eeg = next(root.glob("sub-*/ses-*/ieeg/*.eeg"))
    eeg.write_bytes(b"")
    with pytest.raises(SiteDataError, match=r"_ieeg\.eeg'.*empty \(0 bytes\)"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})
    eeg.write_bytes(b"\0" * (len(CONTACTS) * 4 * 2 + 3))
    with pytest.raises(SiteDataError, match="truncated"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})

    root = make_ieeg_site(tmp_path / "edf", fmt="edf", subjects=("sub-Q1",), sessions=("ses-base",))
    edf = next(root.glob("sub-*/ses-*/ieeg/*.edf"))
    blob = edf.read_bytes()
    edf.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SiteDataError, match=r"_ieeg\.edf'.*size does not match the number of data"):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})
    edf.write_bytes(b"not an edf at all")
    with pytest.raises(
        SiteDataError, match=r"_ieeg\.edf', field 'header': MNE cannot read it as EDF"
    ):
        harmonize_site(site_entry("ieeg_d"), root, DEMO_KEY, {})


def test_combine_timecourses_is_exact() -> None:
    rng = np.random.default_rng(9)
    curves = rng.standard_normal((7, 5))
    times = np.round(np.arange(5) / 100, 2)

    def frame(rows: np.ndarray) -> pd.DataFrame:
        n = rows.shape[0]
        return pd.DataFrame(
            {
                "condition": "baseline",
                "region": "amygdala",
                "region_group": "emotion",
                "time_s": times,
                "mean_z": rows.mean(axis=0),
                "sem_z": rows.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                "n_channels": np.int32(n),
            }
        )

    pooled = combine_timecourses([frame(curves[:3]), frame(curves[3:6]), frame(curves[6:])])
    whole = frame(curves)
    np.testing.assert_allclose(pooled["mean_z"], whole["mean_z"])
    np.testing.assert_allclose(pooled["sem_z"], whole["sem_z"])
    assert pooled["n_channels"].tolist() == [7] * 5
