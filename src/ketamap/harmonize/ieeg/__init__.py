"""iEEG reader and harmonizer: BIDS-iEEG eye-puff sessions -> channel, response and timecourse tables.

read -> harmonize -> table, like the clinical and PET modules: :func:`harmonize_site` reads every
recording of one site (docs/site_data.md, iEEG part), cleans and re-references it, computes the
high-frequency broadband (HFB) envelope, epochs it around the puffs and returns the rows of the
``ieeg_channels``, ``ieeg_responses`` and ``ieeg_timecourses`` tables with pseudonymous ids, plus a
per-recording ``qc`` frame (not a declared table). The details live in
:mod:`ketamap.harmonize.ieeg.read` (formats, size and payload checks, sidecars, privacy) and
:mod:`ketamap.harmonize.ieeg.signal` (HFB core, line noise, bad channels).

Decisions:

* One recording per subject and condition (``sub-*/ses-*/ieeg/*_ieeg.<ext>``, any format of
  :data:`ketamap.harmonize.ieeg.read.FORMATS`: EDF/EDF+, BDF, BrainVision, Persyst, Nihon Kohden,
  FIF, EEGLAB, each opened by MNE's reader); the session label maps to the condition through
  ``sites[].reader.conditions``; an unmapped session is an error.
* Consistency: ``_channels.tsv`` lists every channel of the recording once; the sidecar's
  ``SamplingFrequency`` matches the header, and when given, ``RecordingDuration`` matches the
  signal (within 1 s) and ``SEEGChannelCount``/``ECOGChannelCount`` match ``_channels.tsv``;
  puff onsets lie inside the recording and agree with a ``sample`` column. Each is an error
  naming the file, field and row.
* Channels: only ``SEEG``/``ECOG`` rows of ``channels.tsv``. ``status: bad`` -> ``bad_declared``;
  the others are checked after the notch: ``flat`` (SD < 1e-3 x median SD) and ``noisy`` (robust z
  > 5 of log SD or of log(max|x|/SD)); see :func:`ketamap.ieeg_signal.detect_bad_channels`.
* Channel status is per subject (the table's key is subject + channel): a channel bad in any of the
  subject's sessions is left out of all of them, so conditions compare the same channels. The status
  shown is the first non-good one in session order.
* Line noise: notch (MNE FIR) at the declared ``PowerLineFrequency`` and its harmonics below
  Nyquist. The declaration is checked against the spectrum (Welch, 50 vs 60 Hz peak over the side
  bands, first 60 s of the good channels); a mismatch is recorded as a warning in the ``method``
  text of the recording's response rows, in ``qc.warnings`` and in the log. The declared frequency
  is still the one notched (the site's declaration is honoured, not overridden).
* Bipolar reference: contact names parse as ``<shaft><number>`` (``LA1``, ``LA01``, ``A'1``,
  ``RAMY1``; ECoG grids numbered ``1``..``n`` or ``G1``..): adjacent numbers on one shaft form a pair
  ``"<a>-<b>"``. A pair containing a bad contact is listed in ``ieeg_channels`` with that contact's
  status and not analysed. Grids are paired along consecutive numbers (rows wrap; no 2-D layout is
  read). Region, hemisphere and type are the first (lower-numbered) contact's, also when the two
  contacts' regions differ; position is the mean of the two. ``car``: each good contact minus the
  mean of the good contacts.
* HFB, epochs, z-score: :func:`ketamap.ieeg_signal.hfb_envelope` at 100 Hz; epochs ``epoch_s``
  around each ``trial_type == puff`` event (all events when there is no ``trial_type`` column);
  epochs running past the recording are dropped and ``n_epochs`` counts those kept. The z-score
  uses the mean and SD (ddof 1) of all baseline samples of all epochs of the channel.
* Measures (:func:`_measures`, vectorised over channels). On the epoch-average z envelope: fast
  peak = max in ``fast_window_s``; latency only when the peak exceeds ``threshold_z``
  (``fast_peak_amplitude_z`` is always the window maximum). Slow phase detected when the z stays
  above threshold for ``min_duration_s``, searched from 0.3 s, or from the fast peak's return below
  threshold when that is later but still inside the fast window. Its timing is on the
  epoch-average HFB power increase (mean squared envelope over its baseline mean, minus 1): onset
  where it first reaches half its plateau, end where it stays below half for ``min_duration_s``
  (or the epoch end), duration = end - onset, the half-maximum width. The time above the z
  threshold, used before, was short by an SNR-dependent amount (median 0.06 s, up to 0.6 s).
* Timecourses: per condition and region, mean and SEM (SD ddof 1 / sqrt n) over channels of the
  epoch-average z envelope; channels without a region are left out. Rows carry ``n_channels`` so
  sites can be pooled exactly with :func:`combine_timecourses`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ketamap.config import with_defaults
from ketamap.errors import ConfigError, SiteDataError
from ketamap.harmonize.bids import (
    REGION_PATTERN,
    SessionResolver,
    puff_onsets,
    read_participants,
    session_files,
)
from ketamap.harmonize.ieeg.read import (
    DURATION_TOLERANCE_S,
    FORMATS,
    Recording,
    is_recording,
    read_recording,
    recording_patterns,
)
from ketamap.harmonize.scatter import Piece, pair_by_condition
from ketamap.harmonize.timecourses import combine_timecourses
from ketamap.ids import pseudonymize
from ketamap.io import read_tsv, shown_path
from ketamap.limits import check_size, excerpt
from ketamap.schemas import get_table

__all__ = [
    "IeegTables",
    "bipolar_pairs",
    "combine_timecourses",
    "harmonize_site",
    "hfb_envelope",
    "parse_contact",
    "synchrony",
]

log = logging.getLogger(__name__)


# The gather (harmonize_site with pieces) and the combine job read no signal: scipy.signal, the
# signal module and MNE are imported by the functions that filter and read recordings (1-2 s of
# imports the gather no longer pays; benchmarks/overhead.py).
def __getattr__(name: str) -> Any:
    if name == "hfb_envelope":
        from ketamap.harmonize.ieeg import signal as ieeg_signal

        return ieeg_signal.hfb_envelope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EMOTION_REGIONS = {"amygdala", "insula", "acc", "ofc", "hippocampus"}
IEEG_TYPES = {"seeg": "seeg", "ecog": "ecog"}
SLOW_SEARCH_S = 0.3
PLATEAU_ITERATIONS = 2
FS = 100.0  # Hz of the HFB envelope; ketamap.harmonize.ieeg.signal.OUT_SFREQ is this
CONTACT = re.compile(r"^(?P<shaft>.*?)(?P<num>\d+)$")


@dataclass(frozen=True)
class IeegTables:
    """The harmonized rows one site contributes (``qc``: one row per recording, diagnostics only)."""

    channels: pd.DataFrame
    responses: pd.DataFrame
    timecourses: pd.DataFrame
    synchrony: pd.DataFrame = field(default_factory=pd.DataFrame)
    qc: pd.DataFrame = field(default_factory=pd.DataFrame)


def parse_contact(name: str) -> tuple[str, int] | None:
    """``"LA01"`` -> ``("LA", 1)``, ``"A'1"`` -> ``("A'", 1)``, ``"7"`` -> ``("", 7)``; None if no number."""
    m = CONTACT.match(name.strip())
    if not m:
        return None
    return m.group("shaft"), int(m.group("num"))


def bipolar_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Adjacent contacts on one shaft, in shaft order then number: ``[("LA1", "LA2"), ...]``."""
    shafts: dict[str, dict[int, str]] = {}
    for name in names:
        parsed = parse_contact(name)
        if parsed is None:
            continue
        shaft, num = parsed
        shafts.setdefault(shaft, {})[num] = name
    pairs = []
    for shaft in shafts:  # first-appearance order
        nums = shafts[shaft]
        for n in sorted(nums):
            if n + 1 in nums:
                pairs.append((nums[n], nums[n + 1]))
    return pairs


