"""Signal models of the behaviour part: eyelid closure, tracker output and mouse licking.

Pure, vectorised numpy; every parameter comes from ``scenario['behaviour']`` (see
``schemas/scenario.schema.yaml``). The module draws nothing on its own: callers pass the random
generator of the stream they own.

Eyelid closure after one puff at time 0 (``t`` in seconds after the puff):

- reflex ``r(t) = A (t / tp)^k exp(k (1 - t / tp))`` for ``t >= 0`` (peak ``A`` at ``tp``);
- sustained ``s(t) = L * S((t - a) / (b - a)) * (1 - S((t - e) / f))`` with the smoothstep
  ``S(x) = 3x^2 - 2x^3`` on [0, 1] (0 below, 1 above), rise ``[a, b]``, sustained window end ``e``
  and fall ``f``: exactly 0 before ``a`` (so the reflex window sees no drug effect), exactly ``L``
  from ``b`` to ``e``, back to exactly 0 at ``e + f``;
- one puff: ``c = 1 - (1 - r)(1 - s)``; several puffs combine the same way.

The aperture is ``open * (1 - c) + noise``; the tracker then adds low-confidence runs with
garbage values and a few frames where the eye is lost (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def smoothstep(x: np.ndarray) -> np.ndarray:
    """``3x^2 - 2x^3`` of ``x`` clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def reflex(t: np.ndarray, peak: np.ndarray | float, cfg: dict[str, Any]) -> np.ndarray:
    """Reflex-blink closure at ``t`` seconds after the puff (0 before it)."""
    tp = float(cfg["reflex_peak_s"])
    k = float(cfg["reflex_shape"])
    x = np.maximum(t, 0.0) / tp
    with np.errstate(divide="ignore", invalid="ignore"):
        pulse = np.where(t > 0, np.exp(k * (np.log(np.maximum(x, 1e-300)) + 1.0 - x)), 0.0)
    return np.asarray(peak * pulse, dtype=float)


def sustained(
    t: np.ndarray, level: np.ndarray | float, cfg: dict[str, Any], species: str
) -> np.ndarray:
    """Sustained closure plateau at ``t`` seconds after the puff (``species`` human or mouse)."""
    rise = cfg["sustained_rise_s"]
    end = float(cfg["sustained_window_s"][species]["max"])
    fall = float(cfg["sustained_fall_s"][species])
    up = smoothstep((t - float(rise["min"])) / (float(rise["max"]) - float(rise["min"])))
    down = 1.0 - smoothstep((t - end) / fall)
    return np.asarray(level * up * down, dtype=float)


def puff_closure(
    t: np.ndarray,
    peak: np.ndarray | float,
    level: np.ndarray | float,
    cfg: dict[str, Any],
    species: str,
) -> np.ndarray:
    """Closure ``1 - (1 - r)(1 - s)`` of one puff (arrays broadcast)."""
    return 1.0 - (1.0 - reflex(t, peak, cfg)) * (1.0 - sustained(t, level, cfg, species))


def closure(
    times: np.ndarray,
    puffs: np.ndarray,
    peaks: np.ndarray,
    levels: np.ndarray,
    cfg: dict[str, Any],
    species: str,
) -> np.ndarray:
    """Closure at ``times`` from every puff at ``puffs`` (per-puff ``peaks`` and ``levels``).

    Evaluated as a (frames x puffs) grid; only puffs whose response can reach a frame count, and
    the puffs combine as ``1 - prod(1 - c_k)``.
    """
    if puffs.size == 0:
        return np.zeros_like(times, dtype=float)
    lag = times[:, None] - puffs[None, :]
    per_puff = puff_closure(lag, peaks[None, :], levels[None, :], cfg, species)
    return np.asarray(1.0 - np.prod(1.0 - per_puff, axis=1), dtype=float)


def window_mean(
    peak: float, level: float, cfg: dict[str, Any], species: str, window: dict[str, Any]
) -> float:
    """Mean one-puff closure over ``window`` (fine grid, trapezoid), for the ground truth."""
    t = np.linspace(float(window["min"]), float(window["max"]), 20001)
    c = puff_closure(t, peak, level, cfg, species)
    return float(np.trapezoid(c, t) / (t[-1] - t[0]))


def window_peak(
    peak: float, level: float, cfg: dict[str, Any], species: str, window: dict[str, Any]
) -> float:
    """Peak one-puff closure within ``window`` (fine grid), for the ground truth."""
    t = np.linspace(float(window["min"]), float(window["max"]), 20001)
    return float(np.max(puff_closure(t, peak, level, cfg, species)))


@dataclass(frozen=True)
class Tracked:
    """Tracker output of one video: aperture (NaN = eye lost), confidence, frame masks."""

    aperture: np.ndarray
    confidence: np.ndarray
    low: np.ndarray  # bool: low-confidence frame (garbage values)
    missing: np.ndarray  # bool: eye lost (no value)


def run_mask(rng: np.random.Generator, n: int, fraction: float, runs: dict[str, Any]) -> np.ndarray:
    """Boolean mask of ``n`` frames covering about ``fraction`` of them in runs of frames."""
    lo, hi = int(runs["min"]), int(runs["max"])
    n_runs = int(rng.poisson(fraction * n / ((lo + hi) / 2.0))) if fraction > 0 else 0
    starts = rng.integers(0, max(n, 1), n_runs)
    lengths = rng.integers(lo, hi + 1, n_runs)
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, np.minimum(starts + lengths, n), -1)
    return np.cumsum(edges[:n]) > 0


def track(
    rng: np.random.Generator, clean_px: np.ndarray, open_px: float, tracking: dict[str, Any]
) -> Tracked:
    """Tracker output for a noiseless aperture trace ``clean_px`` (noise added by the caller)."""
    n = clean_px.size
    low = run_mask(rng, n, float(tracking["dropout_fraction"]), tracking["dropout_run_frames"])
    missing = rng.random(n) < float(tracking["missing_fraction"])
    good_c, low_c, garbage = (
        tracking["confidence_good"],
        tracking["confidence_low"],
        tracking["garbage_aperture"],
    )
    confidence = np.where(
        low,
        rng.uniform(low_c["min"], low_c["max"], n),
        rng.uniform(good_c["min"], good_c["max"], n),
    )
    junk = open_px * rng.uniform(garbage["min"], garbage["max"], n)
    aperture = np.where(low, junk, clean_px)
    aperture = np.where(missing, np.nan, np.maximum(aperture, 0.0))
    confidence = np.where(missing, rng.uniform(low_c["min"], low_c["max"], n), confidence)
    return Tracked(aperture, confidence, low & ~missing, missing)


def bouts(
    rng: np.random.Generator, starts: np.ndarray, stops: np.ndarray, licks: dict[str, Any]
) -> np.ndarray:
    """Sorted lick times of bouts running from ``starts`` to ``stops`` (one lick at each start)."""
    if starts.size == 0:
        return np.zeros(0)
    rate = rng.uniform(licks["rate_hz"]["min"], licks["rate_hz"]["max"], starts.size)
    longest = float(np.max(stops - starts))
    width = int(np.ceil(longest * float(licks["rate_hz"]["max"]) * 1.5)) + 2
    cv = float(licks["interval_cv"])
    gaps = (1.0 / rate)[:, None] * np.clip(
        1.0 + cv * rng.standard_normal((starts.size, width)), 0.5, 1.5
    )
    gaps[:, 0] = 0.0
    times = starts[:, None] + np.cumsum(gaps, axis=1)
    keep = times <= stops[:, None]
    return np.sort(times[keep])
