"""iEEG part of the synthetic consortium: BIDS-iEEG eye-puff recordings of epilepsy patients.

Each site with ``modality: ieeg`` and an ``ieeg`` section writes, per patient and session
(baseline and ketamine, the site's own session labels), the files of ``docs/site_data.md``:
the signal (EDF+ or BrainVision, int16), ``_ieeg.json``, ``_channels.tsv``, ``_events.tsv``,
``_electrodes.tsv`` and ``_coordsystem.json``. The clinical module writes participants and
sessions (group ``epilepsy``, no scores).

Layout and planted labels: :mod:`ketamap.synth.ieeg_layout`; signals:
:mod:`ketamap.synth.ieeg_signal`. Ground truth:

- ``ground_truth_ieeg_channels.tsv`` (next to ``ground_truth.json``): one row per site,
  participant (the site's label), condition and channel, for every contact (``kind`` contact) and
  every adjacent-contact bipolar channel ``<c1>-<c2>`` (``kind`` bipolar; responsive when either
  contact is, timing of the shaft; region of the deeper grey-matter contact; bad when either
  contact is bad);
- pooled entries in ``ground_truth.json`` (see :func:`truth`);
- ``canaries`` in ``ground_truth.json``: the patient names written to EDF headers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import truncnorm

from ketamap.errors import ConfigError
from ketamap.synth import clinical
from ketamap.synth._io import write_json, write_tsv
from ketamap.synth.ieeg_layout import (
    DURATION_BOUNDS,
    ECOG_SIZE_MM2,
    SEEG_SIZE_MM2,
    Layout,
    kind_of,
    region_group,
    simulate_layout,
)
from ketamap.synth.ieeg_signal import Schedule, schedule, slow_half_power_width, synthesize

NAME = "ieeg"
TASK = "puff"
CHANNEL_TRUTH = "ground_truth_ieeg_channels.tsv"
CONDITIONS = ("baseline", "ketamine")
TRUTH_COLUMNS = (
    "site",
    "participant",
    "condition",
    "session",
    "kind",
    "channel",
    "type",
    "region",
    "region_group",
    "hemisphere",
    "status",
    "responsive_fast",
    "fast_peak_latency_s",
    "responsive_slow",
    "slow_onset_s",
    "slow_duration_s",
)
_BAD_TEXT = {"flat": "flat signal", "noisy": "excessive broadband noise", "spiky": "large spikes"}


# --------------------------------------------------------------------------- plug-in contract


def applies(site: dict[str, Any]) -> bool:
    """iEEG is written for human sites with modality ieeg and an ``ieeg`` section."""
    return bool(
        site["species"] == "human" and site["modality"] == "ieeg" and site.get("ieeg") is not None
    )


def reader_options(site: dict[str, Any]) -> dict[str, Any]:
    """``conditions``: the site's session labels mapped to baseline / ketamine."""
    labels = site["session_labels"]
    return {"conditions": {labels["baseline"]: "baseline", labels["ketamine"]: "ketamine"}}


