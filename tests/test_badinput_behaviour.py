"""Bad-input corpus, behaviour: one-change copies of the mouse labs and a human eyelid site,
harmonized as a job would.

Each error case must end in one short message naming the site, the file, the field and what was
expected; each warning case must leave tables that record the problem and no silently wrong value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from badinput import REPO, Consortium
from ketamap import limits
from ketamap.errors import KetamapError

DLC = "lab_dlc_mice"
NWB = "lab_nwb_mice"
HUMAN = "site_a_ieeg"  # bedside eyelid video at 30 fps
MAX_MESSAGE = 1200


@pytest.fixture(scope="module")
def eyelid_corpus(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    """The behaviour_small scenario alone: the shared corpus takes its iEEG sites from
    ieeg_small, which has no eyelid video, so the human eyelid cases need this one."""
    from ketamap import synth
    from ketamap.config import validate_config
    from ketamap.demo import apply_analysis_options

    base = tmp_path_factory.mktemp("eyelid_corpus")
    path = REPO / "config" / "scenarios" / "behaviour_small.yaml"
    synth.generate(path, base / "sites")
    scen = synth.load_scenario(path)
    config = {
        "sites": [e for e in synth.site_configs(scen, "registry", "v1") if e["id"] == HUMAN],
        "pseudonymization": {"key_env": "KETAMAP_PSEUDONYM_KEY", "demo_key": "bad-input-corpus"},
        "clinical": {},
        "atlas": {"registry": "registry", "path": "datasets/atlas", "revision": "v1"},
    }
    apply_analysis_options(config, synth.analysis_options(scen))
    return Consortium(base / "sites", validate_config(config))


def _first(raw: Path, pattern: str) -> Path:
    return sorted(raw.glob(pattern))[0]


def _dlc(raw: Path) -> Path:
    return _first(raw, "sub-*/ses-*/*DLC_*.csv")


def _eyelid(raw: Path) -> Path:
    return _first(raw, "sub-*/ses-*/beh/*_eyelid.csv")


def _nwb(raw: Path) -> Path:
    return _first(raw, "sub-*/ses-*/*_behavior.nwb")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _dlc_rows(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    """Apply ``change`` to the data rows (after the three header rows) of the first DLC file."""

    def apply(raw: Path) -> None:
        path = _dlc(raw)
        lines = _lines(path)
        _write_lines(path, lines[:3] + change(lines[3:]))

    return apply


def _dlc_column(col: int, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Rewrite data column ``col`` (1: upper x, 3: upper likelihood, ...) of the first DLC file."""

    def apply(raw: Path) -> None:
        path = _dlc(raw)
        head = _lines(path)[:3]
        df = pd.read_csv(path, header=None, skiprows=3, dtype=str, keep_default_na=False)
        values = pd.to_numeric(df[col].replace("", np.nan)).to_numpy(float)
        df[col] = [f"{v:.4f}" if np.isfinite(v) else "" for v in fn(values)]
        _write_lines(path, head + [",".join(r) for r in df.to_numpy().tolist()])

    return apply


def _truncate_bytes(fraction: float) -> Callable[[Path], None]:
    """Cut the first DLC file mid-row at ``fraction`` of its bytes (an interrupted copy)."""

    def apply(raw: Path) -> None:
        path = _dlc(raw)
        data = path.read_bytes()
        cut = int(len(data) * fraction)
        while data[cut - 1 : cut] in (b"\n", b","):
            cut += 1
        path.write_bytes(data[:cut])

    return apply


def _sparse_row(raw: Path) -> None:
    """2 MB of NUL bytes inside a DLC row: what a sparse, never-written file region reads as."""
    path = _dlc(raw)
    lines = _lines(path)
    lines[10] = lines[10] + "\0" * (2 << 20)
    _write_lines(path, lines)


def _huge_cell(raw: Path) -> None:
    path = _dlc(raw)
    lines = _lines(path)
    cells = lines[20].split(",")
    cells[2] = "x" * 500_000
    lines[20] = ",".join(cells)
    _write_lines(path, lines)


def _late_puff(raw: Path) -> None:
    """A last puff an hour after the train, on the puff log's own frame-time line."""
    path = _first(raw, "sub-*/ses-*/*_puffs.csv")
    df = pd.read_csv(path)
    slope, intercept = np.polyfit(df["time_s"], df["frame"], 1)
    t = float(df["time_s"].iloc[-1]) + 3600.0
    df.loc[len(df)] = [round(t, 3), round(slope * t + intercept)]
    df["frame"] = df["frame"].astype(int)
    df.to_csv(path, index=False)


