"""PET reader -> harmonizer -> tables, on tiny hand-built NIfTI images whose true values are known."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel import orientations as ornt

from conftest import DEMO_KEY, write_tsv
from ketamap import schemas
from ketamap.errors import ConfigError, SiteDataError
from ketamap.harmonize import pet
from ketamap.harmonize.pet import image as pet_image
from ketamap.harmonize.pet.sidecar import PetSidecar, parse_sidecar
from ketamap.ids import pseudonymize

LAMBDA = math.log(2) / (20.38 * 60)  # C-11, per second
OPTIONS = {"window_min": [30, 50], "reference_region": "cerebellum", "pvc": "none"}
# region index -> (name, kind, value in Bq/mL)
REGIONS = {
    1: ("cortex_a", "cortical", 1500.0),
    2: ("caudate", "subcortical", 1200.0),
    3: ("habenula", "subcortical", 1100.0),
    4: ("cerebellum", "reference", 1000.0),
}
ATLAS_AFFINE = np.array([[2.0, 0, 0, -7.0], [0, 2.0, 0, -9.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
SHAPE = (8, 8, 8)


def atlas_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[1:4, 1:7, 1:7] = 1
    labels[4:7, 1:4, 1:7] = 2
    labels[5, 5, 5] = 3  # a one-voxel habenula
    labels[4:7, 4:7, 1:4] = 4
    return labels


def write_atlas(folder: Path, labels: np.ndarray | None = None, rows: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = atlas_labels() if labels is None else labels
    nib.save(nib.Nifti1Image(data, ATLAS_AFFINE), folder / "atlas_dseg.nii.gz")
    rows = rows or [[i, name, kind] for i, (name, kind, _) in REGIONS.items()]
    write_tsv(folder / "atlas_dseg.tsv", [["index", "name", "kind"], *rows])
    return folder


@pytest.fixture
def atlas(tmp_path: Path) -> pet.Atlas:
    return pet.read_atlas(write_atlas(tmp_path / "atlas"))


def region_image(values: dict[int, float] | None = None) -> np.ndarray:
    """A 3D image on the atlas grid holding a constant per region (background 50 Bq/mL)."""
    values = values or {i: v for i, (_, _, v) in REGIONS.items()}
    out = np.full(SHAPE, 50.0)
    labels = atlas_labels()
    for idx, v in values.items():
        out[labels == idx] = v
    return out


def sidecar(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Manufacturer": "Siemens",
        "ManufacturersModelName": "Biograph mCT",
        "Units": "Bq/mL",
        "TracerName": "K-2",
        "TracerRadionuclide": "C11",
        "InjectedRadioactivity": 400.0,
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": 2.0,
        "InjectedMassUnits": "ug",
        "SpecificRadioactivity": 200.0,
        "SpecificRadioactivityUnits": "MBq/ug",
        "ModeOfAdministration": "bolus",
        "TimeZero": "10:00:00",
        "ScanStart": 1800,
        "InjectionStart": 0,
        "FrameTimesStart": [1800, 2100, 2400, 2700],
        "FrameDuration": [300, 300, 300, 300],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0,
        "ReconMethodName": "OSEM",
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"],
        "ReconMethodParameterValues": [21, 3],
        "ReconFilterType": "Gaussian",
        "ReconFilterSize": 4,
        "AttenuationCorrection": "CT-based",
        "BodyWeight": 70.0,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def frames_of(volume: np.ndarray, factors: list[float]) -> np.ndarray:
    return np.stack([volume * f for f in factors], axis=-1)


def write_scan(
    root: Path,
    sub: str,
    ses: str,
    data: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
    affine: np.ndarray = ATLAS_AFFINE,
    ext: str = ".nii.gz",
) -> Path:
    folder = root / sub / ses / "pet"
    folder.mkdir(parents=True, exist_ok=True)
    meta = meta or sidecar()
    if data is None:
        data = frames_of(region_image(), [1.0] * len(meta["FrameTimesStart"]))
    image = folder / f"{sub}_{ses}_trc-K2_pet{ext}"
    nib.save(nib.Nifti1Image(data.astype(np.float64), affine), image)
    (folder / f"{sub}_{ses}_trc-K2_pet.json").write_text(json.dumps(meta))
    return image


def make_site(root: Path, participants: tuple[str, ...] | list[str] = ("sub-01",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_tsv(
        root / "participants.tsv",
        [["participant_id", "age", "sex", "group", "arm"]]
        + [[p, "40", "F", "TRD", "ketamine"] for p in participants],
    )
    return root


def site_entry(**reader: Any) -> dict[str, Any]:
    return {
        "id": "pet_site",
        "trial": "TRIAL-1",
        "species": "human",
        "modality": "pet",
        "reader": {"visits": {"ses-pre": "baseline", "ses-post": "post"}, **reader},
    }


def run(root: Path, atlas: pet.Atlas, options: dict | None = None, **reader: Any) -> pet.PetTables:
    tables = pet.harmonize_site(site_entry(**reader), root, atlas, DEMO_KEY, options or OPTIONS)
    # the frames are exactly the declared tables, and they validate
    assert list(tables.regional.columns) == schemas.get_table("pet_regional").field_names
    assert list(tables.sessions.columns) == schemas.get_table("pet_sessions").field_names
    schemas.to_arrow(tables.regional, "pet_regional")
    schemas.to_arrow(tables.sessions, "pet_sessions")
    return tables


def one_site(tmp_path: Path, **scan: Any) -> Path:
    root = make_site(tmp_path / "site")
    write_scan(root, "sub-01", "ses-pre", **scan)
    return root


def by_region(tables: pet.PetTables, column: str = "activity_kbq_ml") -> dict[str, float]:
    return dict(zip(tables.regional["region"], tables.regional[column], strict=True))


def expected_activity(factor: float = 1e-3) -> dict[str, float]:
    return {name: v * factor for name, _, v in REGIONS.values()}


def assert_close(got: dict[str, float], want: dict[str, float], rel: float = 1e-9) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=rel, abs=0), k


# --- the happy path -----------------------------------------------------------------------------


def test_harmonize_known_values(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path), atlas)
    assert_close(by_region(tables), expected_activity())
    assert_close(by_region(tables, "suvr"), {n: v / 1000.0 for n, _, v in REGIONS.values()})
    reg = tables.regional
    assert set(reg["reference_region"]) == {"cerebellum"}
    assert set(reg["pvc_method"]) == {"none"}
    assert dict(zip(reg["region"], reg["n_voxels"], strict=True)) == {
        "cortex_a": 108,
        "caudate": 54,
        "habenula": 1,
        "cerebellum": 27,
    }
    s = tables.sessions.iloc[0]
    assert s["subject_id"] == pseudonymize("pet_site", ["sub-01"], DEMO_KEY)[0]
    assert s["visit"] == "baseline"
    assert s["scanner"] == "Siemens Biograph mCT"
    assert s["tracer"] == "K-2"
    assert s["frames_used"] == 4
    assert (s["window_start_min"], s["window_end_min"]) == (30.0, 50.0)
    assert s["injected_dose_mbq"] == 400.0
    assert s["injected_mass_ug"] == 2.0
    assert s["body_weight_kg"] == 70.0
    assert s["source_units"] == "Bq/mL"
    assert s["source_frame_time_unit"] == "s"
    assert s["source_decay_reference"] == "injection"
    assert s["decay_factor_applied"] == 1.0
    assert s["orientation"] == "RAS"
    assert s["voxel_size_mm"] == "2.00x2.00x2.00"
    assert s["warnings"] == ""


def test_output_writes_as_declared_tables(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path), atlas)
    schemas.write_table(tables.regional, "pet_regional", tmp_path / "r.parquet")
    schemas.write_table(tables.sessions, "pet_sessions", tmp_path / "s.parquet")
    back = schemas.read_table(tmp_path / "s.parquet", "pet_sessions")
    assert back["warnings"].tolist() == [""]


def test_window_mean_is_duration_weighted(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(FrameTimesStart=[1500, 1800, 2400, 2700], FrameDuration=[300, 600, 300, 300])
    data = frames_of(region_image(), [9.0, 1.0, 2.0, 4.0])  # the first frame is outside the window
    tables = run(one_site(tmp_path, data=data, meta=meta), atlas)
    weight = (600 * 1.0 + 300 * 2.0 + 300 * 4.0) / 1200
    assert_close(by_region(tables), expected_activity(1e-3 * weight))
    assert tables.sessions["frames_used"].tolist() == [3]


def test_single_3d_frame_and_plain_nii(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(FrameTimesStart=[1800], FrameDuration=[1200])
    tables = run(one_site(tmp_path, data=region_image(), meta=meta, ext=".nii"), atlas)
    assert_close(by_region(tables), expected_activity())


def test_scaled_integer_image(tmp_path: Path, atlas: pet.Atlas) -> None:
    """int16 voxels with scl_slope (as DICOM converters write them) are read scaled."""
    root = make_site(tmp_path / "site")
    image = write_scan(root, "sub-01", "ses-pre")
    data = frames_of(region_image(), [1.0] * 4)
    img = nib.Nifti1Image((data / 0.5).astype(np.int16), ATLAS_AFFINE)
    img.header.set_slope_inter(0.5, 0.0)
    nib.save(img, image)
    tables = run(root, atlas)
    assert_close(by_region(tables), expected_activity())


@pytest.mark.parametrize(
    ("options", "reader", "message"),
    [
        ({**OPTIONS, "window_min": [50, 30]}, {}, r"field 'pet.window_min': window \[50, 30\]"),
        ({**OPTIONS, "pvc": "gtm"}, {}, r"field 'pet.pvc': pvc 'gtm'; expected one of \['none'\]"),
        (
            OPTIONS,
            {"frame_time_unit": "h"},
            r"field 'sites\[pet_site\].reader.frame_time_unit': frame_time_unit 'h'",
        ),
        (
            OPTIONS,
            {"visits": {}},
            r"field 'sites\[pet_site\].reader.visits': a PET site needs its session labels mapped",
        ),
    ],
)
def test_bad_options(
    tmp_path: Path, atlas: pet.Atlas, options: dict, reader: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(one_site(tmp_path), atlas, options=options, **reader)


# --- units --------------------------------------------------------------------------------------

IMAGE_UNITS = {
    "Bq/mL": 1e-3,
    "Bq/ml": 1e-3,
    "BQML": 1e-3,
    "kBq/mL": 1.0,
    "kBq/ml": 1.0,
    "kBq/cc": 1.0,
    "MBq/mL": 1e3,
    "nCi/mL": 0.037,
    "uCi/mL": 37.0,
    "µCi/mL": 37.0,
}


@pytest.mark.parametrize(("units", "factor"), IMAGE_UNITS.items())
def test_image_units_converted_exactly(
    tmp_path: Path, atlas: pet.Atlas, units: str, factor: float
) -> None:
    tables = run(one_site(tmp_path, meta=sidecar(Units=units)), atlas)
    assert_close(by_region(tables), expected_activity(factor), rel=1e-12)
    assert_close(by_region(tables, "suvr"), {n: v / 1000.0 for n, _, v in REGIONS.values()})
    assert tables.sessions["source_units"].tolist() == [units]


@pytest.mark.parametrize("units", ["SUV", "g/ml"])
def test_suv_images_converted_with_dose_and_weight(
    tmp_path: Path, atlas: pet.Atlas, units: str
) -> None:
    meta = sidecar(Units=units, InjectedRadioactivity=350.0, BodyWeight=70.0)
    tables = run(one_site(tmp_path, meta=meta), atlas)
    assert_close(by_region(tables), expected_activity(350.0 / 70.0), rel=1e-12)
    assert (
        "converted to kBq/mL with InjectedRadioactivity / BodyWeight"
        in tables.sessions.loc[0, "warnings"]
    )


def test_suv_without_body_weight_rejected(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path, meta=sidecar(Units="SUV", BodyWeight=None))
    with pytest.raises(
        SiteDataError, match=r"field 'BodyWeight': the image is in 'SUV' and cannot be converted"
    ):
        run(root, atlas)


def test_counts_rejected(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path, meta=sidecar(Units="CNTS"))
    with pytest.raises(
        SiteDataError,
        match=r"site 'pet_site', file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.json', field 'Units': Units 'CNTS': counts are not quantitative",
    ):
        run(root, atlas)


def test_unknown_image_unit_rejected(tmp_path: Path, atlas: pet.Atlas) -> None:
    with pytest.raises(
        SiteDataError, match=r"field 'Units': unknown image Units 'Bq/L'; expected one of"
    ):
        run(one_site(tmp_path, meta=sidecar(Units="Bq/L")), atlas)


def parse(**over: Any) -> PetSidecar:
    return parse_sidecar(sidecar(**over), site="s", file="x_pet.json")


@pytest.mark.parametrize(
    ("units", "mbq"),
    [
        ("MBq", 400.0),
        ("GBq", 400000.0),
        ("kBq", 0.4),
        ("Bq", 0.0004),
        ("mCi", 14800.0),
        ("uCi", 14.8),
    ],
)
def test_dose_units(units: str, mbq: float) -> None:
    got = parse(InjectedRadioactivity=400.0, InjectedRadioactivityUnits=units).injected_dose_mbq
    assert got == pytest.approx(mbq, rel=1e-12)


def test_dose_unit_unknown() -> None:
    with pytest.raises(
        SiteDataError, match=r"field 'InjectedRadioactivityUnits': unknown unit 'Ci'"
    ):
        parse(InjectedRadioactivityUnits="Ci")


@pytest.mark.parametrize(
    ("units", "ug"), [("ug", 2.0), ("µg", 2.0), ("mg", 2000.0), ("ng", 0.002), ("g", 2e6)]
)
def test_mass_units(units: str, ug: float) -> None:
    assert parse(InjectedMass=2.0, InjectedMassUnits=units).injected_mass_ug == pytest.approx(
        ug, rel=1e-12
    )


def test_na_mass_and_specific_activity_are_missing(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(
        InjectedMass="n/a",
        InjectedMassUnits="n/a",
        SpecificRadioactivity="n/a",
        SpecificRadioactivityUnits="n/a",
        BodyWeight=None,
    )
    tables = run(one_site(tmp_path, meta=meta), atlas)
    assert pd.isna(tables.sessions.loc[0, "injected_mass_ug"])
    assert pd.isna(tables.sessions.loc[0, "body_weight_kg"])


def test_tolerated_sidecar_variants() -> None:
    s = parse(
        ReconFilterType=["Shepp 0.5", "All-pass 0.4"],
        ReconFilterSize=[2.5, 2.0],
        MolarActivity=55,
        MolarActivityUnits="MBq/nmol",
        TracerRadionuclide="[11C]",
        ImageDecayCorrected="true",
    )
    assert s.half_life_min == 20.38
    assert s.decay_corrected is True
    # BIDS conditions: no filter size when there is no filter, no parameter units without parameters
    parse(ReconFilterType="none", ReconFilterSize=None)
    parse(
        ReconMethodParameterLabels=["none"],
        ReconMethodParameterUnits=None,
        ReconMethodParameterValues=None,
    )


@pytest.mark.parametrize(
    "field", ["Units", "InjectionStart", "FrameDuration", "ImageDecayCorrectionTime", "TracerName"]
)
def test_missing_required_field_named(field: str) -> None:
    with pytest.raises(
        SiteDataError,
        match=rf"site 's', file 'x_pet.json', field '{field}': missing required field; expected a BIDS-PET sidecar",
    ):
        parse(**{field: None})


def test_conditional_required_field() -> None:
    with pytest.raises(SiteDataError, match=r"field 'ReconFilterSize': missing required field"):
        parse(ReconFilterType="Gaussian", ReconFilterSize=None)


def test_several_missing_fields_listed() -> None:
    with pytest.raises(
        SiteDataError, match=r"field 'Units': missing required field \(also missing: TimeZero\)"
    ):
        parse(Units=None, TimeZero=None)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"InjectedRadioactivity": "n/a"},
            r"field 'InjectedRadioactivity': value 'n/a' cannot be used; expected a number > 0",
        ),
        (
            {"InjectedMass": "lots"},
            r"field 'InjectedMass': value 'lots' cannot be used; expected a number >= 0 or \"n/a\"",
        ),
        (
            {"FrameDuration": [300, 300, 300]},
            r"field 'FrameDuration': 3 frame durations for 4 frame start times",
        ),
        (
            {"FrameTimesStart": [1800, 2100, 2100, 2700]},
            r"field 'FrameTimesStart': frame start times are not increasing",
        ),
        (
            {"ImageDecayCorrected": "yes"},
            r"field 'ImageDecayCorrected': value 'yes' is not a boolean",
        ),
        (
            {"TracerRadionuclide": "Tc99m"},
            r"field 'TracerRadionuclide': unknown radionuclide 'Tc99m'",
        ),
    ],
)
def test_bad_sidecar_values(over: dict[str, Any], message: str) -> None:
    with pytest.raises(SiteDataError, match=message):
        parse(**over)


# --- frames -------------------------------------------------------------------------------------

MINUTES = {"FrameTimesStart": [30, 35, 40, 45], "FrameDuration": [5, 5, 5, 5], "ScanStart": 0}


def test_frames_in_minutes_detected_and_converted(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path, meta=sidecar(**MINUTES)), atlas)
    s = tables.sessions.iloc[0]
    assert s["source_frame_time_unit"] == "min"
    assert s["warnings"] == "frame times in minutes, converted to seconds"
    assert s["frames_used"] == 4
    assert_close(by_region(tables), expected_activity())


def test_frames_in_minutes_converted_when_configured(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path, meta=sidecar(**MINUTES)), atlas, frame_time_unit="min")
    assert tables.sessions.loc[0, "source_frame_time_unit"] == "min"


def test_frames_in_minutes_rejected_when_seconds_declared(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path, meta=sidecar(**MINUTES))
    with pytest.raises(
        SiteDataError,
        match=r"field 'FrameTimesStart': the SUVR window 30-50 min after injection is not covered by whole frames "
        r"\(frame times read as seconds; the frames span 0.5-0.833333 min\).*Fix: the frame times look like minutes",
    ):
        run(root, atlas, frame_time_unit="s")


def test_seconds_frames_not_converted_in_auto(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path), atlas, frame_time_unit="auto")
    assert tables.sessions.loc[0, "warnings"] == ""


@pytest.mark.parametrize(
    ("starts", "durations", "seen"),
    [
        ([1800, 2100, 2400], [300, 300, 300], "frames overlapping it: 30-35, 35-40, 40-45 min"),
        (
            [1500, 2100, 2400, 2700],
            [600, 300, 300, 300],
            "frames overlapping it: 25-35, 35-40, 40-45, 45-50 min",
        ),
        (
            [1800, 2100, 2500, 2700],
            [300, 300, 200, 300],
            "frames overlapping it: 30-35, 35-40, 41.6667-45, 45-50 min",
        ),
    ],
)
def test_window_not_covered(
    tmp_path: Path, atlas: pet.Atlas, starts: list[int], durations: list[int], seen: str
) -> None:
    meta = sidecar(FrameTimesStart=starts, FrameDuration=durations)
    root = one_site(tmp_path, meta=meta)
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.json', field 'FrameTimesStart': the SUVR window "
        rf"30-50 min after injection is not covered by whole frames \(frame times read as seconds; {seen}\); "
        r"expected contiguous frames starting at 30 min and ending at 50 min",
    ):
        run(root, atlas)


def test_window_tolerates_one_second(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(
        FrameTimesStart=[1800.6, 2100, 2400.4, 2700], FrameDuration=[299.4, 300, 299.6, 300.8]
    )
    tables = run(one_site(tmp_path, meta=meta), atlas)
    assert tables.sessions.loc[0, "frames_used"] == 4


def test_frame_count_mismatch(tmp_path: Path, atlas: pet.Atlas) -> None:
    data = frames_of(region_image(), [1.0, 1.0, 1.0])
    root = one_site(tmp_path, data=data)
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.nii.gz', field 'dim': the image has 3 frames but the sidecar lists 4",
    ):
        run(root, atlas)


# --- decay --------------------------------------------------------------------------------------


def test_decay_corrected_to_scan_start(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(ScanStart=1800, ImageDecayCorrectionTime=1800)
    tables = run(one_site(tmp_path, meta=meta), atlas)
    factor = math.exp(LAMBDA * 1800)
    s = tables.sessions.iloc[0]
    assert s["source_decay_reference"] == "scan_start"
    assert s["decay_factor_applied"] == pytest.approx(factor, rel=1e-12)
    assert_close(by_region(tables), expected_activity(1e-3 * factor))
    assert_close(by_region(tables, "suvr"), {n: v / 1000.0 for n, _, v in REGIONS.values()})


def test_decay_corrected_to_other_time(tmp_path: Path, atlas: pet.Atlas) -> None:
    meta = sidecar(ScanStart=1800, ImageDecayCorrectionTime=600)
    tables = run(one_site(tmp_path, meta=meta), atlas)
    assert tables.sessions.loc[0, "source_decay_reference"] == "other"
    assert_close(by_region(tables), expected_activity(1e-3 * math.exp(LAMBDA * 600)))


def test_decay_reference_relative_to_injection_start(tmp_path: Path, atlas: pet.Atlas) -> None:
    # TimeZero before the injection: everything is shifted by 120 s
    meta = sidecar(
        InjectionStart=120,
        ScanStart=1920,
        ImageDecayCorrectionTime=120,
        FrameTimesStart=[1920, 2220, 2520, 2820],
    )
    tables = run(one_site(tmp_path, meta=meta), atlas)
    assert tables.sessions.loc[0, "source_decay_reference"] == "injection"
    assert_close(by_region(tables), expected_activity())


def test_uncorrected_frames_corrected_per_frame(tmp_path: Path, atlas: pet.Atlas) -> None:
    starts = np.array([1800, 2100, 2400, 2700.0])
    mids = starts + 150
    decayed = [
        math.exp(-LAMBDA * m) for m in mids
    ]  # what a scanner without decay correction measures
    meta = sidecar(ImageDecayCorrected=False, ImageDecayCorrectionTime="n/a")
    tables = run(one_site(tmp_path, data=frames_of(region_image(), decayed), meta=meta), atlas)
    s = tables.sessions.iloc[0]
    assert s["source_decay_reference"] == "none"
    assert s["decay_factor_applied"] == pytest.approx(np.mean(np.exp(LAMBDA * mids)), rel=1e-12)
    assert_close(by_region(tables), expected_activity())
    assert_close(by_region(tables, "suvr"), {n: v / 1000.0 for n, _, v in REGIONS.values()})


# --- geometry -----------------------------------------------------------------------------------


def reorient(data: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored in another orientation (same world positions of every voxel)."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(tuple(codes)))
    new_data = ornt.apply_orientation(data, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, data.shape[:3])
    return np.ascontiguousarray(new_data), new_affine


def test_orientations_give_identical_values(tmp_path: Path, atlas: pet.Atlas) -> None:
    rng = np.random.default_rng(3)
    data = frames_of(region_image(), [1.0] * 4) * rng.uniform(0.8, 1.2, size=(*SHAPE, 4))
    root = make_site(tmp_path / "site", ["sub-01", "sub-02", "sub-03", "sub-04"])
    results = {}
    for sub, codes in zip(
        ["sub-01", "sub-02", "sub-03", "sub-04"], ["RAS", "LAS", "PSR", "ILA"], strict=True
    ):
        d, a = reorient(data, ATLAS_AFFINE, codes)
        write_scan(root, sub, "ses-pre", data=d, affine=a)
        results[pseudonymize("pet_site", [sub], DEMO_KEY)[0]] = codes
    tables = run(root, atlas)
    orient = dict(zip(tables.sessions["subject_id"], tables.sessions["orientation"], strict=True))
    assert orient == results
    wide = tables.regional.pivot(index="region", columns="subject_id", values="activity_kbq_ml")
    assert np.allclose(wide.to_numpy(), wide.to_numpy()[:, :1], rtol=1e-12, atol=0)
    voxels = tables.regional.pivot(index="region", columns="subject_id", values="n_voxels")
    assert (voxels.nunique(axis=1) == 1).all()


def naive_nearest(values: np.ndarray, affine: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per-region mean with the atlas label of the nearest atlas voxel centre, voxel by voxel."""
    inv = np.linalg.inv(ATLAS_AFFINE)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for ijk in np.ndindex(values.shape):
        world = affine @ np.array([*ijk, 1.0])
        a = np.rint(inv @ world)[:3].astype(int)
        if np.all(a >= 0) and np.all(a < labels.shape):
            label = int(labels[tuple(a)])
            if label:
                sums[label] = sums.get(label, 0.0) + values[ijk]
                counts[label] = counts.get(label, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def test_other_grid_resampled_nearest_neighbour(tmp_path: Path, atlas: pet.Atlas) -> None:
    # a 1.5 mm scanner grid in LPS, offset so that no voxel centre falls halfway between atlas voxels
    affine = np.array([[-1.5, 0, 0, 8.3], [0, -1.5, 0, 7.1], [0, 0, 1.5, -4.6], [0, 0, 0, 1]])
    rng = np.random.default_rng(5)
    volume = rng.uniform(500, 1500, size=(12, 12, 11))
    root = one_site(tmp_path, data=frames_of(volume, [1.0] * 4), affine=affine)
    tables = run(root, atlas)
    want = naive_nearest(volume, affine, atlas_labels())
    got = by_region(tables)
    assert set(got) == {REGIONS[k][0] for k in want}
    for k, v in want.items():
        assert got[REGIONS[k][0]] == pytest.approx(v * 1e-3, rel=1e-12)
    assert tables.sessions.loc[0, "orientation"] == "LPS"
    assert tables.sessions.loc[0, "voxel_size_mm"] == "1.50x1.50x1.50"


def test_region_without_voxels_left_out_with_warning(tmp_path: Path, atlas: pet.Atlas) -> None:
    # a 4 mm grid whose voxel centres miss the one-voxel habenula
    affine = np.array([[4.0, 0, 0, -7.0], [0, 4.0, 0, -9.0], [0, 0, 4.0, -5.0], [0, 0, 0, 1]])
    volume = np.full((4, 4, 4), 1000.0)
    tables = run(one_site(tmp_path, data=frames_of(volume, [1.0] * 4), affine=affine), atlas)
    assert "habenula" not in set(tables.regional["region"])
    assert (
        tables.sessions.loc[0, "warnings"]
        == "regions without voxels on this grid (no row): habenula"
    )


def test_atlas_resampled_once_per_geometry(
    tmp_path: Path, atlas: pet.Atlas, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, ...]] = []
    original = pet_image.resample_labels

    def counting(atlas_img: Any, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
        calls.append(tuple(shape))
        return original(atlas_img, shape, affine)

    monkeypatch.setattr(pet_image, "resample_labels", counting)
    subs = [f"sub-{i:02d}" for i in range(1, 6)]
    root = make_site(tmp_path / "site", subs)
    for sub in subs[:4]:  # four subjects, two visits each, on the same scanner
        write_scan(root, sub, "ses-pre")
        write_scan(root, sub, "ses-post")
    other = np.array([[3.0, 0, 0, -7.0], [0, 3.0, 0, -9.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1]])
    write_scan(
        root,
        subs[4],
        "ses-pre",
        data=frames_of(np.full((6, 6, 6), 1000.0), [1.0] * 4),
        affine=other,
    )
    tables = run(root, atlas)
    assert len(tables.sessions) == 9
    assert len(calls) == 2


# --- the vectorised core ------------------------------------------------------------------------


def test_regional_means_equals_naive_loop() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 30.0, size=(9, 7, 5, 6))
    labels = rng.integers(0, 6, size=(9, 7, 5))
    labels[labels == 4] = 3  # label 4 has no voxel
    frames = [1, 3, 4]
    means, counts = pet_image.regional_means(data, labels, frames, n_labels=7)
    assert means.shape == (3, 7)
    assert counts.tolist() == [int((labels == k).sum()) for k in range(7)]
    assert np.isnan(means[:, 0]).all()  # the background is not averaged
    for row, f in enumerate(frames):
        for k in range(1, 7):
            voxels = data[..., f][labels == k]
            if voxels.size:
                assert means[row, k] == pytest.approx(voxels.mean(), rel=1e-12)
            else:
                assert np.isnan(means[row, k])
    # a grid prepared once gives the same result; so does a C-ordered copy of the data
    grid = pet_image.LabelGrid.from_array(labels, 7)
    again, _ = pet_image.regional_means(np.ascontiguousarray(data), grid, frames, n_labels=7)
    assert np.array_equal(again, means, equal_nan=True)


