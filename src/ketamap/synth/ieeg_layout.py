"""Implantation of a synthetic iEEG patient: shafts, contacts, names, regions and planted labels.

Only cheap draws live here (no signals), so the ground truth can be recomputed from the scenario
without synthesising a recording. Everything is drawn from the stream
``ieeg.layout.<participant label>`` of the site and is the same in both sessions of a patient.

Layout model (parameters in ``scenario['ieeg']``):

- sEEG shafts target distinct (region, hemisphere) pairs, emotion regions drawn twice as often;
  contact 1 is the deepest. Along a shaft: 2-3 contacts in the target region, then 0-2 in white
  matter, then the rest in the cortex of the entry point. ECoG strips lie on lateral temporal or
  parietal cortex. Each run of contacts in one region along a shaft is a *segment*.
- Fast and slow response labels are drawn per segment (so responsive contacts form contiguous
  runs), response timing per shaft (so every responsive contact of a shaft shares it).
- Bad channels: ``max(1, round(fraction * n))`` contacts, flat, noisy and spiky in turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ketamap.synth._rng import stream

EMOTION = ("amygdala", "insula", "acc", "ofc", "hippocampus")
TARGETS = (
    "amygdala",
    "hippocampus",
    "insula",
    "acc",
    "ofc",
    "dlpfc",
    "lateral_temporal",
    "parietal",
    "occipital",
    "thalamus",
)
REGIONS = (*TARGETS, "white_matter")
BAD_KINDS = ("flat", "noisy", "spiky")
# Right-hemisphere centroids in mm (MNI-like); the left hemisphere mirrors x.
_CENTROID = {
    "amygdala": (24.0, -4.0, -18.0),
    "hippocampus": (28.0, -22.0, -12.0),
    "insula": (38.0, 4.0, 4.0),
    "acc": (6.0, 28.0, 20.0),
    "ofc": (22.0, 36.0, -16.0),
    "dlpfc": (40.0, 32.0, 30.0),
    "lateral_temporal": (56.0, -20.0, -8.0),
    "parietal": (42.0, -50.0, 44.0),
    "occipital": (24.0, -86.0, 8.0),
    "thalamus": (12.0, -18.0, 6.0),
}
_ENTRY = {
    "amygdala": "lateral_temporal",
    "hippocampus": "lateral_temporal",
    "insula": "lateral_temporal",
    "acc": "dlpfc",
    "ofc": "dlpfc",
    "dlpfc": "dlpfc",
    "lateral_temporal": "lateral_temporal",
    "parietal": "parietal",
    "occipital": "occipital",
    "thalamus": "parietal",
}
_SHORT = {
    "amygdala": "A",
    "hippocampus": "H",
    "insula": "I",
    "acc": "C",
    "ofc": "O",
    "dlpfc": "F",
    "lateral_temporal": "T",
    "parietal": "P",
    "occipital": "Q",
    "thalamus": "N",
}
_LONG = {
    "amygdala": "AMY",
    "hippocampus": "HIP",
    "insula": "INS",
    "acc": "ACC",
    "ofc": "OFC",
    "dlpfc": "DLP",
    "lateral_temporal": "LTM",
    "parietal": "PAR",
    "occipital": "OCC",
    "thalamus": "THA",
}
_STRIP_SHORT = ("S", "U", "V", "W")
_STRIP_LONG = ("STA", "STB", "STC", "STD")
SEEG_SIZE_MM2 = 5.0
ECOG_SIZE_MM2 = 4.2


@dataclass(frozen=True)
class Shaft:
    """One sEEG shaft or ECoG strip and the response timing its contacts share."""

    kind: str  # "SEEG" or "ECOG"
    target: str
    hemisphere: str  # "L" or "R"
    fast_latency_s: float
    slow_onset_s: float
    slow_duration_s: float  # baseline session


@dataclass(frozen=True)
class Contact:
    """One recording contact with its planted labels."""

    name: str
    shaft: int
    number: int
    region: str
    xyz: tuple[float, float, float]
    fast: bool
    slow: bool
    bad: str | None  # None, "flat", "noisy" or "spiky"


@dataclass(frozen=True)
class Layout:
    """A patient's implantation."""

    shafts: tuple[Shaft, ...]
    contacts: tuple[Contact, ...]

    def bipolar(self) -> list[tuple[int, int]]:
        """Index pairs of adjacent contacts along each shaft or strip (deeper first)."""
        pairs = []
        for i in range(len(self.contacts) - 1):
            a, b = self.contacts[i], self.contacts[i + 1]
            if a.shaft == b.shaft and b.number == a.number + 1:
                pairs.append((i, i + 1))
        return pairs


def region_group(region: str) -> str:
    """``emotion`` for amygdala, insula, acc, ofc, hippocampus; ``other`` elsewhere."""
    return "emotion" if region in EMOTION else "other"


def contact_name(style: str, hemisphere: str, short: str, long: str, number: int) -> str:
    """The site's name of contact ``number`` (1 = deepest) of a shaft."""
    if style == "plain":
        return f"{hemisphere}{short}{number}"
    if style == "padded":
        return f"{hemisphere}{short}{number:02d}"
    if style == "prime":
        return f"{short}{chr(39) if hemisphere == 'L' else ''}{number}"
    return f"{hemisphere}{long}{number:02d}"


