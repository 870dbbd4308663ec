"""The behaviour readers on real DeepLabCut files (../shared/realdata/DLC2NWB; skipped when absent).

The DLC2NWB example holds one DeepLabCut prediction twice: as the ``.h5`` DeepLabCut writes and as
an ndx-pose NWB file whose timestamps are frame indices (0, 1, 2, ...) instead of seconds, written
with ndx-pose 0.1 (hdmf warns about the cached namespace when it is opened with 0.4).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketamap.errors import SiteDataError
from ketamap.harmonize.behaviour.read import frame_index_like, read_dlc, read_pose_nwb

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
EXAMPLES = REALDATA / "DLC2NWB" / "examples"
STEM = "m3v1mp4DLC_resnet50_openfieldAug20shuffle1_30000"
H5 = EXAMPLES / f"{STEM}.h5"
NWB = EXAMPLES / f"{STEM}.nwb"
BODYPARTS = {"snout", "leftear", "rightear", "tailbase"}
pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"real third-party files not available at {EXAMPLES}"
)


def test_dlc_h5_reads_four_bodyparts_2330_frames() -> None:
    df = read_dlc(H5, site="real", root=REALDATA)
    assert df.shape == (2330, 12)
    assert set(df.columns.get_level_values("bodyparts")) == BODYPARTS
    assert set(df.columns.get_level_values("coords")) == {"x", "y", "likelihood"}
    assert df.index.name == "frame" and df.index[0] == 0 and df.index[-1] == 2329
    lik = df.xs("likelihood", axis=1, level="coords").to_numpy()
    assert np.nanmin(lik) >= 0 and np.nanmax(lik) <= 1


def test_dlc_h5_as_csv_round_trip(tmp_path: Path) -> None:
    """The same prediction in DeepLabCut's CSV form (three header rows) reads identically."""
    raw = pd.read_hdf(H5)
    assert isinstance(raw, pd.DataFrame)
    path = tmp_path / f"{STEM}.csv"
    raw.to_csv(path)
    assert path.read_text().splitlines()[0].startswith("scorer,")
    a = read_dlc(H5, site="real")
    b = read_dlc(path, site="real")
    assert b.shape == a.shape
    assert np.allclose(a.to_numpy(), b[a.columns].to_numpy(), equal_nan=True)


def test_nwb_frame_index_timestamps_need_a_frame_rate() -> None:
    with pytest.raises(SiteDataError, match=r"timestamps look like frame indices") as err:
        read_pose_nwb(NWB, frame_rate_hz=None, site="real", root=REALDATA)
    msg = str(err.value)
    assert f"DLC2NWB/examples/{STEM}.nwb" in msg and "frame_rate_hz" in msg
    assert "field 'PoseEstimation/ind1_" in msg


def test_nwb_frame_index_timestamps_converted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ketamap.harmonize.behaviour.read"):
        df = read_pose_nwb(NWB, frame_rate_hz=30.0, site="real", root=REALDATA)
    # the cached ndx-pose 0.1.0 namespace warning is logged, not raised (filterwarnings=error)
    assert "cached namespace" in caplog.text
    assert df.shape == (2330, 12) and df.index.name == "time_s"
    assert set(df.columns.get_level_values("bodyparts")) == BODYPARTS  # "ind1_" prefix dropped
    assert df.index[1] == pytest.approx(1 / 30) and df.index[-1] == pytest.approx(2329 / 30)
    assert not frame_index_like(df.index.to_numpy())


def test_nwb_and_h5_agree_on_coordinates() -> None:
    h5 = read_dlc(H5, site="real", frame_rate_hz=30.0)
    nwb = read_pose_nwb(NWB, frame_rate_hz=30.0, site="real")
    assert np.allclose(h5.index.to_numpy(), nwb.index.to_numpy())
    for bp in BODYPARTS:
        for coord in ("x", "y", "likelihood"):
            assert np.allclose(
                h5[(bp, coord)].to_numpy(), nwb[(bp, coord)].to_numpy(), equal_nan=True
            ), (bp, coord)


def test_real_nwb_is_not_a_behaviour_session() -> None:
    """The open-field file has no eyelid keypoints: the reader says which ones are missing."""
    from ketamap.harmonize.behaviour.read import keypoint_distance

    df = read_pose_nwb(NWB, frame_rate_hz=30.0, site="real")
    with pytest.raises(SiteDataError, match=r"no upper_eyelid x column"):
        keypoint_distance(df, where={"site": "real", "file": NWB.name}, cutoff=0.6)
