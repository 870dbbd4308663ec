"""Tests of the behaviour part of the synthetic consortium (config/scenarios/behaviour_small.yaml)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO as REPO_ROOT
from ketamap.errors import ConfigError
from ketamap.synth import generate, load_scenario, site_configs

SCENARIO = REPO_ROOT / "config" / "scenarios" / "behaviour_small.yaml"
HUMAN = {"site_a_ieeg": 30, "site_b_ieeg": 60}
MICE = {"lab_nwb_mice": ("nwb", 60), "lab_dlc_mice": ("dlc", 40)}
DLC_TAIL = "_eyeDLC_resnet50_eyelidJan5shuffle1_200000.csv"


def tree_hashes(root: Path, skip_suffix: str = ".nwb") -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != skip_suffix
    }


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("beh") / "consortium"
    generate(SCENARIO, target)
    return target


@pytest.fixture(scope="module")
def out2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("beh2") / "consortium"
    generate(SCENARIO, target)
    return target


def read_nwb(path: Path) -> dict[str, object]:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        beh = nwb.processing["behavior"]
        ap = beh["EyelidTracking"]["eyelid_aperture"]
        conf = beh["EyelidTracking"]["tracking_confidence"]
        licks = beh["Licks"]["licks"]
        return {
            "aperture": np.asarray(ap.data[:]),
            "rate": float(ap.rate),
            "start": float(ap.starting_time),
            "confidence": np.asarray(conf.data[:]),
            "conf_rate": float(conf.rate),
            "licks": np.asarray(licks.timestamps[:]),
            "lick_data": np.asarray(licks.data[:]),
            "trials": nwb.trials.to_dataframe().reset_index(drop=True),
            "subject": {
                k: getattr(nwb.subject, k)
                for k in ("subject_id", "species", "sex", "age", "strain", "description")
            },
            "session_start_time": nwb.session_start_time,
        }


def closure_diff(
    times: np.ndarray,
    aperture: np.ndarray,
    ok: np.ndarray,
    puffs: np.ndarray,
    win: tuple[float, float],
    peak: bool = False,
) -> float:
    """Crude closure per puff (baseline median -0.5..-0.05 s), mean or peak over ``win``."""
    values = []
    for p in puffs:
        base = ok & (times >= p - 0.5) & (times <= p - 0.05)
        sel = ok & (times >= p + win[0]) & (times <= p + win[1])
        if base.sum() > 3 and sel.sum() > 0:
            closure = 1.0 - aperture[sel] / np.median(aperture[base])
            values.append(closure.max() if peak else closure.mean())
    return float(np.mean(values))


# --------------------------------------------------------------------------- scenario and layout


def test_reader_options() -> None:
    entries = {e["id"]: e for e in site_configs(SCENARIO, "registry", "v1")}
    assert entries["site_a_ieeg"]["reader"]["eyelid"] is True
    assert entries["site_b_ieeg"]["reader"]["conditions"] == {
        "ses-pre": "baseline",
        "ses-ketamine": "ketamine",
    }
    assert entries["lab_nwb_mice"]["reader"] == {
        "conditions": {"ses-sal": "saline", "ses-ket": "ketamine"},
        "format": "nwb",
        "frame_rate_hz": 60,
    }
    assert entries["lab_dlc_mice"]["reader"]["format"] == "dlc"
    assert entries["lab_dlc_mice"]["reader"]["frame_rate_hz"] == 40
    assert entries["lab_dlc_mice"]["species"] == "mouse"


def test_mouse_site_needs_saline_label(tmp_path: Path) -> None:
    text = SCENARIO.read_text().replace("{saline: ses-sal, ketamine: ses-ket}", "{ketamine: ses-k}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="saline session label"):
        load_scenario(bad)


def test_mouse_site_rejects_groups(tmp_path: Path) -> None:
    text = SCENARIO.read_text().replace(
        '    id_format: "m{n:03d}"\n',
        '    id_format: "m{n:03d}"\n    groups:\n      hc:\n        n: 2\n',
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="only generated for human sites"):
        load_scenario(bad)


def test_layout(out: Path) -> None:
    for site in HUMAN:
        files = sorted((out / site).rglob("*_eyelid.csv"))
        assert len(files) == 6
        for f in files:
            assert f.parent.name == "beh"
            assert f.with_suffix(".json").is_file()
    for site, (fmt, _) in MICE.items():
        parts = read_tsv(out / site / "participants.tsv")
        assert list(parts.columns) == [
            "participant_id",
            "species",
            "strain",
            "sex",
            "age_weeks",
            "group",
        ]
        assert len(parts) == 4 and set(parts["group"]) == {"naive"}
        assert set(parts["sex"]) <= {"M", "F"}
        # no clinical BIDS files for a mouse lab
        assert not (out / site / "dataset_description.json").exists()
        assert not (out / site / "phenotype").exists()
        for pid in parts["participant_id"]:
            sessions = sorted(p.name for p in (out / site / pid).iterdir())
            assert len(sessions) == 2
            for ses in sessions:
                stem = f"{pid}_{ses}"
                folder = out / site / pid / ses
                if fmt == "nwb":
                    assert (folder / f"{stem}_behavior.nwb").is_file()
                else:
                    for tail in (DLC_TAIL, "_puffs.csv", "_licks.csv", "_cues.csv"):
                        assert (folder / f"{stem}{tail}").is_file()


def test_deterministic(out: Path, out2: Path) -> None:
    assert tree_hashes(out) == tree_hashes(out2)
    nwbs = sorted(out.rglob("*.nwb"))
    assert len(nwbs) == 8
    for path in nwbs:
        a, b = read_nwb(path), read_nwb(out2 / path.relative_to(out))
        np.testing.assert_array_equal(a["aperture"], b["aperture"])
        np.testing.assert_array_equal(a["licks"], b["licks"])
        pd.testing.assert_frame_equal(a["trials"], b["trials"])  # type: ignore[arg-type]
        assert a["subject"] == b["subject"]
        # object ids are derived from the scenario, so in practice the bytes match too
        assert path.read_bytes() == (out2 / path.relative_to(out)).read_bytes()


# --------------------------------------------------------------------------- humans


def test_human_eyelid_matches_ieeg_events(out: Path) -> None:
    for site, fps in HUMAN.items():
        for csv in sorted((out / site).rglob("*_eyelid.csv")):
            side = json.loads(csv.with_suffix(".json").read_text())
            assert side["SamplingFrequency"] == fps
            assert set(side) >= {"SamplingFrequency", "StartTime", "TrackingSoftware", "Columns"}
            assert side["StartTime"] != 0
            df = pd.read_csv(csv, na_values=["n/a"], keep_default_na=False)
            assert list(df.columns) == ["frame", "aperture_px", "confidence"]
            assert (df["frame"].to_numpy() == np.arange(len(df))).all()
            assert df["confidence"].between(0, 1).all()
            assert 0 < df["aperture_px"].isna().sum() < 0.05 * len(df)
            assert 0 < (df["confidence"] < 0.5).mean() < 0.15
            events = next(csv.parent.parent.glob("ieeg/*_events.tsv"))
            puffs = read_tsv(events)
            assert (puffs["trial_type"] == "puff").all()
            # the video covers every puff and its windows
            times = side["StartTime"] + df["frame"].to_numpy() / fps
            assert times[0] < puffs["onset"].min() - 0.5
            assert times[-1] > puffs["onset"].max() + 2.0


def test_human_sustained_effect_in_raw_data(out: Path) -> None:
    diffs = []
    for site, fps in HUMAN.items():
        per_cond: dict[str, list[float]] = {"control": [], "ketamine": []}
        for csv in sorted((out / site).rglob("*_eyelid.csv")):
            side = json.loads(csv.with_suffix(".json").read_text())
            df = pd.read_csv(csv, na_values=["n/a"], keep_default_na=False)
            puffs = read_tsv(next(csv.parent.parent.glob("ieeg/*_events.tsv")))["onset"].to_numpy()
            times = side["StartTime"] + df["frame"].to_numpy() / fps
            ok = (df["confidence"] >= 0.6).to_numpy() & df["aperture_px"].notna().to_numpy()
            ap = df["aperture_px"].to_numpy()
            cond = "ketamine" if "ket" in csv.parent.parent.name else "control"
            per_cond[cond].append(closure_diff(times, ap, ok, puffs, (0.5, 2.0)))
            reflex = closure_diff(times, ap, ok, puffs, (0.0, 0.15), peak=True)
            assert reflex > 0.6
        diffs.append(np.mean(per_cond["ketamine"]) - np.mean(per_cond["control"]))
    assert all(-0.28 < d < -0.12 for d in diffs), diffs


# --------------------------------------------------------------------------- mice


def test_nwb_structure(out: Path) -> None:
    truth = json.loads((out / "ground_truth.json").read_text())
    for path in sorted((out / "lab_nwb_mice").rglob("*.nwb")):
        d = read_nwb(path)
        subj = d["subject"]
        assert isinstance(subj, dict)
        assert subj["species"] == "Mus musculus"
        assert subj["sex"] in ("M", "F")
        assert str(subj["age"]).startswith("P") and str(subj["age"]).endswith("D")
        assert path.name.startswith(f"sub-{subj['subject_id']}_")
        assert any(c in str(subj["description"]) for c in truth["canaries"])
        assert d["rate"] == 60.0 and d["conf_rate"] == 60.0
        aperture, conf = d["aperture"], d["confidence"]
        assert isinstance(aperture, np.ndarray) and isinstance(conf, np.ndarray)
        assert aperture.shape == conf.shape
        assert 0 < np.isnan(aperture).sum() < 0.05 * aperture.size
        trials = d["trials"]
        assert isinstance(trials, pd.DataFrame)
        assert set(trials["trial_type"]) == {"puff", "cue"}
        assert (trials["trial_type"] == "puff").sum() == 8
        cues = trials[trials["trial_type"] == "cue"]
        np.testing.assert_allclose(cues["stop_time"] - cues["start_time"], 1.5, atol=1e-6)
        licks = d["licks"]
        assert isinstance(licks, np.ndarray) and (np.diff(licks) > 0).all()
        assert (np.asarray(d["lick_data"]) == 1).all()


def test_dlc_files(out: Path) -> None:
    for csv in sorted((out / "lab_dlc_mice").rglob(f"*{DLC_TAIL}")):
        df = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
        scorer = df.columns.get_level_values(0).unique()
        assert len(scorer) == 1
        assert list(df.columns.get_level_values(1).unique()) == ["upper_eyelid", "lower_eyelid"]
        assert list(df.columns.get_level_values(2)[:3]) == ["x", "y", "likelihood"]
        like = df[(scorer[0], "upper_eyelid", "likelihood")]
        assert 0 < (like < 0.6).mean() < 0.15
        assert df.isna().any(axis=1).sum() > 0
        stem = csv.name.removesuffix(DLC_TAIL)
        puffs = pd.read_csv(csv.parent / f"{stem}_puffs.csv")
        assert list(puffs.columns) == ["time_s", "frame"] and len(puffs) == 8
        rate = np.polyfit(puffs["time_s"], puffs["frame"], 1)[0]
        assert abs(rate / 40.0 - 1) < 0.01
        assert puffs["frame"].max() < len(df)
        cues = pd.read_csv(csv.parent / f"{stem}_cues.csv")
        assert list(cues.columns) == ["cue_s", "reward_s"] and len(cues) == 32
        licks = pd.read_csv(csv.parent / f"{stem}_licks.csv")
        assert list(licks.columns) == ["time_s"] and len(licks) > 50


def _anticipatory(licks: np.ndarray, cues: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(licks, cues, side="left")
    nxt = np.where(idx < licks.size, licks[np.minimum(idx, licks.size - 1)], np.inf)
    return nxt < rewards


def test_mouse_effects_in_raw_data(out: Path) -> None:
    """Crude recovery: sustained closure drop under ketamine, train effect on anticipation."""
    closures: dict[str, list[float]] = {"saline": [], "ketamine": []}
    train: dict[str, list[float]] = {"saline": [], "ketamine": []}
    conds = {"ses-sal": "saline", "ses-ket": "ketamine", "ses-saline": "saline"}
    conds["ses-ketamine"] = "ketamine"
    for path in sorted((out / "lab_nwb_mice").rglob("*.nwb")):
        d = read_nwb(path)
        cond = conds[path.parent.name]
        ap, conf = np.asarray(d["aperture"]), np.asarray(d["confidence"])
        times = float(d["start"]) + np.arange(ap.size) / float(d["rate"])  # type: ignore[arg-type]
        trials = d["trials"]
        assert isinstance(trials, pd.DataFrame)
        puffs = trials.loc[trials["trial_type"] == "puff", "start_time"].to_numpy()
        ok = (conf >= 0.6) & ~np.isnan(ap)
        closures[cond].append(closure_diff(times, ap, ok, puffs, (0.5, 5.0)))
        cues = trials[trials["trial_type"] == "cue"]
        ant = _anticipatory(
            np.asarray(d["licks"]), cues["start_time"].to_numpy(), cues["stop_time"].to_numpy()
        )
        before = cues["start_time"].to_numpy() < puffs.min()
        train[cond].append(ant[~before].mean() - ant[before].mean())
    for csv in sorted((out / "lab_dlc_mice").rglob(f"*{DLC_TAIL}")):
        cond = conds[csv.parent.name]
        stem = csv.name.removesuffix(DLC_TAIL)
        df = pd.read_csv(csv, header=[0, 1, 2], index_col=0).droplevel(0, axis=1)
        puffs = pd.read_csv(csv.parent / f"{stem}_puffs.csv")
        slope, icpt = np.polyfit(puffs["frame"], puffs["time_s"], 1)
        times = icpt + slope * df.index.to_numpy()
        ap = (df[("lower_eyelid", "y")] - df[("upper_eyelid", "y")]).to_numpy()
        ok = (
            (df[("lower_eyelid", "likelihood")] >= 0.6)
            & (df[("upper_eyelid", "likelihood")] >= 0.6)
        ).to_numpy() & ~np.isnan(ap)
        closures[cond].append(closure_diff(times, ap, ok, puffs["time_s"].to_numpy(), (0.5, 5.0)))
        cues = pd.read_csv(csv.parent / f"{stem}_cues.csv")
        licks = pd.read_csv(csv.parent / f"{stem}_licks.csv")["time_s"].to_numpy()
        ant = _anticipatory(licks, cues["cue_s"].to_numpy(), cues["reward_s"].to_numpy())
        before = cues["cue_s"].to_numpy() < puffs["time_s"].min()
        train[cond].append(ant[~before].mean() - ant[before].mean())
    diff = np.mean(closures["ketamine"]) - np.mean(closures["saline"])
    assert -0.28 < diff < -0.12, diff
    assert np.mean(train["saline"]) < -0.1
    assert np.mean(train["saline"]) < np.mean(train["ketamine"])


# --------------------------------------------------------------------------- truth


def test_truth_and_canaries(out: Path) -> None:
    truth = json.loads((out / "ground_truth.json").read_text())
    got = {
        (e["analysis"], e["term"], e.get("species")): e
        for e in truth["entries"]
        if e.get("measure") != "hfb"
    }
    hfb = {e["term"]: e for e in truth["entries"] if e.get("measure") == "hfb"}
    assert hfb["ketamine_effect_fast"]["value"] == 0.0
    # The relative change of the half-power width the reader measures (edges unchanged by
    # ketamine): (0.55 E[d] - w) / (E[d] - w) - 1, w = 2 asinh(1) 0.02 s, E[d] ~ 0.7 s.
    slow_hfb = hfb["ketamine_effect_slow"]
    assert slow_hfb["value"] == pytest.approx(
        (0.55 * 0.7 - 0.04 * np.arcsinh(1)) / (0.7 - 0.04 * np.arcsinh(1)) - 1, abs=1e-4
    )
    assert slow_hfb["value"] < 0.55 - 1 - 0.02 and "half-maximum width" in slow_hfb["estimand"]
    assert {e["unit"] for e in hfb.values()} == {"relative change"}
    for sp in ("human", "mouse"):
        assert got[("behaviour.reflex_blink", "ketamine_minus_control", sp)]["value"] == 0.0
        slow = got[("behaviour.sustained_closure", "ketamine_minus_control", sp)]["value"]
        assert slow == pytest.approx(-0.2, abs=1e-3)
        fast = got[("cross_species.timing_signature", "ketamine_effect_fast", sp)]
        assert fast["measure"] == "eyelid" and fast["value"] == 0.0
        slow_x = got[("cross_species.timing_signature", "ketamine_effect_slow", sp)]
        assert slow_x["value"] == slow and slow_x["unit"] == "fraction"
    assert got[("behaviour.sustained_closure", "species_x_drug", None)]["value"] == pytest.approx(
        0.0, abs=1e-3
    )
    rs = "mouse.reward_seeking_after_train"
    assert got[(rs, "train_effect_saline", "mouse")]["value"] == pytest.approx(-0.3)
    assert got[(rs, "train_effect_ketamine", "mouse")]["value"] == pytest.approx(-0.15)
    assert got[(rs, "train_x_drug", "mouse")]["value"] == pytest.approx(0.15)
    for e in truth["entries"]:
        if e["analysis"].startswith(("behaviour.", "mouse.", "cross_species.")):
            assert e["arm"] is None and e["region"] is None and e["region_group"] is None
            assert e["unit"] == ("relative change" if e.get("measure") == "hfb" else "fraction")
    mouse_canaries = [c for c in truth["canaries"] if c.startswith("Canary Janet")]
    assert len(mouse_canaries) == 4
    found = set()
    for path in sorted((out / "lab_nwb_mice").rglob("*.nwb")):
        raw = path.read_bytes()
        found |= {c for c in mouse_canaries if c.encode() in raw}
    assert found == set(mouse_canaries)