# --------------------------------------------------------------------------------------------
@dataclass
class _Rec:
    participant_id: str
    session_id: str
    path: Path
    shown: str


@dataclass
class _Result:
    pid: str
    condition: str
    channel_status: dict[str, str]
    channel_info: pd.DataFrame  # one row per re-referenced channel (all statuses)
    zavg: dict[str, np.ndarray]  # good channels only
    measures: pd.DataFrame
    n_epochs: int
    method: str
    qc: dict[str, Any]
    times: np.ndarray
    trial_amp: dict[str, np.ndarray]  # good channels: mean z in the synchrony window per epoch


@dataclass
class _Site:
    """What every job of one iEEG site needs before it reads a recording."""

    site_id: str
    opts: dict[str, Any]
    resolve: SessionResolver


def _site(site: dict, root: Path, key: bytes, options: dict | None) -> _Site:
    site_id = site["id"]
    opts = _check_options(with_defaults(options, "ieeg"))
    conditions: dict[str, str] | None = (site.get("reader") or {}).get("conditions")
    if not conditions:
        raise ConfigError(
            "an iEEG site needs its session labels mapped to conditions",
            file="config/config.yaml",
            field=f"sites[{site_id}].reader.conditions",
            expected="a map such as {ses-base: baseline, ses-ket: ketamine}",
        )
    participants = read_participants(site, root)
    local_ids = participants["participant_id"].tolist()
    pseudonyms = dict(zip(local_ids, pseudonymize(site_id, local_ids, key), strict=True))
    resolve = SessionResolver(site_id, pseudonyms, conditions, "conditions", "recording")
    return _Site(site_id, opts, resolve)


def harmonize_site(
    site: dict,
    root: Path,
    key: bytes,
    options: dict | None = None,
    pieces: dict[str, list[_Result]] | None = None,
) -> IeegTables:
    """Read every iEEG puff recording of one site at ``root`` into the three iEEG tables.

    With ``pieces`` (session id -> that session's results, from :func:`harmonize_session` in
    session jobs) nothing is read again: the recordings found are checked against the pieces
    and the site's tables assembled from them, exactly as from recordings read here."""
    root = Path(root)
    ctx = _site(site, root, key, options)
    recs = _find_recordings(ctx.site_id, root)
    if pieces is None:
        results = [_process(r, ctx.site_id, root, *ctx.resolve(r), ctx.opts) for r in recs]
    else:
        results = list(pair_by_condition(ctx.site_id, recs, pieces, "recording(s)", ctx.resolve))
    return _tables(ctx.site_id, results)


def harmonize_session(
    site: dict, root: Path, key: bytes, options: dict | None, session: str
) -> list[_Result]:
    """The recordings of one session folder (``sub-<label>_ses-<label>``), each read and processed:
    the work of one session job."""
    root = Path(root)
    ctx = _site(site, root, key, options)
    sub, _, ses = session.partition("_")
    out = []
    for rec in _find_recordings(ctx.site_id, root, only=(sub, ses)):
        subject_id, condition = ctx.resolve(rec)
        out.append(_process(rec, ctx.site_id, root, subject_id, condition, ctx.opts))
    return out


def _check_options(opts: dict[str, Any]) -> dict[str, Any]:
    where = {"file": "config/config.yaml"}

    def pair(name: str, lo: float | None = None) -> tuple[float, float]:
        value = opts[name]
        try:
            a, b = float(value[0]), float(value[1])
            ok = len(value) == 2 and a < b and (lo is None or a > lo)
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{name} {value!r}",
                field=f"ieeg.{name}",
                expected="[start, end] with start < end",
                **where,
            )
        return a, b

    out = dict(opts)
    out["band_hz"] = pair("band_hz", 0)
    out["epoch_s"] = pair("epoch_s")
    out["baseline_s"] = pair("baseline_s")
    out["fast_window_s"] = pair("fast_window_s")
    out["synchrony_window_s"] = pair("synchrony_window_s")
    if not (
        out["epoch_s"][0] <= out["synchrony_window_s"][0]
        and out["synchrony_window_s"][1] <= out["epoch_s"][1]
    ):
        raise ConfigError(
            "the synchrony window is not inside the epoch",
            field="ieeg.synchrony_window_s",
            expected=f"inside epoch_s {out['epoch_s']}",
            **where,
        )
    if not (
        out["epoch_s"][0] <= out["baseline_s"][0] and out["baseline_s"][1] <= out["epoch_s"][1]
    ):
        raise ConfigError(
            "the baseline is not inside the epoch",
            field="ieeg.baseline_s",
            expected=f"inside epoch_s {out['epoch_s']}",
            **where,
        )
    if out["reference"] not in ("bipolar", "car"):
        raise ConfigError(
            f"reference {out['reference']!r}",
            field="ieeg.reference",
            expected="bipolar or car",
            **where,
        )
    for name in ("sub_band_width_hz", "min_duration_s"):
        if not float(out[name]) > 0:
            raise ConfigError(
                f"{name} {out[name]!r}", field=f"ieeg.{name}", expected="a positive number", **where
            )
    out["threshold_z"] = float(out["threshold_z"])
    return out


