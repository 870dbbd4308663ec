"""Behaviour part of the synthetic consortium: eyelid video of iEEG patients and two mouse labs.

Files follow ``docs/site_data.md`` (section "Behaviour part"):

- human iEEG sites with an ``eyelid`` section: per iEEG session
  ``sub-<l>/ses-<s>/beh/sub-<l>_ses-<s>_task-puff_eyelid.csv`` (frame, aperture_px, confidence) and
  ``.json`` (SamplingFrequency, StartTime on the iEEG clock, TrackingSoftware, Columns). The puffs
  are exactly the iEEG puff onsets (:func:`ketamap.synth.ieeg_signal.schedule`, the iEEG
  module's own code path); the video starts a drawn offset before or after the recording.
- mouse labs (``modality: behaviour``, ``species: mouse`` and a ``behaviour`` section):
  ``participants.tsv`` and per mouse a saline and a ketamine session, written as one NWB file
  (``format: nwb``) or as a DeepLabCut CSV plus puff, lick and cue logs on the box clock
  (``format: dlc``; the video clock has an offset and a small drift).

Signal models: :mod:`ketamap.synth.behaviour_signal`. Random streams (per site): subject draws
``behaviour.subject.<label>`` (eyelid) and ``behaviour.mouse.<label>`` (licking, eye position),
``behaviour.roster`` (mouse sex, age, session order and dates), per session
``behaviour.design.<label>.<session>``, ``behaviour.eyelid.<label>.<session>`` and
``behaviour.licks.<label>.<session>``. Ground truth: :func:`truth`; canaries: the person-like
names in the NWB subject descriptions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ketamap.errors import ConfigError
from ketamap.synth import clinical, ieeg
from ketamap.synth._io import write_json, write_tsv
from ketamap.synth._rng import stream
from ketamap.synth.behaviour_signal import (
    Tracked,
    bouts,
    closure,
    track,
    window_mean,
    window_peak,
)
from ketamap.synth.ieeg_signal import schedule

NAME = "behaviour"
TASK = "puff"
CONDITIONS = ("saline", "ketamine")
DLC_SCORER = "DLC_resnet50_eyelidJan5shuffle1_200000"
DLC_PARTS = ("upper_eyelid", "lower_eyelid")
SPECIES_LATIN = "Mus musculus"
_FRACTION = "fraction"


# --------------------------------------------------------------------------- plug-in contract


def _is_human(site: dict[str, Any]) -> bool:
    return bool(
        site["species"] == "human"
        and site["modality"] == "ieeg"
        and site.get("ieeg") is not None
        and site.get("eyelid") is not None
    )


def _is_mouse(site: dict[str, Any]) -> bool:
    return bool(
        site["species"] == "mouse"
        and site["modality"] == "behaviour"
        and site.get("behaviour") is not None
    )


def applies(site: dict[str, Any]) -> bool:
    """Human iEEG sites with an ``eyelid`` section, mouse labs with a ``behaviour`` section."""
    return _is_human(site) or _is_mouse(site)


def reader_options(site: dict[str, Any]) -> dict[str, Any]:
    """Mouse labs: conditions, format, frame_rate_hz; human eyelid sites: ``eyelid: True``."""
    if _is_mouse(site):
        labels = site["session_labels"]
        beh = site["behaviour"]
        fps = float(beh["frame_rate_hz"])
        return {
            "conditions": {labels[c]: c for c in CONDITIONS},
            "format": beh["format"],
            "frame_rate_hz": int(fps) if fps == int(fps) else fps,
        }
    if _is_human(site):
        return {"eyelid": True}
    return {}


def _check_range(r: dict[str, Any], field: str, fail: Any) -> None:
    if float(r["min"]) > float(r["max"]):
        fail(f"{field}.min exceeds {field}.max", field)


def validate(scenario: dict[str, Any], source: str | None) -> None:
    """Check what the schema cannot: where the sections may appear, labels, windows, spacing."""

    def fail(message: str, field: str, site: str | None = None, **kw: Any) -> None:
        raise ConfigError(message, site=site, file=source, field=field, **kw)

    cfg = scenario["behaviour"]
    eye = cfg["eyelid"]
    for i, site in enumerate(scenario["sites"]):
        where = f"sites[{i}]"
        if site.get("eyelid") is not None and not (
            site["species"] == "human" and site["modality"] == "ieeg"
        ):
            fail("only human ieeg sites may have an eyelid section", f"{where}.eyelid", site["id"])
        mouse_lab = site["species"] == "mouse" and site["modality"] == "behaviour"
        if site.get("behaviour") is not None and not mouse_lab:
            fail(
                "only mouse sites with modality behaviour may have a behaviour section",
                f"{where}.behaviour",
                site["id"],
            )
        if site["species"] == "mouse" and site["modality"] != "behaviour":
            fail(
                "mouse sites deliver behaviour only",
                f"{where}.modality",
                site["id"],
                expected="modality: behaviour",
            )
        if site.get("eyelid") is not None:
            offset = site["eyelid"]["start_offset_s"]
            _check_range(offset, f"{where}.eyelid.start_offset_s", fail)
            first = float(scenario["ieeg"]["recording"]["lead_s"]) + float(
                eye["baseline_window_s"]["min"]
            )
            if float(offset["max"]) >= first:
                fail(
                    "the video would start after the first puff's baseline",
                    f"{where}.eyelid.start_offset_s.max",
                    site["id"],
                    expected=f"below ieeg.recording.lead_s + baseline_window_s.min = {first}",
                )
        if not mouse_lab:
            continue
        if site.get("behaviour") is None:
            fail(
                "a mouse lab needs its behaviour section",
                f"{where}.behaviour",
                site["id"],
                expected="format (nwb or dlc) at least",
            )
        beh = site["behaviour"]
        labels = site["session_labels"]
        for cond in CONDITIONS:
            if cond not in labels:
                fail(
                    f"a mouse lab needs a {cond} session label",
                    f"{where}.session_labels.{cond}",
                    site["id"],
                    expected="session_labels: {saline: ses-sal, ketamine: ses-ket}",
                )
        if labels["saline"] == labels["ketamine"]:
            fail("saline and ketamine session labels are the same", f"{where}.session_labels")
        for key in ("age_weeks", "video_offset_s", "clock_drift"):
            _check_range(beh[key], f"{where}.behaviour.{key}", fail)
        drift = beh["clock_drift"]
        if max(abs(float(drift["min"])), abs(float(drift["max"]))) >= 0.001:
            fail(
                "the video clock drift must stay below 0.1 %",
                f"{where}.behaviour.clock_drift",
                site["id"],
                expected="min and max within (-0.001, 0.001)",
            )
        seen: set[str] = set()
        for n in range(1, int(beh["n_mice"]) + 1):
            try:
                label = site["id_format"].format(n=n)
            except (KeyError, IndexError, ValueError) as exc:
                fail(f"'{site['id_format']}' is not a usable format string ({exc})", "id_format")
            if not label.isascii() or not label.isalnum() or label in seen:
                fail(
                    f"mouse label '{label}' is not unique letters and digits",
                    f"{where}.id_format",
                    site["id"],
                    expected="a format giving a different BIDS label (A-Z, a-z, 0-9) per number",
                )
            seen.add(label)

    for key in ("reflex_window_s", "baseline_window_s", "reflex_peak", "sustained_rise_s"):
        if key != "reflex_peak":
            _check_range(eye[key], f"behaviour.eyelid.{key}", fail)
    rise = eye["sustained_rise_s"]
    if float(rise["min"]) < float(eye["reflex_window_s"]["max"]):
        fail(
            "the sustained closure must start after the reflex window",
            "behaviour.eyelid.sustained_rise_s.min",
            expected=f"at least {eye['reflex_window_s']['max']}",
        )
    if float(rise["min"]) == float(rise["max"]):
        fail("the sustained rise needs min below max", "behaviour.eyelid.sustained_rise_s")
    if float(eye["baseline_window_s"]["max"]) > 0:
        fail("the baseline window must end before the puff", "behaviour.eyelid.baseline_window_s")
    for species in ("human", "mouse"):
        win = eye["sustained_window_s"][species]
        _check_range(win, f"behaviour.eyelid.sustained_window_s.{species}", fail)
        if float(win["min"]) < float(rise["max"]):
            fail(
                "the sustained window starts before the plateau is reached",
                f"behaviour.eyelid.sustained_window_s.{species}.min",
                expected=f"at least sustained_rise_s.max = {rise['max']}",
            )
    human_end = float(eye["sustained_window_s"]["human"]["max"]) + float(
        eye["sustained_fall_s"]["human"]
    )
    if any(_is_human(s) for s in scenario["sites"]):
        gap = float(scenario["ieeg"]["recording"]["interval_s"]["min"])
        if gap <= human_end:
            fail(
                f"iEEG puffs {gap} s apart overlap the sustained closure, which lasts "
                f"{human_end:.2f} s",
                "ieeg.recording.interval_s.min",
                expected=f"more than {human_end:.2f} (or a shorter human sustained window)",
            )
    sess = cfg["session"]
    for key in ("cue_interval_s", "puff_interval_s"):
        _check_range(sess[key], f"behaviour.session.{key}", fail)
    mouse_clear = (
        float(eye["sustained_window_s"]["mouse"]["max"])
        + float(eye["sustained_fall_s"]["mouse"])
        - float(eye["baseline_window_s"]["min"])
    )
    if float(sess["puff_interval_s"]["min"]) < mouse_clear:
        fail(
            "train puffs this close leave the eye closed in the next puff's baseline",
            "behaviour.session.puff_interval_s.min",
            expected=f"at least {mouse_clear:.2f}",
        )
    licks = cfg["licks"]
    for key in (
        "rate_hz",
        "anticipatory_onset_s",
        "consumption_latency_s",
        "consumption_bout_s",
        "spontaneous_bout_s",
    ):
        _check_range(licks[key], f"behaviour.licks.{key}", fail)
    if float(licks["rate_hz"]["min"]) <= 0:
        fail("lick rates must be positive", "behaviour.licks.rate_hz.min")
    if float(licks["anticipatory_onset_s"]["max"]) >= float(sess["cue_reward_delay_s"]):
        fail(
            "anticipatory licks must start before the water",
            "behaviour.licks.anticipatory_onset_s.max",
            expected=f"below cue_reward_delay_s = {sess['cue_reward_delay_s']}",
        )
    if float(sess["cue_interval_s"]["min"]) <= float(sess["cue_reward_delay_s"]) + float(
        licks["consumption_bout_s"]["max"]
    ):
        fail(
            "cues come before the previous consumption ends",
            "behaviour.session.cue_interval_s.min",
            expected="more than cue_reward_delay_s + consumption_bout_s.max",
        )
    track_cfg = cfg["tracking"]
    for key in ("dropout_run_frames", "confidence_good", "confidence_low", "garbage_aperture"):
        _check_range(track_cfg[key], f"behaviour.tracking.{key}", fail)


# --------------------------------------------------------------------------- helpers


def _human_sites(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in scenario["sites"] if _is_human(s)]


def _mouse_sites(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in scenario["sites"] if _is_mouse(s)]


def _num(value: float, digits: int = 4) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _fmt(values: np.ndarray, digits: int, missing: str = "n/a") -> np.ndarray:
    """Fixed-point strings of ``values`` (``missing`` for NaN), negative zero written as 0."""
    values = np.asarray(values, dtype=float)
    clean = np.where(np.isnan(values), 0.0, values) + 0.0
    text = np.char.mod(f"%.{digits}f", np.round(clean, digits) + 0.0)
    zero = "0." + "0" * digits if digits else "0"
    text = np.where(text == "-" + zero, zero, text)
    return np.where(np.isnan(values), missing, text)


def _write_csv(path: Path, header: list[str], columns: list[np.ndarray]) -> None:
    """Write comma-separated columns of strings (LF line endings, final newline)."""
    body = columns[0].astype(str)
    for col in columns[1:]:
        body = np.char.add(np.char.add(body, ","), col.astype(str))
    text = ",".join(header) + "\n" + "".join(np.char.add(body, "\n").tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _plain(value: float) -> int | float:
    return int(value) if float(value) == int(value) else float(value)


@dataclass(frozen=True)
class EyeSubject:
    """Per-subject eyelid parameters (shared by the subject's two sessions)."""

    open_px: float
    reflex_peak: float
    level_dev: float


def eye_subject(
    scenario: dict[str, Any], site: dict[str, Any], label: str, species: str
) -> EyeSubject:
    """Draw the eyelid parameters of subject ``label`` (stream ``behaviour.subject.<label>``)."""
    eye = scenario["behaviour"]["eyelid"]
    rng = stream(int(scenario["seed"]), site["id"], f"behaviour.subject.{label}")
    opened = eye["open_aperture_px"][species]
    peak = eye["reflex_peak"]
    return EyeSubject(
        open_px=float(max(rng.normal(opened["mean"], opened["sd"]), 0.25 * opened["mean"])),
        reflex_peak=float(np.clip(rng.normal(peak["mean"], peak["sd"]), 0.0, 1.0)),
        level_dev=float(rng.normal(0.0, float(eye["sustained_subject_sd"]))),
    )


def eyelid_video(
    scenario: dict[str, Any],
    rng: np.random.Generator,
    times: np.ndarray,
    puffs: np.ndarray,
    subject: EyeSubject,
    condition: str,
    species: str,
) -> Tracked:
    """Tracker output at frame ``times`` (the puffs' clock) for one session.

    ``condition`` is ``control`` (human baseline, mouse saline) or ``ketamine``.
    """
    eye = scenario["behaviour"]["eyelid"]
    n = puffs.size
    peaks = np.clip(
        subject.reflex_peak + rng.normal(0.0, float(eye["reflex_peak_puff_sd"]), n), 0.0, 1.0
    )
    level = float(eye["sustained_level"][condition]) + subject.level_dev
    levels = np.clip(level + rng.normal(0.0, float(eye["sustained_puff_sd"]), n), 0.0, 0.95)
    c = closure(times, puffs, peaks, levels, eye, species)
    noisy = subject.open_px * (1.0 - c) + rng.normal(
        0.0, float(eye["tracking_noise_px"]), times.size
    )
    return track(rng, noisy, subject.open_px, scenario["behaviour"]["tracking"])


# --------------------------------------------------------------------------- humans


def _write_human(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    fs = int(site["ieeg"]["sampling_frequency"])
    eyelid = site["eyelid"]
    fps = float(eyelid["fps"])
    seed = int(scenario["seed"])
    for person in clinical.simulate_site(scenario, site):
        subject = eye_subject(scenario, site, person.label, "human")
        for visit, session, _ in person.sessions:
            sched = schedule(scenario, site, person.label, session, fs)
            puffs = sched.onsets.astype(float) / fs
            rng = stream(seed, site["id"], f"behaviour.eyelid.{person.label}.{session}")
            offset = eyelid["start_offset_s"]
            start = round(float(rng.uniform(offset["min"], offset["max"])), 3) + 0.0
            n_frames = int(np.floor((sched.duration_s - start) * fps))
            times = start + np.arange(n_frames) / fps
            condition = "ketamine" if visit == "ketamine" else "control"
            video = eyelid_video(scenario, rng, times, puffs, subject, condition, "human")
            base = site_dir / f"sub-{person.label}" / session / "beh"
            stem = f"sub-{person.label}_{session}_task-{TASK}_eyelid"
            _write_csv(
                base / f"{stem}.csv",
                ["frame", "aperture_px", "confidence"],
                [
                    np.arange(n_frames).astype(str),
                    _fmt(video.aperture, 2),
                    _fmt(video.confidence, 3),
                ],
            )
            write_json(
                base / f"{stem}.json",
                {
                    "SamplingFrequency": _plain(fps),
                    "StartTime": start,
                    "TrackingSoftware": eyelid["tracking_software"],
                    "Columns": ["frame", "aperture_px", "confidence"],
                    "frame": {"Description": "Video frame number, counted from 0"},
                    "aperture_px": {
                        "Description": "Lid-to-lid distance of the tracked eye (n/a: eye lost)",
                        "Units": "pixel",
                    },
                    "confidence": {"Description": "Tracker confidence, 0-1"},
                },
            )


# --------------------------------------------------------------------------- mice


@dataclass(frozen=True)
class Mouse:
    """One mouse of a lab and its two sessions."""

    label: str
    female: bool
    age_weeks: int
    sessions: tuple[tuple[str, str, dt.date], ...]  # (condition, session label, date)
    first_date: dt.date


@dataclass(frozen=True)
class MouseSession:
    """The events of one mouse session on the box clock (seconds from session start)."""

    cues: np.ndarray
    rewards: np.ndarray
    puffs: np.ndarray
    licks: np.ndarray
    end_s: float
    video_start_s: float
    drift: float


def simulate_mice(scenario: dict[str, Any], site: dict[str, Any]) -> list[Mouse]:
    """Draw a lab's mice: sex, age, session order and dates (stream ``behaviour.roster``)."""
    beh = site["behaviour"]
    n = int(beh["n_mice"])
    rng = stream(int(scenario["seed"]), site["id"], "behaviour.roster")
    female = rng.random(n) < float(beh["sex_female_fraction"])
    ages = rng.integers(int(beh["age_weeks"]["min"]), int(beh["age_weeks"]["max"]) + 1, n)
    saline_first = rng.random(n) < 0.5
    days = rng.integers(0, int(site["acq_window_days"]) + 1, n)
    start = dt.date.fromisoformat(site["acq_start"])
    gap = dt.timedelta(days=int(beh["session_gap_days"]))
    labels = site["session_labels"]
    mice = []
    for i in range(n):
        first = start + dt.timedelta(days=int(days[i]))
        order = CONDITIONS if saline_first[i] else CONDITIONS[::-1]
        sessions = tuple((cond, labels[cond], first + gap * k) for k, cond in enumerate(order))
        mice.append(
            Mouse(
                site["id_format"].format(n=i + 1),
                bool(female[i]),
                int(ages[i]),
                tuple(sorted(sessions, key=lambda s: CONDITIONS.index(s[0]))),
                first,
            )
        )
    return mice


def _uniform(rng: np.random.Generator, r: dict[str, Any], n: int | None = None) -> Any:
    return rng.uniform(float(r["min"]), float(r["max"]), n)


def anticipation(scenario: dict[str, Any], site: dict[str, Any], label: str) -> dict[str, float]:
    """Per-mouse anticipatory-lick probabilities (stream ``behaviour.mouse.<label>``).

    Keys ``pre`` (both sessions), ``saline`` and ``ketamine`` (after the train).
    """
    licks = scenario["behaviour"]["licks"]
    rng = stream(int(scenario["seed"]), site["id"], f"behaviour.mouse.{label}")
    pre = rng.normal(licks["anticipatory_pre"]["mean"], licks["anticipatory_pre"]["sd"])
    drop = rng.normal(licks["train_drop_saline"]["mean"], licks["train_drop_saline"]["sd"])
    factor = float(licks["ketamine_drop_factor"])

    def p(x: float) -> float:
        return float(np.clip(x, 0.02, 0.98))

    return {"pre": p(pre), "saline": p(pre - drop), "ketamine": p(pre - factor * drop)}


def simulate_session(
    scenario: dict[str, Any], site: dict[str, Any], label: str, session: str, condition: str
) -> MouseSession:
    """Draw the cues, puffs, licks and video clock of one mouse session."""
    cfg = scenario["behaviour"]
    sess, licks = cfg["session"], cfg["licks"]
    seed = int(scenario["seed"])
    rng = stream(seed, site["id"], f"behaviour.design.{label}.{session}")
    n_pre, n_post, n_puffs = int(sess["n_cues_pre"]), int(sess["n_cues_post"]), int(sess["n_puffs"])
    delay = float(sess["cue_reward_delay_s"])
    pre = float(sess["lead_s"]) + np.concatenate(
        [[0.0], np.cumsum(_uniform(rng, sess["cue_interval_s"], n_pre - 1))]
    )
    puffs = (pre[-1] + float(sess["train_gap_s"])) + np.concatenate(
        [[0.0], np.cumsum(_uniform(rng, sess["puff_interval_s"], n_puffs - 1))]
    )
    post = (puffs[-1] + float(sess["train_gap_s"])) + np.concatenate(
        [[0.0], np.cumsum(_uniform(rng, sess["cue_interval_s"], n_post - 1))]
    )
    cues = np.round(np.concatenate([pre, post]), 3)
    puffs = np.round(puffs, 3)
    rewards = np.round(cues + delay, 3)
    end = float(np.ceil(rewards[-1] + float(sess["tail_s"])))
    video_start = round(float(_uniform(rng, site["behaviour"]["video_offset_s"])), 3)
    drift = (
        float(_uniform(rng, site["behaviour"]["clock_drift"]))
        if site["behaviour"]["format"] == "dlc"
        else 0.0
    )

    probs = anticipation(scenario, site, label)
    lr = stream(seed, site["id"], f"behaviour.licks.{label}.{session}")
    p = np.where(np.arange(cues.size) < n_pre, probs["pre"], probs[condition])
    anticipatory = lr.random(cues.size) < p
    onset = cues + _uniform(lr, licks["anticipatory_onset_s"], cues.size)
    late = rewards + _uniform(lr, licks["consumption_latency_s"], cues.size)
    stops = rewards + _uniform(lr, licks["consumption_bout_s"], cues.size)
    starts = np.where(anticipatory, onset, late)
    n_spont = int(lr.poisson(float(licks["spontaneous_per_min"]) * end / 60.0))
    sp_start = lr.uniform(0.0, end, n_spont)
    sp_stop = sp_start + _uniform(lr, licks["spontaneous_bout_s"], n_spont)
    clash = (sp_start[:, None] <= stops[None, :] + 0.5) & (sp_stop[:, None] >= cues[None, :])
    keep = ~clash.any(axis=1)
    times = bouts(
        lr,
        np.concatenate([starts, sp_start[keep]]),
        np.concatenate([stops, sp_stop[keep]]),
        licks,
    )
    times = np.round(times[times < end], 4)
    return MouseSession(cues, rewards, puffs, np.unique(times), end, video_start, drift)


def mouse_canary(scenario: dict[str, Any], site: dict[str, Any], label: str) -> str:
    """The person-like name written into the NWB subject description of mouse ``label``."""
    digest = hashlib.sha256(f"{scenario['seed']}/{site['id']}/{label}".encode()).hexdigest()
    return f"{site['behaviour']['canary_name']}-{digest[:4]}"


def canaries(scenario: dict[str, Any]) -> list[str]:
    """Every name planted in an NWB subject description (must never reach an output)."""
    return [
        mouse_canary(scenario, site, m.label)
        for site in _mouse_sites(scenario)
        if site["behaviour"]["format"] == "nwb"
        for m in simulate_mice(scenario, site)
    ]


def _write_mice(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    beh = site["behaviour"]
    fps = float(beh["frame_rate_hz"])
    seed = int(scenario["seed"])
    mice = simulate_mice(scenario, site)
    write_tsv(
        site_dir / "participants.tsv",
        ["participant_id", "species", "strain", "sex", "age_weeks", "group"],
        [
            [
                f"sub-{m.label}",
                SPECIES_LATIN,
                beh["strain"],
                "F" if m.female else "M",
                str(m.age_weeks),
                "naive",
            ]
            for m in mice
        ],
        trailing_newline=bool(site["trailing_newline"]),
    )
    for mouse in mice:
        subject = eye_subject(scenario, site, mouse.label, "mouse")
        for condition, session, date in mouse.sessions:
            ev = simulate_session(scenario, site, mouse.label, session, condition)
            step = (1.0 + ev.drift) / fps
            n_frames = int(np.floor((ev.end_s - ev.video_start_s) / step))
            times = ev.video_start_s + np.arange(n_frames) * step
            rng = stream(seed, site["id"], f"behaviour.eyelid.{mouse.label}.{session}")
            eye_cond = "ketamine" if condition == "ketamine" else "control"
            video = eyelid_video(scenario, rng, times, ev.puffs, subject, eye_cond, "mouse")
            folder = site_dir / f"sub-{mouse.label}" / session
            stem = f"sub-{mouse.label}_{session}"
            if beh["format"] == "nwb":
                _write_nwb(scenario, site, mouse, session, date, ev, video, folder, stem)
            else:
                _write_dlc(scenario, site, mouse.label, session, ev, video, folder, stem)


def _write_nwb(
    scenario: dict[str, Any],
    site: dict[str, Any],
    mouse: Mouse,
    session: str,
    date: dt.date,
    ev: MouseSession,
    video: Tracked,
    folder: Path,
    stem: str,
) -> None:
    """One NWB file per session (contract layout); object ids derived from the scenario."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralEvents, BehavioralTimeSeries
    from pynwb.file import Subject

    beh = site["behaviour"]
    fps = float(beh["frame_rate_hz"])
    start = dt.datetime(date.year, date.month, date.day, int(beh["session_hour"]), tzinfo=dt.UTC)
    age_days = 7 * mouse.age_weeks + (date - mouse.first_date).days
    identifier = f"{site['id']}.{mouse.label}.{session}"
    nwb = NWBFile(
        session_description="Head-fixed reward cues, a train of air puffs to the eye, reward cues",
        identifier=identifier,
        session_start_time=start,
        file_create_date=[start],
        session_id=session,
        lab=site["trial"],
        subject=Subject(
            subject_id=mouse.label,
            species=SPECIES_LATIN,
            sex="F" if mouse.female else "M",
            age=f"P{age_days}D",
            strain=str(beh["strain"]),
            description=f"Surgery and handling: {mouse_canary(scenario, site, mouse.label)}",
        ),
    )
    module = nwb.create_processing_module("behavior", "Eyelid tracking and licking")
    eyelid = BehavioralTimeSeries(name="EyelidTracking")
    eyelid.add_timeseries(
        TimeSeries(
            name="eyelid_aperture",
            data=np.round(video.aperture, 2),
            unit="pixels",
            rate=fps,
            starting_time=ev.video_start_s,
            description="Lid-to-lid distance (NaN: eye lost)",
        )
    )
    eyelid.add_timeseries(
        TimeSeries(
            name="tracking_confidence",
            data=np.round(video.confidence, 3),
            unit="fraction",
            rate=fps,
            starting_time=ev.video_start_s,
            description="Tracker confidence, 0-1",
        )
    )
    module.add(eyelid)
    with warnings.catch_warnings():
        # The contract keeps licks in BehavioralEvents, which pynwb 3+ deprecates for new files.
        warnings.filterwarnings("ignore", message="BehavioralEvents is deprecated")
        licks = BehavioralEvents(name="Licks")
    licks.add_timeseries(
        TimeSeries(
            name="licks",
            data=np.ones(ev.licks.size, dtype=np.uint8),
            unit="n/a",
            timestamps=ev.licks,
            description="Lick contacts (lickometer)",
        )
    )
    module.add(licks)
    nwb.add_trial_column("trial_type", "puff (air puff to the eye) or cue (reward cue, water)")
    puff_stop = ev.puffs + float(scenario["behaviour"]["session"]["puff_duration_s"])
    starts = np.concatenate([ev.puffs, ev.cues])
    stops = np.round(np.concatenate([puff_stop, ev.rewards]), 4)
    kinds = np.array(["puff"] * ev.puffs.size + ["cue"] * ev.cues.size)
    order = np.argsort(starts, kind="stable")
    for i in order:
        nwb.add_trial(
            start_time=float(starts[i]), stop_time=float(stops[i]), trial_type=str(kinds[i])
        )
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"ketamap-synth/{scenario['seed']}/{identifier}")
    for k, obj in enumerate(nwb.all_children()):
        # hdmf draws random object ids (uuid4); fix them so the same scenario writes the same bytes
        obj._AbstractContainer__object_id = str(uuid.uuid5(namespace, str(k)))
    folder.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(folder / f"{stem}_behavior.nwb"), "w") as io:
        io.write(nwb)


def _write_dlc(
    scenario: dict[str, Any],
    site: dict[str, Any],
    label: str,
    session: str,
    ev: MouseSession,
    video: Tracked,
    folder: Path,
    stem: str,
) -> None:
    """DeepLabCut CSV plus the box logs (puffs with their LED frame, licks, cues)."""
    dlc = scenario["behaviour"]["dlc"]
    fps = float(site["behaviour"]["frame_rate_hz"])
    seed = int(scenario["seed"])
    mrng = stream(seed, site["id"], f"behaviour.mouse.{label}.eye")
    cx = float(_uniform(mrng, dlc["eye_x_px"]))
    cy = float(_uniform(mrng, dlc["eye_y_px"]))
    rng = stream(seed, site["id"], f"behaviour.dlcpoints.{label}.{session}")
    n = video.aperture.size
    sd = float(dlc["keypoint_sd_px"])
    width, height = (float(v) for v in dlc["frame_size_px"])
    tracking = scenario["behaviour"]["tracking"]
    good, low_c = tracking["confidence_good"], tracking["confidence_low"]
    jitter = rng.normal(0.0, sd, n)
    half = np.nan_to_num(video.aperture, nan=0.0) / 2.0
    ux, lx = cx + rng.normal(0.0, sd, n), cx + rng.normal(0.0, sd, n)
    uy, ly = cy + jitter - half, cy + jitter + half
    garbage = video.low
    gx = rng.uniform(0.0, width, (4, n))
    gy = rng.uniform(0.0, height, (4, n))
    ux, lx = np.where(garbage, gx[0], ux), np.where(garbage, gx[1], lx)
    uy = np.where(garbage, gy[0], uy)
    ly = np.where(garbage, gy[1], ly)
    ul = video.confidence
    ll = np.where(garbage, _uniform(rng, low_c, n), _uniform(rng, good, n))
    lost_upper = video.missing & (rng.random(n) < 0.5)
    lost_lower = video.missing & ~lost_upper
    cols: list[np.ndarray] = [np.arange(n).astype(str)]
    for (x, y, like), lost in (((ux, uy, ul), lost_upper), ((lx, ly, ll), lost_lower)):
        for values, digits in ((x, 3), (y, 3), (like, 4)):
            cols.append(_fmt(np.where(lost, np.nan, values), digits, missing=""))
    header = [
        ",".join(["scorer", *[DLC_SCORER] * 6]),
        ",".join(["bodyparts", *[p for p in DLC_PARTS for _ in range(3)]]),
        ",".join(["coords", *["x", "y", "likelihood"] * 2]),
    ]
    path = folder / f"{stem}_eyeDLC_resnet50_eyelidJan5shuffle1_200000.csv"
    body = cols[0]
    for col in cols[1:]:
        body = np.char.add(np.char.add(body, ","), col)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        ("\n".join(header) + "\n" + "".join(np.char.add(body, "\n").tolist())).encode("utf-8")
    )
    frames = np.round((ev.puffs - ev.video_start_s) * fps / (1.0 + ev.drift)).astype(np.int64)
    _write_csv(
        folder / f"{stem}_puffs.csv", ["time_s", "frame"], [_fmt(ev.puffs, 3), frames.astype(str)]
    )
    _write_csv(folder / f"{stem}_licks.csv", ["time_s"], [_fmt(ev.licks, 4)])
    _write_csv(
        folder / f"{stem}_cues.csv", ["cue_s", "reward_s"], [_fmt(ev.cues, 3), _fmt(ev.rewards, 3)]
    )


# --------------------------------------------------------------------------- writing


def write_site(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    """Write the eyelid files of a human iEEG site, or a whole mouse lab."""
    if _is_human(site):
        _write_human(scenario, site, site_dir)
    elif _is_mouse(site):
        _write_mice(scenario, site, site_dir)


# --------------------------------------------------------------------------- ground truth


def analysis_options(scenario: dict[str, Any]) -> dict[str, Any]:
    """The workflow options the behaviour truths assume: the reflex and sustained windows."""
    if not (_human_sites(scenario) or _mouse_sites(scenario)):
        return {}
    eye = scenario["behaviour"]["eyelid"]

    def pair(r: dict[str, float]) -> list[float]:
        return [float(r["min"]), float(r["max"])]

    return {
        "behaviour": {
            "reflex_window_s": pair(eye["reflex_window_s"]),
            "sustained_window_s": {sp: pair(w) for sp, w in eye["sustained_window_s"].items()},
        }
    }


def truth(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Pooled behaviour truths (population model values, not sample draws).

    - ``behaviour.reflex_blink`` / ``ketamine_minus_control`` per species: difference of the
      peak closure in the reflex window (0: the sustained plateau starts after that window).
    - ``behaviour.sustained_closure`` / ``ketamine_minus_control`` per species: difference of the
      mean closure over the species' sustained window; ``species_x_drug``: human minus mouse.
    - ``mouse.reward_seeking_after_train``: anticipatory-lick fraction, post-train minus
      pre-train per session type (``train_effect_saline``, ``train_effect_ketamine``) and their
      difference ``train_x_drug`` (ketamine minus saline).
    - ``cross_species.timing_signature`` (measure eyelid): ``ketamine_effect_fast`` (reflex) and
      ``ketamine_effect_slow`` (sustained) per species; with both species, measure hfb (human
      iEEG, relative change): fast-peak amplitude 0 and the slow phase's half-power width
      (:func:`ketamap.synth.ieeg.slow_width_change`, -0.474 for the defaults, not the planted
      factor - 1 = -0.45: ketamine scales the width, not the edges).
    """
    species = [
        sp
        for sp, sites in (("human", _human_sites(scenario)), ("mouse", _mouse_sites(scenario)))
        if sites
    ]
    if not species:
        return []
    cfg = scenario["behaviour"]
    eye = cfg["eyelid"]
    peak = float(eye["reflex_peak"]["mean"])
    ctrl = float(eye["sustained_level"]["control"])
    ket = float(eye["sustained_level"]["ketamine"])

    def entry(
        analysis: str,
        term: str,
        sp: str | None,
        value: float,
        measure: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        out = {
            "analysis": analysis,
            "term": term,
            "arm": None,
            "region": None,
            "region_group": None,
            "species": sp,
            "measure": measure,
            "value": round(float(value), 6) + 0.0,  # model integrals are exact to ~1e-8
            "unit": _FRACTION,
        }
        out.update(kw)
        return out

    entries = []
    slow: dict[str, float] = {}
    for sp in species:
        reflex_win = eye["reflex_window_s"]
        fast = window_peak(peak, ket, eye, sp, reflex_win) - window_peak(
            peak, ctrl, eye, sp, reflex_win
        )
        win = eye["sustained_window_s"][sp]
        slow[sp] = window_mean(peak, ket, eye, sp, win) - window_mean(peak, ctrl, eye, sp, win)
        entries.append(
            entry(
                "behaviour.reflex_blink",
                "ketamine_minus_control",
                sp,
                fast,
                estimand="peak closure in the reflex window, ketamine minus control session",
            )
        )
        entries.append(
            entry(
                "behaviour.sustained_closure",
                "ketamine_minus_control",
                sp,
                slow[sp],
                estimand="mean closure over the sustained window, ketamine minus control session",
            )
        )
        if len(species) == 2:  # the cross-species analysis needs both species
            entries.append(
                entry("cross_species.timing_signature", "ketamine_effect_fast", sp, fast, "eyelid")
            )
            entries.append(
                entry(
                    "cross_species.timing_signature", "ketamine_effect_slow", sp, slow[sp], "eyelid"
                )
            )
    if len(species) == 2:
        # Beside the eyelid: the human iEEG components as relative change (ketamine / baseline - 1)
        # of the fast-peak amplitude (unchanged) and of the slow-phase duration the reader measures,
        # the half-maximum width of the HFB power (see ieeg.slow_width_change).
        for term, value, what in (
            ("ketamine_effect_fast", 0.0, "fast-peak HFB amplitude, ketamine / baseline - 1"),
            (
                "ketamine_effect_slow",
                ieeg.slow_width_change(scenario),
                "slow-phase duration measured as the half-maximum width of the HFB power "
                "(planted half-amplitude width d times ketamine_duration_factor f, edges of "
                "width e unchanged: d - 2 asinh(1) e), ketamine / baseline - 1 = "
                "(f E[d] - 2 asinh(1) e) / (E[d] - 2 asinh(1) e) - 1",
            ),
        ):
            e = entry(
                "cross_species.timing_signature",
                term,
                "human",
                value,
                "hfb",
                estimand=f"human iEEG {what}",
            )
            e["unit"] = "relative change"
            entries.append(e)
    if len(slow) == 2:
        entries.append(
            entry(
                "behaviour.sustained_closure",
                "species_x_drug",
                None,
                slow["human"] - slow["mouse"],
                estimand="human minus mouse ketamine effect on the sustained closure",
            )
        )
    if "mouse" in species:
        licks = cfg["licks"]
        drop = float(licks["train_drop_saline"]["mean"])
        factor = float(licks["ketamine_drop_factor"])
        note = (
            "anticipatory-lick fraction (cues with a lick between cue and water), post-train "
            "minus pre-train epoch; population means (the [0.02, 0.98] clip of per-mouse "
            "probabilities ignored)"
        )
        for term, value in (
            ("train_effect_saline", -drop),
            ("train_effect_ketamine", -factor * drop),
            ("train_x_drug", drop * (1.0 - factor)),
        ):
            entries.append(
                entry("mouse.reward_seeking_after_train", term, "mouse", value, estimand=note)
            )
    return entries