def test_regional_means_streams_frames(tmp_path: Path) -> None:
    """Reads go through dataobj[..., i], one frame at a time, never the whole 4D array."""
    seen: list[Any] = []

    class Proxy:
        shape = (4, 4, 4, 5)

        def __init__(self) -> None:
            self.data = np.arange(np.prod(self.shape), dtype=float).reshape(self.shape) + 1

        def __getitem__(self, key: Any) -> np.ndarray:
            seen.append(key)
            return self.data[key]

    labels = np.ones((4, 4, 4), dtype=int)
    pet_image.regional_means(Proxy(), labels, [2, 4])
    assert seen == [(Ellipsis, 2), (Ellipsis, 4)]


# --- images that must be rejected ---------------------------------------------------------------


def image_path(root: Path) -> Path:
    return root / "sub-01" / "ses-pre" / "pet" / "sub-01_ses-pre_trc-K2_pet.nii.gz"


IMAGE_FILE = r"file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.nii.gz'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"image file is empty \(0 bytes\)"),
        (b"\n", r"not a NIfTI image \(only 1 byte, too small for a 348-byte header\)"),
        (
            b"\n\n<!DOCTYPE html>\n<html lang='en'><body>Not found</body></html>" * 20,
            r"not a NIfTI image \(looks like HTML\)",
        ),
        (
            gzip.compress(b"<html><head></head></html>" * 30),
            r"not a NIfTI image \(looks like HTML\)",
        ),
        (b"\x1f\x8b\x08\x00garbage", r"not a readable gzip file"),
        (b"P" * 400, r"not a NIfTI image \(starts with b'PPPP"),
    ],
)
def test_bad_image_files_rejected(
    tmp_path: Path, atlas: pet.Atlas, content: bytes, message: str
) -> None:
    root = one_site(tmp_path)
    image_path(root).write_bytes(content)
    with pytest.raises(SiteDataError, match=rf"site 'pet_site', {IMAGE_FILE}: {message}"):
        run(root, atlas)


