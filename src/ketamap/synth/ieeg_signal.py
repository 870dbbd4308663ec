"""Signals of one synthetic iEEG session (vectorised numpy, in microvolts).

Per contact: pink (1/f power) background, partly shared by all contacts; line noise at the site's
frequency with harmonics 2f and 3f (below Nyquist); planted 70-150 Hz broadband responses after
each puff. A responsive contact's carrier is its own white noise band-passed 70-150 Hz
(``sosfiltfilt``, unit RMS), multiplied by an amplitude envelope:

- fast: ``fast_uv * exp(-(t - L)^2 / 2 s^2)`` with ``L`` the shaft's peak latency and FWHM
  ``fast_fwhm_s``;
- slow: ``slow_uv * G[c, k] * expit((t - o) / e) * expit((o + d - t) / e)``, onset ``o``, duration
  ``d`` (half-maximum width; times ``ketamine_duration_factor`` in the ketamine session) and trial
  gain ``G[c, k] = exp(s z_k + c w_ck - (s^2 + c^2) / 2)`` (mean 1), ``z_k`` shared by the slow
  contacts of the session, ``s`` lower under ketamine. The edge width ``e`` (``edge_s``) is the
  same in both sessions, so the slow phase's HFB *power* (the envelope squared, what the reader
  times) has half-maximum width :func:`slow_half_power_width` ``d - 2 asinh(1) e``.

Carriers are independent across contacts, so a bipolar channel of two adjacent contacts keeps the
response of either. Bad contacts replace (flat) or add to (noisy, spiky) the signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import butter, sosfiltfilt
from scipy.special import expit

from ketamap.synth._rng import stream
from ketamap.synth.ieeg_layout import Layout

HFB_BAND = (70.0, 150.0)
KERNEL_S = 2.0


@dataclass(frozen=True)
class Schedule:
    """Puff schedule of one session."""

    duration_s: int
    onsets: np.ndarray  # sample index of each puff


def slow_half_power_width(duration_s: float, edge_s: float) -> float:
    """Half-maximum width of the planted slow phase's power: ``d - 2 asinh(1) e`` for ``d >> e``.

    The amplitude ``expit((t - o) / e) * expit((o + d - t) / e)`` is at half its plateau at ``o``
    and ``o + d`` (half-maximum width ``d``); its square, the power, is at half its maximum where
    ``expit(x)^2 = 1/2``, ``x = logit(2^-1/2) = ln(1 + sqrt 2) = asinh(1)`` edge widths inside
    each edge. Exactly, with ``D = d / e``, ``q = exp(-D)`` and ``x = (t - o) / e``: the amplitude
    is ``1 / ((1 + u)(1 + q / u))`` with ``u = exp(-x)``, its maximum at ``u = sqrt(q)``, so the
    half-power points solve ``u + q / u = sqrt(2) (1 + sqrt(q))^2 - 1 - q = S``, ``u = (S +
    sqrt(S^2 - 4 q)) / 2`` at the rise, and the width is ``d + 2 e ln(u)``, which this returns
    (``d - 2 asinh(1) e`` is short by about ``14 e exp(-D / 2)``: 1e-3 s at D = 11, the shortest
    ketamine phase of the defaults, 2e-5 s at the mean).
    A reader whose envelope resolution is much coarser than ``e`` smooths the power linearly and
    finds the half-power points up to ``e`` inside the edges instead (the area-equivalent width
    ``d - 2 e``), at most ``0.24 e`` shorter in all.
    """
    d, e = float(duration_s), float(edge_s)
    q = float(np.exp(-d / e))
    s = np.sqrt(2.0) * (1.0 + np.sqrt(q)) ** 2 - 1.0 - q
    u = (s + np.sqrt(s * s - 4.0 * q)) / 2.0
    return d + 2.0 * e * float(np.log(u))


def schedule(
    scenario: dict[str, Any], site: dict[str, Any], label: str, session: str, fs: int
) -> Schedule:
    """Draw the jittered puff onsets (stream ``ieeg.events.<label>.<session>``)."""
    rec = scenario["ieeg"]["recording"]
    rng = stream(int(scenario["seed"]), site["id"], f"ieeg.events.{label}.{session}")
    gaps = rng.uniform(rec["interval_s"]["min"], rec["interval_s"]["max"], int(rec["n_puffs"]) - 1)
    onsets_s = float(rec["lead_s"]) + np.concatenate([[0.0], np.cumsum(gaps)])
    duration = int(np.ceil(onsets_s[-1] + float(rec["tail_s"])))
    return Schedule(duration, np.round(onsets_s * fs).astype(np.int64))


def _pink(rng: np.random.Generator, rows: int, n: int, fs: int) -> np.ndarray:
    """Unit-RMS noise with 1/f power from 1 Hz to Nyquist (zero below 1 Hz)."""
    spec = np.fft.rfft(rng.standard_normal((rows, n)), axis=1)
    f = np.fft.rfftfreq(n, 1.0 / fs)
    shape = np.zeros_like(f)
    shape[f >= 1.0] = 1.0 / np.sqrt(f[f >= 1.0])
    x = np.fft.irfft(spec * shape, n=n, axis=1)
    return x / x.std(axis=1, keepdims=True)


def synthesize(
    scenario: dict[str, Any],
    site: dict[str, Any],
    label: str,
    session: str,
    condition: str,
    layout: Layout,
    sched: Schedule,
    fs: int,
) -> np.ndarray:
    """The session's data, shape (contacts, samples), in microvolts."""
    cfg = scenario["ieeg"]
    sig = cfg["signal"]
    resp = cfg["responses"]
    seed = int(scenario["seed"])
    rng = stream(seed, site["id"], f"ieeg.noise.{label}.{session}")
    n_ch = len(layout.contacts)
    n = sched.duration_s * fs
    t = np.arange(n) / fs

    cf = float(sig["common_fraction"])
    own = _pink(rng, n_ch, n, fs)
    common = _pink(rng, 1, n, fs)
    data = float(sig["background_uv"]) * (np.sqrt(1 - cf) * own + np.sqrt(cf) * common)

    line = np.zeros(n)
    f0 = int(site["ieeg"]["line_frequency"])
    phases = rng.uniform(0, 2 * np.pi, 3)
    for h in (1, 2, 3):
        if h * f0 < fs / 2:
            line += (
                float(sig["line_uv"])
                / 3 ** (h - 1)
                * np.sin(2 * np.pi * h * f0 * t + phases[h - 1])
            )
    gains = rng.uniform(0.8, 1.2, n_ch)
    data += gains[:, None] * line[None, :]

    fast = np.array([c.fast for c in layout.contacts])
    slow = np.array([c.slow for c in layout.contacts])
    active = np.flatnonzero(fast | slow)
    carrier = rng.standard_normal((active.size, n))
    if active.size:
        sos = butter(4, HFB_BAND, btype="bandpass", fs=fs, output="sos")
        carrier = sosfiltfilt(sos, carrier, axis=1)
        carrier /= carrier.std(axis=1, keepdims=True)

    grng = stream(seed, site["id"], f"ieeg.gain.{label}.{session}")
    n_trials = sched.onsets.size
    s_shared = float(
        resp["trial_gain_shared_sd_ketamine" if condition == "ketamine" else "trial_gain_shared_sd"]
    )
    s_chan = float(resp["trial_gain_channel_sd"])
    z = grng.standard_normal(n_trials)
    w = grng.standard_normal((active.size, n_trials))
    gain = np.exp(s_shared * z[None, :] + s_chan * w - (s_shared**2 + s_chan**2) / 2)

    k = int(KERNEL_S * fs)
    tau = np.arange(k) / fs
    factor = float(resp["ketamine_duration_factor"]) if condition == "ketamine" else 1.0
    sd_fast = float(resp["fast_fwhm_s"]) / (2 * np.sqrt(2 * np.log(2)))
    edge = float(resp["edge_s"])
    shafts = [layout.shafts[layout.contacts[i].shaft] for i in active]
    lat = np.array([s.fast_latency_s for s in shafts])[:, None]
    onset = np.array([s.slow_onset_s for s in shafts])[:, None]
    dur = factor * np.array([s.slow_duration_s for s in shafts])[:, None]
    fast_k = (
        float(sig["fast_uv"]) * fast[active][:, None] * np.exp(-0.5 * ((tau - lat) / sd_fast) ** 2)
    )
    slow_k = (
        float(sig["slow_uv"])
        * slow[active][:, None]
        * expit((tau - onset) / edge)
        * expit((onset + dur - tau) / edge)
    )
    envelope = np.zeros((active.size, n))
    for trial, start in enumerate(sched.onsets):
        stop = min(n, int(start) + k)
        envelope[:, start:stop] += (fast_k + slow_k * gain[:, trial : trial + 1])[:, : stop - start]
    data[active] += carrier * envelope

    brng = stream(seed, site["id"], f"ieeg.bad.{label}.{session}")
    for i, c in enumerate(layout.contacts):
        if c.bad == "flat":
            data[i] = brng.normal(0.0, 0.2, n)
        elif c.bad == "noisy":
            data[i] += 10 * float(sig["background_uv"]) * brng.standard_normal(n)
        elif c.bad == "spiky":
            spikes = np.zeros(n)
            where = brng.choice(n, size=max(1, sched.duration_s), replace=False)
            spikes[where] = brng.choice([-1.0, 1.0], where.size) * brng.uniform(
                600, 1200, where.size
            )
            width = max(1, int(0.01 * fs))
            kernel = np.hanning(2 * width + 1)
            data[i] += np.convolve(spikes, kernel, mode="same")
    return data