def _nwb_dataset(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(raw: Path) -> None:
        with h5py.File(_nwb(raw), "r+") as f:
            ds = f[name]
            ds[...] = fn(ds[...])

    return apply


def _nwb_late_puff(raw: Path) -> None:
    """The last puff of the trials table moved an hour past the recording."""
    with h5py.File(_nwb(raw), "r+") as f:
        kinds = np.array([k.decode() for k in f["intervals/trials/trial_type"][...]])
        last = int(np.flatnonzero(kinds == "puff")[-1])
        f["intervals/trials/start_time"][last] += 3600.0
        f["intervals/trials/stop_time"][last] += 3600.0


def _nwb_cue_after_water(raw: Path) -> None:
    with h5py.File(_nwb(raw), "r+") as f:
        kinds = np.array([k.decode() for k in f["intervals/trials/trial_type"][...]])
        first = int(np.flatnonzero(kinds == "cue")[0])
        f["intervals/trials/start_time"][first] += 30.0


def _sidecar(key: str, value: float) -> Callable[[Path], None]:
    def apply(raw: Path) -> None:
        import json

        path = _eyelid(raw).with_suffix(".json")
        data = json.loads(path.read_text())
        data[key] = value
        path.write_text(json.dumps(data, indent=2))

    return apply


def _eyelid_column(col: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(raw: Path) -> None:
        path = _eyelid(raw)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        values = pd.to_numeric(df[col].replace("n/a", np.nan)).to_numpy(float)
        df[col] = [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in fn(values)]
        df.to_csv(path, index=False)

    return apply


def _eyelid_truncate(raw: Path) -> None:
    path = _eyelid(raw)
    lines = _lines(path)
    _write_lines(path, lines[: len(lines) // 3])


TRUNCATED = ["tracking ends at frame", "needs frames up to", "field 'frame'", "expected frames"]
SCALE = ["a 0-100 scale?", "expected likelihood between 0 and 1"]

# (case id, site, change(site folder), file pattern the message names, substrings it must hold)
CASES: list[tuple[str, str, Callable[[Path], None], str, list[str]]] = [
    ("dlc_truncated_at_a_row", DLC, _dlc_rows(lambda r: r[: len(r) * 2 // 5]), "DLC_", TRUNCATED),
    (
        "dlc_truncated_mid_row",
        DLC,
        _truncate_bytes(0.5),
        "DLC_",
        ["fields (a file cut short mid-row", "field 'row'", "expected 7 comma-separated fields"],
    ),
    ("dlc_likelihood_0_100", DLC, _dlc_column(6, lambda v: v * 100), "DLC_", SCALE),
    (
        "dlc_sparse_nul_bytes",
        DLC,
        _sparse_row,
        "DLC_",
        ["longer than 1 MB", "field 'row'", "expected rows of 7 comma-separated numbers"],
    ),
    (
        "dlc_huge_non_numeric_cell",
        DLC,
        _huge_cell,
        "DLC_",
        ["non-numeric values ['xxxx", "...']", "field 'upper_eyelid/y'", "expected numbers"],
    ),
    (
        "dlc_duplicated_frame",
        DLC,
        _dlc_rows(lambda r: [*r[:100], r[99], *r[100:]]),
        "DLC_",
        ["frame numbers go backwards", "field 'frame'", "expected strictly increasing"],
    ),
    (
        "dlc_fractional_frame_number",
        DLC,
        _dlc_rows(lambda r: [*r[:50], "50.5" + r[50][r[50].index(",") :], *r[51:]]),
        "DLC_",
        ["frame number 50.5", "field 'frame'", "expected whole frame numbers"],
    ),
    (
        "dlc_bodypart_renamed",
        DLC,
        lambda raw: _dlc(raw).write_text(
            _dlc(raw).read_text().replace("lower_eyelid", "eyelid_low")
        ),
        "DLC_",
        ["no lower_eyelid x column", "field 'lower_eyelid/x'", "expected x, y, likelihood"],
    ),
    (
        "dlc_infinite_coordinate",
        DLC,
        _dlc_rows(lambda r: [*r[:30], "30,inf" + r[30][r[30].index(",", 3) :], *r[31:]]),
        "DLC_",
        ["infinite value on line 34", "field 'upper_eyelid/x'", "expected finite numbers"],
    ),
    ("dlc_puff_beyond_recording", DLC, _late_puff, "DLC_", TRUNCATED),
    (
        "nwb_confidence_0_100",
        NWB,
        _nwb_dataset(
            "processing/behavior/EyelidTracking/tracking_confidence/data", lambda v: v * 100
        ),
        "_behavior.nwb",
        [
            "a 0-100 scale?",
            "field 'processing/behavior/EyelidTracking/tracking_confidence'",
            "expected tracking confidence between 0 and 1",
        ],
    ),
    (
        "nwb_puff_beyond_recording",
        NWB,
        _nwb_late_puff,
        "_behavior.nwb",
        [
            "tracking ends at frame",
            "field 'processing/behavior/EyelidTracking/eyelid_aperture'",
            "expected frames",
        ],
    ),
    (
        "nwb_water_before_its_cue",
        NWB,
        _nwb_cue_after_water,
        "_behavior.nwb",
        ["before its cue", "field 'reward_s'", "expected water after its cue"],
    ),
    (
        "eyelid_sidecar_fps_twice_the_video",
        HUMAN,
        _sidecar("SamplingFrequency", 60),
        "_eyelid.json",
        ["SamplingFrequency 60 Hz", "at 30 Hz", "field 'SamplingFrequency'", "expected the video"],
    ),
    (
        "eyelid_sidecar_fps_half_the_video",
        HUMAN,
        _sidecar("SamplingFrequency", 15),
        "_eyelid.json",
        ["SamplingFrequency 15 Hz", "at 30 Hz", "field 'SamplingFrequency'", "expected the video"],
    ),
    (
        "eyelid_confidence_0_100",
        HUMAN,
        _eyelid_column("confidence", lambda v: v * 100),
        "_eyelid.csv",
        ["a 0-100 scale?", "field 'confidence'", "expected confidence between 0 and 1"],
    ),
    (
        "eyelid_truncated",
        HUMAN,
        _eyelid_truncate,
        "_eyelid.json",
        ["eyelid CSV cut short", "field 'SamplingFrequency'", "send the whole eyelid CSV"],
    ),
    (
        "eyelid_negative_aperture",
        HUMAN,
        _eyelid_column("aperture_px", lambda v: np.where(np.arange(v.size) == 7, -3.0, v)),
        "_eyelid.csv",
        ["aperture -3 px on line 9", "field 'aperture_px'", "expected a lid-to-lid distance"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_behaviour_input_gets_one_clear_message(
    corpus: Consortium, tmp_path: Path, request: pytest.FixtureRequest, case
) -> None:
    _, site, change, pattern, needles = case
    if site == HUMAN:
        corpus = request.getfixturevalue("eyelid_corpus")
    raw = corpus.copy(site, tmp_path)
    change(raw)
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(site, raw)
    message = str(err.value)
    assert f"site '{site}'" in message, message
    assert pattern in message.split("field")[0], message
    for needle in needles:
        assert needle in message, message
    assert len(message) < MAX_MESSAGE, message[:MAX_MESSAGE]


def test_tracking_file_over_the_size_limit(corpus: Consortium, tmp_path: Path) -> None:
    raw = corpus.copy(DLC, tmp_path)
    limits.configure({"tracking_mb": 0.05})
    try:
        with pytest.raises(KetamapError) as err:
            corpus.harmonize(DLC, raw)
    finally:
        limits.configure(None)
    message = str(err.value)
    for needle in (f"site '{DLC}'", "DLC_", "field 'size'", "above the 0.05 MB limit"):
        assert needle in message, message


def test_missing_rows_are_recorded_and_counted(corpus: Consortium, tmp_path: Path) -> None:
    """Frames missing in the middle of a DLC file: recorded in ``method``, counted as dropped."""
    clean = corpus.harmonize(DLC, corpus.root / DLC)["behaviour_puffs"]
    raw = corpus.copy(DLC, tmp_path)
    _dlc_rows(lambda r: r[:2000] + r[2400:])(raw)
    puffs = corpus.harmonize(DLC, raw)["behaviour_puffs"]
    noted = puffs["method"].str.contains("400 frame numbers missing from the tracking file")
    assert noted.sum() == 8 and (~noted).sum() == len(puffs) - 8
    assert puffs["frames_dropped"].sum() >= clean["frames_dropped"].sum()
    pd.testing.assert_series_equal(puffs["reflex_closure"], clean["reflex_closure"])


def test_missing_reflex_closure_is_a_missing_blink(corpus: Consortium, tmp_path: Path) -> None:
    """Frames of one puff's reflex window lost: closure and blink missing, never a False blink."""
    raw = corpus.copy(DLC, tmp_path)
    path = _dlc(raw)
    log = pd.read_csv(_first(raw, "sub-*/ses-*/*_puffs.csv"))
    frame = int(log["frame"].iloc[2])
    _dlc_column(6, lambda v: np.where(np.abs(np.arange(v.size) - frame) <= 12, 0.05, v))(raw)
    clean = corpus.harmonize(DLC, corpus.root / DLC)["behaviour_puffs"]
    puffs = corpus.harmonize(DLC, raw)["behaviour_puffs"]
    assert path.exists()
    lost = puffs["reflex_closure"].isna() & clean["reflex_closure"].notna()
    assert lost.sum() == 1
    missing = puffs["reflex_closure"].isna()
    assert puffs.loc[missing, "reflex_blink"].isna().all()
    assert puffs.loc[~missing, "reflex_blink"].notna().all()
    assert clean.loc[lost.to_numpy(), "reflex_blink"].notna().all()
    assert str(puffs["reflex_blink"].dtype) == "boolean"