def test_all_zero_image_rejected(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path, data=np.zeros((*SHAPE, 4)))
    with pytest.raises(
        SiteDataError, match=rf"{IMAGE_FILE}, field 'voxel data': image is all zeros \(frame 0\)"
    ):
        run(root, atlas)


def test_truncated_image_rejected(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path)
    raw = gzip.decompress(image_path(root).read_bytes())
    image_path(root).write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(
        SiteDataError,
        match=rf"{IMAGE_FILE}, field 'voxel data': cannot read the voxel data of frame 1",
    ):
        run(root, atlas)


def test_nan_inside_region_rejected_outside_ignored(tmp_path: Path, atlas: pet.Atlas) -> None:
    volume = region_image()
    volume[0, 0, 0] = np.nan  # background
    tables = run(one_site(tmp_path / "a", data=frames_of(volume, [1.0] * 4)), atlas)
    assert_close(by_region(tables), expected_activity())
    volume[2, 2, 2] = np.nan  # cortex_a
    root = one_site(tmp_path / "b", data=frames_of(volume, [1.0] * 4))
    with pytest.raises(
        SiteDataError,
        match=r"non-finite voxel values \(NaN or inf\) inside atlas regions in frame 0",
    ):
        run(root, atlas)


def test_missing_image_or_sidecar(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = one_site(tmp_path)
    image_path(root).unlink()
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.json': PET sidecar without its image",
    ):
        run(root, atlas)
    root = one_site(tmp_path / "b")
    (image_path(root).parent / "sub-01_ses-pre_trc-K2_pet.json").unlink()
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/ses-pre/pet/sub-01_ses-pre_trc-K2_pet.json': file not found",
    ):
        run(root, atlas)