def _find_recordings(site_id: str, root: Path, only: tuple[str, str] | None = None) -> list[_Rec]:
    """The site's recordings (with ``only``, those of one ``(participant, session)`` folder)."""
    if only is not None:
        return [
            _Rec(f.participant_id, f.session_id, f.path, f.shown)
            for f in session_files(site_id, root, "ieeg", recording_patterns(), only=only)
            if is_recording(f.path)
        ]
    loose = sorted(root.glob("sub-*/ieeg/*_ieeg.*"))
    if loose:
        raise SiteDataError(
            "iEEG files outside a session folder",
            site=site_id,
            file=shown_path(loose[0], root),
            expected="sub-<label>/ses-<label>/ieeg/ (the session gives the condition)",
        )
    recs = [
        _Rec(f.participant_id, f.session_id, f.path, f.shown)
        for f in session_files(site_id, root, "ieeg", recording_patterns())
        if is_recording(f.path)
    ]
    if not recs:
        raise SiteDataError(
            "no iEEG recordings found",
            site=site_id,
            file=str(root.name),
            expected="sub-<label>/ses-<label>/ieeg/*_ieeg.<ext> with sidecars, <ext> one of "
            + ", ".join(FORMATS),
        )
    return recs


def _read_electrodes(rec: _Rec, site_id: str, root: Path) -> pd.DataFrame:
    """Electrode positions/regions by contact name (first ``*_electrodes.tsv`` of the session)."""
    files = sorted(rec.path.parent.glob(f"{rec.participant_id}*_electrodes.tsv"))
    cols = ["x", "y", "z", "region", "hemisphere"]
    if not files:
        log.warning("no electrodes.tsv for a recording: positions and regions missing")
        return pd.DataFrame(columns=cols, index=pd.Index([], name="name"))
    path = files[0]
    check_size(path, "tsv", site=site_id, file=shown_path(path, root))
    df = read_tsv(path, site=site_id, root=root, required=["name", "x", "y", "z"])
    where = {"site": site_id, "file": shown_path(path, root)}
    out = pd.DataFrame(index=pd.Index(df["name"], name="name"))
    for c in ("x", "y", "z"):
        values = pd.to_numeric(df[c], errors="coerce")
        bad = df[c][values.isna() & df[c].notna()].tolist()
        if bad:
            raise SiteDataError(
                f"non-numeric values {bad[:3]}", field=c, expected="mm coordinates or n/a", **where
            )
        out[c] = values.to_numpy()
    region = df["region"].str.lower() if "region" in df.columns else pd.Series([None] * len(df))
    bad_regions = [r for r in region.dropna() if not re.fullmatch(REGION_PATTERN, r)]
    if bad_regions:
        raise SiteDataError(
            f"regions {bad_regions[:3]} are not region ids",
            field="region",
            expected=f"names matching {REGION_PATTERN}",
            **where,
        )
    out["region"] = region.to_numpy()
    hemi = df["hemisphere"] if "hemisphere" in df.columns else pd.Series([None] * len(df))
    hemi_map = {"l": "L", "left": "L", "r": "R", "right": "R"}
    hv = hemi.map(lambda v: hemi_map.get(v.lower()) if isinstance(v, str) else None)
    unknown = hemi[hv.isna() & hemi.notna()].tolist()
    if unknown:
        raise SiteDataError(
            f"hemisphere values {unknown[:3]}",
            field="hemisphere",
            expected="L or R (or n/a for midline)",
            **where,
        )
    out["hemisphere"] = hv.to_numpy()
    if out.index.duplicated().any():
        raise SiteDataError(
            "duplicate electrode names", field="name", expected="each contact listed once", **where
        )
    return out


def _line_frequency(sidecar: dict[str, Any], where: dict[str, Any]) -> float:
    value = sidecar.get("PowerLineFrequency")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        f = float("nan")
    if f not in (50.0, 60.0):
        raise SiteDataError(
            f"PowerLineFrequency {value!r}",
            field="PowerLineFrequency",
            expected="50 or 60",
            **where,
        )
    return f


