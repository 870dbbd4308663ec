"""Exact pooling of the per-site ``ieeg_timecourses`` tables (the ``combine_ieeg_timecourses`` job).

Kept out of :mod:`ketamap.harmonize.ieeg`, whose signal processing imports SciPy's signal
package and MNE (about 1 s): the consortium table is made from the per-site tables with pandas
and NumPy only, so its job imports nothing else (``benchmarks/overhead.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ketamap.schemas import get_table


def combine_timecourses(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Pool per-site ``ieeg_timecourses`` frames exactly: channel-weighted mean, pooled SEM."""
    frames = [f for f in frames if len(f)]
    fields = get_table("ieeg_timecourses").field_names
    if not frames:
        return pd.DataFrame(columns=fields)
    df = pd.concat(frames, ignore_index=True)
    n = df["n_channels"].astype(float)
    sd = df["sem_z"].fillna(0.0) * np.sqrt(n)
    df = df.assign(_n=n, _sum=n * df["mean_z"], _ss=(n - 1) * sd**2 + n * df["mean_z"] ** 2)
    keys = ["condition", "region", "region_group", "time_s"]
    g = df.groupby(keys, sort=True, dropna=False)[["_n", "_sum", "_ss"]].sum().reset_index()
    mean = g["_sum"] / g["_n"]
    ss = g["_ss"] - g["_n"] * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.sqrt(np.clip(ss, 0, None) / (g["_n"] - 1) / g["_n"])
    out = g[keys].assign(
        mean_z=mean, sem_z=sem.where(g["_n"] > 1), n_channels=g["_n"].astype("int32")
    )
    return out[fields].reset_index(drop=True)