def test_one_corrupt_image_fails_the_site(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site", ["sub-01", "sub-02", "sub-03"])
    for sub in ["sub-01", "sub-02", "sub-03"]:
        write_scan(root, sub, "ses-pre")
    (root / "sub-02" / "ses-pre" / "pet" / "sub-02_ses-pre_trc-K2_pet.nii.gz").write_bytes(b"\n")
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-02/ses-pre/pet/sub-02_ses-pre_trc-K2_pet.nii.gz': not a NIfTI image",
    ):
        run(root, atlas)


# --- participants, sessions, options ------------------------------------------------------------


def test_participant_not_in_participants_tsv(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site", ["sub-01"])
    write_scan(root, "sub-99", "ses-pre")
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-99/ses-pre/pet/sub-99_ses-pre_trc-K2_pet.nii.gz', field 'participant_id': participant sub-99 is not in participants.tsv",
    ):
        run(root, atlas)


def test_unmapped_session(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site")
    write_scan(root, "sub-01", "ses-week6")
    with pytest.raises(
        SiteDataError,
        match=r"file 'sub-01/ses-week6/pet/sub-01_ses-week6_trc-K2_pet.nii.gz', field 'session_id': session ses-week6 is not mapped to a visit",
    ):
        run(root, atlas)


def test_two_sessions_for_one_visit(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site")
    write_scan(root, "sub-01", "ses-pre")
    write_scan(root, "sub-01", "ses-pre2")
    with pytest.raises(SiteDataError, match=r"a second PET image for sub-01, visit 'baseline'"):
        run(root, atlas, visits={"ses-pre": "baseline", "ses-pre2": "baseline"})


def test_visits_map_sessions(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site")
    write_scan(root, "sub-01", "ses-pre")
    write_scan(root, "sub-01", "ses-post")
    tables = run(root, atlas)
    assert sorted(tables.sessions["visit"]) == ["baseline", "post"]
    assert len(tables.regional) == 8


def test_no_pet_images(tmp_path: Path, atlas: pet.Atlas) -> None:
    root = make_site(tmp_path / "site")
    with pytest.raises(SiteDataError, match=r"no PET images found"):
        run(root, atlas)


def test_reference_region_missing_from_atlas(tmp_path: Path, atlas: pet.Atlas) -> None:
    with pytest.raises(
        ConfigError,
        match=r"field 'pet.reference_region': the reference region 'pons' is not in the atlas; expected one of the atlas regions",
    ):
        run(one_site(tmp_path), atlas, options={**OPTIONS, "reference_region": "pons"})


def test_other_reference_region(tmp_path: Path, atlas: pet.Atlas) -> None:
    tables = run(one_site(tmp_path), atlas, options={**OPTIONS, "reference_region": "caudate"})
    assert by_region(tables, "suvr")["cortex_a"] == pytest.approx(1500 / 1200, rel=1e-12)
    assert set(tables.regional["reference_region"]) == {"caudate"}


# --- the atlas ----------------------------------------------------------------------------------


def test_read_atlas(atlas: pet.Atlas) -> None:
    assert atlas.names == {1: "cortex_a", 2: "caudate", 3: "habenula", 4: "cerebellum"}
    assert atlas.kinds[4] == "reference"
    assert np.asarray(atlas.img.dataobj).dtype == np.int32


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                [1, "cortex_a", "cortical"],
                [2, "caudate", "subcortical"],
                [4, "cerebellum", "reference"],
            ],
            r"labels \[3\] in the image are not listed",
        ),
        (
            [
                [1, "cortex_a", "cortical"],
                [2, "cortex_a", "subcortical"],
                [3, "h", "subcortical"],
                [4, "c", "reference"],
            ],
            r"field 'name': duplicate values \['cortex_a'\]",
        ),
        (
            [
                [1, "Cortex A", "cortical"],
                [2, "caudate", "subcortical"],
                [3, "h", "subcortical"],
                [4, "c", "reference"],
            ],
            r"names \['Cortex A'\] are not snake_case",
        ),
        (
            [
                [1, "a", "cortical"],
                [2, "b", "grey"],
                [3, "h", "subcortical"],
                [4, "c", "reference"],
            ],
            r"field 'kind': unknown kinds \['grey'\]",
        ),
        (
            [
                [1, "a", "cortical"],
                [2, "b", "subcortical"],
                [3, "h", "subcortical"],
                [4, "c", "reference"],
                [9, "x", "cortical"],
            ],
            r"regions \['x'\] \(indices \[9\]\) have no voxel",
        ),
        (
            [
                [1, "a", "cortical"],
                [2, "b", "subcortical"],
                [3, "h", "subcortical"],
                ["four", "c", "reference"],
            ],
            r"field 'index': indices \['four'\] are not positive integers",
        ),
    ],
)
def test_bad_atlas_rejected(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(SiteDataError, match=rf"site 'atlas', .*{message}"):
        pet.read_atlas(write_atlas(tmp_path / "atlas", rows=rows))


def test_atlas_needs_exactly_one_image(tmp_path: Path) -> None:
    folder = write_atlas(tmp_path / "atlas")
    nib.save(nib.Nifti1Image(atlas_labels(), ATLAS_AFFINE), folder / "other_dseg.nii.gz")
    with pytest.raises(SiteDataError, match=r"found 2 files .*; expected exactly one label image"):
        pet.read_atlas(folder)


def test_atlas_must_hold_integers(tmp_path: Path) -> None:
    folder = write_atlas(tmp_path / "atlas")
    nib.save(nib.Nifti1Image(atlas_labels() + 0.5, ATLAS_AFFINE), folder / "atlas_dseg.nii.gz")
    with pytest.raises(SiteDataError, match=r"the atlas holds non-integer or negative values"):
        pet.read_atlas(folder)
