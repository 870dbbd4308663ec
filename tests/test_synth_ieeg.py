"""Tests of the iEEG part of the synthetic consortium (config/scenarios/ieeg_small.yaml)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
from scipy.signal import welch
from scipy.special import expit

from conftest import REPO as REPO_ROOT
from ketamap.synth import generate, load_scenario, site_configs
from ketamap.synth import pet as synth_pet
from ketamap.synth.ieeg import lognormal_correlation, mean_slow_duration, slow_width_change
from ketamap.synth.ieeg_signal import slow_half_power_width

SCENARIOS = REPO_ROOT / "config" / "scenarios"
IEEG_SMALL = SCENARIOS / "ieeg_small.yaml"
SMALL = SCENARIOS / "small.yaml"
# Recorded from small.yaml before the iEEG module existed: adding it must not move these bytes.
SMALL_BEFORE = {
    "atlas/atlas_dseg.nii.gz": "2da47ef8caed8d016af1b80f89eaa9e3aa5e84bd2b89896cb09ef4782dc52958",
    "keio_hc/sub-K01/ses-01/pet/sub-K01_ses-01_trc-K2_pet.nii.gz": (
        "50c03df2a3fdda926ce0fb912ad14f3f187031f869e4b7a69e4af198b82956a2"
    ),
    "ycu_obs/participants.tsv": "3076effe7f9fde8865e4b5f3070a25196e23287cd8424d8ade0e2105744a6524",
    "ycu_rct/participants.tsv": "723834d5e462babdab4306f46789bf6d1c6748f7c0c65957c610c96417d6c259",
    "ycu_rct/phenotype/madrs.tsv": "733fe72f3aceb18dac81a5ccffc325e09a06aae8fdf23d071bbd52c009186c83",
}
SITES = {"site_a_ieeg": ("edf", 60, 512), "site_b_ieeg": ("brainvision", 50, 500)}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("ieeg") / "consortium"
    generate(IEEG_SMALL, target)
    return target


def recordings(out: Path, site: str) -> list[Path]:
    pattern = "*_ieeg.edf" if SITES[site][0] == "edf" else "*_ieeg.vhdr"
    return sorted((out / site).rglob(pattern))


def read_raw(path: Path) -> mne.io.BaseRaw:
    if path.suffix == ".edf":
        return mne.io.read_raw_edf(path, preload=True, verbose="error")
    return mne.io.read_raw_brainvision(path, preload=True, verbose="error")


def test_bids_files_and_sidecars(out: Path) -> None:
    scenario = load_scenario(IEEG_SMALL)
    for site in scenario["sites"]:
        site_dir = out / site["id"]
        parts = read_tsv(site_dir / "participants.tsv")
        assert list(parts.columns) == ["participant_id", "age", "sex", "group"]
        assert set(parts["group"]) == {"epilepsy"} and len(parts) == 3
        assert not (site_dir / "phenotype").exists()
        labels = site["session_labels"]
        for pid in parts["participant_id"]:
            sessions = read_tsv(site_dir / pid / f"{pid}_sessions.tsv")
            assert list(sessions["session_id"]) == [labels["baseline"], labels["ketamine"]]
            for ses in sessions["session_id"]:
                base = site_dir / pid / ses / "ieeg"
                stem = f"{pid}_{ses}_task-puff_run-01"
                side = json.loads((base / f"{stem}_ieeg.json").read_text())
                for key in (
                    "TaskName",
                    "iEEGReference",
                    "SamplingFrequency",
                    "PowerLineFrequency",
                    "SoftwareFilters",
                ):
                    assert key in side
                fmt, line, fs = SITES[site["id"]]
                assert side["TaskName"] == "puff"
                assert side["PowerLineFrequency"] == line and side["SamplingFrequency"] == fs
                channels = read_tsv(base / f"{stem}_channels.tsv")
                assert {"name", "type", "units", "low_cutoff", "high_cutoff", "status"} <= set(
                    channels.columns
                )
                assert set(channels["type"]) == {"SEEG", "ECOG"}
                assert 0.05 <= (channels["status"] == "bad").mean() <= 0.10
                events = read_tsv(base / f"{stem}_events.tsv")
                assert set(events["trial_type"]) == {"puff"} and len(events) == 24
                assert np.all(np.diff(events["onset"]) >= 2.5 - 1e-2)
                space = f"{pid}_{ses}_space-MNI152NLin2009cAsym"
                elec = read_tsv(base / f"{space}_electrodes.tsv")
                assert list(elec["name"]) == list(channels["name"])
                assert set(elec["hemisphere"]) <= {"L", "R"}
                assert (base / f"{space}_coordsystem.json").is_file()
                suffix = ".edf" if fmt == "edf" else ".vhdr"
                assert (base / f"{stem}_ieeg{suffix}").is_file()
    assert site_configs(scenario, "reg", "v1")[0]["reader"] == {
        "conditions": {"ses-base": "baseline", "ses-ket": "ketamine"}
    }


def test_channel_names_follow_site_style(out: Path) -> None:
    a = read_tsv(next((out / "site_a_ieeg").rglob("*_channels.tsv")))["name"]
    b = read_tsv(next((out / "site_b_ieeg").rglob("*_channels.tsv")))["name"]
    assert a.str.fullmatch(r"[LR][A-Z]\d").all()
    assert b.str.fullmatch(r"[A-Z]'?\d").all()


@pytest.mark.parametrize("site", list(SITES))
def test_signals_rate_line_noise_and_bad_channels(out: Path, site: str) -> None:
    _, line, fs = SITES[site]
    paths = recordings(out, site)
    assert len(paths) == 6
    for path in paths[:2]:
        raw = read_raw(path)
        assert raw.info["sfreq"] == fs
        stem = path.name.replace("_ieeg" + path.suffix, "")
        channels = read_tsv(path.parent / f"{stem}_channels.tsv")
        assert raw.ch_names == list(channels["name"])
        data = raw.get_data() * 1e6  # microvolts
        good = (channels["status"] == "good").to_numpy()
        f, pxx = welch(data[good], fs=fs, nperseg=2 * fs)
        mean = pxx.mean(axis=0)
        peak = mean[np.abs(f - line) < 0.6].max()
        around = np.median(mean[(np.abs(f - line) > 3) & (np.abs(f - line) < 10)])
        assert peak > 20 * around
        other = 110 - line  # 50 for a 60 Hz site and 60 for a 50 Hz site
        assert mean[np.abs(f - other) < 0.6].max() < 3 * around
        sd_good = np.median(data[good].std(axis=1))
        for i, row in channels.iterrows():
            x = data[int(str(i))]
            if row["status_description"] == "flat signal":
                assert x.std() < 0.02 * sd_good
            elif row["status_description"] == "excessive broadband noise":
                assert x.std() > 4 * sd_good
            elif row["status_description"] == "large spikes":
                assert np.abs(x).max() > 15 * sd_good


def test_planted_fast_response_is_visible(out: Path) -> None:
    truth = read_tsv(out / "ground_truth_ieeg_channels.tsv")
    path = recordings(out, "site_a_ieeg")[0]
    raw = read_raw(path)
    label = path.name.split("_")[0][4:]
    t = truth[
        (truth["participant"] == label)
        & (truth["condition"] == "baseline")
        & (truth["kind"] == "contact")
        & (truth["status"] == "good")
    ]
    raw.notch_filter([60, 120, 180], verbose="error")  # the 120 Hz harmonic is inside the band
    raw.filter(70, 150, verbose="error")
    events = read_tsv(path.parent / path.name.replace("_ieeg.edf", "_events.tsv"))
    data = raw.get_data(picks=list(t["channel"])) ** 2
    fs = int(raw.info["sfreq"])
    idx = events["sample"].to_numpy()
    peak = np.mean([data[:, s + int(0.15 * fs) : s + int(0.25 * fs)].mean(axis=1) for s in idx], 0)
    pre = np.mean([data[:, s - int(0.5 * fs) : s - int(0.1 * fs)].mean(axis=1) for s in idx], 0)
    ratio = peak / pre
    fast = t["responsive_fast"].to_numpy(bool)
    assert np.median(ratio[fast]) > 2 and np.median(ratio[~fast]) < 1.5


def test_canary_in_edf_header_and_ground_truth(out: Path) -> None:
    truth = json.loads((out / "ground_truth.json").read_text())
    canaries = truth["canaries"]
    assert len(canaries) == 3 and all(c.startswith("CANARY^") for c in canaries)
    headers = {p.read_bytes()[:256].decode("ascii") for p in recordings(out, "site_a_ieeg")}
    for canary in canaries:
        assert sum(canary in h for h in headers) == 2
    assert all("01-JAN-1970" in h for h in headers)
    for path in recordings(out, "site_b_ieeg"):
        assert "CANARY" not in path.read_text(encoding="utf-8")


def test_pooled_truths(out: Path) -> None:
    entries = json.loads((out / "ground_truth.json").read_text())["entries"]
    keys = {(e["analysis"], e["term"], e["region_group"]): e for e in entries}
    assert set(keys) == {
        ("ieeg.slow_phase_duration", "ketamine_minus_baseline", None),
        ("ieeg.slow_phase_duration", "ketamine_minus_baseline", "emotion"),
        ("ieeg.slow_phase_duration", "ketamine_minus_baseline", "other"),
        ("ieeg.fast_phase_latency", "ketamine_minus_baseline", None),
        ("ieeg.synchrony", "ketamine_minus_baseline", None),
    }
    for e in entries:
        assert e["arm"] is None and e["region"] is None
    slow = keys[("ieeg.slow_phase_duration", "ketamine_minus_baseline", None)]
    assert slow["unit"] == "s" and slow["value"] == pytest.approx(-0.45 * 0.7, abs=0.03)
    assert keys[("ieeg.fast_phase_latency", "ketamine_minus_baseline", None)]["value"] == 0
    sync = keys[("ieeg.synchrony", "ketamine_minus_baseline", None)]
    assert sync["unit"] == "r" and sync["sign"] == -1 and sync["value"] < -0.2
    truth = read_tsv(out / "ground_truth_ieeg_channels.tsv")
    bip = truth[(truth["kind"] == "bipolar")]
    assert bip["channel"].str.contains("-").all()
    pivot = bip.pivot_table(
        index=["site", "participant", "channel"], columns="condition", values="slow_duration_s"
    )
    assert np.allclose(pivot["ketamine"], 0.55 * pivot["baseline"], atol=1e-5)
    contacts = truth[(truth["kind"] == "contact") & (truth["condition"] == "baseline")]
    assert 0.6 <= contacts["responsive_fast"].mean() <= 0.85
    assert 0.2 <= contacts["responsive_slow"].mean() <= 0.45
    by_group = contacts.groupby("region_group")["responsive_slow"].mean()
    assert by_group["emotion"] > 2 * by_group["other"]


@pytest.mark.parametrize("duration", [0.4, 0.385, 0.7, 1.0])
@pytest.mark.parametrize("edge", [0.005, 0.02, 0.04])
def test_half_power_width_of_the_planted_envelope(duration: float, edge: float) -> None:
    """The closed form against the half-maximum width of the generator's envelope squared."""
    t = np.linspace(-0.5, 2.0, 2_500_001)
    power = (expit((t - 0.35) / edge) * expit((0.35 + duration - t) / edge)) ** 2
    above = t[power >= power.max() / 2]
    assert above[-1] - above[0] == pytest.approx(slow_half_power_width(duration, edge), abs=2e-6)