def _truncated(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    for _ in range(10_000):
        value = float(rng.normal(mean, sd))
        if lo <= value <= hi:
            return value
    return float(np.clip(mean, lo, hi))


DURATION_BOUNDS = (0.4, 1.0)


def simulate_layout(scenario: dict[str, Any], site: dict[str, Any], label: str) -> Layout:
    """Draw the implantation and planted labels of participant ``label`` at ``site``."""
    cfg = scenario["ieeg"]
    resp = cfg["responses"]
    style = site["ieeg"]["channel_style"]
    rng = stream(int(scenario["seed"]), site["id"], f"ieeg.layout.{label}")
    n_per = int(cfg["contacts_per_shaft"])
    spacing = float(cfg["contact_spacing_mm"])

    combos = [(r, h) for r in TARGETS for h in ("L", "R")]
    weights = np.array([2.0 if r in EMOTION else 1.0 for r, _ in combos])
    n_shafts = int(rng.integers(cfg["shafts"]["min"], cfg["shafts"]["max"] + 1))
    chosen = rng.choice(
        len(combos), size=min(n_shafts, len(combos)), replace=False, p=weights / weights.sum()
    )

    shafts: list[Shaft] = []
    contacts: list[Contact] = []

    def timing() -> tuple[float, float, float]:
        lat = float(
            rng.normal(resp["fast_peak_latency_s"]["mean"], resp["fast_peak_latency_s"]["sd"])
        )
        onset = float(rng.uniform(resp["slow_onset_s"]["min"], resp["slow_onset_s"]["max"]))
        d = resp["slow_duration_s"]
        dur = _truncated(rng, d["mean"], d["sd"], *DURATION_BOUNDS)
        return round(lat, 4), round(onset, 4), round(dur, 4)

    def labels_for(regions: list[str]) -> list[tuple[bool, bool]]:
        out: list[tuple[bool, bool]] = []
        start = 0
        while start < len(regions):
            stop = start
            while stop < len(regions) and regions[stop] == regions[start]:
                stop += 1
            region = regions[start]
            p_fast = resp["fast_probability"] * (0.5 if region == "white_matter" else 1.0)
            p_slow = (
                0.0
                if region == "white_matter"
                else resp["slow_probability_emotion"]
                if region in EMOTION
                else resp["slow_probability_other"]
            )
            u = rng.random(2)
            out.extend([(bool(u[0] < p_fast), bool(u[1] < p_slow))] * (stop - start))
            start = stop
        return out

    for index in chosen:
        target, hemi = combos[int(index)]
        sign = -1.0 if hemi == "L" else 1.0
        n_target = int(rng.integers(2, 4))
        n_wm = min(int(rng.integers(0, 3)), n_per - n_target - 1)
        regions = [target] * n_target + ["white_matter"] * n_wm
        regions += [_ENTRY[target]] * (n_per - len(regions))
        cx, cy, cz = _CENTROID[target]
        origin = np.array([sign * cx, cy, cz]) + rng.normal(0, 2.0, 3)
        direction = np.array([sign, rng.normal(0, 0.25), rng.normal(0, 0.25)])
        direction /= np.linalg.norm(direction)
        lat, onset, dur = timing()
        k = len(shafts)
        shafts.append(Shaft("SEEG", target, hemi, lat, onset, dur))
        for j, ((fast, slow), region) in enumerate(zip(labels_for(regions), regions, strict=True)):
            xyz = origin + direction * spacing * j
            contacts.append(
                Contact(
                    contact_name(style, hemi, _SHORT[target], _LONG[target], j + 1),
                    k,
                    j + 1,
                    region,
                    (float(xyz[0]), float(xyz[1]), float(xyz[2])),
                    fast,
                    slow,
                    None,
                )
            )

    hemi = shafts[0].hemisphere if shafts else "L"
    sign = -1.0 if hemi == "L" else 1.0
    for s in range(int(cfg["ecog_strips"])):
        region = "lateral_temporal" if s % 2 == 0 else "parietal"
        cx, cy, cz = (62.0, -40.0, -4.0) if region == "lateral_temporal" else (52.0, -60.0, 40.0)
        origin = np.array([sign * cx, cy, cz]) + rng.normal(0, 2.0, 3)
        lat, onset, dur = timing()
        k = len(shafts)
        shafts.append(Shaft("ECOG", region, hemi, lat, onset, dur))
        for j, (fast, slow) in enumerate(labels_for([region] * n_per)):
            xyz = origin + np.array([0.0, 2 * spacing * j, 0.0])
            contacts.append(
                Contact(
                    contact_name(style, hemi, _STRIP_SHORT[s], _STRIP_LONG[s], j + 1),
                    k,
                    j + 1,
                    region,
                    (float(xyz[0]), float(xyz[1]), float(xyz[2])),
                    fast,
                    slow,
                    None,
                )
            )

    n_bad = max(1, math.floor(float(cfg["bad_channels"]) * len(contacts) + 0.5))
    n_bad = min(n_bad, len(contacts)) if cfg["bad_channels"] > 0 else 0
    bad_idx = rng.choice(len(contacts), size=n_bad, replace=False)
    kinds = {int(i): BAD_KINDS[r % len(BAD_KINDS)] for r, i in enumerate(bad_idx)}
    contacts = [
        Contact(c.name, c.shaft, c.number, c.region, c.xyz, c.fast, c.slow, kinds.get(i))
        for i, c in enumerate(contacts)
    ]
    return Layout(tuple(shafts), tuple(contacts))


def kind_of(layout: Layout, contact: Contact) -> str:
    """``SEEG`` or ``ECOG``."""
    return layout.shafts[contact.shaft].kind