def _process(
    rec: _Rec, site_id: str, root: Path, subject_id: str, condition: str, opts: dict[str, Any]
) -> _Result:
    from ketamap.harmonize.ieeg import signal as ieeg_signal

    recording: Recording = read_recording(rec.path, site=site_id, root=root)
    raw = recording.raw
    shown = rec.shown
    where = {"site": site_id, "file": shown}
    stem = rec.path.name.rsplit("_ieeg.", 1)[0]
    ch_shown = shown_path(rec.path.parent / f"{stem}_channels.tsv", root)
    json_shown = shown_path(rec.path.parent / f"{stem}_ieeg.json", root)
    sfreq = float(raw.info["sfreq"])
    declared_sfreq = recording.sidecar.get("SamplingFrequency")
    try:
        ok = abs(float(declared_sfreq) - sfreq) <= 0.005 * sfreq  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SiteDataError(
            f"SamplingFrequency {declared_sfreq!r} disagrees with the recording's {sfreq:g} Hz",
            site=site_id,
            file=json_shown,
            field="SamplingFrequency",
            expected=f"{sfreq:g}",
        )
    line_hz = _line_frequency(recording.sidecar, {"site": site_id, "file": json_shown})
    seconds = raw.n_times / sfreq
    _check_duration(recording.sidecar, seconds, shown, {"site": site_id, "file": json_shown})
    try:
        ieeg_signal.check_band(opts["band_hz"], sfreq)
    except ValueError as exc:
        raise SiteDataError(str(exc), **where) from None

    # channels.tsv <-> recording
    chans = recording.channels
    types = chans["type"].str.lower()
    ieeg = chans[types.isin(list(IEEG_TYPES))]
    if ieeg.empty:
        raise SiteDataError(
            "no SEEG or ECOG channels",
            site=site_id,
            file=ch_shown,
            field="type",
            expected="channels of type SEEG or ECOG",
        )
    names = ieeg["name"].tolist()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SiteDataError(
            f"duplicate channel names {dupes[:5]}",
            site=site_id,
            file=ch_shown,
            field="name",
            expected="each channel listed once",
        )
    missing = [n for n in names if n not in raw.ch_names]
    if missing:
        raise SiteDataError(
            f"channels {missing[:5]} are listed in channels.tsv but not in the recording",
            site=site_id,
            file=ch_shown,
            field="name",
            expected="the recording's channel names",
        )
    _check_channel_counts(chans, raw.ch_names, recording.sidecar, site_id, ch_shown, json_shown)
    slow = {n: r for n, r in (recording.rates or {}).items() if n in names and r < sfreq - 1e-6}
    if slow:
        first = next(iter(slow))
        raise SiteDataError(
            f"{len(slow)} SEEG/ECOG channels ({excerpt(first, 16)}, ...) are sampled at "
            f"{slow[first]:g} Hz in a {sfreq:g} Hz recording (a reader would upsample them)",
            field="samples per data record",
            expected=f"every SEEG/ECOG channel at {sfreq:g} Hz",
            **where,
        )
    # The events before the signal work: a bad _events.tsv fails in seconds, not minutes.
    onsets = puff_onsets(
        rec.path.parent / f"{stem}_events.tsv", site_id, root, duration_s=seconds, sfreq=sfreq
    )
    ev_where = {"site": site_id, "file": shown_path(rec.path.parent / f"{stem}_events.tsv", root)}
    status_col = (
        ieeg["status"].str.lower()
        if "status" in ieeg.columns
        else pd.Series(["good"] * len(ieeg), index=ieeg.index)
    )
    bad_values = sorted(set(status_col.dropna()) - {"good", "bad"})
    if bad_values:
        raise SiteDataError(
            f"status values {bad_values}",
            site=site_id,
            file=ch_shown,
            field="status",
            expected="good or bad",
        )
    contact_status = np.where(
        status_col.fillna("good").to_numpy() == "bad", "bad_declared", "good"
    ).astype(object)
    contact_type = ieeg["type"].str.lower().map(IEEG_TYPES).to_numpy()

    # signal: line check, notch, automatic bad channels
    data = raw.get_data(picks=names)  # volts, float64
    recording_fmt = recording.fmt
    del raw, recording
    probe = data[contact_status == "good", : int(60 * sfreq)]
    detected = ieeg_signal.detect_line_frequency(probe, sfreq) if len(probe) else None
    warnings = []
    if detected is not None and detected != line_hz:
        warnings.append(
            f"declared PowerLineFrequency {line_hz:g} Hz but the spectrum peaks at {detected:g} Hz"
        )
        log.warning("%s %s: %s", subject_id, condition, warnings[-1])
    data = ieeg_signal.notch(data, sfreq, line_hz)
    check = contact_status == "good"
    auto = ieeg_signal.detect_bad_channels(data[check])
    contact_status[np.flatnonzero(check)] = auto

    electrodes = _read_electrodes(rec, site_id, root)
    info = _contact_info(names, contact_type, electrodes)

    # re-reference
    if opts["reference"] == "bipolar":
        index = {n: i for i, n in enumerate(names)}
        pairs = bipolar_pairs(names)
        if not pairs:
            raise SiteDataError(
                "no adjacent contacts to pair for the bipolar reference",
                site=site_id,
                file=ch_shown,
                field="name",
                expected="contact names <shaft><number> (LA1, LA2, ...) or ieeg.reference: car",
            )
        rows = []
        for a, b in pairs:
            sa, sb = contact_status[index[a]], contact_status[index[b]]
            status = sa if sa != "good" else sb
            ia, ib = info.loc[a], info.loc[b]
            rows.append(
                {
                    "channel": f"{a}-{b}",
                    "a": index[a],
                    "b": index[b],
                    "channel_type": ia["channel_type"],
                    "region": ia["region"],
                    "hemisphere": ia["hemisphere"],
                    "x_mm": np.nanmean([ia["x"], ib["x"]])
                    if not (np.isnan(ia["x"]) and np.isnan(ib["x"]))
                    else np.nan,
                    "y_mm": np.nanmean([ia["y"], ib["y"]])
                    if not (np.isnan(ia["y"]) and np.isnan(ib["y"]))
                    else np.nan,
                    "z_mm": np.nanmean([ia["z"], ib["z"]])
                    if not (np.isnan(ia["z"]) and np.isnan(ib["z"]))
                    else np.nan,
                    "channel_status": status,
                }
            )
        chan_df = pd.DataFrame(rows)
        good = chan_df["channel_status"] == "good"
        reref = data[chan_df.loc[good, "a"].to_numpy()] - data[chan_df.loc[good, "b"].to_numpy()]
    else:
        chan_df = pd.DataFrame(
            {
                "channel": names,
                "channel_type": info["channel_type"].to_numpy(),
                "region": info["region"].to_numpy(),
                "hemisphere": info["hemisphere"].to_numpy(),
                "x_mm": info["x"].to_numpy(),
                "y_mm": info["y"].to_numpy(),
                "z_mm": info["z"].to_numpy(),
                "channel_status": contact_status,
            }
        )
        good = chan_df["channel_status"] == "good"
        reref = data[good.to_numpy()]
        reref = reref - reref.mean(axis=0, keepdims=True)
    del data
    if not good.any():
        raise SiteDataError("no good channel left after the bad-channel checks", **where)
    good_names = chan_df.loc[good, "channel"].tolist()

    env = ieeg_signal.hfb_envelope(reref, sfreq, opts["band_hz"], float(opts["sub_band_width_hz"]))
    del reref
    z_avg, n_epochs, times, trial_amp, power = _epoch_z(env, onsets, opts, ev_where)
    measures = _measures(z_avg, power, times, opts)
    measures.insert(0, "channel", good_names)
    method = _method_text(opts, line_hz, warnings)
    chan_df = chan_df.drop(columns=[c for c in ("a", "b") if c in chan_df.columns])
    log.info(
        "%s %s: %d channels (%d good), %d epochs",
        subject_id,
        condition,
        len(chan_df),
        int(good.sum()),
        n_epochs,
    )
    qc = {
        "subject_id": subject_id,
        "condition": condition,
        "format": recording_fmt,
        "sfreq_hz": sfreq,
        "declared_line_hz": line_hz,
        "detected_line_hz": detected,
        "n_channels": len(chan_df),
        "n_good": int(good.sum()),
        "n_puffs": len(onsets),
        "n_epochs": n_epochs,
        "warnings": "; ".join(warnings),
    }
    return _Result(
        pid=subject_id,
        condition=condition,
        channel_status=dict(zip(chan_df["channel"], chan_df["channel_status"], strict=True)),
        channel_info=chan_df,
        zavg=dict(zip(good_names, z_avg, strict=True)),
        measures=measures,
        n_epochs=n_epochs,
        method=method,
        qc=qc,
        times=times,
        trial_amp=dict(zip(good_names, trial_amp, strict=True)),
    )


