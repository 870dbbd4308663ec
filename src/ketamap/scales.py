"""Symptom scales and their conversion to MADRS equivalents.

The scale facts (ranges, spellings, linking points) are data in ``schemas/scales.yaml``. HAM-D-17
totals are mapped to the MADRS with the equipercentile linking anchors of Leucht et al. (2018),
interpolated piecewise-linearly between anchors with ``numpy.interp``.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ketamap import yamlio
from ketamap.paths import schema_dir

# Contract files this module reads (ketamap.codedeps adds them to the code input of the rules using it).
CONTRACTS = ("scales.yaml",)


@functools.cache
def load_scales() -> dict:
    """The scale declarations and links of ``schemas/scales.yaml``."""
    return yamlio.safe_load((schema_dir() / "scales.yaml").read_text())


def identify_scale(description: str) -> str | None:
    """Return the scale id for a site's spelling of a scale name, or None when it is unknown."""
    key = re.sub(r"[\s_]+", " ", description.strip().lower())
    compact = key.replace(" ", "").replace("-", "")
    for scale_id, spec in load_scales()["scales"].items():
        for alias in [scale_id, spec["label"], *spec["aliases"]]:
            a = alias.lower()
            if key == a or compact == a.replace(" ", "").replace("-", ""):
                return scale_id
    return None


def scale_range(scale: str) -> tuple[float, float]:
    low, high = load_scales()["scales"][scale]["range"]
    return float(low), float(high)


def to_madrs(scores: np.ndarray, scale: str) -> np.ndarray:
    """Convert totals on ``scale`` to MADRS equivalents (NaN stays NaN)."""
    scores = np.asarray(scores, dtype=float)
    if scale == "madrs":
        return scores.copy()
    points = np.asarray(load_scales()["links"][f"{scale}_to_madrs"]["points"], dtype=float)
    out = np.interp(scores, points[:, 0], points[:, 1])
    out[np.isnan(scores)] = np.nan
    return out


def from_madrs(madrs: np.ndarray, scale: str) -> np.ndarray:
    """Inverse of :func:`to_madrs` on the increasing part of the link (used by the generator)."""
    madrs = np.asarray(madrs, dtype=float)
    if scale == "madrs":
        return madrs.copy()
    points = np.asarray(load_scales()["links"][f"{scale}_to_madrs"]["points"], dtype=float)
    keep = np.concatenate([[True], np.diff(points[:, 1]) > 0])
    return np.interp(madrs, points[keep, 1], points[keep, 0])
