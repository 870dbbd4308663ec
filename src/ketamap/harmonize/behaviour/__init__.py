"""Behaviour reader and harmonizer: eyelid video and lick logs -> puff, timecourse and reward tables.

read -> harmonize -> table, like the other modalities: :func:`harmonize_site` reads every session
of one site (docs/site_data.md, behaviour part) and returns the rows of ``behaviour_puffs``,
``behaviour_timecourses``, ``reward_seeking`` and ``reward_cues`` with pseudonymous ids. Formats
are read in :mod:`ketamap.behaviour_read`.

Decisions:

* Sources. Humans (``modality: ieeg``, ``reader.eyelid: true``): ``beh/*_task-puff_eyelid.csv``
  + JSON sidecar, frame time = StartTime + frame / SamplingFrequency, puffs = ``trial_type puff``
  onsets of the session's iEEG ``_events.tsv``. Mice, ``reader.format: nwb``: one
  ``*_behavior.nwb`` per session. Mice, ``reader.format: dlc``: DeepLabCut keypoints, aperture =
  upper-lower eyelid distance, frames on the box clock through a linear fit of the puff log
  (``time_s`` on ``frame``); a fitted rate more than ``fps_tolerance`` off
  ``reader.frame_rate_hz`` is an error.
* A frame passes the tracking checks when its aperture (or both keypoints) is present and its
  confidence (or both likelihoods) is >= ``likelihood_cutoff``. A session where no frame passes is
  an error.
* Per puff, on frames from ``baseline_s[0]`` to the end of the sustained window, cut at the next
  puff's onset so consecutive puffs do not contaminate each other: open aperture = median of
  tracked baseline frames; closure = 1 - aperture / open; reflex closure = max in
  ``reflex_window_s``; reflex blink = closure >= ``blink_threshold`` there; latency = first
  crossing by linear interpolation from the previous tracked frame (when it is below threshold and
  at most 2.5 frames back; otherwise the crossing frame's time); sustained closure = mean over
  ``sustained_window_s`` (by species). A window with fewer than ``min_tracked_fraction`` of its
  expected frames tracked gives a missing measure (reflex blink missing too, never False);
  expected frames = max(frames present, floor(duration x frame rate)).
* Integrity: every puff's window (onset to the end of the sustained window, cut at the next puff)
  must lie inside the tracking, else the file is truncated or the clocks disagree: an error naming
  the last frame present and the frames expected. Likelihoods and confidences must be 0-1 (a
  0-100 scale is an error, not rescaled: the cutoff is a probability and the scale is a guess).
  The human video's SamplingFrequency must agree (``fps_tolerance``) with its frames over the iEEG
  recording (``RecordingDuration`` of the run's ``_ieeg.json``). Frame numbers missing from a
  tracking file and an NWB rate that differs from ``reader.frame_rate_hz`` are recorded in
  ``method``.
* ``tracking_quality`` = tracked / expected frames over the whole (cut) puff window;
  ``frames_dropped`` = expected - tracked.
* Timecourses: tracked apertures linearly interpolated onto puff + ``timecourse_s`` at 100 Hz
  (not across gaps of more than 2.5 frames), closure against the puff's own open aperture, masked
  from the next puff's onset on; the mean over puffs, ``n_puffs`` = puffs with a value there.
* Reward (mice): pre_train = session start (NWB; the first cue on a box clock) to the first puff;
  post_train = last puff to the water of the last cue. Licks in [start, end); bouts split at gaps
  >= ``bout_gap_s``; cues with onset in the epoch; anticipatory = >= 1 lick in [cue, water).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ketamap.config import with_defaults
from ketamap.errors import ConfigError, SiteDataError
from ketamap.harmonize.behaviour import read as br
from ketamap.harmonize.bids import SessionResolver, puff_onsets, session_files
from ketamap.harmonize.scatter import Piece, pair_by_condition
from ketamap.ids import pseudonymize
from ketamap.io import read_json, read_tsv, shown_path
from ketamap.limits import check_size
from ketamap.schemas import get_table, load_columns

__all__ = [
    "BehaviourTables",
    "EyeTrace",
    "check_coverage",
    "closure_timecourse",
    "harmonize_site",
    "puff_measures",
    "reward_measures",
]

log = logging.getLogger(__name__)

GRID_HZ = 100
EYELID_PARTS = ("upper_eyelid", "lower_eyelid")
MAX_GAP_FRAMES = 2.5
EPS = 1e-9
TABLES = {
    "puffs": "behaviour_puffs",
    "timecourses": "behaviour_timecourses",
    "reward": "reward_seeking",
    "cues": "reward_cues",
}
INT_COLUMNS = {
    "puff_index": "int16",
    "frames_dropped": "int32",
    "n_puffs": "int32",
    "n_bouts": "int32",
    "n_cues": "int32",
    "cue_index": "int16",
    "anticipatory_licks": "int32",
}
BOOL_COLUMNS = {"reflex_blink": "boolean", "anticipatory": "bool"}  # boolean: may be missing


@dataclass(frozen=True)
class BehaviourTables:
    """The harmonized rows one site contributes (empty reward/cues frames for human sites)."""

    puffs: pd.DataFrame
    timecourses: pd.DataFrame
    reward: pd.DataFrame
    cues: pd.DataFrame


@dataclass
class EyeTrace:
    """One session's eyelid video on the session clock."""

    times_s: np.ndarray
    aperture_px: np.ndarray  # NaN where the frame failed the checks
    passed: np.ndarray  # bool per frame
    frame_rate_hz: float
    source: str
    frames: np.ndarray | None = None  # the file's frame (or sample) numbers, for messages


