"""Benchmark: ketamap's HFB envelope + epoching vs the same computation as a plain MNE pipeline.

    .venv/bin/python benchmarks/ieeg_hfb.py [--channels 64] [--minutes 10] [--sfreq 2000]

Both sides run in their own child process (fresh interpreter, same synthetic recording rebuilt from
the same seed), so each side's peak memory (``ru_maxrss``) is its own. Filter design is the same on
both sides: Butterworth order 4 band-pass per 10 Hz sub-band, zero phase (forward-backward), Hilbert
amplitude, each sub-band divided by its mean, averaged, polyphase resampling to 100 Hz, epochs
-1..3 s around each puff.

(a) ketamap: ``ketamap.harmonize.ieeg.signal.hfb_envelope`` (one FFT per channel shared by all sub-bands,
    one inverse FFT per sub-band, channel blocks) + numpy fancy-index epoching.
(b) MNE: per sub-band ``raw.copy().filter(l, h, method='iir', iir_params=dict(order=4,
    ftype='butter', output='sos'))`` then ``apply_hilbert(envelope=True)``, normalise, average;
    ``RawArray`` of the envelope, ``resample(100, method='polyphase')``, ``mne.Epochs``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BAND = (70.0, 150.0)
WIDTH = 10.0
EPOCH = (-1.0, 3.0)
SEED = 20260101


def make_data(n_ch: int, minutes: float, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """White background + HFB bursts (fast ~0.2 s, slow 0.5-1.2 s) after puffs in a third of channels."""
    from scipy import signal

    rng = np.random.default_rng(SEED)
    n = int(minutes * 60 * sfreq)
    data = rng.standard_normal((n_ch, n))
    data *= 20e-6
    base = np.arange(5.0, minutes * 60 - 5.0, 5.0)
    onsets = base + rng.uniform(0, 1, base.size)
    t = np.arange(n) / sfreq
    g = np.zeros(n)
    for t0 in onsets:
        i0, i1 = int((t0 - 0.5) * sfreq), int((t0 + 2.0) * sfreq)
        tt = t[i0:i1] - t0
        g[i0:i1] += np.exp(-0.5 * ((tt - 0.2) / 0.03) ** 2) + 0.7 * ((tt > 0.5) & (tt < 1.2))
    sos = signal.butter(4, [70, 150], btype="bandpass", fs=sfreq, output="sos")
    for ch in range(0, n_ch, 3):
        burst = signal.sosfilt(sos, rng.standard_normal(n))
        data[ch] += burst * (60e-6 / burst.std()) * g
    return data, onsets


def rss_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def run_side(side: str, args: dict, out: str, queue: mp.Queue) -> None:
    data, onsets = make_data(args["channels"], args["minutes"], args["sfreq"])
    sfreq = args["sfreq"]
    rss_data = rss_mb()
    t0 = time.perf_counter()
    if side == "ketamap":
        from ketamap.harmonize.ieeg.signal import hfb_envelope

        env = hfb_envelope(data, sfreq, BAND, WIDTH)
        offsets = np.arange(round(EPOCH[0] * 100), round(EPOCH[1] * 100) + 1)
        starts = np.round(onsets * 100).astype(int)
        epochs = np.ascontiguousarray(env[:, starts[:, None] + offsets[None, :]].transpose(1, 0, 2))
    else:
        import mne

        from ketamap.harmonize.ieeg.signal import sub_bands

        info = mne.create_info([f"C{i}" for i in range(data.shape[0])], sfreq, ch_types="seeg")
        raw = mne.io.RawArray(data, info, verbose="error")
        del data
        acc = None
        bands = sub_bands(BAND, WIDTH)
        iir = {"order": 4, "ftype": "butter", "output": "sos"}
        for lo, hi in bands:
            r = raw.copy().filter(
                lo, hi, method="iir", iir_params=iir, picks="all", verbose="error"
            )
            r.apply_hilbert(envelope=True, picks="all", verbose="error")
            amp = r.get_data()
            amp /= amp.mean(axis=1, keepdims=True)
            if acc is None:
                acc = amp
            else:
                acc += amp
            del r, amp
        assert acc is not None
        acc /= len(bands)
        env_raw = mne.io.RawArray(acc, info, verbose="error")
        del acc
        env_raw.resample(100.0, method="polyphase", verbose="error")
        events = np.column_stack(
            [
                np.round(onsets * 100).astype(int),
                np.zeros(len(onsets), int),
                np.ones(len(onsets), int),
            ]
        )
        ep = mne.Epochs(
            env_raw,
            events,
            tmin=EPOCH[0],
            tmax=EPOCH[1],
            baseline=None,
            preload=True,
            verbose="error",
        )
        epochs = ep.get_data(picks="all")
    elapsed = time.perf_counter() - t0
    np.save(out, epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB -> MB on Linux
    queue.put({"side": side, "seconds": elapsed, "peak_mb": peak, "data_mb": rss_data})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sfreq", type=float, default=2000.0)
    args = vars(parser.parse_args())
    ctx = mp.get_context("spawn")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("ketamap", "mne"):
            queue: mp.Queue = ctx.Queue()
            out = str(Path(tmp) / f"{side}.npy")
            proc = ctx.Process(target=run_side, args=(side, args, out, queue))
            proc.start()
            res = queue.get()
            proc.join()
            if proc.exitcode != 0:
                print(f"{side} failed with exit code {proc.exitcode}", file=sys.stderr)
                return 1
            res["epochs"] = np.load(out)
            results[side] = res
    a, b = results["ketamap"], results["mne"]
    diff = np.abs(a["epochs"] - b["epochs"])
    n_ch, minutes, sfreq = args["channels"], args["minutes"], args["sfreq"]
    print(
        f"{n_ch} channels x {minutes:g} min at {sfreq:g} Hz (float64, {n_ch * minutes * 60 * sfreq * 8 / 1e6:.0f} MB); "
        f"{a['epochs'].shape[0]} puffs; HFB {BAND[0]:g}-{BAND[1]:g} Hz in {WIDTH:g} Hz sub-bands -> 100 Hz; "
        f"epochs {EPOCH[0]:g}..{EPOCH[1]:g} s, shape {a['epochs'].shape}"
    )
    for name, r in (
        ("(a) ketamap hfb_envelope + epoching", a),
        ("(b) MNE filter/apply_hilbert/Epochs", b),
    ):
        print(
            f"{name:38s} {r['seconds']:8.2f} s   peak RSS {r['peak_mb']:7.0f} MB "
            f"(data alone {r['data_mb']:.0f} MB, +{r['peak_mb'] - r['data_mb']:.0f} MB)"
        )
    print(f"speed ratio MNE / ketamap:             {b['seconds'] / a['seconds']:8.2f}x")
    print(
        f"max abs difference of epoch envelopes: {diff.max():.2e} (envelope mean {b['epochs'].mean():.3f})"
    )
    print(f"max relative difference:               {(diff / np.abs(b['epochs'])).max():.2e}")
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "epochs"} for k, v in results.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