def test_slow_width_change_is_the_ratio_of_mean_half_power_widths() -> None:
    scenario = load_scenario(IEEG_SMALL)
    resp = scenario["ieeg"]["responses"]
    f, e = resp["ketamine_duration_factor"], resp["edge_s"]
    # Baseline durations from the truncated normal the layout draws from (Monte Carlo).
    rng = np.random.default_rng(0)
    d = rng.normal(resp["slow_duration_s"]["mean"], resp["slow_duration_s"]["sd"], 400_000)
    d = d[(d >= 0.4) & (d <= 1.0)][:20_000]
    assert mean_slow_duration(scenario) == pytest.approx(d.mean(), abs=2e-3)
    base = np.mean([slow_half_power_width(x, e) for x in d])
    ket = np.mean([slow_half_power_width(f * x, e) for x in d])
    assert slow_width_change(scenario) == pytest.approx(ket / base - 1, abs=2e-3)
    assert slow_width_change(scenario) < f - 1 - 0.02  # a constant offset does not cancel
    responses = {**resp, "ketamine_duration_factor": 1.0}
    null = {**scenario, "ieeg": {**scenario["ieeg"], "responses": responses}}
    assert slow_width_change(null) == 0.0


def test_lognormal_correlation_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    z, w1, w2 = rng.standard_normal((3, 400_000))
    a, b = np.exp(0.5 * z + 0.3 * w1), np.exp(0.5 * z + 0.3 * w2)
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(lognormal_correlation(0.5, 0.3), abs=0.01)


def test_same_seed_gives_identical_bytes(out: Path, tmp_path: Path) -> None:
    generate(IEEG_SMALL, tmp_path / "again")
    assert tree_hashes(tmp_path / "again") == tree_hashes(out)


def test_small_scenario_bytes_unchanged(tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "small")
    hashes = tree_hashes(tmp_path / "small")
    for path, digest in SMALL_BEFORE.items():
        assert hashes[path] == digest, path
    # The only canaries of a PET-only scenario are its scanners' serials and institutions
    # (issue 9 added them to the sidecars and the truth), none from the iEEG module.
    canaries = json.loads((tmp_path / "small" / "ground_truth.json").read_text())["canaries"]
    assert canaries == synth_pet.canaries(load_scenario(SMALL))