# ------------------------------------------------------------------------------------ options
def _check_options(opts: dict[str, Any]) -> dict[str, Any]:
    where = {"file": "config/config.yaml"}

    def pair(value: Any, name: str) -> tuple[float, float]:
        try:
            a, b = float(value[0]), float(value[1])
            ok = len(value) == 2 and a < b
        except (TypeError, ValueError, IndexError, KeyError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{name} {value!r}",
                field=f"behaviour.{name}",
                expected="[start, end] with start < end",
                **where,
            )
        return a, b

    def fraction(name: str, lo_open: bool = False) -> float:
        try:
            v = float(opts[name])
            ok = (v > 0 if lo_open else v >= 0) and v <= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{name} {opts[name]!r}",
                field=f"behaviour.{name}",
                expected="a number in [0, 1]",
                **where,
            )
        return v

    out = dict(opts)
    for name in ("baseline_s", "reflex_window_s", "timecourse_s"):
        out[name] = pair(opts[name], name)
    sustained = opts["sustained_window_s"]
    if isinstance(sustained, dict):
        out["sustained_window_s"] = {
            sp: pair(sustained.get(sp), f"sustained_window_s.{sp}") for sp in ("human", "mouse")
        }
    else:
        both = pair(sustained, "sustained_window_s")
        out["sustained_window_s"] = {"human": both, "mouse": both}
    if out["baseline_s"][1] > out["reflex_window_s"][0]:
        raise ConfigError(
            "the baseline overlaps the reflex window",
            field="behaviour.baseline_s",
            expected=f"a window ending before reflex_window_s {list(out['reflex_window_s'])}",
            **where,
        )
    out["likelihood_cutoff"] = fraction("likelihood_cutoff")
    out["blink_threshold"] = fraction("blink_threshold", lo_open=True)
    out["min_tracked_fraction"] = fraction("min_tracked_fraction")
    out["fps_tolerance"] = fraction("fps_tolerance", lo_open=True)
    try:
        out["bout_gap_s"] = float(opts["bout_gap_s"])
        ok = out["bout_gap_s"] > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"bout_gap_s {opts['bout_gap_s']!r}",
            field="behaviour.bout_gap_s",
            expected="a positive number of seconds",
            **where,
        )
    return out


def method_text(opts: dict[str, Any], species: str, source: str) -> str:
    """The ``method`` column: windows, cutoff, threshold and source of a puff row."""

    def w(pair: tuple[float, float]) -> str:
        return f"[{pair[0]:g}, {pair[1]:g}] s"

    return (
        f"eyelid closure = 1 - aperture / open aperture (median of tracked frames in baseline "
        f"{w(opts['baseline_s'])}); reflex window {w(opts['reflex_window_s'])} (max closure; "
        f"blink at closure >= {opts['blink_threshold']:g}, latency by linear interpolation); "
        f"sustained window {w(opts['sustained_window_s'][species])} (mean closure); frames kept at "
        f"likelihood/confidence >= {opts['likelihood_cutoff']:g}; windows cut at the next puff; "
        f"measure missing below {opts['min_tracked_fraction']:g} tracked frames; source: {source}"
    )


# ------------------------------------------------------------------------------------ measures
def _expected(present: np.ndarray, lo: np.ndarray, hi: np.ndarray, fps: float) -> np.ndarray:
    width = np.clip(hi - lo, 0, None)
    return np.maximum(present, np.floor(width * fps + 1e-6).astype(int))


