"""Frame timing and decay: which frames make up the SUVR window, and how to refer them to injection.

All times are seconds from the sidecar's ``TimeZero`` (BIDS); the SUVR window is in minutes after
``InjectionStart``.

* Frame time unit. With ``reader.frame_time_unit: auto`` the frames are taken as seconds, unless as
  seconds they end before the window starts while as minutes they cover it: then they are converted
  (``FrameTimesStart`` and ``FrameDuration`` times 60; ``ScanStart``, ``InjectionStart`` and
  ``ImageDecayCorrectionTime`` stay seconds) and the session carries a warning. ``s`` never converts,
  ``min`` always does (with the same warning).
* Window. The window must be covered by whole frames that lie inside it and follow each other without
  gap or overlap, all within a tolerance of 1 s. The window mean is the frame-duration-weighted mean.
* Decay. C-11 (or the sidecar's radionuclide) with ``lambda = ln 2 / half-life``. Corrected to
  ``InjectionStart``: factor 1 (``injection``). Corrected to ``ScanStart`` (``scan_start``) or to another
  time (``other``): ``exp(lambda * (ImageDecayCorrectionTime - InjectionStart))``. Not corrected
  (``none``): each frame times ``exp(lambda * (frame mid time - InjectionStart))`` (mid-frame
  approximation; for a 5-min C-11 frame it differs from the integrated correction by about 0.2 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ketamap.errors import SiteDataError
from ketamap.harmonize.pet.sidecar import PetSidecar

TOLERANCE_S = 1.0
MINUTES_WARNING = "frame times in minutes, converted to seconds"
FRAME_TIME_UNITS = ("auto", "s", "min")


@dataclass(frozen=True)
class WindowFrames:
    """The frames of one scan that make up the SUVR window, and how they were found."""

    indices: np.ndarray  # frame numbers in the image (0-based), in time order
    durations_s: np.ndarray
    mid_times_s: np.ndarray  # frame mid times after injection
    source_unit: str  # "s" or "min"
    warnings: list[str]


@dataclass(frozen=True)
class DecayCorrection:
    """What the site's image was decay-corrected to and the factor per window frame."""

    reference: str  # injection | scan_start | other | none
    factors: np.ndarray  # one per window frame
    summary: float  # duration-weighted mean factor over the window frames


def window_frames(
    sidecar: PetSidecar, window_min: tuple[float, float], unit: str, *, site: str
) -> WindowFrames:
    """Resolve the frame time unit and pick the frames of the SUVR window (or raise naming the window)."""
    starts = sidecar.frame_starts
    durations = sidecar.frame_durations
    w0, w1 = (60.0 * window_min[0], 60.0 * window_min[1])
    inj = sidecar.injection_start

    as_seconds = _cover(starts - inj, durations, w0, w1)
    as_minutes = _cover(60.0 * starts - inj, 60.0 * durations, w0, w1)
    ends_before = float(np.max(starts + durations) - inj) < w0 - TOLERANCE_S
    if unit == "min" or (unit == "auto" and ends_before and as_minutes is not None):
        source, chosen, scale = "min", as_minutes, 60.0
        warnings = [MINUTES_WARNING]
    else:
        source, chosen, scale = "s", as_seconds, 1.0
        warnings = []

    if chosen is None:
        rel_starts = scale * starts - inj
        rel_ends = rel_starts + scale * durations
        overlapping = [
            f"{a / 60:g}-{b / 60:g}"
            for a, b in zip(rel_starts, rel_ends, strict=True)
            if b > w0 + TOLERANCE_S and a < w1 - TOLERANCE_S
        ]
        seen = (
            f"frames overlapping it: {', '.join(overlapping)} min"
            if overlapping
            else f"the frames span {rel_starts[0] / 60:g}-{rel_ends[-1] / 60:g} min"
        )
        hint = None
        if unit == "s" and as_minutes is not None:
            hint = "the frame times look like minutes; set sites[].reader.frame_time_unit to auto or min"
        elif np.any(rel_starts[1:] < rel_ends[:-1] - TOLERANCE_S):
            hint = (
                "frames overlap each other (does FrameDuration hold frame end times?); "
                "write each frame's duration in FrameDuration"
            )
        raise SiteDataError(
            f"the SUVR window {window_min[0]:g}-{window_min[1]:g} min after injection is not covered "
            f"by whole frames (frame times read as {'minutes' if source == 'min' else 'seconds'}; {seen})",
            site=site,
            file=sidecar.file,
            field="FrameTimesStart",
            expected=f"contiguous frames starting at {window_min[0]:g} min and ending at "
            f"{window_min[1]:g} min after InjectionStart (tolerance {TOLERANCE_S:g} s)",
            hint=hint,
        )
    idx = chosen
    rel_starts = scale * starts[idx] - inj
    dur = scale * durations[idx]
    return WindowFrames(
        indices=idx,
        durations_s=dur,
        mid_times_s=rel_starts + dur / 2.0,
        source_unit=source,
        warnings=warnings,
    )


def _cover(starts: np.ndarray, durations: np.ndarray, w0: float, w1: float) -> np.ndarray | None:
    """Indices of whole frames inside [w0, w1] that tile it contiguously, or None."""
    ends = starts + durations
    idx = np.flatnonzero((starts >= w0 - TOLERANCE_S) & (ends <= w1 + TOLERANCE_S))
    if idx.size == 0:
        return None
    s, e = starts[idx], ends[idx]
    if s[0] > w0 + TOLERANCE_S or e[-1] < w1 - TOLERANCE_S:
        return None
    if np.any(np.abs(s[1:] - e[:-1]) > TOLERANCE_S):
        return None
    return idx


def decay_correction(sidecar: PetSidecar, frames: WindowFrames) -> DecayCorrection:
    """The factors that refer the window frames' values to injection time."""
    lam = np.log(2.0) / (sidecar.half_life_min * 60.0)
    inj = sidecar.injection_start
    n = len(frames.indices)
    if not sidecar.decay_corrected:
        factors = np.exp(lam * frames.mid_times_s)
        reference = "none"
    else:
        t_c = sidecar.decay_correction_time
        assert t_c is not None
        if np.isclose(t_c, inj, rtol=0.0, atol=1e-3):
            reference, factor = "injection", 1.0
        else:
            same_as_scan = np.isclose(t_c, sidecar.scan_start, rtol=0.0, atol=1e-3)
            reference = "scan_start" if same_as_scan else "other"
            factor = float(np.exp(lam * (t_c - inj)))
        factors = np.full(n, factor)
    weights = frames.durations_s
    summary = float(np.sum(weights * factors) / np.sum(weights))
    return DecayCorrection(reference=reference, factors=factors, summary=summary)