def validate(scenario: dict[str, Any], source: str | None) -> None:
    """Check what the schema cannot: ieeg sections, groups, sampling rate, shafts, intervals."""
    cfg = scenario["ieeg"]

    def fail(message: str, field: str, site: str | None = None, **kw: Any) -> None:
        raise ConfigError(message, site=site, file=source, field=field, **kw)

    for i, site in enumerate(scenario["sites"]):
        where = f"sites[{i}]"
        groups = site.get("groups") or {}
        if site["modality"] != "ieeg":
            if site.get("ieeg") is not None:
                fail("only ieeg sites may have an ieeg section", f"{where}.ieeg", site["id"])
            if "epilepsy" in groups:
                fail(
                    "epilepsy patients belong to ieeg sites", f"{where}.groups.epilepsy", site["id"]
                )
            continue
        if site["species"] != "human":
            continue
        if site.get("ieeg") is None:
            fail(
                "an ieeg site needs its ieeg section",
                f"{where}.ieeg",
                site["id"],
                expected="format and line_frequency at least",
            )
        if set(groups) != {"epilepsy"}:
            fail(
                "an ieeg site has epilepsy patients only",
                f"{where}.groups",
                site["id"],
                expected="groups: {epilepsy: {n: ...}}",
            )
        fs = float(site["ieeg"]["sampling_frequency"])
        if fs != int(fs):
            fail(
                f"sampling frequency {fs} is not a whole number of Hz",
                f"{where}.ieeg.sampling_frequency",
                site["id"],
            )
    if cfg["shafts"]["min"] > cfg["shafts"]["max"]:
        fail("shafts.min exceeds shafts.max", "ieeg.shafts")
    rec = cfg["recording"]
    if rec["interval_s"]["min"] > rec["interval_s"]["max"]:
        fail("interval_s.min exceeds interval_s.max", "ieeg.recording.interval_s")
    resp = cfg["responses"]
    longest = resp["slow_onset_s"]["max"] + DURATION_BOUNDS[1] + 0.5
    if rec["interval_s"]["min"] < longest:
        fail(
            f"puffs closer than {longest:.2f} s overlap the slow phase of the previous puff",
            "ieeg.recording.interval_s.min",
            expected=f"at least {longest:.2f}",
        )
    if resp["slow_onset_s"]["min"] > resp["slow_onset_s"]["max"]:
        fail("slow_onset_s.min exceeds slow_onset_s.max", "ieeg.responses.slow_onset_s")


# --------------------------------------------------------------------------- helpers


