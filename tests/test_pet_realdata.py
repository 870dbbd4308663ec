"""The PET reader on real third-party BIDS-PET files (bids-examples pet001..pet006).

Their sidecars are real and must all parse; their images are not (a header with zeroed voxels and
the wrong frame count, HTML pages and 1-byte stubs under image names) and must each be rejected
with a message naming the file and the problem.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import DEMO_KEY
from ketamap.errors import SiteDataError
from ketamap.harmonize import pet
from ketamap.harmonize.pet import image as pet_image
from ketamap.harmonize.pet.sidecar import read_sidecar
from ketamap.io import read_tsv
from test_pet import (
    ATLAS_AFFINE,
    OPTIONS,
    frames_of,
    make_site,
    region_image,
    site_entry,
    write_atlas,
)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
BIDS = REALDATA / "bids-examples"
pytestmark = pytest.mark.skipif(
    not BIDS.is_dir(),
    reason=f"real third-party files not available at {REALDATA} (see shared/realdata/README.md)",
)

PET001 = "pet001/sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet"

# sidecar -> (Units as written, kBq/mL per unit, frames, injected mass in ug or None, half-life)
SIDECARS = {
    PET001: ("Bq/ml", 1e-3, 45, 0.62, 20.38),  # Bq/ml; MolarActivityUnits "nmol"
    "pet002/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet": (
        "Bq/mL",
        1e-3,
        32,
        1.55048688915159,
        20.38,
    ),
    "pet002/sub-01/ses-rescan/pet/sub-01_ses-rescan_pet": (
        "Bq/mL",
        1e-3,
        36,
        0.711600115014902,
        20.38,
    ),
    "pet002/sub-02/ses-baseline/pet/sub-02_ses-baseline_pet": (
        "Bq/mL",
        1e-3,
        36,
        3.16764533955224,
        20.38,
    ),
    "pet002/sub-02/ses-rescan/pet/sub-02_ses-rescan_pet": (
        "Bq/mL",
        1e-3,
        36,
        0.634048484916704,
        20.38,
    ),
    # list-valued ReconFilterType/Size, MolarActivityUnits "MBq/nmol"
    "pet003/sub-01/ses-01/pet/sub-01_ses-01_pet": ("Bq/mL", 1e-3, 21, 3.57, 20.38),
    "pet004/sub-01/pet/sub-01_pet": ("Bq/mL", 1e-3, 45, 2.52, 20.38),
    # InjectedMass and SpecificRadioactivity "n/a"
    "pet005/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet": ("Bq/mL", 1e-3, 48, None, 20.38),
    "pet005/sub-01/ses-intervention/pet/sub-01_ses-intervention_task-eyes_pet": (
        "Bq/mL",
        1e-3,
        48,
        1.59769,
        20.38,
    ),
    # F-18 phantom: no ReconFilterSize (filter "none"), no parameter units/values (labels ["none"])
    "pet006/sub-01/pet/sub-01_pet": ("Bq/mL", 1e-3, 1, 181149988.3691438, 109.77),
}

HTML = r"not a NIfTI image \(looks like HTML\)"
STUB = r"not a NIfTI image \(only 1 byte, too small for a 348-byte header\)"
IMAGES = {
    "pet002/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz": HTML,
    "pet002/sub-01/ses-rescan/pet/sub-01_ses-rescan_pet.nii.gz": HTML,
    "pet002/sub-02/ses-baseline/pet/sub-02_ses-baseline_pet.nii.gz": HTML,
    "pet002/sub-02/ses-rescan/pet/sub-02_ses-rescan_pet.nii.gz": HTML,
    "pet003/sub-01/ses-01/pet/sub-01_ses-01_pet.nii.gz": HTML,
    "pet002/sub-01/ses-baseline/anat/sub-01_ses-baseline_T1w.nii": HTML,
    "pet004/sub-01/pet/sub-01_pet.nii.gz": STUB,
    "pet005/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz": STUB,
    "pet005/sub-01/ses-intervention/pet/sub-01_ses-intervention_task-eyes_pet.nii.gz": STUB,
    "pet006/sub-01/pet/sub-01_pet.nii.gz": STUB,
    "pet003/sub-01/ses-01/anat/sub-01_ses-01_T1w.nii": STUB,
}


def split(rel: str) -> tuple[Path, str]:
    """Dataset folder and the path inside it."""
    dataset, inner = rel.split("/", 1)
    return BIDS / dataset, inner


@pytest.mark.parametrize("rel", SIDECARS)
def test_real_sidecars_parse(rel: str) -> None:
    units, factor, n_frames, mass, half_life = SIDECARS[rel]
    root, inner = split(rel + ".json")
    s = read_sidecar(root / inner, site=root.name, root=root)
    assert s.units == units
    assert s.kbq_ml_per_unit == factor
    assert s.n_frames == n_frames
    assert s.injected_mass_ug == (pytest.approx(mass, rel=1e-12) if mass is not None else None)
    assert s.half_life_min == half_life
    assert s.injected_dose_mbq > 0
    assert s.decay_corrected is True


@pytest.mark.parametrize("rel", IMAGES)
def test_real_broken_images_rejected(rel: str) -> None:
    root, inner = split(rel)
    message = rf"site '{root.name}', file '{inner}': {IMAGES[rel]}"
    with (
        pytest.raises(SiteDataError, match=message),
        pet_image.open_pet_image(root / inner, site=root.name, root=root),
    ):
        pytest.fail("a broken image must not open")


def test_pet001_frame_count_checked_before_voxels() -> None:
    root, inner = split(PET001 + ".nii.gz")
    sidecar = read_sidecar(root / inner.replace(".nii.gz", ".json"), site="pet001", root=root)
    message = rf"site 'pet001', file '{inner}', field 'dim': the image has 21 frames but the sidecar lists 45"
    with (
        pytest.raises(SiteDataError, match=message),
        pet_image.open_pet_image(root / inner, site="pet001", root=root, n_frames=sidecar.n_frames),
    ):
        pytest.fail("no voxel may be read when the frame count is wrong")


def test_pet001_zeroed_voxels_rejected() -> None:
    root, inner = split(PET001 + ".nii.gz")
    with pet_image.open_pet_image(root / inner, site="pet001", root=root) as img:
        assert img.shape == (128, 128, 63, 21)
        assert pet_image.orientation(img.affine) == "LPI"
        labels = np.ones(img.shape[:3], dtype=np.intp)
        with pytest.raises(
            SiteDataError,
            match=rf"file '{inner}', field 'voxel data': image is all zeros \(frame 0\)",
        ):
            pet_image.regional_means(img.dataobj, labels, site="pet001", file=inner)


def real_site(
    tmp_path: Path, sidecar_rel: str, *, image: Path | None = None, n_frames: int = 0
) -> Path:
    """A site folder in tmp_path: one real sidecar with the real image or a synthetic one."""
    site = make_site(tmp_path / "site")
    folder = site / "sub-01" / "ses-pre" / "pet"
    folder.mkdir(parents=True)
    src_root, inner = split(sidecar_rel + ".json")
    shutil.copyfile(src_root / inner, folder / "sub-01_ses-pre_pet.json")
    target = folder / "sub-01_ses-pre_pet.nii.gz"
    if image is not None:  # copied: a link out of the site folder is refused (test_pet integrity)
        shutil.copyfile(image, target)
    else:  # known values: the regions of test_pet, constant over time
        data = frames_of(region_image(), [1.0] * n_frames)
        nib.save(nib.Nifti1Image(data, ATLAS_AFFINE), target)
    return site


def harmonize(tmp_path: Path, site: Path) -> pet.PetTables:
    atlas = pet.read_atlas(write_atlas(tmp_path / "atlas"))
    return pet.harmonize_site(site_entry(), site, atlas, DEMO_KEY, OPTIONS)


def test_harmonize_real_pet001_reports_frame_mismatch(tmp_path: Path) -> None:
    site = real_site(tmp_path, PET001, image=BIDS / (PET001 + ".nii.gz"))
    with pytest.raises(
        SiteDataError,
        match=r"site 'pet_site', file 'sub-01/ses-pre/pet/sub-01_ses-pre_pet.nii.gz', "
        r"field 'dim': the image has 21 frames but the sidecar lists 45",
    ):
        harmonize(tmp_path, site)


def test_real_sidecar_with_synthetic_image(tmp_path: Path) -> None:
    """pet002 sub-01 rescan: 36 frames in seconds, 30-50 min covered by four 5-min frames."""
    site = real_site(tmp_path, "pet002/sub-01/ses-rescan/pet/sub-01_ses-rescan_pet", n_frames=36)
    tables = harmonize(tmp_path, site)
    s = tables.sessions.iloc[0]
    assert s["frames_used"] == 4
    assert s["scanner"] == "Siemens High-Resolution Research Tomograph (HRRT, CTI/Siemens)"
    assert s["tracer"] == "DASB"
    assert s["injected_dose_mbq"] == 598.181
    assert s["source_decay_reference"] == "injection"
    assert s["warnings"] == ""
    suvr = dict(zip(tables.regional["region"], tables.regional["suvr"], strict=True))
    assert suvr["cortex_a"] == pytest.approx(1.5, rel=1e-12)


def test_real_sidecar_window_not_covered(tmp_path: Path) -> None:
    """pet002 sub-01 baseline: a frame 48.6-53.6 min straddles the end of the 30-50 min window."""
    site = real_site(
        tmp_path, "pet002/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet", n_frames=32
    )
    with pytest.raises(
        SiteDataError,
        match=r"field 'FrameTimesStart': the SUVR window 30-50 min after injection is not covered by whole frames "
        r"\(frame times read as seconds; frames overlapping it: 30-35, 35-38.95, 38.95-43.6, 43.6-48.6, 48.6-53.6 min\)",
    ):
        harmonize(tmp_path, site)


@pytest.mark.parametrize(
    ("rel", "n_frames"),
    [(PET001, 45), ("pet003/sub-01/ses-01/pet/sub-01_ses-01_pet", 21)],
)
def test_real_overlapping_frames_reported(tmp_path: Path, rel: str, n_frames: int) -> None:
    """pet001 and pet003 write frame end times in FrameDuration: the frames overlap."""
    site = real_site(tmp_path, rel, n_frames=n_frames)
    with pytest.raises(
        SiteDataError,
        match=r"field 'FrameTimesStart': the SUVR window 30-50 min after injection is not covered.*"
        r"Fix: frames overlap each other \(does FrameDuration hold frame end times\?\)",
    ):
        harmonize(tmp_path, site)


@pytest.mark.parametrize("dataset", ["pet001", "pet002", "pet003", "pet004", "pet005", "pet006"])
def test_real_participants_tsv_read(dataset: str) -> None:
    """participants.tsv files without a final newline (and pet003's CRLF) read cleanly."""
    df = read_tsv(BIDS / dataset / "participants.tsv", site=dataset, required=["participant_id"])
    assert df["participant_id"].str.fullmatch(r"sub-\d+").all()
    assert all(c == c.strip() for c in df.columns)
    assert json.loads((BIDS / dataset / "dataset_description.json").read_text())["Name"]