def puff_measures(
    trace: EyeTrace, puffs_s: np.ndarray, opts: dict[str, Any], species: str
) -> pd.DataFrame:
    """Per-puff eyelid measures (one row per puff, in time order; ``opts`` already checked).

    Vectorized over puffs and frames: an index matrix (puffs x frames of the longest window).
    """
    puffs = np.sort(np.asarray(puffs_s, dtype=float))
    times, aperture, passed = trace.times_s, trace.aperture_px, trace.passed
    fps = float(trace.frame_rate_hz)
    b0, b1 = opts["baseline_s"]
    r0, r1 = opts["reflex_window_s"]
    s0, s1 = opts["sustained_window_s"][species]
    thr = float(opts["blink_threshold"])
    min_frac = float(opts["min_tracked_fraction"])
    n_p = puffs.size
    nxt = np.append(puffs[1:], np.inf)
    cut = np.minimum(s1, nxt - puffs)  # window end relative to the puff, cut at the next one

    i0 = np.searchsorted(times, puffs + b0 - EPS, "left")
    i1 = np.searchsorted(times, puffs + cut + EPS, "right")
    width = max(int((i1 - i0).max(initial=0)), 1)
    idx = i0[:, None] + np.arange(width)[None, :]
    valid = idx < i1[:, None]
    idx = np.minimum(idx, max(times.size - 1, 0))
    rel = times[idx] - puffs[:, None]
    valid &= rel < (nxt - puffs)[:, None]
    ok = valid & passed[idx]
    ap = np.where(ok, aperture[idx], np.nan)

    def window(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        inside = valid & (rel >= lo - EPS) & (rel <= hi + EPS)
        end = np.minimum(hi, cut)
        expected = _expected(inside.sum(axis=1), np.full(n_p, lo), end, fps)
        tracked = (inside & ok).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(expected > 0, tracked / np.maximum(expected, 1), 0.0)
        return inside & ok, (frac >= min_frac) & (tracked > 0)

    base, base_ok = window(b0, b1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN
        open_px = np.nanmedian(np.where(base, ap, np.nan), axis=1) if n_p else np.zeros(0)
    open_px = np.where(base_ok & (open_px > 0), open_px, np.nan)
    closure = 1.0 - ap / open_px[:, None]
    closure = np.where(ok & np.isfinite(open_px)[:, None], closure, np.nan)

    refl, refl_ok = window(r0, r1)
    refl &= np.isfinite(closure)
    refl_ok &= np.isfinite(open_px)
    has = refl.any(axis=1) & refl_ok
    reflex = np.where(has, np.max(np.where(refl, closure, -np.inf), axis=1), np.nan)
    hit = refl & (closure >= thr)
    blink = hit.any(axis=1) & has
    j = np.argmax(hit, axis=1)
    rows = np.arange(n_p)
    pos = np.where(np.isfinite(closure), np.arange(width)[None, :], -1)
    prev_all = np.maximum.accumulate(pos, axis=1)
    prev = np.where(j > 0, prev_all[rows, np.maximum(j - 1, 0)], -1)
    t_j = rel[rows, j]
    c_j = closure[rows, j]
    pp = np.maximum(prev, 0)
    t_p, c_p = rel[rows, pp], closure[rows, pp]
    interp = (prev >= 0) & (c_p < thr) & (t_j - t_p <= MAX_GAP_FRAMES / fps + EPS)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_cross = t_p + (thr - c_p) / (c_j - c_p) * (t_j - t_p)
    latency = np.where(interp, np.maximum(t_cross, r0), t_j)
    latency = np.where(blink, latency, np.nan)

    sus, sus_ok = window(s0, s1)
    sus &= np.isfinite(closure)
    sus_ok &= np.isfinite(open_px)
    n_sus = sus.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sustained = np.where(sus, closure, 0.0).sum(axis=1) / n_sus
    sustained = np.where(sus_ok & (n_sus > 0), sustained, np.nan)

    expected_all = _expected(valid.sum(axis=1), np.full(n_p, b0), cut, fps)
    tracked_all = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(expected_all > 0, tracked_all / np.maximum(expected_all, 1), 0.0)
    return pd.DataFrame(
        {
            "puff_index": np.arange(1, n_p + 1),
            "puff_time_s": puffs,
            "reflex_closure": reflex,
            "reflex_blink": pd.arrays.BooleanArray(blink.astype(bool), ~has),
            "reflex_latency_s": latency,
            "sustained_closure": sustained,
            "open_aperture_px": open_px,
            "tracking_quality": np.clip(quality, 0.0, 1.0),
            "frames_dropped": np.maximum(expected_all - tracked_all, 0),
            "frame_rate_hz": fps,
        }
    )


def check_coverage(
    trace: EyeTrace,
    puffs_s: np.ndarray,
    opts: dict[str, Any],
    species: str,
    *,
    where: dict[str, Any],
    field: str,
) -> None:
    """Raise when a puff's window (onset to the end of the sustained window, cut at the next puff)
    is not inside the tracking: a truncated file, or puffs on another clock."""
    puffs = np.sort(np.asarray(puffs_s, dtype=float))
    times = trace.times_s
    if not puffs.size or not times.size:
        return
    fps = float(trace.frame_rate_hz)
    frames = trace.frames if trace.frames is not None else np.arange(times.size)
    nxt = np.append(puffs[1:], np.inf)
    end = puffs + np.minimum(opts["sustained_window_s"][species][1], nxt - puffs)
    slack = 1.5 / fps
    late = np.flatnonzero(end > times[-1] + slack)
    early = np.flatnonzero(puffs < times[0] - slack)
    if not late.size and not early.size:
        return
    if late.size:
        k = int(late[0])
        need = int(np.ceil(frames[-1] + (end[k] - times[-1]) * fps - 1e-6))
        problem = (
            f"the tracking ends at frame {int(frames[-1])} ({times[-1]:.3f} s), but puff {k + 1} "
            f"of {puffs.size} at {puffs[k]:.3f} s needs frames up to {need} ({end[k]:.3f} s); "
            f"{late.size} puff(s) not covered"
        )
        expected = f"frames {int(frames[0])}-{need} or more"
    else:
        k = int(early[0])
        problem = (
            f"puff {k + 1} at {puffs[k]:.3f} s is before the first frame "
            f"{int(frames[0])} ({times[0]:.3f} s)"
        )
        expected = "every puff inside the tracking"
    raise SiteDataError(
        problem,
        field=field,
        expected=expected,
        hint="check the file is complete (not cut short) and on the puffs' clock (frame rate, "
        "start time)",
        **where,
    )


def frame_gap_note(frames: np.ndarray) -> str:
    """A ``method`` note when frame numbers are missing between the first and last (counted as
    dropped frames), empty otherwise."""
    frames = np.asarray(frames)
    missing = int(frames[-1] - frames[0] + 1 - frames.size) if frames.size else 0
    return f"; warning: {missing} frame numbers missing from the tracking file" if missing else ""


def closure_timecourse(
    trace: EyeTrace, puffs_s: np.ndarray, open_px: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Closure of each puff on the common 100 Hz grid: (grid times, puffs x times matrix).

    Tracked apertures are interpolated linearly (not across gaps over 2.5 frames), divided by the
    puff's open aperture and masked from the next puff's onset on.
    """
    t0, t1 = opts["timecourse_s"]
    grid = np.round(np.arange(round(t0 * GRID_HZ), round(t1 * GRID_HZ) + 1) / GRID_HZ, 2)
    puffs = np.sort(np.asarray(puffs_s, dtype=float))
    t_ok = trace.times_s[trace.passed]
    a_ok = trace.aperture_px[trace.passed]
    if t_ok.size == 0 or puffs.size == 0:
        return grid, np.full((puffs.size, grid.size), np.nan)
    g = puffs[:, None] + grid[None, :]
    right = np.searchsorted(t_ok, g, "right")
    left = right - 1
    lc, rc = np.clip(left, 0, t_ok.size - 1), np.clip(right, 0, t_ok.size - 1)
    tl, tr, al, ar = t_ok[lc], t_ok[rc], a_ok[lc], a_ok[rc]
    exact = (left >= 0) & (np.abs(g - tl) <= EPS)
    # A grid point a rounding error before a tracked frame is on that frame (as in puff_measures),
    # even when a gap precedes it.
    exact_right = ~exact & (right < t_ok.size) & (np.abs(tr - g) <= EPS)
    between = (left >= 0) & (right < t_ok.size) & (tr - tl <= MAX_GAP_FRAMES / trace.frame_rate_hz)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(exact, al, al + (ar - al) * (g - tl) / (tr - tl))
    value = np.where(exact_right, ar, value)
    value = np.where(exact | exact_right | between, value, np.nan)
    nxt = np.append(puffs[1:], np.inf)
    value = np.where(g < nxt[:, None], value, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        closure = 1.0 - value / np.asarray(open_px, dtype=float)[:, None]
    return grid, closure


def reward_measures(
    licks_s: np.ndarray,
    cues_s: np.ndarray,
    water_s: np.ndarray,
    puffs_s: np.ndarray,
    *,
    session_start_s: float | None,
    bout_gap_s: float,
    where: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Epoch rows (pre_train, post_train) and per-cue rows of one mouse session."""
    where = {k: v for k, v in where.items() if k != "field"}  # each check names its own field
    licks = np.asarray(licks_s, dtype=float)
    cues = np.asarray(cues_s, dtype=float)
    water = np.asarray(water_s, dtype=float)
    first, last = float(np.min(puffs_s)), float(np.max(puffs_s))
    if cues.size == 0:
        raise SiteDataError(
            "no reward cues", expected="reward cues before and after the puff train", **where
        )
    bad = np.flatnonzero(water < cues)
    if bad.size:
        raise SiteDataError(
            f"water at {water[bad[0]]:g} s before its cue at {cues[bad[0]]:g} s",
            field="reward_s",
            expected="water after its cue",
            **where,
        )
    pre = cues < first
    post = cues >= last
    if not pre.any() or not post.any():
        raise SiteDataError(
            f"no reward cues {'before' if not pre.any() else 'after'} the puff train "
            f"({first:g}-{last:g} s)",
            field="cue_s",
            expected="a pre-train and a post-train epoch of reward cues",
            **where,
        )
    start = float(session_start_s) if session_start_s is not None else float(cues[pre].min())
    start = min(start, float(cues[pre].min()))
    epochs = [
        ("pre_train", start, first, pre),
        ("post_train", last, float(water[post].max()), post),
    ]
    lo = np.searchsorted(licks, cues, "left")
    hi = np.searchsorted(licks, water, "left")
    antic = (hi - lo).astype(int)
    rows = []
    for name, e0, e1, in_epoch in epochs:
        inside = licks[(licks >= e0) & (licks < e1)]
        n_bouts = int(inside.size > 0) + int(np.sum(np.diff(inside) >= bout_gap_s))
        dur = e1 - e0
        rows.append(
            {
                "epoch": name,
                "epoch_start_s": e0,
                "epoch_end_s": e1,
                "licks_per_min": inside.size / (dur / 60.0) if dur > 0 else 0.0,
                "n_bouts": n_bouts,
                "n_cues": int(in_epoch.sum()),
                "anticipatory_fraction": float(np.mean(antic[in_epoch] > 0)),
            }
        )
    cue_rows = pd.DataFrame(
        {
            "cue_index": np.arange(1, cues.size + 1),
            "cue_s": cues,
            "time_from_train_s": cues - first,
            "anticipatory_licks": antic,
            "anticipatory": antic > 0,
        }
    )
    return pd.DataFrame(rows), cue_rows


# ------------------------------------------------------------------------------------ sessions
@dataclass
class _Session:
    participant_id: str
    session_id: str
    folder: Path
    path: Path  # the file that defines the session
    shown: str


@dataclass
class _SessionData:
    trace: EyeTrace
    puffs_s: np.ndarray
    licks_s: np.ndarray | None = None
    cues_s: np.ndarray | None = None
    water_s: np.ndarray | None = None
    session_start_s: float | None = None
    reward_where: dict[str, Any] | None = None


def _read_ids(site_id: str, root: Path) -> list[str]:
    path = root / "participants.tsv"
    df = read_tsv(path, site=site_id, root=root, required=["participant_id"])
    ids = df["participant_id"]
    where = {"site": site_id, "file": "participants.tsv", "field": "participant_id"}
    if ids.isna().any():
        raise SiteDataError("empty participant_id", expected="sub-<label> on every row", **where)
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        raise SiteDataError(
            f"duplicate subject ids {dupes[:5]}", expected="each participant listed once", **where
        )
    return [str(v) for v in ids]


def _sessions(
    site_id: str,
    root: Path,
    datatype: str | None,
    pattern: str,
    suffixes: tuple[str, ...] | None = None,
    only: tuple[str, str] | None = None,
) -> list[_Session]:
    return [
        _Session(
            f.participant_id, f.session_id, root / f.participant_id / f.session_id, f.path, f.shown
        )
        for f in session_files(site_id, root, datatype, (pattern,), only=only)
        if suffixes is None or f.path.suffix.lower() in suffixes
    ]


def _read_human(sess: _Session, site_id: str, root: Path, opts: dict[str, Any]) -> _SessionData:
    frames, fps, _start = br.read_eyelid_csv(sess.path, site=site_id, root=root)
    where = {"site": site_id, "file": sess.shown}
    ap = frames["aperture_px"].to_numpy()
    conf = frames["confidence"].to_numpy()
    with np.errstate(invalid="ignore"):
        passed = np.isfinite(ap) & (conf >= opts["likelihood_cutoff"])
    times = frames["time_s"].to_numpy()
    if not passed.any():
        raise SiteDataError(
            f"all {passed.size} frames fail the tracking checks",
            field="confidence",
            expected=f"confidence >= {opts['likelihood_cutoff']:g} and an aperture_px",
            **where,
        )
    frame_numbers = frames["frame"].to_numpy()
    trace = EyeTrace(
        times,
        np.where(passed, ap, np.nan),
        passed,
        fps,
        "bedside eyelid CSV" + frame_gap_note(frame_numbers),
        frame_numbers,
    )
    ieeg_dir = sess.folder / "ieeg"
    events = sorted(ieeg_dir.glob(f"{sess.participant_id}_{sess.session_id}_task-puff*_events.tsv"))
    if not events:
        raise SiteDataError(
            "no iEEG events file for this eyelid video",
            site=site_id,
            file=shown_path(ieeg_dir, root),
            field="trial_type",
            expected=f"{sess.participant_id}_{sess.session_id}_task-puff_run-01_events.tsv with puff onsets",
        )
    if len(events) > 1:
        raise SiteDataError(
            f"{len(events)} events files for one eyelid video",
            site=site_id,
            file=shown_path(events[1], root),
            expected="one puff run per session",
        )
    _check_video_rate(sess, events[0], frame_numbers, fps, _start, site_id, root, opts)
    puffs = puff_onsets(events[0], site_id, root)
    check_coverage(trace, puffs, opts, "human", where=where, field="frame")
    return _SessionData(trace=trace, puffs_s=puffs)


def _check_video_rate(
    sess: _Session,
    events: Path,
    frames: np.ndarray,
    fps: float,
    start: float,
    site_id: str,
    root: Path,
    opts: dict[str, Any],
) -> None:
    """The eyelid sidecar's SamplingFrequency against the video's own extent: the bedside video
    records the iEEG run, so its frames span the run (``RecordingDuration`` of the run's
    ``_ieeg.json``) from ``StartTime``; a wrong rate stretches or squeezes every frame time."""
    sidecar = events.with_name(events.name.replace("_events.tsv", "_ieeg.json"))
    if not sidecar.is_file():
        return
    check_size(sidecar, "json", site=site_id, file=shown_path(sidecar, root))
    duration: Any = read_json(sidecar, site=site_id, root=root).get("RecordingDuration")
    try:
        span = float(duration) - start
    except (TypeError, ValueError):
        return
    if not (np.isfinite(span) and span > 0):
        return
    implied = (float(frames[-1]) + 1.0) / span
    if abs(implied - fps) > opts["fps_tolerance"] * fps:
        jshown = shown_path(sess.path.with_suffix(".json"), root)
        raise SiteDataError(
            f"SamplingFrequency {fps:g} Hz, but the {int(frames[-1]) + 1} frames of "
            f"{sess.shown} span the iEEG recording (RecordingDuration {float(duration):g} s in "
            f"{shown_path(sidecar, root)}, video StartTime {start:g} s) at {implied:.4g} Hz "
            "(a wrong SamplingFrequency, or an eyelid CSV cut short)",
            site=site_id,
            file=jshown,
            field="SamplingFrequency",
            expected=f"the video's frame rate, within {opts['fps_tolerance']:.0%} of {implied:.4g} Hz",
            hint="correct SamplingFrequency in the eyelid sidecar, or send the whole eyelid CSV",
        )


def _read_nwb(
    sess: _Session, site_id: str, root: Path, opts: dict[str, Any], reader: dict[str, Any]
) -> _SessionData:
    rate = reader.get("frame_rate_hz")
    data = br.read_behaviour_nwb(
        sess.path, site=site_id, root=root, frame_rate_hz=float(rate) if rate else None
    )
    where = {"site": site_id, "file": sess.shown}
    note = ""
    if rate and abs(data.frame_rate_hz - float(rate)) > opts["fps_tolerance"] * float(rate):
        note = (
            f"; warning: NWB frame rate {data.frame_rate_hz:.4g} Hz differs from "
            f"reader.frame_rate_hz {float(rate):.4g} Hz (the file's clock used)"
        )
        log.warning("%s: %s", sess.shown, note[2:])
    with np.errstate(invalid="ignore"):
        passed = np.isfinite(data.aperture_px) & (data.confidence >= opts["likelihood_cutoff"])
    field = "processing/behavior/EyelidTracking/tracking_confidence"
    if not passed.any():
        raise SiteDataError(
            f"all {passed.size} frames fail the tracking checks",
            field=field,
            expected=f"confidence >= {opts['likelihood_cutoff']:g}",
            **where,
        )
    if data.puffs_s.size == 0:
        raise SiteDataError(
            "no puffs", field="trials/trial_type", expected="trials with trial_type puff", **where
        )
    trace = EyeTrace(
        data.times_s,
        np.where(passed, data.aperture_px, np.nan),
        passed,
        data.frame_rate_hz,
        data.source + note,
    )
    check_coverage(
        trace,
        data.puffs_s,
        opts,
        "mouse",
        where=where,
        field="processing/behavior/EyelidTracking/eyelid_aperture",
    )
    return _SessionData(
        trace=trace,
        puffs_s=data.puffs_s,
        licks_s=data.licks_s,
        cues_s=data.cues_s,
        water_s=data.water_s,
        session_start_s=0.0,
        reward_where={**where, "field": "trials"},
    )


def _one(folder: Path, pattern: str, site_id: str, root: Path, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SiteDataError(
            f"missing {what}",
            site=site_id,
            file=shown_path(folder / pattern, root),
            expected=f"{what} in {shown_path(folder, root)} (docs/site_data.md, DeepLabCut habit)",
        )
    if len(found) > 1:
        raise SiteDataError(
            f"{len(found)} files for {what}",
            site=site_id,
            file=shown_path(found[1], root),
            expected=f"one {what} per session",
        )
    return found[0]


def _read_dlc_session(
    sess: _Session, site_id: str, root: Path, opts: dict[str, Any], reader: dict[str, Any]
) -> _SessionData:
    stem = f"{sess.participant_id}_{sess.session_id}"
    folder = sess.folder
    declared = reader.get("frame_rate_hz")
    where = {"site": site_id, "file": sess.shown}
    if not declared or not float(declared) > 0:
        raise ConfigError(
            "a DeepLabCut lab needs its video frame rate",
            file="config/config.yaml",
            field=f"sites[{site_id}].reader.frame_rate_hz",
            expected="the video frame rate in Hz",
        )
    declared = float(declared)
    pose = br.read_dlc(sess.path, site=site_id, root=root, bodyparts=list(EYELID_PARTS))
    aperture, passed = br.keypoint_distance(pose, where=where, cutoff=opts["likelihood_cutoff"])
    if not passed.any():
        raise SiteDataError(
            f"all {passed.size} frames fail the likelihood cutoff {opts['likelihood_cutoff']:g}",
            field="upper_eyelid/likelihood, lower_eyelid/likelihood",
            expected="frames with both eyelid likelihoods >= likelihood_cutoff",
            **where,
        )
    frames = pose.index.to_numpy(dtype=float)

    ppath = _one(folder, f"{stem}_puffs.csv", site_id, root, "the puff log")
    pshown = shown_path(ppath, root)
    puffs = br.read_event_log(ppath, ["time_s", "frame"], site=site_id, root=root, what="puffs")
    pt, pf = puffs["time_s"].to_numpy(), puffs["frame"].to_numpy()
    br.check_increasing(pt, strict=True, site=site_id, file=pshown, field="time_s", what="puffs")
    br.check_increasing(pf, strict=True, site=site_id, file=pshown, field="frame", what="frames")
    if pt.size >= 2:
        slope, intercept = np.polyfit(pf, pt, 1)
        fitted = 1.0 / slope
    else:
        fitted, intercept = declared, pt[0] - pf[0] / declared
    if abs(fitted - declared) > opts["fps_tolerance"] * declared:
        raise SiteDataError(
            f"the puff log implies a video rate of {fitted:.4g} Hz (frame vs time_s) but "
            f"reader.frame_rate_hz is {declared:g} Hz",
            site=site_id,
            file=pshown,
            field="frame",
            expected=f"a rate within {opts['fps_tolerance']:.0%} of {declared:g} Hz",
            hint="check sites[].reader.frame_rate_hz or the puff log",
        )
    times = intercept + frames / fitted
    trace = EyeTrace(
        times,
        aperture,
        passed,
        float(fitted),
        f"DeepLabCut upper_eyelid-lower_eyelid distance, box clock by puff-log fit "
        f"(declared {declared:g} fps)" + frame_gap_note(frames),
        frames,
    )
    check_coverage(trace, pt, opts, "mouse", where=where, field="frame")
    lpath = _one(folder, f"{stem}_licks.csv", site_id, root, "the lick log")
    licks = br.read_event_log(lpath, ["time_s"], site=site_id, root=root, what="licks")
    lt = licks["time_s"].to_numpy()
    br.check_increasing(
        lt, strict=False, site=site_id, file=shown_path(lpath, root), field="time_s", what="licks"
    )
    cpath = _one(folder, f"{stem}_cues.csv", site_id, root, "the cue log")
    cues = br.read_event_log(cpath, ["cue_s", "reward_s"], site=site_id, root=root, what="cues")
    cshown = shown_path(cpath, root)
    cue = cues["cue_s"].to_numpy()
    br.check_increasing(cue, strict=True, site=site_id, file=cshown, field="cue_s", what="cues")
    return _SessionData(
        trace=trace,
        puffs_s=pt,
        licks_s=lt,
        cues_s=cue,
        water_s=cues["reward_s"].to_numpy(),
        session_start_s=None,
        reward_where={"site": site_id, "file": cshown},
    )


# ------------------------------------------------------------------------------------ the site
@dataclass
class _Site:
    """What every job of one behaviour site needs before it reads a session."""

    site_id: str
    species: str
    reader: dict[str, Any]
    opts: dict[str, Any]
    resolve: SessionResolver


@dataclass
class _Result:
    """One session's rows: ``frames`` holds ``puffs`` and ``timecourses``, and ``reward`` and
    ``cues`` for a session with a lick log."""

    pid: str
    condition: str
    frames: dict[str, pd.DataFrame]


def _site(site: dict, root: Path, key: bytes, options: dict | None) -> _Site:
    site_id = site["id"]
    species = site.get("species")
    opts = _check_options(with_defaults(options, "behaviour"))
    reader: dict[str, Any] = site.get("reader") or {}
    cfg = {"file": "config/config.yaml"}
    if species not in ("human", "mouse"):
        raise ConfigError(
            f"species {species!r}",
            field=f"sites[{site_id}].species",
            expected="human or mouse",
            **cfg,
        )
    conditions: dict[str, str] | None = reader.get("conditions")
    if not conditions:
        raise ConfigError(
            "a behaviour site needs its session labels mapped to conditions",
            field=f"sites[{site_id}].reader.conditions",
            expected="a map such as {ses-sal: saline, ses-ket: ketamine}",
            **cfg,
        )
    allowed: list[str] = list(load_columns()["condition"].enum or [])
    unknown = sorted(set(conditions.values()) - set(allowed))
    if unknown:
        raise ConfigError(
            f"conditions {unknown}",
            field=f"sites[{site_id}].reader.conditions",
            expected=f"conditions among {list(allowed)}",
            **cfg,
        )
    if species == "human" and not reader.get("eyelid"):
        raise ConfigError(
            "human behaviour needs the eyelid video",
            field=f"sites[{site_id}].reader.eyelid",
            expected="true for sites that send eyelid video",
            **cfg,
        )
    if species == "mouse" and reader.get("format") not in ("nwb", "dlc"):
        raise ConfigError(
            f"format {reader.get('format')!r}",
            field=f"sites[{site_id}].reader.format",
            expected="nwb or dlc",
            **cfg,
        )
    local_ids = _read_ids(site_id, root)
    pseudonyms = dict(zip(local_ids, pseudonymize(site_id, local_ids, key), strict=True))
    resolve = SessionResolver(site_id, pseudonyms, conditions, "conditions", "behaviour session")
    return _Site(site_id, species, reader, opts, resolve)


# Where each kind of behaviour site keeps its sessions: (datatype folder, file pattern, what).
_LAYOUTS: dict[str, tuple[str | None, str, str]] = {
    "human": ("beh", "*_task-puff_eyelid.csv", "eyelid CSV"),
    "nwb": (None, "*_behavior.nwb", "behaviour NWB files"),
    "dlc": (None, "*DLC_*", "DeepLabCut files"),
}


def _layout(ctx: _Site) -> str:
    return "human" if ctx.species == "human" else str(ctx.reader.get("format"))


def _find_sessions(ctx: _Site, root: Path, only: tuple[str, str] | None = None) -> list[_Session]:
    """The site's behaviour sessions (with ``only``, that session folder's: possibly none)."""
    layout = _layout(ctx)
    datatype, pattern, _ = _LAYOUTS[layout]
    suffixes = (".csv", ".h5") if layout == "dlc" else None
    sessions = _sessions(ctx.site_id, root, datatype, pattern, suffixes, only=only)
    if layout == "dlc":
        # DeepLabCut writes both .h5 and .csv by default: the CSV (the contract's) wins
        by_folder: dict[Path, _Session] = {}
        for s in sessions:
            if s.folder not in by_folder or s.path.suffix.lower() == ".csv":
                by_folder[s.folder] = s
        sessions = list(by_folder.values())
    return sessions


def _process(sess: _Session, ctx: _Site, root: Path, subject_id: str, condition: str) -> _Result:
    """One session read and measured: its rows of the four tables."""
    site_id, species, opts, reader = ctx.site_id, ctx.species, ctx.opts, ctx.reader
    if species == "human":
        data = _read_human(sess, site_id, root, opts)
    elif reader.get("format") == "nwb":
        data = _read_nwb(sess, site_id, root, opts, reader)
    else:
        data = _read_dlc_session(sess, site_id, root, opts, reader)
    ident = {"subject_id": subject_id, "site": site_id}
    m = puff_measures(data.trace, data.puffs_s, opts, species)
    m = m.assign(**ident, species=species, condition=condition)
    m["method"] = method_text(opts, species, data.trace.source)
    grid, curves = closure_timecourse(
        data.trace, data.puffs_s, m["open_aperture_px"].to_numpy(), opts
    )
    finite = np.isfinite(curves)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(finite, curves, 0.0).sum(axis=0) / n, np.nan)
    frames = {
        "puffs": m,
        "timecourses": pd.DataFrame(
            {**ident, "species": species, "condition": condition, "time_s": grid}
        ).assign(closure=mean, n_puffs=n),
    }
    if data.licks_s is not None:
        assert data.cues_s is not None and data.water_s is not None
        rw, cues = reward_measures(
            data.licks_s,
            data.cues_s,
            data.water_s,
            data.puffs_s,
            session_start_s=data.session_start_s,
            bout_gap_s=opts["bout_gap_s"],
            where=data.reward_where or {"site": site_id, "file": sess.shown},
        )
        frames["reward"] = rw.assign(**ident, condition=condition)
        frames["cues"] = cues.assign(**ident, condition=condition)
    log.info(
        "%s %s: %d puffs, %d frames (%d tracked) at %.4g fps",
        subject_id,
        condition,
        len(m),
        data.trace.passed.size,
        int(data.trace.passed.sum()),
        data.trace.frame_rate_hz,
    )
    return _Result(subject_id, condition, frames)


def harmonize_session(
    site: dict, root: Path, key: bytes, options: dict | None, session: str
) -> list[_Result]:
    """The behaviour sessions of one session folder (``sub-<label>_ses-<label>``), each read and
    measured: the work of one session job."""
    root = Path(root)
    ctx = _site(site, root, key, options)
    sub, _, ses = session.partition("_")
    out = []
    for sess in _find_sessions(ctx, root, only=(sub, ses)):
        subject_id, condition = ctx.resolve(sess)
        out.append(_process(sess, ctx, root, subject_id, condition))
    return out


def harmonize_site(
    site: dict,
    root: Path,
    key: bytes,
    options: dict | None = None,
    pieces: dict[str, list[_Result]] | None = None,
) -> BehaviourTables:
    """Read every behaviour session of one site at ``root`` into the four behaviour tables.

    With ``pieces`` (session id -> that session's results, from :func:`harmonize_session` in
    session jobs) no session is read again: the sessions found are checked against the pieces
    and the site's tables assembled from them, exactly as from sessions read here."""
    root = Path(root)
    ctx = _site(site, root, key, options)
    sessions = _find_sessions(ctx, root)
    if not sessions:
        datatype, pattern, what = _LAYOUTS[_layout(ctx)]
        where = "/".join(["sub-*", "ses-*", *([datatype] if datatype else []), pattern])
        raise SiteDataError(
            f"no {what} found", site=ctx.site_id, file=root.name, expected=f"files {where}"
        )
    if _layout(ctx) == "dlc":
        _check_dlc_folders(ctx.site_id, root, sessions)
    if pieces is None:
        results = [_process(s, ctx, root, *ctx.resolve(s)) for s in sessions]
    else:
        results = list(pair_by_condition(ctx.site_id, sessions, pieces, "session(s)", ctx.resolve))

    def parts(name: str) -> list[pd.DataFrame]:
        return [r.frames[name] for r in results if name in r.frames]

    return BehaviourTables(
        puffs=_frame(parts("puffs"), TABLES["puffs"]),
        timecourses=_frame(parts("timecourses"), TABLES["timecourses"]),
        reward=_frame(parts("reward"), TABLES["reward"]),
        cues=_frame(parts("cues"), TABLES["cues"]),
    )


def _check_dlc_folders(site_id: str, root: Path, sessions: list[_Session]) -> None:
    """A session folder with logs but no DeepLabCut file is a missing file of the contract."""
    have = {s.folder for s in sessions}
    for folder in sorted(root.glob("sub-*/ses-*")):
        if folder.is_dir() and folder not in have and any(folder.glob("*_puffs.csv")):
            raise SiteDataError(
                "missing the DeepLabCut file",
                site=site_id,
                file=shown_path(folder, root),
                expected="<sub>_<ses>_*DLC_*.csv (three header rows) beside the puff log",
            )


def _frame(parts: list[pd.DataFrame], table: str) -> pd.DataFrame:
    fields = get_table(table).field_names
    if not parts:
        df = pd.DataFrame({f: pd.Series(dtype=_empty_dtype(f)) for f in fields})
        return df
    df = pd.concat(parts, ignore_index=True)[fields]
    for col, dtype in INT_COLUMNS.items():
        if col in df.columns:
            df[col] = df[col].to_numpy().astype(dtype)
    for col, dtype in BOOL_COLUMNS.items():
        if col in df.columns:
            df[col] = df[col].astype(pd.api.types.pandas_dtype(dtype))
    return df.reset_index(drop=True)


def _empty_dtype(col: str) -> str:
    if col in INT_COLUMNS:
        return INT_COLUMNS[col]
    if col in BOOL_COLUMNS:
        return BOOL_COLUMNS[col]
    kind = load_columns()[col].type
    return "float64" if kind.startswith("float") else "object"


def step(
    site: dict,
    raw: Path,
    key: bytes,
    options: dict | None,
    atlas: Path | None = None,
    pieces: dict[str, Piece] | None = None,
) -> dict[str, pd.DataFrame]:
    """The workflow's harmonize step for one site (see :mod:`ketamap.harmonize`); with ``pieces``
    (session id -> :func:`session_step`'s piece) the site's gather."""
    results = None if pieces is None else {s: _from_piece(p) for s, p in pieces.items()}
    tables = harmonize_site(site, raw, key, options, results)
    log.info(
        "site %s: %d puffs of %d subjects, median tracking quality %.3f, %d reward epochs",
        site["id"],
        len(tables.puffs),
        tables.puffs["subject_id"].nunique(),
        float(tables.puffs["tracking_quality"].median()) if len(tables.puffs) else float("nan"),
        len(tables.reward),
    )
    return {
        "behaviour_puffs": tables.puffs,
        "behaviour_timecourses": tables.timecourses,
        "reward_seeking": tables.reward,
        "reward_cues": tables.cues,
    }


def session_step(site: dict, raw: Path, key: bytes, options: dict | None, session: str) -> Piece:
    """The workflow's session step: one session folder's behaviour sessions -> one piece."""
    results = harmonize_session(site, raw, key, options, session)
    meta = {"results": [{"pid": r.pid, "condition": r.condition} for r in results]}
    frames = {f"{i}.{name}": f for i, r in enumerate(results) for name, f in r.frames.items()}
    return meta, frames, {}


def _from_piece(piece: Piece) -> list[_Result]:
    meta, frames, _arrays = piece
    return [
        _Result(
            r["pid"],
            r["condition"],
            {name: frames[f"{i}.{name}"] for name in TABLES if f"{i}.{name}" in frames},
        )
        for i, r in enumerate(meta["results"])
    ]
