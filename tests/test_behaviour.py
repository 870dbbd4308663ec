"""Behaviour readers and harmonizer on small sessions built here with a planted eyelid curve.

The fixtures are written in the formats sites send (DeepLabCut CSV with three header rows plus
box-clock logs; NWB written with pynwb; bedside eyelid CSV + JSON with BIDS-iEEG events) with
one known closure curve, so every measure has an exact expected value.
"""

from __future__ import annotations

import datetime
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DEMO_KEY, write_tsv
from ketamap.config import with_defaults
from ketamap.errors import ConfigError, SiteDataError
from ketamap.harmonize.behaviour import (
    EyeTrace,
    closure_timecourse,
    harmonize_site,
    puff_measures,
    reward_measures,
)
from ketamap.harmonize.behaviour import read as br
from ketamap.ids import pseudonymize
from ketamap.schemas import get_table, write_table

CANARY = "CANARYQZX"
OPEN_PX = 20.0
PEAK = 0.9
SUSTAINED = {"ses-sal": 0.35, "ses-ket": 0.15, "ses-base": 0.35}
RAMP = (0.02, 0.05)  # closure rises linearly from 0 to PEAK between these times after the puff
LATENCY = RAMP[0] + (RAMP[1] - RAMP[0]) * 0.5 / PEAK  # first crossing of the 0.5 threshold
PUFFS = 45.0 + 6.0 * np.arange(8)
PRE_CUES = np.array([5.0, 15.0, 25.0, 35.0])
POST_CUES = np.array([95.0, 105.0, 115.0, 125.0])
WATER_DELAY = 1.5
SESSION_S = 130.0
BOX_OFFSET = 2.0  # box-clock time of video frame 0 in the DeepLabCut lab
CONDITIONS = {"ses-sal": "saline", "ses-ket": "ketamine"}
OPTS = with_defaults({}, "behaviour")


def planted_closure(rel: np.ndarray, sustained: float) -> np.ndarray:
    """The known curve: ramp to PEAK (20-50 ms), plateau to 120 ms, down to the sustained level."""
    c = np.zeros_like(rel)
    r0, r1 = RAMP
    c = np.where((rel >= r0) & (rel < r1), PEAK * (rel - r0) / (r1 - r0), c)
    c = np.where((rel >= r1) & (rel < 0.12), PEAK, c)
    c = np.where((rel >= 0.12) & (rel < 0.3), PEAK + (sustained - PEAK) * (rel - 0.12) / 0.18, c)
    c = np.where((rel >= 0.3) & (rel <= 5.0), sustained, c)
    c = np.where((rel > 5.0) & (rel < 5.3), sustained * (1 - (rel - 5.0) / 0.3), c)
    return c


def aperture_at(t: np.ndarray, puffs: np.ndarray, sustained: float) -> np.ndarray:
    rel = t[:, None] - puffs[None, :]
    return OPEN_PX * (1.0 - planted_closure(rel, sustained).sum(axis=1))


def lick_times(anticipating: np.ndarray, cues: np.ndarray) -> np.ndarray:
    """A bout of 3 anticipatory licks after each anticipating cue, 7 consumption licks after water."""
    antic = (anticipating[:, None] + np.array([0.5, 0.65, 0.8])[None, :]).ravel()
    drink = (cues[:, None] + WATER_DELAY + 0.1 + 0.15 * np.arange(7)[None, :]).ravel()
    return np.sort(np.concatenate([antic, drink]))


ALL_CUES = np.concatenate([PRE_CUES, POST_CUES])
LICKS = lick_times(np.concatenate([PRE_CUES, POST_CUES[[0, 2]]]), ALL_CUES)


def mouse_participants(root: Path, labels: list[str]) -> None:
    write_tsv(
        root / "participants.tsv",
        [
            ["participant_id", "species", "strain", "sex", "age_weeks", "group"],
            *[[p, "Mus musculus", "C57BL/6J", "M", "10", "naive"] for p in labels],
        ],
    )