def _contact_info(names: list[str], types: np.ndarray, electrodes: pd.DataFrame) -> pd.DataFrame:
    info = pd.DataFrame(index=pd.Index(names, name="name"))
    info["channel_type"] = types
    known = electrodes.reindex(names)
    for c in ("x", "y", "z"):
        info[c] = known["x" if c == "x" else c].astype(float).to_numpy() if len(known) else np.nan
    info["region"] = known["region"].to_numpy() if "region" in known else None
    info["hemisphere"] = known["hemisphere"].to_numpy() if "hemisphere" in known else None
    info["region"] = info["region"].where(info["region"].notna(), None)
    info["hemisphere"] = info["hemisphere"].where(info["hemisphere"].notna(), None)
    return info


def _check_duration(
    sidecar: dict[str, Any], seconds: float, shown: str, where: dict[str, Any]
) -> None:
    """The sidecar's ``RecordingDuration`` (optional in BIDS) against the signal's length: a
    data file cut in transfer reads as a shorter recording without any error from the reader."""
    if "RecordingDuration" not in sidecar:
        return
    value = sidecar["RecordingDuration"]
    try:
        declared = float(value)
    except (TypeError, ValueError):
        declared = float("nan")
    if not np.isfinite(declared) or declared <= 0:
        raise SiteDataError(
            f"RecordingDuration {excerpt(str(value))}",
            field="RecordingDuration",
            expected="the recording's length in seconds",
            **where,
        )
    if abs(declared - seconds) > DURATION_TOLERANCE_S:
        raise SiteDataError(
            f"RecordingDuration {declared:g} s but {shown} holds {seconds:.6g} s of signal",
            field="RecordingDuration",
            expected=f"{seconds:.6g} s within {DURATION_TOLERANCE_S:g} s (a shorter signal file "
            "is cut: re-export or re-transfer it)",
            **where,
        )


def _check_channel_counts(
    chans: pd.DataFrame,
    ch_names: list[str],
    sidecar: dict[str, Any],
    site_id: str,
    ch_shown: str,
    json_shown: str,
) -> None:
    """``_channels.tsv`` lists every channel of the recording once (BIDS), and the sidecar's
    ``SEEGChannelCount``/``ECOGChannelCount`` (optional) agree with its types."""
    listed = set(chans["name"])
    unlisted = [n for n in ch_names if n not in listed]
    if unlisted or len(chans) != len(ch_names):
        raise SiteDataError(
            f"{len(chans)} rows for a recording of {len(ch_names)} channels"
            + (
                f"; not listed: {', '.join(excerpt(n, 16) for n in unlisted[:5])}"
                if unlisted
                else ""
            ),
            site=site_id,
            file=ch_shown,
            field="name",
            expected=f"one row per channel of the recording ({len(ch_names)})",
        )
    types = chans["type"].str.upper()
    for key, kind in (("SEEGChannelCount", "SEEG"), ("ECOGChannelCount", "ECOG")):
        if key not in sidecar:
            continue
        n = int((types == kind).sum())
        value = sidecar[key]
        if not (isinstance(value, int | float) and not isinstance(value, bool) and value == n):
            raise SiteDataError(
                f"{key} {value if isinstance(value, int | float) else excerpt(str(value))} but "
                f"{ch_shown} lists {n} {kind} channels",
                site=site_id,
                file=json_shown,
                field=key,
                expected=f"{n}",
            )


def _epoch_z(
    env: np.ndarray, onsets: np.ndarray, opts: dict[str, Any], where: dict[str, Any]
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]:
    """Baseline-z epoch average per channel, the epoch count, the time base, per channel and
    epoch the mean z in the synchrony window (the single-trial slow-phase amplitude), and the
    epoch-average HFB power change (see :func:`_measures`)."""
    e0, e1 = opts["epoch_s"]
    i0, i1 = round(e0 * FS), round(e1 * FS)
    offsets = np.arange(i0, i1 + 1)
    times = np.round(offsets / FS, 2)
    starts = np.round(onsets * FS).astype(int)
    ok = (starts + i0 >= 0) & (starts + i1 < env.shape[1])
    if not ok.any():
        raise SiteDataError(
            f"none of the {len(onsets)} puffs has a full epoch {list(opts['epoch_s'])} s inside the recording",
            field="onset",
            expected=f"puff onsets in seconds from the recording start, at least "
            f"{-opts['epoch_s'][0]:g} s after it and {opts['epoch_s'][1]:g} s before its end",
            **where,
        )
    idx = starts[ok, None] + offsets[None, :]
    epochs = env[:, idx]  # channels x epochs x times
    b0, b1 = opts["baseline_s"]
    bmask = (times >= b0 - 1e-9) & (times <= b1 + 1e-9)
    base = epochs[:, :, bmask].reshape(env.shape[0], -1)
    mu = base.mean(axis=1)
    sd = base.std(axis=1, ddof=1)
    sd[sd == 0] = np.nan
    z_avg = (epochs.mean(axis=1) - mu[:, None]) / sd[:, None]
    s0, s1 = opts["synchrony_window_s"]
    smask = (times >= s0 - 1e-9) & (times <= s1 + 1e-9)
    trial_amp = (epochs[:, :, smask].mean(axis=2) - mu[:, None]) / sd[:, None]
    base_power = np.square(base).mean(axis=1)
    base_power[base_power == 0] = np.nan
    np.square(epochs, out=epochs)
    power = epochs.mean(axis=1) / base_power[:, None] - 1.0
    return z_avg, int(ok.sum()), times, trial_amp, power