def _sites(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [site for site in scenario["sites"] if applies(site)]


def _fs(site: dict[str, Any]) -> int:
    return int(site["ieeg"]["sampling_frequency"])


def canary_name(scenario: dict[str, Any], site: dict[str, Any], label: str) -> str:
    """The patient name written to the EDF header of ``label`` (no spaces: EDF+)."""
    digest = hashlib.sha256(f"{scenario['seed']}/{site['id']}/{label}".encode()).hexdigest()
    return f"{site['ieeg']['canary_name']}-{digest[:4]}"


def canaries(scenario: dict[str, Any]) -> list[str]:
    """Every EDF patient name planted (a reader must never let one reach an output)."""
    return [
        canary_name(scenario, site, p.label)
        for site in _sites(scenario)
        if site["ieeg"]["format"] == "edf"
        for p in clinical.simulate_site(scenario, site)
    ]


def _num(value: float, digits: int = 4) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------- writing


def write_site(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    """Write every session of every patient of ``site``."""
    fs = _fs(site)
    ieeg = site["ieeg"]
    for person in clinical.simulate_site(scenario, site):
        layout = simulate_layout(scenario, site, person.label)
        for visit, session, when in person.sessions:
            sched = schedule(scenario, site, person.label, session, fs)
            data = synthesize(scenario, site, person.label, session, visit, layout, sched, fs)
            base = site_dir / f"sub-{person.label}" / session / "ieeg"
            base.mkdir(parents=True, exist_ok=True)
            stem = f"sub-{person.label}_{session}_task-{TASK}_run-01"
            start = dt.datetime.fromisoformat(when)
            if ieeg["format"] == "edf":
                _write_edf(
                    base / f"{stem}_ieeg.edf",
                    data,
                    layout,
                    fs,
                    start,
                    canary_name(scenario, site, person.label),
                    person.female,
                    ieeg["canary_birthdate"],
                )
            else:
                _write_brainvision(base, f"{stem}_ieeg", data, layout, fs, start, sched)
            _write_sidecars(scenario, site, base, stem, layout, sched, fs)
            space = f"sub-{person.label}_{session}_space-{ieeg['space']}"
            _write_electrodes(base, space, layout, ieeg["space"])


def _write_edf(
    path: Path,
    data: np.ndarray,
    layout: Layout,
    fs: int,
    start: dt.datetime,
    name: str,
    female: bool,
    birthdate: str,
) -> None:
    from edfio import Edf, EdfSignal, Patient, Recording

    signals = []
    for row, c in zip(data, layout.contacts, strict=True):
        lo, hi = float(np.floor(row.min())) - 1.0, float(np.ceil(row.max())) + 1.0
        signals.append(
            EdfSignal(
                row,
                fs,
                label=c.name,
                physical_dimension="uV",
                physical_range=(lo, hi),
                transducer_type="sEEG" if kind_of(layout, c) == "SEEG" else "ECoG",
            )
        )
    edf = Edf(
        signals,
        patient=Patient(
            code="X",
            sex="F" if female else "M",
            birthdate=dt.date.fromisoformat(birthdate),
            name=name,
        ),
        recording=Recording(startdate=start.date()),
        starttime=start.time(),
        data_record_duration=1,
    )
    edf.write(path)


def _write_brainvision(
    folder: Path,
    base: str,
    data: np.ndarray,
    layout: Layout,
    fs: int,
    start: dt.datetime,
    sched: Schedule,
) -> None:
    from pybv import write_brainvision

    volts = np.clip(data, -3200.0, 3200.0) * 1e-6
    events = np.column_stack([sched.onsets, np.ones_like(sched.onsets)])
    write_brainvision(
        data=volts,
        sfreq=fs,
        ch_names=[c.name for c in layout.contacts],
        fname_base=base,
        folder_out=str(folder),
        events=events,
        resolution=0.1,
        unit="µV",
        fmt="binary_int16",
        meas_date=start.replace(tzinfo=dt.UTC),
        overwrite=True,
    )


def _write_sidecars(
    scenario: dict[str, Any],
    site: dict[str, Any],
    base: Path,
    stem: str,
    layout: Layout,
    sched: Schedule,
    fs: int,
) -> None:
    ieeg = site["ieeg"]
    kinds = [kind_of(layout, c) for c in layout.contacts]
    write_json(
        base / f"{stem}_ieeg.json",
        {
            "TaskName": TASK,
            "TaskDescription": "Unpredictable air puffs to the eye",
            "iEEGReference": ieeg["reference"],
            "SamplingFrequency": fs,
            "PowerLineFrequency": int(ieeg["line_frequency"]),
            "SoftwareFilters": "n/a",
            "Manufacturer": ieeg["manufacturer"],
            "RecordingDuration": sched.duration_s,
            "RecordingType": "continuous",
            "SEEGChannelCount": kinds.count("SEEG"),
            "ECOGChannelCount": kinds.count("ECOG"),
        },
    )
    high = _num(min(fs / 4, 500.0), 1)
    write_tsv(
        base / f"{stem}_channels.tsv",
        ["name", "type", "units", "low_cutoff", "high_cutoff", "status", "status_description"],
        [
            [
                c.name,
                k,
                "µV",
                "0.1",
                high,
                "bad" if c.bad else "good",
                _BAD_TEXT[c.bad] if c.bad else "n/a",
            ]
            for c, k in zip(layout.contacts, kinds, strict=True)
        ],
        trailing_newline=bool(site["trailing_newline"]),
    )
    dur = _num(float(scenario["ieeg"]["recording"]["puff_duration_s"]))
    write_tsv(
        base / f"{stem}_events.tsv",
        ["onset", "duration", "trial_type", "sample"],
        [[_num(int(s) / fs, 6), dur, "puff", str(int(s))] for s in sched.onsets],
        trailing_newline=bool(site["trailing_newline"]),
    )


def _write_electrodes(base: Path, stem: str, layout: Layout, space: str) -> None:
    rows = []
    for c in layout.contacts:
        size = SEEG_SIZE_MM2 if kind_of(layout, c) == "SEEG" else ECOG_SIZE_MM2
        rows.append(
            [
                c.name,
                *(_num(v, 2) for v in c.xyz),
                _num(size),
                c.region,
                layout.shafts[c.shaft].hemisphere,
            ]
        )
    write_tsv(
        base / f"{stem}_electrodes.tsv",
        ["name", "x", "y", "z", "size", "region", "hemisphere"],
        rows,
    )
    write_json(
        base / f"{stem}_coordsystem.json",
        {
            "iEEGCoordinateSystem": space,
            "iEEGCoordinateUnits": "mm",
            "iEEGCoordinateSystemDescription": "Synthetic template coordinates (RAS, mm)",
        },
    )


# --------------------------------------------------------------------------- ground truth


def channel_truth(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-contact and per-bipolar-channel truths of every iEEG session (see module docstring)."""
    factor = float(scenario["ieeg"]["responses"]["ketamine_duration_factor"])
    rows: list[dict[str, Any]] = []
    for site in _sites(scenario):
        for person in clinical.simulate_site(scenario, site):
            layout = simulate_layout(scenario, site, person.label)
            channels: list[tuple[str, str, list[int]]] = [
                ("contact", c.name, [i]) for i, c in enumerate(layout.contacts)
            ]
            channels += [
                ("bipolar", f"{layout.contacts[a].name}-{layout.contacts[b].name}", [a, b])
                for a, b in layout.bipolar()
            ]
            for visit, session, _ in person.sessions:
                scale = factor if visit == "ketamine" else 1.0
                for kind, name, members in channels:
                    cs = [layout.contacts[i] for i in members]
                    shaft = layout.shafts[cs[0].shaft]
                    grey = [c.region for c in cs if c.region != "white_matter"]
                    region = grey[0] if grey else "white_matter"
                    fast = any(c.fast for c in cs)
                    slow = any(c.slow for c in cs)
                    rows.append(
                        {
                            "site": site["id"],
                            "participant": person.label,
                            "condition": visit,
                            "session": session,
                            "kind": kind,
                            "channel": name,
                            "type": shaft.kind,
                            "region": region,
                            "region_group": region_group(region),
                            "hemisphere": shaft.hemisphere,
                            "status": "bad" if any(c.bad for c in cs) else "good",
                            "responsive_fast": fast,
                            "fast_peak_latency_s": shaft.fast_latency_s if fast else None,
                            "responsive_slow": slow,
                            "slow_onset_s": shaft.slow_onset_s if slow else None,
                            "slow_duration_s": round(scale * shaft.slow_duration_s, 6)
                            if slow
                            else None,
                        }
                    )
    return rows


def write_shared(scenario: dict[str, Any], out_dir: Path) -> None:
    """Write ``ground_truth_ieeg_channels.tsv`` when any site writes iEEG."""
    if not _sites(scenario):
        return

    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return _num(v, 6)
        return str(v)

    rows = [[cell(r[k]) for k in TRUTH_COLUMNS] for r in channel_truth(scenario)]
    write_tsv(Path(out_dir) / CHANNEL_TRUTH, list(TRUTH_COLUMNS), rows)


def lognormal_correlation(shared_sd: float, channel_sd: float) -> float:
    """Correlation across trials of two slow contacts' gains exp(s z + c w) (exact)."""
    total = shared_sd**2 + channel_sd**2
    return 0.0 if total == 0 else float(np.expm1(shared_sd**2) / np.expm1(total))


def mean_slow_duration(scenario: dict[str, Any]) -> float:
    """Expected baseline slow-phase duration (s): the mean of the truncated normal it is drawn from."""
    d = scenario["ieeg"]["responses"]["slow_duration_s"]
    lo, hi = DURATION_BOUNDS
    return float(
        truncnorm.mean(
            (lo - d["mean"]) / d["sd"], (hi - d["mean"]) / d["sd"], loc=d["mean"], scale=d["sd"]
        )
    )


def slow_width_change(scenario: dict[str, Any]) -> float:
    """Relative change (ketamine / baseline - 1) of the slow phase's half-power width.

    Ketamine multiplies the half-amplitude width ``d`` by ``f`` but leaves the edges alone, so the
    half-power width ``d - 2 asinh(1) e`` (:func:`ketamap.synth.ieeg_signal.slow_half_power_width`)
    changes by ``(f E[d] - w) / (E[d] - w) - 1`` with ``w = 2 asinh(1) e``: more than ``f - 1`` (a
    constant offset does not cancel in a ratio). The width is linear in ``d`` (up to
    ``e exp(-d / 2e)``), so the ratio of mean widths over channels and subjects is that of the
    widths at the mean duration; its dependence on the sample's mean duration is
    ``2 asinh(1) e (1 - f) / (E[d] - w)^2`` per second (0.036 for the defaults), negligible.
    """
    resp = scenario["ieeg"]["responses"]
    mean_d = mean_slow_duration(scenario)
    f = float(resp["ketamine_duration_factor"])
    edge = float(resp["edge_s"])
    return slow_half_power_width(f * mean_d, edge) / slow_half_power_width(mean_d, edge) - 1.0


def truth(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Pooled iEEG truths, ketamine minus baseline; empty without iEEG sites.

    - ``ieeg.slow_phase_duration`` (s), overall (region_group null) and per region group: the
      mean over good slow-responsive bipolar channels (all patients pooled, each channel once) of
      the planted duration difference; ``population_value`` is the model's expectation
      ``(factor - 1) * E[duration]``. The reader's half-power width is shorter than the planted
      half-amplitude width by the same amount in both sessions, which cancels in the difference.
    - ``ieeg.fast_phase_latency`` (s): 0 by construction.
    - ``ieeg.synchrony`` (r): difference of the exact correlation across trials of two slow
      contacts' planted slow-phase amplitudes; ``sign`` -1 is what a recovered, noise-attenuated
      estimate must show.
    """
    if not _sites(scenario):
        return []
    resp = scenario["ieeg"]["responses"]
    rows = [r for r in channel_truth(scenario) if r["kind"] == "bipolar" and r["status"] == "good"]
    diffs: dict[str | None, list[float]] = {None: [], "emotion": [], "other": []}
    base = {
        (r["site"], r["participant"], r["channel"]): r
        for r in rows
        if r["condition"] == "baseline" and r["responsive_slow"]
    }
    for r in rows:
        key = (r["site"], r["participant"], r["channel"])
        if r["condition"] == "ketamine" and key in base:
            d = r["slow_duration_s"] - base[key]["slow_duration_s"]
            diffs[None].append(d)
            diffs[r["region_group"]].append(d)
    population = (float(resp["ketamine_duration_factor"]) - 1.0) * mean_slow_duration(scenario)

    def entry(
        analysis: str, unit: str, value: float, group: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        out = {
            "analysis": analysis,
            "term": "ketamine_minus_baseline",
            "arm": None,
            "region": None,
            "region_group": group,
            "value": round(float(value), 12) + 0.0,
            "unit": unit,
        }
        out.update(extra)
        return out

    entries = []
    for group in (None, "emotion", "other"):
        if diffs[group]:
            entries.append(
                entry(
                    "ieeg.slow_phase_duration",
                    "s",
                    float(np.mean(diffs[group])),
                    group,
                    n_channels=len(diffs[group]),
                    population_value=round(population, 12),
                )
            )
    entries.append(entry("ieeg.fast_phase_latency", "s", 0.0))
    c = float(resp["trial_gain_channel_sd"])
    r_base = lognormal_correlation(float(resp["trial_gain_shared_sd"]), c)
    r_ket = lognormal_correlation(float(resp["trial_gain_shared_sd_ketamine"]), c)
    entries.append(
        entry(
            "ieeg.synchrony",
            "r",
            r_ket - r_base,
            sign=int(np.sign(round(r_ket - r_base, 12))),
            baseline_value=round(r_base, 12),
            ketamine_value=round(r_ket, 12),
            estimand="correlation across trials of planted slow-phase amplitudes "
            "of two slow contacts (latent; measured values are attenuated)",
        )
    )
    return entries