# -------------------------------------------------------------------- DeepLabCut lab fixtures
def write_dlc_csv(
    path: Path,
    frames: np.ndarray,
    aperture: np.ndarray,
    likelihood: np.ndarray | None = None,
    bodyparts: tuple[str, ...] = ("upper_eyelid", "lower_eyelid"),
) -> None:
    n = frames.size
    lik = np.full(n, 0.99) if likelihood is None else likelihood
    coords = {
        "upper_eyelid": (np.full(n, 50.0), np.full(n, 40.0), np.full(n, 0.98)),
        "lower_eyelid": (np.full(n, 50.0), 40.0 + aperture, lik),
        "pupil": (np.full(n, 52.0), np.full(n, 45.0), np.full(n, 0.9)),
    }
    scorer = "DLC_resnet50_eyelidJan5shuffle1_200000"
    head = [
        ["scorer"] + [scorer] * 3 * len(bodyparts),
        ["bodyparts"] + [bp for bp in bodyparts for _ in range(3)],
        ["coords"] + ["x", "y", "likelihood"] * len(bodyparts),
    ]
    cols = [frames.astype(int).astype(str)]
    for bp in bodyparts:
        for arr in coords[bp]:
            cols.append(np.array([f"{v:.6f}" if np.isfinite(v) else "" for v in arr]))
    body = np.column_stack(cols)
    text = "\n".join(",".join(r) for r in head) + "\n" + "\n".join(",".join(r) for r in body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def write_dlc_session(
    root: Path,
    sub: str,
    ses: str,
    fps: float,
    *,
    likelihood_fn: object = None,
    licks: np.ndarray | None = None,
    **dlc: object,
) -> Path:
    folder = root / sub / ses
    n = int(SESSION_S * fps)
    frames = np.arange(n)
    t = BOX_OFFSET + frames / fps
    ap = aperture_at(t, PUFFS, SUSTAINED[ses])
    lik = likelihood_fn(t) if callable(likelihood_fn) else None
    stem = f"{sub}_{ses}"
    dlc_path = folder / f"{stem}_eyeDLC_resnet50_eyelidJan5shuffle1_200000.csv"
    write_dlc_csv(dlc_path, frames, ap, lik, **dlc)  # type: ignore[arg-type]
    puff_frames = np.round((PUFFS - BOX_OFFSET) * fps).astype(int)
    pd.DataFrame({"time_s": PUFFS, "frame": puff_frames}).to_csv(
        folder / f"{stem}_puffs.csv", index=False
    )
    pd.DataFrame({"time_s": LICKS if licks is None else licks}).to_csv(
        folder / f"{stem}_licks.csv", index=False
    )
    pd.DataFrame({"cue_s": ALL_CUES, "reward_s": ALL_CUES + WATER_DELAY}).to_csv(
        folder / f"{stem}_cues.csv", index=False
    )
    return folder


def dlc_site(root: Path, fps: float, declared: float | None = None, **kw: object) -> dict:
    mouse_participants(root, ["sub-m1"])
    for ses in CONDITIONS:
        write_dlc_session(root, "sub-m1", ses, fps, **kw)  # type: ignore[arg-type]
    return {
        "id": "lab_dlc",
        "modality": "behaviour",
        "species": "mouse",
        "reader": {"conditions": CONDITIONS, "format": "dlc", "frame_rate_hz": declared or fps},
    }


# -------------------------------------------------------------------- NWB lab fixtures
def write_nwb(
    path: Path,
    fps: float,
    ses: str,
    *,
    timestamps: np.ndarray | None = None,
    puffs: np.ndarray = PUFFS,
    licks: np.ndarray = LICKS,
) -> None:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralEvents, BehavioralTimeSeries
    from pynwb.file import Subject

    start = datetime.datetime(2024, 3, 1, 10, 0, tzinfo=datetime.UTC)
    nwb = NWBFile(
        session_description="eight-puff train with reward cues",
        identifier=f"test-{ses}",
        session_start_time=start,
        experimenter=[f"{CANARY} Experimenter"],
        lab=f"{CANARY} lab",
        subject=Subject(
            subject_id="m1",
            species="Mus musculus",
            sex="M",
            age="P70D",
            strain="C57BL/6J",
            description=f"{CANARY} Jane Doe's mouse",
        ),
    )
    n = int(SESSION_S * fps)
    t = np.arange(n) / fps if timestamps is None else timestamps
    ap = aperture_at(t, PUFFS, SUSTAINED[ses])
    timing: dict[str, object] = (
        {"rate": fps, "starting_time": 0.0} if timestamps is None else {"timestamps": timestamps}
    )
    eyelid = BehavioralTimeSeries(name="EyelidTracking")
    eyelid.add_timeseries(TimeSeries(name="eyelid_aperture", data=ap, unit="pixels", **timing))  # type: ignore[arg-type]
    eyelid.add_timeseries(
        TimeSeries(name="tracking_confidence", data=np.full(n, 0.95), unit="n/a", **timing)  # type: ignore[arg-type]
    )
    with warnings.catch_warnings():
        # the contract keeps licks in BehavioralEvents, which pynwb deprecates for new files
        warnings.filterwarnings("ignore", message="BehavioralEvents is deprecated")
        events = BehavioralEvents(name="Licks")
    events.add_timeseries(
        TimeSeries(name="licks", data=np.ones(licks.size), timestamps=licks, unit="n/a")
    )
    module = nwb.create_processing_module("behavior", "eyelid and licks")
    module.add(eyelid)
    module.add(events)
    nwb.add_trial_column("trial_type", "puff or cue")
    rows = [(p, p + 0.05, "puff") for p in puffs] + [(c, c + WATER_DELAY, "cue") for c in ALL_CUES]
    for s, e, kind in sorted(rows):
        nwb.add_trial(start_time=s, stop_time=e, trial_type=kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def nwb_site(root: Path, fps: float = 50.0, **kw: object) -> dict:
    mouse_participants(root, ["sub-m1"])
    for ses in CONDITIONS:
        write_nwb(root / "sub-m1" / ses / f"sub-m1_{ses}_behavior.nwb", fps, ses, **kw)  # type: ignore[arg-type]
    return {
        "id": "lab_nwb",
        "modality": "behaviour",
        "species": "mouse",
        "reader": {"conditions": CONDITIONS, "format": "nwb", "frame_rate_hz": fps},
    }


# -------------------------------------------------------------------- human fixtures
HUMAN_PUFFS = 20.0 + 8.0 * np.arange(6) + np.array([0.0, 0.013, 0.021, 0.004, 0.017, 0.009])


def human_site(root: Path, fps: float = 30.0, start: float = 3.5) -> dict:
    write_tsv(
        root / "participants.tsv",
        [["participant_id", "age", "sex", "group"], ["sub-P07", "31", "F", "epilepsy"]],
    )
    conditions = {"ses-base": "baseline"}
    for ses in conditions:
        base = root / "sub-P07" / ses
        n = int(80 * fps)
        frames = np.arange(n)
        t = start + frames / fps
        ap = aperture_at(t, HUMAN_PUFFS, SUSTAINED[ses])
        conf = np.full(n, 0.9)
        beh = base / "beh"
        beh.mkdir(parents=True)
        stem = f"sub-P07_{ses}_task-puff"
        pd.DataFrame({"frame": frames, "aperture_px": ap, "confidence": conf}).to_csv(
            beh / f"{stem}_eyelid.csv", index=False, float_format="%.6f"
        )
        (beh / f"{stem}_eyelid.json").write_text(
            json.dumps(
                {
                    "SamplingFrequency": fps,
                    "StartTime": start,
                    "TrackingSoftware": "EyeTrack 2",
                    "Columns": ["frame", "aperture_px", "confidence"],
                }
            )
        )
        rows = [["onset", "duration", "trial_type"]]
        rows += [[f"{p:.4f}", "0.05", "puff"] for p in HUMAN_PUFFS]
        rows.insert(3, ["30.0", "0", "note"])
        write_tsv(base / "ieeg" / f"{stem}_run-01_events.tsv", rows)
    return {
        "id": "hosp_a",
        "modality": "ieeg",
        "species": "human",
        "reader": {"conditions": conditions, "eyelid": True},
    }


def check_tables(tables: object, tmp_path: Path) -> None:
    """Every frame validates against its declared table (written through ketamap.schemas)."""
    for attr, name in [
        ("puffs", "behaviour_puffs"),
        ("timecourses", "behaviour_timecourses"),
        ("reward", "reward_seeking"),
        ("cues", "reward_cues"),
    ]:
        df = getattr(tables, attr)
        assert list(df.columns) == get_table(name).field_names
        write_table(df, name, tmp_path / "out" / f"{name}.parquet")


# ==================================================================== tests
@pytest.mark.parametrize("fps", [40.0, 60.0])
def test_dlc_lab_recovers_planted_closure_at_each_frame_rate(tmp_path: Path, fps: float) -> None:
    site = dlc_site(tmp_path / "site", fps)
    tables = harmonize_site(site, tmp_path / "site", DEMO_KEY)
    check_tables(tables, tmp_path)
    puffs = tables.puffs
    assert len(puffs) == 16 and set(puffs["condition"]) == {"saline", "ketamine"}
    assert puffs["frame_rate_hz"].to_numpy() == pytest.approx(fps, rel=1e-6)
    assert puffs["puff_time_s"].to_numpy()[:8] == pytest.approx(PUFFS)
    assert puffs["open_aperture_px"].to_numpy() == pytest.approx(OPEN_PX)
    assert puffs["reflex_blink"].all()
    assert puffs["reflex_closure"].to_numpy() == pytest.approx(PEAK)
    assert puffs["reflex_latency_s"].to_numpy() == pytest.approx(LATENCY, abs=1e-6)
    for cond, ses in [("saline", "ses-sal"), ("ketamine", "ses-ket")]:
        got = puffs.loc[puffs["condition"] == cond, "sustained_closure"].to_numpy()
        assert got == pytest.approx(SUSTAINED[ses], abs=1e-6)
    assert (puffs["frames_dropped"] == 0).all() and (puffs["tracking_quality"] == 1.0).all()
    assert puffs["subject_id"].iloc[0] == pseudonymize("lab_dlc", ["sub-m1"], DEMO_KEY)[0]
    assert "0.6" in puffs["method"].iloc[0] and "[0.5, 5] s" in puffs["method"].iloc[0]


def test_same_closure_from_40_and_60_fps_labs(tmp_path: Path) -> None:
    a = harmonize_site(dlc_site(tmp_path / "a", 40.0), tmp_path / "a", DEMO_KEY)
    b = harmonize_site(dlc_site(tmp_path / "b", 60.0), tmp_path / "b", DEMO_KEY)
    for col in ("reflex_closure", "reflex_latency_s", "sustained_closure"):
        assert a.puffs[col].to_numpy() == pytest.approx(b.puffs[col].to_numpy(), abs=1e-6)
    ta, tb = a.timecourses, b.timecourses
    assert ta["time_s"].tolist() == tb["time_s"].tolist()
    both = ta["closure"].notna() & tb["closure"].notna()
    late = (ta["time_s"] >= 0.3) | (ta["time_s"] < 0.0)
    assert (ta.loc[both & late, "closure"] - tb.loc[both & late, "closure"]).abs().max() < 1e-6


def test_declared_frame_rate_disagreeing_with_puff_log_is_an_error(tmp_path: Path) -> None:
    site = dlc_site(tmp_path / "site", 60.0, declared=40.0)
    with pytest.raises(SiteDataError, match=r"60 Hz .*frame_rate_hz is 40 Hz") as err:
        harmonize_site(site, tmp_path / "site", DEMO_KEY)
    assert "_puffs.csv" in str(err.value) and "field 'frame'" in str(err.value)


def test_likelihood_cutoff_drops_and_counts_frames(tmp_path: Path) -> None:
    fps = 40.0
    # 6 frames in puff 1's sustained window tracked badly (likelihood 0.3): their coordinates
    # say the eye is shut, which would raise the sustained closure if they were kept
    bad_t = PUFFS[0] + 1.0 + np.arange(6) / fps

    def likelihood(t: np.ndarray) -> np.ndarray:
        lik = np.full(t.size, 0.99)
        lik[np.isin(np.round(t, 6), np.round(bad_t, 6))] = 0.3
        return lik

    root = tmp_path / "site"
    site = dlc_site(root, fps, likelihood_fn=likelihood)
    # the same frames also carry garbage coordinates (aperture 0 = lids together)
    for ses in CONDITIONS:
        path = next((root / "sub-m1" / ses).glob("*DLC*.csv"))
        pose = br.read_dlc(path)
        t = BOX_OFFSET + pose.index.to_numpy() / fps
        ap = aperture_at(t, PUFFS, SUSTAINED[ses])
        hit = np.isin(np.round(t, 6), np.round(bad_t, 6))
        assert hit.sum() == 6
        ap[hit] = 0.0
        write_dlc_csv(path, pose.index.to_numpy(), ap, likelihood(t))
    tables = harmonize_site(site, root, DEMO_KEY)
    p = tables.puffs[tables.puffs["condition"] == "saline"]
    assert p["frames_dropped"].tolist() == [6, 0, 0, 0, 0, 0, 0, 0]
    n_window = round((5.0 + 0.5) * fps) + 1
    assert p["tracking_quality"].iloc[0] == pytest.approx((n_window - 6) / n_window, abs=1e-3)
    assert p["sustained_closure"].to_numpy() == pytest.approx(SUSTAINED["ses-sal"], abs=1e-6)
    # with the cutoff off the garbage frames get in: the test above can fail
    loose = harmonize_site(site, root, DEMO_KEY, {"likelihood_cutoff": 0.0}).puffs
    assert loose["frames_dropped"].sum() == 0
    loose_sal = loose[loose["condition"] == "saline"]
    assert loose_sal["sustained_closure"].iloc[0] > SUSTAINED["ses-sal"] + 0.01


def test_missing_coordinate_is_a_dropped_frame() -> None:
    df = pd.DataFrame(
        {
            ("upper_eyelid", "x"): [0.0, 0.0, 0.0],
            ("upper_eyelid", "y"): [0.0, 0.0, 0.0],
            ("upper_eyelid", "likelihood"): [0.9, 0.9, 0.9],
            ("lower_eyelid", "x"): [0.0, np.nan, 3.0],
            ("lower_eyelid", "y"): [5.0, 5.0, 4.0],
            ("lower_eyelid", "likelihood"): [0.9, 0.9, 0.5],
        }
    )
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["bodyparts", "coords"])
    dist, ok = br.keypoint_distance(df, where={"site": "s", "file": "f"}, cutoff=0.6)
    assert ok.tolist() == [True, False, False]
    assert dist[0] == 5.0 and np.isnan(dist[1:]).all()


def test_nwb_lab_closure_latency_timecourse_and_reward(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = nwb_site(root, fps=50.0)
    tables = harmonize_site(site, root, DEMO_KEY)
    check_tables(tables, tmp_path)
    p = tables.puffs
    assert p["reflex_latency_s"].to_numpy() == pytest.approx(LATENCY, abs=1e-6)
    assert p["reflex_closure"].to_numpy() == pytest.approx(PEAK)
    sal = p[p["condition"] == "saline"]["sustained_closure"].to_numpy()
    ket = p[p["condition"] == "ketamine"]["sustained_closure"].to_numpy()
    assert sal == pytest.approx(0.35, abs=1e-6) and ket == pytest.approx(0.15, abs=1e-6)
    # timecourse: 100 Hz grid from -0.5 to 5.0 s, the planted curve, 8 puffs everywhere
    tc = tables.timecourses[tables.timecourses["condition"] == "saline"].set_index("time_s")
    assert len(tc) == 551 and tc.index[0] == -0.5 and tc.index[-1] == 5.0
    assert (tc["n_puffs"] == 8).all()
    grid = tc.index.to_numpy()
    frames = np.arange(-1.0, 6.0, 1 / 50.0)  # the puffs fall on frames at 50 fps
    expected = np.interp(grid, frames, planted_closure(frames, 0.35))
    assert tc["closure"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert tc.loc[1.0, "closure"] == pytest.approx(0.35)
    assert tc.loc[0.1, "closure"] == pytest.approx(PEAK)

    rw = tables.reward.set_index(["condition", "epoch"])
    pre, post = rw.loc[("saline", "pre_train")], rw.loc[("saline", "post_train")]
    assert pre["epoch_start_s"] == 0.0 and pre["epoch_end_s"] == PUFFS[0]
    assert post["epoch_start_s"] == PUFFS[-1] and post["epoch_end_s"] == POST_CUES[-1] + 1.5
    n_pre = int(((LICKS >= 0) & (PUFFS[0] > LICKS)).sum())
    assert pre["licks_per_min"] == pytest.approx(n_pre / (PUFFS[0] / 60))
    assert pre["n_cues"] == 4 and post["n_cues"] == 4
    assert pre["anticipatory_fraction"] == 1.0 and post["anticipatory_fraction"] == 0.5
    assert pre["n_bouts"] == 8  # anticipatory and drinking bouts, 0.8 s apart
    # 2 anticipating cues x 2 bouts + 1 drinking bout; the last cue's drinking follows the epoch end
    assert post["n_bouts"] == 5
    cues = tables.cues[tables.cues["condition"] == "saline"]
    assert cues["cue_index"].tolist() == list(range(1, 9))
    assert cues["time_from_train_s"].iloc[0] == pytest.approx(5.0 - 45.0)
    assert cues["anticipatory_licks"].tolist() == [3, 3, 3, 3, 3, 0, 3, 0]
    assert cues["anticipatory"].tolist() == [True] * 5 + [False, True, False]


def test_consecutive_puffs_do_not_contaminate_the_timecourse() -> None:
    fps = 50.0
    t = np.arange(0, 40, 1 / fps)
    puffs = np.array([10.0, 12.0])  # the second puff 2 s after the first
    ap = aperture_at(t, puffs, 0.35)
    trace = EyeTrace(t, ap, np.ones(t.size, bool), fps, "test")
    m = puff_measures(trace, puffs, {**OPTS, **_checked()}, "mouse")
    grid, curves = closure_timecourse(trace, puffs, m["open_aperture_px"].to_numpy(), _checked())
    first = curves[0]
    assert np.isnan(first[grid >= 2.0]).all() and np.isfinite(first[grid < 2.0]).all()
    assert np.isfinite(curves[1]).all()
    # sustained closure of the first puff uses frames before the second puff only
    assert m["sustained_closure"].iloc[0] == pytest.approx(0.35, abs=1e-6)


def _checked() -> dict:
    from ketamap.harmonize.behaviour import _check_options

    return _check_options(with_defaults({}, "behaviour"))


def test_human_eyelid_csv_with_ieeg_events(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = human_site(root)
    tables = harmonize_site(site, root, DEMO_KEY)
    check_tables(tables, tmp_path)
    p = tables.puffs
    assert len(p) == 6 and (p["species"] == "human").all()
    assert p["puff_time_s"].to_numpy() == pytest.approx(HUMAN_PUFFS)
    assert p["subject_id"].iloc[0] == pseudonymize("hosp_a", ["sub-P07"], DEMO_KEY)[0]
    # 30 fps, frames not aligned to the puffs: within half a frame of the truth
    assert p["reflex_latency_s"].to_numpy() == pytest.approx(LATENCY, abs=0.5 / 30)
    assert p["sustained_closure"].to_numpy() == pytest.approx(0.35, abs=1e-6)
    assert "[0.5, 2] s" in p["method"].iloc[0]
    assert tables.reward.empty and tables.cues.empty
    assert list(tables.reward.columns) == get_table("reward_seeking").field_names


def test_no_canary_in_any_table_or_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "site"
    site = nwb_site(root)
    with caplog.at_level(logging.DEBUG):
        tables = harmonize_site(site, root, DEMO_KEY)
    for df in (tables.puffs, tables.timecourses, tables.reward, tables.cues):
        text = df.astype(str).to_csv()
        assert CANARY not in text and "m1," not in text and "sub-m1" not in text
    assert CANARY not in caplog.text
    # the canary really is in the file, where the reader must not look
    assert (
        CANARY.encode()
        in (root / "sub-m1" / "ses-sal" / "sub-m1_ses-sal_behavior.nwb").read_bytes()
    )


# -------------------------------------------------------------------- errors
def test_non_monotonic_nwb_timestamps(tmp_path: Path) -> None:
    root = tmp_path / "site"
    fps = 50.0
    ts = np.arange(int(SESSION_S * fps)) / fps + 0.001
    ts[100] = ts[98]
    mouse_participants(root, ["sub-m1"])
    write_nwb(
        root / "sub-m1" / "ses-sal" / "sub-m1_ses-sal_behavior.nwb", fps, "ses-sal", timestamps=ts
    )
    site = {
        "id": "lab_nwb",
        "species": "mouse",
        "reader": {"conditions": CONDITIONS, "format": "nwb"},
    }
    with pytest.raises(SiteDataError, match=r"go backwards") as err:
        harmonize_site(site, root, DEMO_KEY)
    msg = str(err.value)
    assert "sub-m1/ses-sal/sub-m1_ses-sal_behavior.nwb" in msg
    assert "EyelidTracking/eyelid_aperture/timestamps" in msg


def test_licks_going_backwards(tmp_path: Path) -> None:
    licks = LICKS.copy()
    licks[[10, 11]] = licks[[11, 10]]
    root = tmp_path / "site"
    site = dlc_site(root, 40.0, licks=licks)
    with pytest.raises(SiteDataError, match=r"go backwards") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "sub-m1/ses-ket/sub-m1_ses-ket_licks.csv" in str(err.value)
    assert "field 'time_s'" in str(err.value)


def test_missing_keypoint_column(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = dlc_site(root, 40.0, bodyparts=("upper_eyelid", "pupil"))
    with pytest.raises(SiteDataError, match=r"no lower_eyelid x column") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "eyelidJan5shuffle1_200000.csv" in str(err.value)
    assert "field 'lower_eyelid/x'" in str(err.value)


def test_empty_lick_log(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = dlc_site(root, 40.0, licks=np.array([]))
    with pytest.raises(SiteDataError, match=r"no licks in the log") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "sub-m1/ses-ket/sub-m1_ses-ket_licks.csv" in str(err.value)
    assert "field 'time_s'" in str(err.value)


def test_missing_contract_file(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = dlc_site(root, 40.0)
    (root / "sub-m1" / "ses-ket" / "sub-m1_ses-ket_cues.csv").unlink()
    with pytest.raises(SiteDataError, match=r"missing the cue log") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "sub-m1/ses-ket/sub-m1_ses-ket_cues.csv" in str(err.value)


def test_session_without_puffs(tmp_path: Path) -> None:
    root = tmp_path / "site"
    mouse_participants(root, ["sub-m1"])
    write_nwb(
        root / "sub-m1" / "ses-sal" / "sub-m1_ses-sal_behavior.nwb",
        50.0,
        "ses-sal",
        puffs=np.array([]),
    )
    site = {
        "id": "lab_nwb",
        "species": "mouse",
        "reader": {"conditions": CONDITIONS, "format": "nwb"},
    }
    with pytest.raises(SiteDataError, match=r"no puffs") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "field 'trials/trial_type'" in str(err.value)


def test_unmapped_session_label(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = dlc_site(root, 40.0)
    site["reader"]["conditions"] = {"ses-sal": "saline"}
    with pytest.raises(SiteDataError, match=r"session ses-ket is not mapped") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "field 'session_id'" in str(err.value)
    site["reader"]["conditions"] = {"ses-sal": "saline", "ses-ket": "placebo"}
    with pytest.raises(ConfigError, match=r"placebo"):
        harmonize_site(site, root, DEMO_KEY)


def test_all_frames_below_cutoff(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = dlc_site(root, 40.0, likelihood_fn=lambda t: np.full(t.size, 0.2))
    with pytest.raises(
        SiteDataError, match=r"all \d+ frames fail the likelihood cutoff 0.6"
    ) as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "lower_eyelid/likelihood" in str(err.value)


def test_event_log_non_numeric(tmp_path: Path) -> None:
    path = tmp_path / "licks.csv"
    path.write_text("time_s\n1.0\nabc\n")
    with pytest.raises(SiteDataError, match=r"non-numeric values \['abc'\]") as err:
        br.read_event_log(path, ["time_s"], site="s", root=tmp_path, what="licks")
    assert "file 'licks.csv', field 'time_s'" in str(err.value)


def test_dlc_csv_header_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("frame,upper_x\n0,1\n")
    with pytest.raises(SiteDataError, match=r"three DeepLabCut header rows"):
        br.read_dlc(path, site="s")


def test_reward_measures_bouts_and_epochs() -> None:
    licks = np.array([1.0, 1.2, 1.4, 3.0, 3.1, 20.0, 21.0, 21.3])
    rw, cues = reward_measures(
        licks,
        np.array([0.8, 2.9, 19.9]),
        np.array([1.5, 3.5, 20.5]),
        np.array([10.0, 11.0]),
        session_start_s=None,
        bout_gap_s=0.5,
        where={"site": "s", "file": "f"},
    )
    pre = rw.iloc[0]
    assert pre["epoch_start_s"] == 0.8 and pre["epoch_end_s"] == 10.0
    assert pre["n_bouts"] == 2 and pre["n_cues"] == 2
    assert pre["licks_per_min"] == pytest.approx(5 / (9.2 / 60))
    post = rw.iloc[1]
    assert post["epoch_start_s"] == 11.0 and post["epoch_end_s"] == 20.5
    assert post["n_bouts"] == 1 and post["anticipatory_fraction"] == 1.0
    assert cues["anticipatory_licks"].tolist() == [3, 2, 1]
    assert cues["time_from_train_s"].tolist() == pytest.approx([-9.2, -7.1, 9.9])


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    site = dlc_site(tmp_path / "site", 40.0)
    with pytest.raises(ConfigError, match=r"behaviour.baseline_s"):
        harmonize_site(site, tmp_path / "site", DEMO_KEY, {"baseline_s": [0.0, -0.5]})
    with pytest.raises(ConfigError, match=r"behaviour.likelihood_cutoff"):
        harmonize_site(site, tmp_path / "site", DEMO_KEY, {"likelihood_cutoff": 2})


def test_not_an_nwb_file(tmp_path: Path) -> None:
    root = tmp_path / "site"
    mouse_participants(root, ["sub-m1"])
    path = root / "sub-m1" / "ses-sal" / "sub-m1_ses-sal_behavior.nwb"
    path.parent.mkdir(parents=True)
    path.write_text("<html>not found</html>")
    site = {
        "id": "lab_nwb",
        "species": "mouse",
        "reader": {"conditions": CONDITIONS, "format": "nwb"},
    }
    with pytest.raises(SiteDataError, match=r"cannot be read as NWB") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "sub-m1/ses-sal/sub-m1_ses-sal_behavior.nwb" in str(err.value)


def test_missing_eyelid_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "site"
    site = human_site(root)
    next(root.glob("sub-P07/ses-base/beh/*_eyelid.json")).unlink()
    with pytest.raises(SiteDataError, match=r"file not found") as err:
        harmonize_site(site, root, DEMO_KEY)
    assert "sub-P07_ses-base_task-puff_eyelid.json" in str(err.value)


def test_timecourse_grid_point_a_rounding_error_before_a_frame_after_a_gap() -> None:
    """A grid point that is a tracked frame up to float rounding is on that frame, even when the
    frame ends a tracking gap (found by benchmarks/behaviour_eyelid.py)."""
    fps = 60.0
    t = np.arange(0, 20, 1 / fps)
    passed = np.ones(t.size, bool)
    puff = 10.0
    # a 6-frame gap ending exactly at puff + 0.5 s, whose frame time sits 1e-14 after the grid point
    end = int(np.searchsorted(t, puff + 0.5))
    t[end] = puff + 0.5 + 1e-14
    passed[end - 6 : end] = False
    ap = np.where(passed, 10.0, np.nan)
    trace = EyeTrace(t, ap, passed, fps, "test")
    grid, curves = closure_timecourse(trace, np.array([puff]), np.array([10.0]), _checked())
    at = np.flatnonzero(np.isclose(grid, 0.5))[0]
    assert curves[0, at] == pytest.approx(0.0)  # on the frame, not inside the gap
    assert np.isnan(curves[0, at - 1])  # the gap itself stays missing