def _runs(mask: np.ndarray, k: int) -> np.ndarray:
    """Per row, True at ``i`` when ``mask[i:i + k]`` is all True (False where fewer than k remain)."""
    n = mask.shape[1]
    counts = np.zeros((mask.shape[0], n + 1), dtype=np.int64)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    out = np.zeros(mask.shape, dtype=bool)
    if n >= k:
        out[:, : n - k + 1] = counts[:, k:] - counts[:, : n - k + 1] == k
    return out


def _first_from(mask: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Per row, the first index ``>= lo`` where ``mask`` is True; -1 where there is none."""
    m = mask & (np.arange(mask.shape[1])[None, :] >= lo[:, None])
    return np.where(m.any(axis=1), m.argmax(axis=1), -1)


def _last_until(mask: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row, the last index ``<= hi`` where ``mask`` is True; -1 where there is none."""
    m = mask & (np.arange(mask.shape[1])[None, :] <= hi[:, None])
    return np.where(m.any(axis=1), mask.shape[1] - 1 - m[:, ::-1].argmax(axis=1), -1)


def _masked_median(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the median of the finite ``y`` where ``mask`` is True; NaN where there is none."""
    v = np.sort(np.where(mask, y, np.nan), axis=1)  # NaN sort last
    n = np.isfinite(v).sum(axis=1)
    rows = np.arange(y.shape[0])
    lo, hi = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)
    return np.where(n > 0, 0.5 * (v[rows, lo] + v[rows, hi]), np.nan)


def _half_max_crossings(
    y: np.ndarray,
    times: np.ndarray,
    level: np.ndarray,
    anchor: np.ndarray,
    start: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the times at which ``y`` crosses ``level / 2`` around ``anchor``, linearly
    interpolated between samples: rising after the last run of ``k`` samples at or below it that
    ends before the anchor (not before ``start``), falling at the first such run after the anchor
    (the last sample when none)."""
    rows = np.arange(y.shape[0])
    half = level / 2
    below = _runs(y <= half[:, None], k)
    dt = times[1] - times[0]

    run = _last_until(below, anchor - k)
    r = np.clip(np.where(run >= 0, run + k, start), start, anchor)
    a, b = y[rows, r - 1], y[rows, r]
    up = (r > 0) & (a <= half) & (b > half)
    with np.errstate(invalid="ignore", divide="ignore"):
        rise = times[r] - np.where(up, (b - half) / (b - a), 0.0) * dt

    f = _first_from(below, anchor)
    f = np.where(f >= 0, f, y.shape[1] - 1)
    a, b = y[rows, f - 1], y[rows, f]
    down = (f > 0) & (a > half) & (b <= half)
    with np.errstate(invalid="ignore", divide="ignore"):
        fall = times[f] - np.where(down, (half - b) / (a - b), 0.0) * dt
    return rise, fall


def _measures(
    z_avg: np.ndarray, power: np.ndarray, times: np.ndarray, opts: dict[str, Any]
) -> pd.DataFrame:
    """Fast peak and slow phase of every channel (rows of ``z_avg`` and ``power``), vectorised.

    Detection is on the epoch-average z: the fast peak is the maximum in ``fast_window_s``
    (responsive above ``threshold_z``); a slow phase exists when z stays above ``threshold_z`` for
    ``min_duration_s``, searched from 0.3 s or from the fast peak's return below threshold when
    that is later but still inside the fast window.

    Timing is on the epoch-average HFB power change ``power`` (mean squared envelope over the
    baseline mean, minus 1): the slow phase's onset and end are where it crosses half its plateau
    (median over the central half of the phase, refined from the peak of a ``min_duration_s``
    moving average inside the detected phase), and the duration is their distance, the
    half-maximum width. Why not the threshold crossing: a fixed z threshold cuts a phase whose
    plateau is a few z high anywhere from near its half-maximum to deep inside it, so the time
    above threshold is short by an amount that depends on the SNR (median -0.06 s, 5 % -0.6 s on
    the bundled scenarios), and constant offsets do not cancel in a ratio of durations. A
    half-maximum is scale-free. Why power: background and evoked broadband activity are
    independent and add in power, so the power change is linear in the evoked power (and in the
    trial gains, averaged over epochs), and the reader's band-pass smoothing is linear in it too;
    the z of the mean amplitude is a concave function of the evoked power that depends on the
    SNR. The result is the half-maximum width of the evoked HFB power, d - 2 asinh(1) e for an
    envelope with logistic edges of width e (the generator's, see
    :func:`ketamap.synth.ieeg_signal.slow_half_power_width`), within a few ms for the reader's
    ~0.1 s envelope resolution. When the fast burst merges with the slow rise above half the
    plateau, the onset is the search start.
    """
    thr = opts["threshold_z"]
    k = max(1, int(np.ceil(float(opts["min_duration_s"]) * FS - 1e-9)))
    n_ch, n = z_avg.shape
    rows = np.arange(n_ch)
    f0, f1 = opts["fast_window_s"]
    fidx = np.flatnonzero((times >= f0 - 1e-9) & (times <= f1 + 1e-9))
    zf = z_avg[:, fidx]
    p = np.where(np.isfinite(zf), zf, -np.inf).argmax(axis=1)
    amp = zf[rows, p]
    fast = amp > thr
    peak_i = fidx[p]
    start = np.full(n_ch, int(np.searchsorted(times, SLOW_SEARCH_S - 1e-9)))
    back = _first_from(z_avg < thr, peak_i)
    later = fast & (back >= 0) & (back <= fidx[-1])
    start = np.where(later, np.maximum(start, back), start)
    onset_i = _first_from(_runs(z_avg > thr, k), start)
    slow = onset_i >= 0
    end_i = _first_from(_runs(z_avg <= thr, k), np.where(slow, onset_i, n))
    end_i = np.where(end_i >= 0, end_i, n - 1)

    # The slow phase's half-maximum crossings on the power change, from the peak of its moving
    # average inside the detected phase.
    y = power
    idx = np.arange(n)[None, :]
    inside = slow[:, None] & (idx >= onset_i[:, None]) & (idx <= end_i[:, None])
    from scipy.ndimage import uniform_filter1d

    smooth = uniform_filter1d(np.nan_to_num(y), size=k, axis=1, mode="nearest")
    anchor = np.where(inside, smooth, -np.inf).argmax(axis=1)
    level = smooth[rows, anchor]
    for _ in range(PLATEAU_ITERATIONS):
        rise, fall = _half_max_crossings(y, times, level, anchor, start, k)
        central = (
            np.abs(times[None, :] - ((rise + fall) / 2)[:, None])
            <= ((fall - rise) / 4)[:, None] + 1e-9
        )
        plateau = _masked_median(y, central)
        level = np.where(np.isfinite(plateau) & (plateau > 0), plateau, level)
    rise, fall = _half_max_crossings(y, times, level, anchor, start, k)
    return pd.DataFrame(
        {
            "fast_peak_latency_s": np.where(fast, times[peak_i], np.nan),
            "fast_peak_amplitude_z": amp.astype(float),
            "slow_onset_s": np.where(slow, rise, np.nan),
            "slow_duration_s": np.where(slow, fall - rise, np.nan),
            "responsive_fast": fast,
            "responsive_slow": slow,
        }
    )


def _method_text(opts: dict[str, Any], line_hz: float, warnings: list[str]) -> str:
    lo, hi = opts["band_hz"]
    text = (
        f"HFB {lo:g}-{hi:g} Hz in {float(opts['sub_band_width_hz']):g} Hz sub-bands (Butterworth order 4 zero-phase, "
        f"Hilbert amplitude, sub-band mean-normalised) at 100 Hz; notch {line_hz:g} Hz + harmonics; "
        f"{opts['reference']} reference; z vs baseline {list(opts['baseline_s'])} s; "
        f"fast peak in {list(opts['fast_window_s'])} s > {opts['threshold_z']:g} z; "
        f"slow phase > {opts['threshold_z']:g} z for >= {float(opts['min_duration_s']):g} s from {SLOW_SEARCH_S:g} s, "
        "onset and duration at half the plateau of the epoch-average HFB power increase; "
        f"synchrony window {list(opts['synchrony_window_s'])} s"
    )
    if warnings:
        text += "; WARNING: " + "; ".join(warnings)
    return text


def _tables(site_id: str, results: list[_Result]) -> IeegTables:
    ch_fields = get_table("ieeg_channels").field_names
    rs_fields = get_table("ieeg_responses").field_names
    # subject-level channel status: first non-good over the subject's sessions
    status: dict[tuple[str, str], str] = {}
    first_info: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        for rec in r.channel_info.to_dict("records"):
            row = {str(k): v for k, v in rec.items()}
            key = (r.pid, str(row["channel"]))
            first_info.setdefault(key, row)
            if status.get(key, "good") == "good":
                status[key] = row["channel_status"]
    ch_rows = []
    for (pid, _ch), first in first_info.items():
        ch_rows.append(
            {**first, "subject_id": pid, "site": site_id, "channel_status": status[(pid, _ch)]}
        )
    channels = pd.DataFrame(ch_rows)
    channels["region_group"] = channels["region"].map(_group)
    channels = channels[ch_fields].reset_index(drop=True)
    for c in ("x_mm", "y_mm", "z_mm"):
        channels[c] = channels[c].astype(float)
    info = channels.set_index(["subject_id", "channel"])

    rs_parts = []
    tc_rows: list[pd.DataFrame] = []
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    times = None
    for r in results:
        keep = r.measures["channel"].map(lambda c, pid=r.pid: status[(pid, c)] == "good")
        m = r.measures[keep.to_numpy()].copy()
        m["subject_id"] = r.pid
        m["site"] = site_id
        m["condition"] = r.condition
        m["region"] = [info.loc[(r.pid, c), "region"] for c in m["channel"]]
        m["region_group"] = m["region"].map(_group)
        m["n_epochs"] = np.int32(r.n_epochs)
        m["method"] = r.method
        rs_parts.append(m)
        for c, region in zip(m["channel"], m["region"], strict=True):
            if region is not None and isinstance(region, str):
                curves.setdefault((r.condition, region), []).append(r.zavg[c])
        times = times if times is not None else r.times
    responses = (
        pd.concat(rs_parts, ignore_index=True)[rs_fields]
        if rs_parts
        else pd.DataFrame(columns=rs_fields)
    )
    responses["n_epochs"] = responses["n_epochs"].astype("int32")
    responses["responsive_fast"] = responses["responsive_fast"].astype(bool)
    responses["responsive_slow"] = responses["responsive_slow"].astype(bool)
    for (condition, region), arrs in sorted(curves.items()):
        stack = np.vstack(arrs)
        n = stack.shape[0]
        mean = stack.mean(axis=0)
        sem = stack.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(stack.shape[1], np.nan)
        assert times is not None
        tc_rows.append(
            pd.DataFrame(
                {
                    "condition": condition,
                    "region": region,
                    "region_group": _group(region),
                    "time_s": times,
                    "mean_z": mean,
                    "sem_z": sem,
                    "n_channels": np.int32(n),
                }
            )
        )
    tc_fields = get_table("ieeg_timecourses").field_names
    timecourses = (
        pd.concat(tc_rows, ignore_index=True)[tc_fields]
        if tc_rows
        else pd.DataFrame(columns=tc_fields)
    )
    if len(timecourses):
        timecourses["n_channels"] = timecourses["n_channels"].astype("int32")
    qc = pd.DataFrame([r.qc for r in results])
    return IeegTables(
        channels=channels,
        responses=responses.reset_index(drop=True),
        timecourses=timecourses,
        synchrony=_synchrony_table(site_id, results, responses),
        qc=qc,
    )


def synchrony(amp: np.ndarray, channels: list[str]) -> tuple[float, int]:
    """Cross-channel synchrony of single-trial amplitudes: the mean Fisher z of the Pearson
    correlations across trials of every channel pair that shares no contact, back-transformed to r.

    Bipolar channels sharing a contact (``LA1-LA2`` and ``LA2-LA3``) are left out: their common
    contact correlates them whatever the brain does. Returns ``(r, n_pairs)``; r is NaN when no
    pair is left or an amplitude does not vary.
    """
    n = len(channels)
    if n < 2 or amp.shape[1] < 3:
        return float("nan"), 0
    contacts = [set(c.split("-")) for c in channels]
    names = sorted(set().union(*contacts))
    index = {c: i for i, c in enumerate(names)}
    member = np.zeros((n, len(names)))
    for i, cs in enumerate(contacts):  # a handful of names per channel
        member[i, [index[c] for c in cs]] = 1.0
    shares = (member @ member.T) > 0
    upper = np.triu(np.ones((n, n), dtype=bool), k=1) & ~shares
    if not upper.any():
        return float("nan"), 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(amp)[upper]
    if not np.isfinite(r).all():
        return float("nan"), int(upper.sum())
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return float(np.tanh(z.mean())), int(upper.sum())


def _synchrony_table(site_id: str, results: list[_Result], responses: pd.DataFrame) -> pd.DataFrame:
    """Per subject and condition, the synchrony of the slow-phase amplitudes across the subject's
    channels with a slow phase at baseline (one channel set for both conditions)."""
    fields = get_table("ieeg_synchrony").field_names
    slow = responses[(responses["condition"] == "baseline") & responses["responsive_slow"]]
    slow_by_subject = slow.groupby("subject_id")["channel"].agg(list).to_dict()
    rows = []
    for r in results:
        chans = [c for c in slow_by_subject.get(r.pid, []) if c in r.trial_amp]
        amp = np.vstack([r.trial_amp[c] for c in chans]) if chans else np.empty((0, r.n_epochs))
        value, n_pairs = synchrony(amp, chans)
        rows.append(
            {
                "subject_id": r.pid,
                "site": site_id,
                "condition": r.condition,
                "synchrony_r": value,
                "n_channels": np.int32(len(chans)),
                "n_pairs": np.int32(n_pairs),
                "n_epochs": np.int32(r.n_epochs),
                "method": r.method
                + "; synchrony: mean Fisher z of the across-trial Pearson r of the single-trial "
                "mean z in the synchrony window, over pairs of baseline slow-phase channels "
                "sharing no contact",
            }
        )
    out = pd.DataFrame(rows, columns=fields)
    for c in ("n_channels", "n_pairs", "n_epochs"):
        out[c] = out[c].astype("int32")
    out["synchrony_r"] = out["synchrony_r"].astype(float)
    return out


def _group(region: Any) -> str | None:
    if not isinstance(region, str):
        return None
    return "emotion" if region in EMOTION_REGIONS else "other"


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
    good = int((tables.channels["channel_status"] == "good").sum())
    log.info(
        "site %s: %d channels (%d good), %d responses",
        site["id"],
        len(tables.channels),
        good,
        len(tables.responses),
    )
    for warning in tables.qc.get("warnings", pd.Series(dtype=str)).dropna():
        if warning:
            log.warning("site %s: %s", site["id"], warning)
    return {
        "ieeg_channels": tables.channels,
        "ieeg_responses": tables.responses,
        "ieeg_timecourses": tables.timecourses,
        "ieeg_synchrony": tables.synchrony,
    }


def session_step(site: dict, raw: Path, key: bytes, options: dict | None, session: str) -> Piece:
    """The workflow's session step: one session folder's recordings -> one piece."""
    return _to_piece(harmonize_session(site, raw, key, options, session))


# A piece holds a session's results losslessly: frames as Parquet, arrays as .npy, the rest JSON.
def _json_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _to_piece(results: list[_Result]) -> Piece:
    meta: dict[str, Any] = {"results": []}
    frames: dict[str, pd.DataFrame] = {}
    arrays: dict[str, np.ndarray] = {}
    for i, r in enumerate(results):
        good = list(r.zavg)
        meta["results"].append(
            {
                "pid": r.pid,
                "condition": r.condition,
                "channel_status": r.channel_status,
                "n_epochs": int(r.n_epochs),
                "method": r.method,
                "qc": {k: _json_value(v) for k, v in r.qc.items()},
                "good": good,
                "trial": list(r.trial_amp),
            }
        )
        frames[f"{i}.channel_info"] = r.channel_info
        frames[f"{i}.measures"] = r.measures
        arrays[f"{i}.times"] = r.times
        for j, name in enumerate(good):
            arrays[f"{i}.zavg.{j}"] = r.zavg[name]
        for j, name in enumerate(r.trial_amp):
            arrays[f"{i}.trial_amp.{j}"] = r.trial_amp[name]
    return meta, frames, arrays


def _from_piece(piece: Piece) -> list[_Result]:
    meta, frames, arrays = piece
    return [
        _Result(
            pid=m["pid"],
            condition=m["condition"],
            channel_status=m["channel_status"],
            channel_info=frames[f"{i}.channel_info"],
            zavg={name: arrays[f"{i}.zavg.{j}"] for j, name in enumerate(m["good"])},
            measures=frames[f"{i}.measures"],
            n_epochs=m["n_epochs"],
            method=m["method"],
            qc=m["qc"],
            times=arrays[f"{i}.times"],
            trial_amp={name: arrays[f"{i}.trial_amp.{j}"] for j, name in enumerate(m["trial"])},
        )
        for i, m in enumerate(meta["results"])
    ]
