"""Benchmark: ketamap's eyelid pipeline (DeepLabCut -> puff measures + time courses) vs plain pandas.

    .venv/bin/python benchmarks/behaviour_eyelid.py [--sessions 40] [--minutes 10] [--fps 60]

Builds mouse DeepLabCut sessions in a temporary folder: per session one DLC CSV (three header
rows; upper_eyelid / lower_eyelid x, y, likelihood; empty cells where a keypoint is lost) and a
puff log ``<stem>_puffs.csv`` (time_s at ms precision, frame), 30-60 puffs with random intervals
(some shorter than the 5 s sustained window, so the windows are cut at the next puff). Time of a
frame = frame / fps on both sides. Then each side runs in its own spawned child process (so each
side's peak memory, ``ru_maxrss``, is its own) over all sessions:

(a) ketamap: ``ketamap.harmonize.behaviour.read.read_dlc`` + ``read_event_log`` (puffs), ``keypoint_distance`` with
    the likelihood cutoff, ``EyeTrace``, ``behaviour.puff_measures`` (species mouse),
    ``closure_timecourse`` and the NaN-aware mean over puffs (as ``harmonize_site`` does);
(b) what a user would otherwise write: ``pd.read_csv(header=[0, 1, 2], index_col=0)``, mask
    frames below the cutoff, aperture by ``np.hypot``, then a loop over puffs with boolean masks on
    the time column (pre-puff median, reflex peak / blink / interpolated latency, sustained mean,
    each with ketamap's rules: windows cut at the next puff, min tracked fraction) and a per-puff
    ``np.interp`` onto the 100 Hz grid (not across gaps over 2.5 frames), ``np.nanmean`` over puffs.

Prints the wall time of each side (reading and computing separately), the speed ratios, each
side's peak RSS and the maximum absolute difference of reflex closure, latency, sustained closure,
open aperture (NaN patterns must agree), per-puff time courses (where both sides have a value; the
grid values that are NaN on one side only are counted) and session mean time courses. Fails when
values differ by more than 1e-9 or more than 1e-4 of the grid values are NaN on one side only.
Grid points are NaN on one side only where a grid point meets a tracked frame that ends a gap up
to float rounding (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from queue import Empty

import numpy as np
import pandas as pd

SEED = 20260214
SCORER = "DLC_resnet50_eyelidJan5shuffle1_200000"
PARTS = ("upper_eyelid", "lower_eyelid")
SPECIES = "mouse"
# ketamap's defaults, written out for the baseline (checked against DEFAULTS in the child)
CUTOFF = 0.6
BASELINE = (-0.5, -0.05)
REFLEX = (0.0, 0.15)
SUSTAINED = (0.5, 5.0)
THRESHOLD = 0.5
MIN_FRACTION = 0.5
TIMECOURSE = (-0.5, 5.0)
MAX_GAP_FRAMES = 2.5
TOL = 1e-9  # window edges are inclusive; frame and puff times meet exactly at multiples of 50 ms


# ------------------------------------------------------------------------------------ data
def runs(rng: np.random.Generator, n: int, fraction: float, lo: int, hi: int) -> np.ndarray:
    """Boolean mask covering about ``fraction`` of ``n`` frames in runs of lo..hi frames."""
    n_runs = rng.poisson(fraction * n / ((lo + hi) / 2))
    starts = rng.integers(0, n, n_runs)
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, np.minimum(starts + rng.integers(lo, hi + 1, n_runs), n), -1)
    return np.cumsum(edges[:n]) > 0


def make_session(folder: Path, index: int, minutes: float, fps: float) -> int:
    """One DLC CSV + puff log; returns the number of puffs."""
    rng = np.random.default_rng([SEED, index])
    n = round(minutes * 60 * fps)
    t = np.arange(n) / fps
    n_p = int(rng.integers(30, 61))
    isi = rng.uniform(0.3, 1.7, n_p)
    isi *= (minutes * 60 - 15.0) / isi.sum()
    puffs = np.round(5.0 + np.cumsum(isi) - isi[0], 3)
    open_px = rng.uniform(35.0, 55.0)
    level = rng.uniform(0.05, 0.4)
    keep = np.ones(n)
    for p in puffs:
        sl = slice(int(np.ceil(p * fps)), min(int(np.ceil((p + 7.0) * fps)), n))
        tt = t[sl] - p
        x = tt / 0.06
        peak = np.clip(rng.normal(0.75, 0.2), 0.1, 0.98)
        reflex = peak * np.exp(3.0 * (np.log(np.maximum(x, 1e-300)) + 1.0 - x))
        up = np.clip((tt - 0.2) / 0.4, 0, 1)
        down = 1.0 - np.clip((tt - 5.0) / 1.0, 0, 1)
        sus = level * rng.uniform(0.7, 1.3) * (3 * up**2 - 2 * up**3) * (3 * down**2 - 2 * down**3)
        keep[sl] *= (1.0 - reflex) * (1.0 - sus)
    aperture = open_px * keep + rng.normal(0.0, 0.8, n)
    cx, cy = rng.uniform(250, 390), rng.uniform(200, 280)
    jitter = rng.normal(0.0, 0.5, n)
    cols = {
        "upper_eyelid": [
            cx + rng.normal(0, 0.7, n),
            cy + jitter - aperture / 2,
            rng.uniform(0.9, 1.0, n),
        ],
        "lower_eyelid": [
            cx + rng.normal(0, 0.7, n),
            cy + jitter + aperture / 2,
            rng.uniform(0.9, 1.0, n),
        ],
    }
    low = runs(rng, n, 0.04, 3, 40)  # eye shut / motion: both points low, garbage positions
    for part in PARTS:
        x, y, like = cols[part]
        x[low], y[low] = rng.uniform(0, 640, low.sum()), rng.uniform(0, 480, low.sum())
        like[low] = rng.uniform(0.02, 0.55, low.sum())
        single = rng.random(n) < 0.01  # isolated doubtful frames, some above the cutoff
        like[single] = rng.uniform(0.3, 0.8, single.sum())
        lost = rng.random(n) < 0.002  # keypoint not found: empty cells
        x[lost], y[lost], like[lost] = np.nan, np.nan, np.nan
    data = {
        (SCORER, part, coord): np.round(values, 3 if coord != "likelihood" else 4)
        for part in PARTS
        for coord, values in zip(("x", "y", "likelihood"), cols[part], strict=True)
    }
    df = pd.DataFrame(data)
    df.columns = pd.MultiIndex.from_tuples(list(data), names=["scorer", "bodyparts", "coords"])
    stem = f"sub-{index // 2 + 1:02d}_ses-{'sal' if index % 2 == 0 else 'ket'}"
    df.to_csv(folder / f"{stem}_eyeDLC_resnet50_eyelidJan5shuffle1_200000.csv")
    frames = np.round(puffs * fps).astype(np.int64)
    pd.DataFrame({"time_s": [f"{v:.3f}" for v in puffs], "frame": frames}).to_csv(
        folder / f"{stem}_puffs.csv", index=False
    )
    return n_p


def session_files(folder: Path) -> list[tuple[Path, Path]]:
    out = []
    for dlc in sorted(folder.glob("*DLC_*.csv")):
        stem = dlc.name.split("_eyeDLC_")[0]
        out.append((dlc, folder / f"{stem}_puffs.csv"))
    return out


# ------------------------------------------------------------------------------------ sides
def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def ketamap_side(files: list[tuple[Path, Path]], fps: float) -> tuple[dict, float, float]:
    from ketamap.harmonize.behaviour import (
        DEFAULTS,
        EyeTrace,
        _check_options,
        closure_timecourse,
        puff_measures,
    )
    from ketamap.harmonize.behaviour import read as br

    opts = _check_options(dict(DEFAULTS))
    assert opts["likelihood_cutoff"] == CUTOFF and opts["baseline_s"] == BASELINE
    assert opts["reflex_window_s"] == REFLEX and opts["timecourse_s"] == TIMECOURSE
    assert opts["sustained_window_s"][SPECIES] == SUSTAINED
    assert opts["blink_threshold"] == THRESHOLD and opts["min_tracked_fraction"] == MIN_FRACTION
    t_read = t_compute = 0.0
    tables, courses, per_puff = [], [], []
    for dlc, plog in files:
        t0 = time.perf_counter()
        pose = br.read_dlc(dlc, site="bench", frame_rate_hz=fps)
        puffs = br.read_event_log(plog, ["time_s"], site="bench", what="puffs")["time_s"]
        t1 = time.perf_counter()
        aperture, passed = br.keypoint_distance(
            pose, where={"site": "bench", "file": dlc.name}, cutoff=opts["likelihood_cutoff"]
        )
        trace = EyeTrace(pose.index.to_numpy(float), aperture, passed, fps, "DeepLabCut")
        m = puff_measures(trace, puffs.to_numpy(), opts, SPECIES)
        grid, curves = closure_timecourse(
            trace, puffs.to_numpy(), m["open_aperture_px"].to_numpy(), opts
        )
        finite = np.isfinite(curves)
        n = finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.where(finite, curves, 0.0).sum(axis=0) / n, np.nan)
        t2 = time.perf_counter()
        t_read += t1 - t0
        t_compute += t2 - t1
        tables.append(m)
        courses.append(mean)
        per_puff.append(curves)
    m = pd.concat(tables, ignore_index=True)
    out = {
        "reflex": m["reflex_closure"].to_numpy(),
        "blink": m["reflex_blink"].to_numpy(),
        "latency": m["reflex_latency_s"].to_numpy(),
        "sustained": m["sustained_closure"].to_numpy(),
        "open": m["open_aperture_px"].to_numpy(),
        "timecourse": np.vstack(courses),
        "per_puff": np.vstack(per_puff),
        "n_puffs": np.array([len(c) for c in per_puff]),
        "grid": grid,
    }
    return out, t_read, t_compute


def baseline_session(
    df: pd.DataFrame, puffs: np.ndarray, fps: float
) -> tuple[list, np.ndarray, np.ndarray]:
    """Plain pandas/numpy: aperture, loop over puffs, np.interp time course, nanmean."""
    t = df.index.to_numpy() / fps
    up, lo = df["upper_eyelid"], df["lower_eyelid"]
    aperture = np.hypot(up["x"] - lo["x"], up["y"] - lo["y"]).to_numpy()
    good = (up["likelihood"] >= CUTOFF).to_numpy() & (lo["likelihood"] >= CUTOFF).to_numpy()
    good &= np.isfinite(aperture)
    aperture = np.where(good, aperture, np.nan)
    t_ok, a_ok = t[good], aperture[good]
    max_gap = MAX_GAP_FRAMES / fps
    gaps = np.flatnonzero(np.diff(t_ok) > max_gap)
    gap_lo, gap_hi = t_ok[gaps], t_ok[gaps + 1]
    grid = np.round(np.arange(round(TIMECOURSE[0] * 100), round(TIMECOURSE[1] * 100) + 1) / 100, 2)

    rows, curves = [], []
    puffs = np.sort(puffs)
    for k, p in enumerate(puffs):
        nxt = puffs[k + 1] if k + 1 < len(puffs) else np.inf
        cut = min(SUSTAINED[1], nxt - p)  # the window ends at the next puff
        rel = t - p
        in_puff = (rel >= BASELINE[0] - TOL) & (rel <= cut + TOL) & (rel < nxt - p)

        def window(lo_s: float, hi_s: float, in_puff=in_puff, rel=rel, cut=cut):
            frames = in_puff & (rel >= lo_s - TOL) & (rel <= hi_s + TOL)
            expected = max(frames.sum(), int(np.floor(max(min(hi_s, cut) - lo_s, 0) * fps + 1e-6)))
            tracked = frames & good
            enough = expected > 0 and tracked.sum() / expected >= MIN_FRACTION and tracked.any()
            return tracked, enough

        base, base_ok = window(*BASELINE)
        open_px = np.median(aperture[base]) if base_ok else np.nan
        if not open_px > 0:
            open_px = np.nan
        closure = 1.0 - aperture / open_px

        reflex, blink, latency = np.nan, False, np.nan
        refl, refl_ok = window(*REFLEX)
        if refl_ok and np.isfinite(open_px):
            reflex = closure[refl].max()
            above = np.flatnonzero(refl & (closure >= THRESHOLD))
            if above.size:
                blink = True
                i = above[0]
                latency = rel[i]
                before = np.flatnonzero(in_puff[:i] & good[:i])
                if before.size:
                    j = before[-1]
                    if closure[j] < THRESHOLD and rel[i] - rel[j] <= max_gap + TOL:
                        frac = (THRESHOLD - closure[j]) / (closure[i] - closure[j])
                        latency = max(rel[j] + frac * (rel[i] - rel[j]), REFLEX[0])

        sustained = np.nan
        sus, sus_ok = window(*SUSTAINED)
        if sus_ok and np.isfinite(open_px):
            sustained = closure[sus].mean()
        rows.append((reflex, blink, latency, sustained, open_px))

        g = p + grid
        value = np.interp(g, t_ok, a_ok, left=np.nan, right=np.nan)
        # strictly inside a gap; a grid point that is a tracked frame up to rounding is not
        inside = (g[:, None] > gap_lo[None, :] + TOL) & (g[:, None] < gap_hi[None, :] - TOL)
        in_gap = inside.any(axis=1)
        value[in_gap | (g >= nxt)] = np.nan
        curves.append(1.0 - value / open_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN grid points
        mean = np.nanmean(np.vstack(curves), axis=0)
    return rows, mean, np.vstack(curves)


def baseline_side(files: list[tuple[Path, Path]], fps: float) -> tuple[dict, float, float]:
    t_read = t_compute = 0.0
    rows, courses, per_puff = [], [], []
    for dlc, plog in files:
        t0 = time.perf_counter()
        df = pd.read_csv(dlc, header=[0, 1, 2], index_col=0).droplevel(0, axis=1)
        puffs = pd.read_csv(plog)["time_s"].to_numpy()
        t1 = time.perf_counter()
        r, mean, curves = baseline_session(df, puffs, fps)
        t2 = time.perf_counter()
        t_read += t1 - t0
        t_compute += t2 - t1
        rows += r
        courses.append(mean)
        per_puff.append(curves)
    arr = np.array(rows, dtype=float)
    out = {
        "reflex": arr[:, 0],
        "blink": arr[:, 1].astype(bool),
        "latency": arr[:, 2],
        "sustained": arr[:, 3],
        "open": arr[:, 4],
        "timecourse": np.vstack(courses),
        "per_puff": np.vstack(per_puff),
    }
    return out, t_read, t_compute


def run_side(side: str, folder: str, fps: float, out: str, queue: mp.Queue) -> None:
    files = session_files(Path(folder))
    if side == "ketamap":
        import ketamap.harmonize.behaviour  # noqa: F401  (imports are not timed)
    rss_imports = rss_mb()
    t0 = time.perf_counter()
    if side == "ketamap":
        res, t_read, t_compute = ketamap_side(files, fps)
    else:
        res, t_read, t_compute = baseline_side(files, fps)
    elapsed = time.perf_counter() - t0
    np.savez(out, **res)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB -> MB on Linux
    queue.put(
        {
            "side": side,
            "seconds": elapsed,
            "read_s": t_read,
            "compute_s": t_compute,
            "peak_mb": peak,
            "imports_mb": rss_imports,
        }
    )


def max_diff(a: np.ndarray, b: np.ndarray, name: str) -> float:
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        raise SystemExit(
            f"{name}: NaN patterns differ ({int((na != nb).sum())} of {a.size} values)"
        )
    return float(np.max(np.abs(a[~na] - b[~nb]), initial=0.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=60.0)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    with tempfile.TemporaryDirectory(prefix="ketamap-bench-") as tmp:
        folder = Path(tmp) / "dlc"
        folder.mkdir()
        t0 = time.perf_counter()
        n_puffs = [make_session(folder, i, args.minutes, args.fps) for i in range(args.sessions)]
        t_make = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        for side in ("ketamap", "pandas"):
            queue: mp.Queue = ctx.Queue()
            out = str(Path(tmp) / f"{side}.npz")
            proc = ctx.Process(target=run_side, args=(side, str(folder), args.fps, out, queue))
            proc.start()
            res = None
            while res is None and (proc.is_alive() or not queue.empty()):
                with contextlib.suppress(Empty):
                    res = queue.get(timeout=1.0)
            proc.join()
            if res is None or proc.exitcode != 0:
                print(f"{side} failed with exit code {proc.exitcode}", file=sys.stderr)
                return 1
            with np.load(out) as npz:
                res["data"] = {k: npz[k] for k in npz.files}
            results[side] = res
    a, b = results["ketamap"], results["pandas"]
    da, db = a["data"], b["data"]
    print(
        f"{args.sessions} DeepLabCut sessions x {args.minutes:g} min at {args.fps:g} fps "
        f"({int(args.minutes * 60 * args.fps)} frames, 2 keypoints; {size_mb:.0f} MB of CSV, "
        f"written in {t_make:.0f} s); {sum(n_puffs)} puffs ({min(n_puffs)}-{max(n_puffs)} per "
        f"session); time courses {da['grid'][0]:g}..{da['grid'][-1]:g} s at 100 Hz"
    )
    for name, r in (
        ("(a) ketamap read_dlc + puff_measures + ...", a),
        ("(b) pandas/numpy loop", b),
    ):
        print(
            f"{name:44s} {r['seconds']:7.2f} s (read {r['read_s']:6.2f} s, compute "
            f"{r['compute_s']:6.2f} s)   peak RSS {r['peak_mb']:5.0f} MB "
            f"(after imports {r['imports_mb']:.0f} MB)"
        )
    print(f"{'speed ratio pandas / ketamap, total:':44s} {b['seconds'] / a['seconds']:7.2f}x")
    print(f"{'speed ratio, reading only:':44s} {b['read_s'] / a['read_s']:7.2f}x")
    print(f"{'speed ratio, computing only:':44s} {b['compute_s'] / a['compute_s']:7.2f}x")
    if not np.array_equal(da["blink"], db["blink"]):
        raise SystemExit(f"reflex blink differs on {int((da['blink'] != db['blink']).sum())} puffs")
    worst = 0.0
    for key, label in (
        ("reflex", "reflex closure"),
        ("sustained", "sustained closure"),
        ("latency", "reflex latency (s)"),
        ("open", "open aperture (px)"),
    ):
        d = max_diff(da[key], db[key], label)
        n_nan = int(np.isnan(da[key]).sum())
        print(f"max abs difference, {label + ':':29s} {d:.2e}  ({n_nan} of {da[key].size} NaN)")
        if key != "open":
            worst = max(worst, d)
    print(
        f"reflex blinks: {int(da['blink'].sum())} of {da['blink'].size} puffs, same on both sides"
    )

    # per-puff time courses: values where both have one, and where only one side has a value
    pa, pb = da["per_puff"], db["per_puff"]
    both = np.isfinite(pa) & np.isfinite(pb)
    d_puff = float(np.max(np.abs(pa[both] - pb[both]), initial=0.0))
    only_b = int((np.isnan(pa) & np.isfinite(pb)).sum())
    only_a = int((np.isfinite(pa) & np.isnan(pb)).sum())
    worst = max(worst, d_puff)
    print(
        f"max abs difference, {'per-puff time courses:':29s} {d_puff:.2e}  "
        f"({int(both.sum())} of {pa.size} grid values on both sides)"
    )
    print(
        f"  grid values NaN in ketamap only: {only_b}, NaN in the baseline only: {only_a} "
        f"({(only_a + only_b) / pa.size:.1e} of all)"
    )
    d_mean = max_diff(da["timecourse"], db["timecourse"], "session mean time courses")
    print(f"max abs difference, {'session mean time courses:':29s} {d_mean:.2e}  (all values)")
    # the same means over the grid values both sides have: isolates the NaN disagreements
    edges = np.cumsum([0, *da["n_puffs"]])
    common = []
    for side in (pa, pb):
        masked = np.where(both, side, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            common.append(
                np.vstack(
                    [np.nanmean(masked[e0:e1], axis=0) for e0, e1 in itertools.pairwise(edges)]
                )
            )
    d_common = max_diff(common[0], common[1], "session means over common grid values")
    worst = max(worst, d_common)
    print(f"max abs difference, {'session means, shared values:':29s} {d_common:.2e}")
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "data"} for k, v in results.items()}
        )
    )
    if worst > 1e-9:
        raise SystemExit(f"results differ by {worst:.2e} (limit 1e-9)")
    if only_a + only_b > 1e-4 * pa.size:
        raise SystemExit(f"{only_a + only_b} grid values are NaN on one side only (limit 1e-4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
