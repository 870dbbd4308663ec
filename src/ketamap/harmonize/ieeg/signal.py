"""The iEEG signal core: high-frequency broadband (HFB) envelope, line noise, bad-channel detection.

Pure numpy/scipy functions on ``channels x samples`` arrays, with no file or table in sight; the
reader and harmonizer (:mod:`ketamap.ieeg`) calls them.

HFB envelope (:func:`hfb_envelope`): the band (default 70-150 Hz) is cut into sub-bands (default
10 Hz wide). Each sub-band is band-passed with a zero-phase Butterworth filter (order 4, applied
forward and backward, i.e. the magnitude response ``|H|^2`` of ``scipy.signal.butter(4, band,
'bandpass', output='sos')`` run through ``sosfiltfilt``) and its Hilbert amplitude taken; each
sub-band's amplitude is divided by its mean over the recording, the sub-bands are averaged, and the
result is resampled to 100 Hz with :func:`scipy.signal.resample_poly`.

Why it is fast: band-pass and Hilbert transform are both diagonal in the frequency domain, so one
real FFT of a channel serves every sub-band; each sub-band then costs one inverse complex FFT
(the analytic signal of the band-passed channel) instead of a filter pass, an FFT and an inverse
FFT. And since the analytic signal of a sub-band has no energy above ~ the band's top, that inverse
FFT is taken over the first ``nfft / decim`` bins only, which yields the analytic signal at every
``decim``-th sample exactly (decim = 5 at 2 kHz: the envelope is formed at 400 Hz, then resampled
to 100 Hz with the same Kaiser-windowed polyphase filter in continuous time). The result equals ``sosfiltfilt`` + ``scipy.signal.hilbert`` except within a few filter time
constants (~0.1-0.3 s) of the recording's ends, where ``sosfiltfilt`` pads by odd extension and the
FFT wraps around zero padding (to ``next_fast_len``). Channels are processed in blocks so that
memory stays at a few block-sized copies whatever the recording length and channel count.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from ketamap.harmonize.ieeg import FS as OUT_SFREQ  # the one constant of the envelope rate

FILTER_ORDER = 4
DEFAULT_BLOCK = 8


def sub_bands(band: tuple[float, float], width: float) -> list[tuple[float, float]]:
    """Consecutive sub-bands of ``width`` Hz covering ``band`` (the last one clipped to the band)."""
    lo, hi = float(band[0]), float(band[1])
    if not (0 < lo < hi) or width <= 0:
        raise ValueError(
            f"HFB band {band!r} / width {width!r}: expected 0 < low < high and width > 0"
        )
    edges = [*list(np.arange(lo, hi, width)), hi]
    out = [(float(a), float(b)) for a, b in itertools.pairwise(edges) if b - a > 1e-9]
    return out


def check_band(band: tuple[float, float], sfreq: float) -> None:
    """Reject a band that does not fit below Nyquist, with the numbers and a fix."""
    nyquist = sfreq / 2.0
    if band[1] >= nyquist:
        raise ValueError(
            f"HFB band {band[0]:g}-{band[1]:g} Hz does not fit below the Nyquist frequency "
            f"{nyquist:g} Hz of a {sfreq:g} Hz recording; expected a sampling rate above "
            f"{2 * band[1]:g} Hz or a lower band (ieeg.band_hz)"
        )


def resample_ratio(sfreq: float, out_sfreq: float = OUT_SFREQ) -> tuple[int, int]:
    """(up, down) for :func:`scipy.signal.resample_poly` from ``sfreq`` to ``out_sfreq``."""
    frac = Fraction(out_sfreq / sfreq).limit_denominator(10000)
    return frac.numerator, frac.denominator


def _band_gains(
    bands: list[tuple[float, float]], sfreq: float, nfft: int
) -> tuple[np.ndarray, int, int]:
    """Analytic-signal gains (|H|^2, doubled for positive frequencies) on the rfft bins in use.

    Returns ``(gains [n_bands, k1-k0], k0, k1)``: bins outside ``k0:k1`` are negligible in every
    sub-band (below 1e-12 of the pass band) and skipped.
    """
    freqs = sp_fft.rfftfreq(nfft, 1.0 / sfreq)
    gains = np.empty((len(bands), freqs.size))
    for i, (lo, hi) in enumerate(bands):
        sos = signal.butter(FILTER_ORDER, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
        _, h = signal.sosfreqz(sos, worN=freqs, fs=sfreq)
        gains[i] = np.abs(h) ** 2
    gains *= 2.0
    gains[:, 0] /= 2.0
    if nfft % 2 == 0:
        gains[:, -1] /= 2.0
    used = np.flatnonzero(gains.max(axis=0) > 1e-12)
    k0, k1 = int(used[0]), int(used[-1]) + 1
    return gains[:, k0:k1], k0, k1


def hfb_envelope(
    data: np.ndarray,
    sfreq: float,
    band: tuple[float, float] = (70.0, 150.0),
    width: float = 10.0,
    *,
    out_sfreq: float = OUT_SFREQ,
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """HFB envelope of ``data`` (channels x samples) at ``out_sfreq`` (100 Hz), channels x samples_out.

    Each sub-band amplitude is normalised by its own mean, so the output is dimensionless (1 = the
    channel's mean HFB amplitude). Raises :class:`ValueError` when the band does not fit below
    Nyquist or the recording is too short.
    """
    x = np.asarray(data, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"data has shape {x.shape}; expected channels x samples")
    check_band((float(band[0]), float(band[1])), sfreq)
    bands = sub_bands(band, width)
    n_ch, n = x.shape
    if n < 2 * sfreq / bands[0][0]:
        raise ValueError(
            f"recording of {n} samples is too short for an HFB envelope at {sfreq:g} Hz"
        )
    decim, nfft, gains, k0, k1 = _plan(bands, sfreq, n)
    n_env = -(-n // decim)  # samples of the envelope at sfreq / decim
    m = nfft // decim
    up0, down0 = resample_ratio(sfreq, out_sfreq)
    n_out = -(-n * up0 // down0)
    up, down = resample_ratio(sfreq / decim, out_sfreq)
    out = np.empty((n_ch, n_out))

    def one_block(start: int) -> None:
        stop = min(start + block, n_ch)
        nb = stop - start
        spec = sp_fft.rfft(x[start:stop], n=nfft, axis=-1)[:, k0:k1]
        spec *= m / nfft  # ifft of length m returns every decim-th sample of the length-nfft ifft
        acc = np.zeros((nb, n_env))
        buf = np.zeros((nb, m), dtype=complex)
        for gain in gains:
            np.multiply(spec, gain, out=buf[:, k0:k1])
            amp = np.abs(sp_fft.ifft(buf, axis=-1)[:, :n_env])
            amp /= amp.mean(axis=-1, keepdims=True)
            acc += amp
        acc /= len(gains)
        res = signal.resample_poly(acc, up, down, axis=-1)
        out[start:stop] = res[:, :n_out]

    # Blocks are independent and each writes its own rows, so they run on the job's threads
    # (scipy.fft's workers, set by the session job: ketamap.harmonize.run_session) with the same
    # bytes as one after another; the FFTs, products and the polyphase filter release the GIL.
    # Inside a block the FFTs stay on one worker (the pool's threads have scipy.fft's default).
    starts = range(0, n_ch, block)
    workers = min(sp_fft.get_workers(), len(starts))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_block, starts))
    else:
        for start in starts:
            one_block(start)
    return out


def _plan(
    bands: list[tuple[float, float]], sfreq: float, n: int
) -> tuple[int, int, np.ndarray, int, int]:
    """Decimation of the analytic signal, FFT length, sub-band gains and the bins in use.

    The analytic signal of a sub-band has no negative frequencies, so when its spectrum is
    negligible above ``sfreq / decim`` an inverse FFT of the first ``nfft / decim`` bins gives its
    exact values at every ``decim``-th sample. ``decim`` is the largest factor that keeps the
    envelope rate at least ``2 x high + 100`` Hz (so the amplitude itself is not aliased before the
    100 Hz anti-alias filter) and every sub-band's gain beyond the kept bins below 1e-12.
    """
    top = max(hi for _, hi in bands)
    decim = max(1, int(sfreq // (2 * top + 100)))
    while True:
        nfft = decim * sp_fft.next_fast_len(-(-n // decim))
        gains, k0, k1 = _band_gains(bands, sfreq, nfft)
        m = nfft // decim
        if decim == 1 or k1 <= m:
            return decim, nfft, gains[:, : max(0, min(k1, m) - k0)], k0, min(k1, m)
        decim -= 1


def hfb_envelope_reference(
    data: np.ndarray,
    sfreq: float,
    band: tuple[float, float] = (70.0, 150.0),
    width: float = 10.0,
    out_sfreq: float = OUT_SFREQ,
) -> np.ndarray:
    """The same computation written plainly (per channel, per sub-band sosfiltfilt + hilbert).

    Slow; kept as the reference the tests and the benchmark compare :func:`hfb_envelope` to.
    """
    x = np.atleast_2d(np.asarray(data, dtype=float))
    check_band((float(band[0]), float(band[1])), sfreq)
    bands = sub_bands(band, width)
    up, down = resample_ratio(sfreq, out_sfreq)
    rows = []
    for ch in x:
        acc = np.zeros(ch.size)
        for lo, hi in bands:
            sos = signal.butter(FILTER_ORDER, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
            filtered = signal.sosfiltfilt(sos, ch)
            amp = np.abs(signal.hilbert(filtered, N=sp_fft.next_fast_len(ch.size))[: ch.size])
            acc += amp / amp.mean()
        rows.append(signal.resample_poly(acc / len(bands), up, down))
    return np.array(rows)


def line_harmonics(line_hz: float, sfreq: float) -> np.ndarray:
    """The line frequency and its harmonics below Nyquist (minus a 1 Hz margin)."""
    return np.arange(line_hz, sfreq / 2.0 - 1.0, line_hz)


def detect_line_frequency(
    data: np.ndarray, sfreq: float, max_seconds: float = 60.0
) -> float | None:
    """50 or 60 from the spectrum (Welch, median over channels), or None when neither peaks.

    The peak measure is the power at f divided by the median power 3-8 Hz on either side; a
    frequency counts when its ratio exceeds 10 (10 dB) and the other's.
    """
    x = np.atleast_2d(data)[:, : int(max_seconds * sfreq)]
    if sfreq <= 130:
        return None
    nper = int(min(x.shape[1], 4 * sfreq))
    freqs, psd = signal.welch(x, fs=sfreq, nperseg=nper, axis=-1)
    psd = np.median(psd, axis=0)
    ratios = {}
    for f in (50.0, 60.0):
        peak = psd[np.abs(freqs - f) <= 0.5].max()
        side = psd[(np.abs(freqs - f) >= 3) & (np.abs(freqs - f) <= 8)]
        ratios[f] = peak / max(float(np.median(side)), 1e-300)
    best = max(ratios, key=lambda k: ratios[k])
    return best if ratios[best] > 10 else None


def robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(v - median) / max(1.4826 MAD, floor)."""
    med = np.median(values)
    scale = max(1.4826 * float(np.median(np.abs(values - med))), floor)
    return np.asarray((values - med) / scale)


def detect_bad_channels(
    data: np.ndarray, *, flat_ratio: float = 1e-3, z_threshold: float = 5.0
) -> np.ndarray:
    """Status per channel: ``good``, ``flat`` or ``noisy``.

    flat: standard deviation below ``flat_ratio`` x the median SD (or exactly 0). noisy: robust z of
    log SD, or of log(max |x| / SD) (spikes), above ``z_threshold``; the robust scale is floored
    at 0.1 (log units) so that a set of near-identical channels does not make every small
    difference an outlier.
    """
    x = np.atleast_2d(data)
    sd = x.std(axis=1)
    status = np.full(x.shape[0], "good", dtype=object)
    med = float(np.median(sd)) if sd.size else 0.0
    flat = (sd == 0) | (sd < flat_ratio * med)
    status[flat] = "flat"
    live = ~flat
    if live.sum() >= 3:
        log_sd = np.log(sd[live])
        peak = np.log(np.abs(x[live]).max(axis=1) / sd[live])
        noisy = (robust_z(log_sd, 0.1) > z_threshold) | (robust_z(peak, 0.1) > z_threshold)
        idx = np.flatnonzero(live)[noisy]
        status[idx] = "noisy"
    return status


def notch(data: np.ndarray, sfreq: float, line_hz: float) -> np.ndarray:
    """Notch (MNE FIR, zero phase) at ``line_hz`` and its harmonics below Nyquist; returns a copy."""
    import mne

    freqs = line_harmonics(line_hz, sfreq)
    if not len(freqs):
        return np.array(data, dtype=float)
    return np.asarray(mne.filter.notch_filter(data, sfreq, freqs, verbose="error"))
