"""Tests of the synthetic consortium's PET part (images, sidecars, atlas, traps, ground truth).

Regional values are measured here independently of the generator, the way the reader does: the
atlas resampled to each scan grid with nearest neighbour (nibabel ``resample_from_to``, order 0),
regional means with ``np.bincount``, frames decay-corrected from what the sidecar says.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from nibabel.processing import resample_from_to

from conftest import REPO as REPO_ROOT
from ketamap.errors import ConfigError
from ketamap.synth import analysis_options as synth_options
from ketamap.synth import atlas_config, generate, load_scenario, pet

SCENARIOS = REPO_ROOT / "config" / "scenarios"
SMALL = SCENARIOS / "small.yaml"
NULL = SCENARIOS / "null.yaml"
DEFAULT = SCENARIOS / "default.yaml"
LAMBDA = math.log(2) / (20.38 * 60)  # C-11, written out independently of the generator
KBQ_PER_UNIT = {"Bq/mL": 1e-3, "BQML": 1e-3, "kBq/mL": 1.0}
WINDOW_S = (1800.0, 3000.0)  # the reader's default SUVR window, 30-50 min
REQUIRED = [
    "Manufacturer",
    "ManufacturersModelName",
    "Units",
    "TracerName",
    "TracerRadionuclide",
    "InjectedRadioactivity",
    "InjectedRadioactivityUnits",
    "InjectedMass",
    "InjectedMassUnits",
    "SpecificRadioactivity",
    "SpecificRadioactivityUnits",
    "ModeOfAdministration",
    "TimeZero",
    "ScanStart",
    "InjectionStart",
    "FrameTimesStart",
    "FrameDuration",
    "AcquisitionMode",
    "ImageDecayCorrected",
    "ImageDecayCorrectionTime",
    "ReconMethodName",
    "ReconMethodParameterLabels",
    "ReconMethodParameterUnits",
    "ReconMethodParameterValues",
    "ReconFilterType",
    "ReconFilterSize",
    "AttenuationCorrection",
]
REGIONS = [
    "acc",
    "pgacc",
    "mpfc",
    "ofc",
    "dlpfc",
    "insula",
    "pcc",
    "precuneus",
    "hippocampus",
    "amygdala",
    "caudate",
    "putamen",
    "ventral_striatum",
    "thalamus",
    "habenula",
    "lateral_temporal",
    "parietal",
    "occipital",
    "cerebellum",
    "white_matter",
]
PET_ANALYSES = {
    "pet.baseline_trd_vs_hc",
    "pet.ketamine_x_time",
    "pet.change_vs_improvement",
    "pet.response_prediction",
}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_variant(tmp_path: Path, source: Path, change: Any, name: str = "variant.yaml") -> Path:
    data = yaml.safe_load(source.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, dtype=str)


def pet_files(site_dir: Path) -> list[tuple[str, str, Path]]:
    """(participant_id, session_id, path stem) of every session listed in sessions.tsv."""
    out = []
    for pid in read_tsv(site_dir / "participants.tsv")["participant_id"]:
        sessions = read_tsv(site_dir / pid / f"{pid}_sessions.tsv")["session_id"]
        for ses in sessions:
            out.append((pid, ses, site_dir / pid / ses / "pet" / f"{pid}_{ses}_trc-K2_pet"))
    return out


def window_activity(stem: Path) -> tuple[np.ndarray, nib.Nifti1Image, dict[str, Any]]:
    """Window-mean activity [kBq/mL, decay-corrected to injection] of a scan, from its sidecar."""
    side = json.loads(stem.with_suffix(".json").read_text())
    img = nib.load(stem.with_suffix(".nii.gz"))
    data = np.asarray(img.dataobj, dtype=float)
    starts = np.asarray(side["FrameTimesStart"], dtype=float)
    durations = np.asarray(side["FrameDuration"], dtype=float)
    if starts[-1] + durations[-1] < WINDOW_S[0]:  # written in minutes
        starts, durations = starts * 60, durations * 60
    if side["ImageDecayCorrected"]:
        correction = np.full(starts.shape, math.exp(LAMBDA * side["ImageDecayCorrectionTime"]))
    else:
        x = LAMBDA * durations
        correction = x * np.exp(LAMBDA * starts) / (1 - np.exp(-x))
    use = (starts >= WINDOW_S[0] - 1e-6) & (starts + durations <= WINDOW_S[1] + 1e-6)
    frames = data[..., use] * correction[use] * KBQ_PER_UNIT[side["Units"]]
    mean = (frames * durations[use]).sum(-1) / durations[use].sum()
    return mean, img, side


def regional_means(stem: Path, atlas: nib.Nifti1Image) -> tuple[np.ndarray, dict[str, Any]]:
    """Regional window-mean activity (label order, index 0 = background) the reader's way."""
    mean, img, side = window_activity(stem)
    labels = resample_from_to(atlas, (img.shape[:3], img.affine), order=0)
    lab = np.rint(np.asarray(labels.dataobj)).astype(int).ravel()
    n = int(np.asarray(atlas.dataobj).max()) + 1
    sums = np.bincount(lab, weights=mean.ravel(), minlength=n)
    return sums / np.bincount(lab, minlength=n), side


@pytest.fixture(scope="module")
def small_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "consortium"
    generate(SMALL, out)
    return out


def _tiny(d: dict[str, Any]) -> None:
    """A few participants, noiseless tissue, an off-centre hot amygdala on the right only."""
    rct, keio, obs = d["sites"]
    rct["groups"]["trd"]["arms"] = {"ketamine": 2, "placebo": 1}
    rct["pet"]["frame_times_in_minutes"] = [{"participant": 1, "visit": "post"}]
    keio["groups"]["hc"]["n"] = 2
    keio["pet"]["decay_corrected_to_scan_start"] = [{"participant": 1, "visit": "baseline"}]
    obs["groups"]["hc"]["n"] = 2
    p = d["pet"]
    p["scanners"][1]["decay_correction"] = "none"
    p.update(between_subject_cv=0.0, test_retest_sd=0.0, voxel_noise_sd=0.0)
    p["reference_suv"] = {"mean": 1.3, "sd": 1e-9}
    p["effects"] = {
        "trd_vs_hc_d": [],
        "ketamine_x_time_pct": [
            {"region": "habenula", "value": -20},
            {"region": "dlpfc", "value": 10},
        ],
        "improvement_slope_pct": [],
    }
    schema = yaml.safe_load((REPO_ROOT / "schemas" / "scenario.schema.yaml").read_text())
    regions = copy.deepcopy(schema["$defs"]["pet_atlas"]["properties"]["regions"]["default"])
    for region in regions:
        if region["name"] == "amygdala":
            region["hc_suvr"] = 3.0
            region["blobs"][0]["mirror"] = False
    p["atlas"] = {"regions": regions}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scenario path, output) of the noiseless tiny consortium."""
    root = tmp_path_factory.mktemp("tiny")
    path = write_variant(root, SMALL, _tiny, "tiny.yaml")
    generate(path, root / "out")
    return path, root / "out"


# --------------------------------------------------------------------------- files


def test_every_session_has_an_image_and_a_complete_sidecar(small_out: Path) -> None:
    scenario = load_scenario(SMALL)
    units = {"ycu_rct": "Bq/mL", "keio_hc": "BQML", "ycu_obs": "kBq/mL"}
    for site in scenario["sites"]:
        site_dir = small_out / site["id"]
        sessions = pet_files(site_dir)
        assert len(sessions) == len(list(site_dir.rglob("*_pet.nii.gz"))) > 0
        for _, _, stem in sessions:
            side = json.loads(stem.with_suffix(".json").read_text())
            missing = [k for k in [*REQUIRED, "BodyWeight"] if k not in side]
            assert missing == [], (stem, missing)
            img = nib.load(stem.with_suffix(".nii.gz"))
            assert img.ndim == 4
            assert img.shape[3] == len(side["FrameTimesStart"]) == len(side["FrameDuration"])
            assert img.get_data_dtype() in (np.dtype("int16"), np.dtype("float32"))
            assert side["Units"] == units[site["id"]]
            assert side["TracerName"] == "K-2" and side["TracerRadionuclide"] == "C11"
            assert side["ModeOfAdministration"] == "bolus" and side["InjectionStart"] == 0
            assert side["InjectedRadioactivityUnits"] == "MBq"
            assert 370 <= side["InjectedRadioactivity"] <= 555
            assert pd.Series([side["TimeZero"]]).str.fullmatch(r"\d\d:\d\d:\d\d").all()
            assert side["ScanStart"] == 1200
            assert 35 <= side["BodyWeight"] <= 120
            assert len(side["ReconMethodParameterLabels"]) == len(
                side["ReconMethodParameterValues"]
            )
            if site["id"] == "ycu_obs":
                assert side["InjectedMass"] == side["SpecificRadioactivity"] == "n/a"
            else:
                assert side["InjectedMassUnits"] == "ug" and side["InjectedMass"] > 0
                assert side["SpecificRadioactivity"] > 0


def test_rct_has_two_sessions_and_controls_one(small_out: Path) -> None:
    rct = pet_files(small_out / "ycu_rct")
    assert len(rct) == 48 and {s for _, s, _ in rct} == {"ses-pre", "ses-post"}
    keio = pet_files(small_out / "keio_hc")
    assert len(keio) == 6 and {s for _, s, _ in keio} == {"ses-01"}


def test_atlas_dataset(small_out: Path) -> None:
    table = read_tsv(small_out / "atlas" / "atlas_dseg.tsv")
    assert list(table.columns) == ["index", "name", "kind"]
    assert list(table["name"]) == REGIONS
    assert set(table["kind"]) == {"cortical", "subcortical", "reference", "white_matter"}
    assert table.set_index("name").loc["cerebellum", "kind"] == "reference"
    img = nib.load(small_out / "atlas" / "atlas_dseg.nii.gz")
    assert img.ndim == 3 and img.get_data_dtype() == np.dtype("int16")
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    labels = np.asarray(img.dataobj)
    counts = np.bincount(labels.ravel(), minlength=21)
    assert set(np.unique(labels)) == set(range(21))
    voxel_mm3 = float(np.prod(img.header.get_zooms()))
    habenula = counts[REGIONS.index("habenula") + 1]
    assert habenula >= 2 and 30 <= habenula * voxel_mm3 <= 60
    # The origin of world space lies inside the brain (template centred near 0).
    centre = np.linalg.inv(img.affine) @ [0, 0, 0, 1]
    assert labels[tuple(np.rint(centre[:3]).astype(int))] > 0
    assert atlas_config(load_scenario(SMALL), "reg", "v1") == {
        "registry": "reg",
        "path": "datasets/atlas",
        "revision": "v1",
    }


def test_atlas_is_written_only_with_pet_sites(tmp_path: Path) -> None:
    def drop_pet(d: dict[str, Any]) -> None:
        d.pop("pet")
        for site in d["sites"]:
            site.pop("pet")

    out = tmp_path / "out"
    generate(write_variant(tmp_path, SMALL, drop_pet), out)
    assert not (out / "atlas").exists()
    assert not list(out.rglob("*_pet.nii.gz"))


# --------------------------------------------------------------------------- traps


def test_traps_appear_exactly_where_the_scenario_says(small_out: Path) -> None:
    minutes, scan_start = set(), set()
    for site in ("ycu_rct", "keio_hc", "ycu_obs"):
        for pid, ses, stem in pet_files(small_out / site):
            side = json.loads(stem.with_suffix(".json").read_text())
            if side["FrameTimesStart"][-1] + side["FrameDuration"][-1] < 100:
                minutes.add((site, pid, ses))
                assert side["FrameTimesStart"] == [20, 30, 40]
                assert side["FrameDuration"] == [10, 10, 10]
            else:
                assert side["FrameTimesStart"] == [1200, 1800, 2400]
            assert side["ImageDecayCorrected"] is True
            if side["ImageDecayCorrectionTime"] != 0:
                assert side["ImageDecayCorrectionTime"] == side["ScanStart"]
                scan_start.add((site, pid, ses))
    assert minutes == {("ycu_rct", "sub-YCU005", "ses-post")}
    assert scan_start == {("keio_hc", "sub-K03", "ses-01")}


def test_pixel_values_follow_the_declared_decay_correction_and_units(
    tiny: tuple[Path, Path],
) -> None:
    """With a fixed reference SUV, every scan's reference SUV agrees once corrected as declared."""
    _, out = tiny
    atlas = nib.load(out / "atlas" / "atlas_dseg.nii.gz")
    ref = REGIONS.index("cerebellum") + 1
    suv: dict[str, list[float]] = {}
    kinds = set()
    for site in ("ycu_rct", "keio_hc", "ycu_obs"):
        for _, _, stem in pet_files(out / site):
            means, side = regional_means(stem, atlas)
            kinds.add((side["ImageDecayCorrected"], side["ImageDecayCorrectionTime"]))
            dose_per_kg = side["InjectedRadioactivity"] / side["BodyWeight"]
            suv.setdefault(side["ManufacturersModelName"], []).append(means[ref] / dose_per_kg)
    assert kinds == {(True, 0), (True, 1200), (False, 0)}
    a, b = np.asarray(suv["Biograph mCT"]), np.asarray(suv["Discovery MI"])
    # Rounding of dose and weight in the sidecar allows ~0.1 %.
    assert a.max() / a.min() < 1.003 and b.max() / b.min() < 1.003
    # Different blur, same tracer level: within a few %, far from a missed decay factor.
    assert 0.95 < b.mean() / a.mean() < 1.05
    assert 0.9 < a.mean() / 1.3 < 1.0  # the reference loses a little to the background


# --------------------------------------------------------------------------- geometry


def test_world_coordinates_of_a_region_agree_across_orientations(tiny: tuple[Path, Path]) -> None:
    """The right-only hot amygdala sits at its world position in LAS and in PIL images."""
    _, out = tiny
    centre = np.array([23.0, -3.0, -20.0])
    found = {}
    for site in ("keio_hc", "ycu_obs"):
        _, _, stem = pet_files(out / site)[0]
        img = nib.load(stem.with_suffix(".nii.gz"))
        data = np.asarray(img.dataobj, dtype=float)[..., -1]
        hot = np.argwhere(data >= 0.8 * data.max())
        weights = data[tuple(hot.T)]
        voxel = (hot * weights[:, None]).sum(0) / weights.sum()
        found[nib.aff2axcodes(img.affine)] = nib.affines.apply_affine(img.affine, voxel)
    assert set(found) == {("L", "A", "S"), ("P", "I", "L")}
    las, pil = found[("L", "A", "S")], found[("P", "I", "L")]
    assert np.abs(las - centre).max() < 2.5 and np.abs(pil - centre).max() < 2.5
    assert np.abs(las - pil).max() < 2.5


def test_noiseless_regional_suvr_matches_the_truth_model(tiny: tuple[Path, Path]) -> None:
    path, out = tiny
    scenario = load_scenario(path)
    atlas = nib.load(out / "atlas" / "atlas_dseg.nii.gz")
    ref = REGIONS.index("cerebellum") + 1
    for site, scanner in (("keio_hc", "scanner_a"), ("ycu_obs", "scanner_b")):
        expected = pet.forward_suvr(scenario, scanner)
        for _, _, stem in pet_files(out / site):
            means, _ = regional_means(stem, atlas)
            measured = means[1:] / means[ref]
            model = np.array([expected[name] for name in REGIONS])
            np.testing.assert_allclose(measured, model, rtol=2e-4)
    tissue = {r["name"]: r["hc_suvr"] for r in scenario["pet"]["atlas"]["regions"]}
    a = pet.forward_suvr(scenario, "scanner_a")
    for name in ("lateral_temporal", "parietal", "dlpfc", "white_matter"):
        assert abs(a[name] / tissue[name] - 1) < 0.12, name
    assert a["habenula"] < tissue["habenula"] - 0.1  # pulled toward white matter


def test_ketamine_change_measured_from_images_matches_the_ground_truth(
    tiny: tuple[Path, Path],
) -> None:
    _, out = tiny
    atlas = nib.load(out / "atlas" / "atlas_dseg.nii.gz")
    ref = REGIONS.index("cerebellum") + 1
    parts = read_tsv(out / "ycu_rct" / "participants.tsv").set_index("participant_id")
    truth = json.loads((out / "ground_truth.json").read_text())["entries"]
    ket = {e["region"]: e for e in truth if e["analysis"] == "pet.ketamine_x_time"}
    changes = []
    for pid in parts.index:
        suvr = {}
        for ses in ("ses-pre", "ses-post"):
            stem = out / "ycu_rct" / pid / ses / "pet" / f"{pid}_{ses}_trc-K2_pet"
            means, _ = regional_means(stem, atlas)
            suvr[ses] = means[1:] / means[ref]
        change = 100 * (suvr["ses-post"] / suvr["ses-pre"] - 1)
        if parts.loc[pid, "arm"] == "KET":
            changes.append(change)
        else:
            np.testing.assert_allclose(change, 0, atol=0.02)
    measured = np.mean(changes, axis=0)
    for i, name in enumerate(REGIONS):
        if name == "cerebellum":
            continue
        assert measured[i] == pytest.approx(ket[name]["forward_value"], abs=0.03), name
    assert ket["habenula"]["planted_value"] == -20 and ket["dlpfc"]["planted_value"] == 10
    assert ket["habenula"]["value"] / -20 < 0.5  # partial-volume loss of a tiny region
    assert ket["dlpfc"]["value"] / 10 > 0.8
    assert ket["thalamus"]["value"] == 0 and ket["thalamus"]["planted_value"] == 0


def test_recovery_factors(tiny: tuple[Path, Path]) -> None:
    scenario = load_scenario(tiny[0])
    factors = pet.recovery_factors(scenario)
    assert set(factors) == {"scanner_a", "scanner_b"}
    for per_region in factors.values():
        assert "cerebellum" not in per_region
        assert per_region["habenula"] < 0.4
        for name in ("lateral_temporal", "parietal", "white_matter"):
            assert 0.8 < per_region[name] < 1.0, name
        assert all(0 < v < 1 for v in per_region.values())


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_pet_bytes(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    path, out = tiny
    generate(path, tmp_path / "again")
    first, again = tree_hashes(out), tree_hashes(tmp_path / "again")
    assert first == again
    assert any(p.endswith("_pet.nii.gz") for p in first) and "atlas/atlas_dseg.nii.gz" in first
    other = write_variant(tmp_path, path, lambda d: d.update(seed=d["seed"] + 1))
    generate(other, tmp_path / "other")
    changed = tree_hashes(tmp_path / "other")
    assert changed["atlas/atlas_dseg.nii.gz"] == first["atlas/atlas_dseg.nii.gz"]
    images = [p for p in first if p.endswith("_pet.nii.gz")]
    assert all(changed[p] != first[p] for p in images)


def test_clinical_files_are_unchanged_by_pet(small_out: Path, tmp_path: Path) -> None:
    def drop_pet(d: dict[str, Any]) -> None:
        d.pop("pet")
        for site in d["sites"]:
            site.pop("pet")

    generate(write_variant(tmp_path, SMALL, drop_pet), tmp_path / "clinical")
    without = tree_hashes(tmp_path / "clinical")
    with_pet = tree_hashes(small_out)
    clinical = {
        p: h for p, h in with_pet.items() if "/pet/" not in p and not p.startswith("atlas/")
    }
    clinical.pop("ground_truth.json")
    without_truth = without.pop("ground_truth.json")
    assert clinical == without
    entries = json.loads((small_out / "ground_truth.json").read_text())["entries"]
    clinical_entries = [e for e in entries if e["analysis"] == "clinical.madrs_change"]
    plain = json.loads((tmp_path / "clinical" / "ground_truth.json").read_text())["entries"]
    assert clinical_entries == plain and without_truth


# --------------------------------------------------------------------------- ground truth

KEYS = {
    "analysis",
    "term",
    "arm",
    "region",
    "value",
    "planted_value",
    "forward_value",
    "recovery",
    "pvc_method",
    "unit",
}


def _pet_truth(out: Path) -> list[dict[str, Any]]:
    entries = json.loads((out / "ground_truth.json").read_text())["entries"]
    return [e for e in entries if e["analysis"].startswith("pet.")]


def test_ground_truth_entries(small_out: Path) -> None:
    entries = _pet_truth(small_out)
    assert {e["analysis"] for e in entries} == PET_ANALYSES
    for e in entries:
        auc = e["analysis"] == "pet.response_prediction"
        assert set(e) == (KEYS | {"optional"} if auc else KEYS) and e["pvc_method"] == "none"
        assert e.get("optional", False) == auc  # one truth per question the config could ask
    assert all(
        (e["arm"] in ("ketamine", "placebo")) == (e["analysis"] == "pet.response_prediction")
        for e in entries
    )
    terms = {
        "pet.baseline_trd_vs_hc": ("trd_minus_hc", "SUVR"),
        "pet.ketamine_x_time": ("ketamine_x_time", "% change"),
        "pet.change_vs_improvement": ("slope", "% change per MADRS point"),
        "pet.response_prediction": ("auc", "AUC"),
    }
    for e in entries:
        assert (e["term"], e["unit"]) == terms[e["analysis"]]
    planted = {
        "pet.baseline_trd_vs_hc": {"acc", "hippocampus", "insula"},
        "pet.ketamine_x_time": {"habenula", "ventral_striatum", "dlpfc", "pgacc"},
        "pet.change_vs_improvement": {"habenula", "ventral_striatum", "dlpfc", "pgacc"},
    }
    for analysis, regions in planted.items():
        rows = {e["region"]: e for e in entries if e["analysis"] == analysis}
        assert set(rows) == set(REGIONS) - {"cerebellum"}
        for name, e in rows.items():
            if name in regions:
                assert e["planted_value"] != 0
                assert np.sign(e["value"]) == np.sign(e["planted_value"])
                assert abs(e["value"]) < abs(e["planted_value"])  # no PVC: attenuated
            else:
                assert e["value"] == 0 and e["planted_value"] == 0
                assert abs(e["forward_value"]) < 0.05 * max(
                    abs(r["planted_value"]) for r in rows.values()
                )
    ket = {e["region"]: e for e in entries if e["analysis"] == "pet.ketamine_x_time"}
    assert ket["habenula"]["planted_value"] == -15 and ket["dlpfc"]["planted_value"] == 8
    assert ket["habenula"]["recovery"] < 0.4 < 0.8 < ket["parietal"]["recovery"]
    base = {e["region"]: e for e in entries if e["analysis"] == "pet.baseline_trd_vs_hc"}
    # d = -1.5 with cv 8 % and test-retest 3 %: the tissue difference is d * SD of an HC scan.
    assert base["acc"]["planted_value"] == pytest.approx(-1.5 * 1.60 * math.hypot(0.08, 0.03))
    aucs = [e for e in entries if e["analysis"] == "pet.response_prediction"]
    # No predictor planted: every (arm, region) truth is chance, keyed like the result rows.
    assert {(e["arm"], e["region"]) for e in aucs} == {
        (arm, r) for arm in ("ketamine", "placebo") for r in REGIONS if r != "cerebellum"
    }
    assert all(e["value"] == 0.5 for e in aucs)


def test_null_scenario_plants_no_pet_effect() -> None:
    entries = pet.truth(load_scenario(NULL))
    assert {e["analysis"] for e in entries} == PET_ANALYSES
    for e in entries:
        expected = 0.5 if e["term"] == "auc" else 0.0
        assert e["value"] == e["planted_value"] == expected


def test_default_scenario_plants_the_published_pattern() -> None:
    scenario = load_scenario(DEFAULT)
    pet_sites = [s for s in scenario["sites"] if s["modality"] == "pet"]
    shared = {s["id"]: s["pet"]["scanner"] for s in pet_sites}
    assert shared["ycu_rct"] == shared["keio_hc"] != shared["ycu_obs"]
    scanners = {s["id"]: s for s in scenario["pet"]["scanners"]}
    assert scanners["scanner_a"]["orientation"] != scanners["scanner_b"]["orientation"]
    assert scanners["scanner_a"]["voxel_mm"] != scanners["scanner_b"]["voxel_mm"]
    units = {s.get("pet", {}).get("units") or scanners[shared[s["id"]]]["units"] for s in pet_sites}
    assert units == {"Bq/mL", "BQML", "kBq/mL"}
    effects = scenario["pet"]["effects"]
    ket = {e["region"]: e["value"] for e in effects["ketamine_x_time_pct"]}
    assert ket == {"habenula": -6, "ventral_striatum": -4, "dlpfc": 3, "pgacc": 3}
    assert all(-0.6 <= e["value"] <= -0.4 for e in effects["trd_vs_hc_d"])
    # Planted tissue correlation of % change with improvement ~ 0.5 (sd(improvement) = 10).
    trt_change = math.sqrt(2) * 100 * scenario["pet"]["test_retest_sd"]
    for e in effects["improvement_slope_pct"]:
        signal = abs(e["value"]) * scenario["clinical"]["change"]["ketamine"]["sd"]
        assert 0.4 < signal / math.hypot(signal, trt_change) < 0.6
        assert np.sign(e["value"]) == np.sign(ket[e["region"]])


def test_ketamine_change_couples_to_improvement_in_tissue() -> None:
    """The drawn tissue % change follows effect + slope * (improvement - mean), r ~ 0.5."""
    scenario = load_scenario(DEFAULT)
    site = scenario["sites"][0]
    scans = pet.simulate_scans(scenario, site)
    hab = REGIONS.index("habenula")
    by_label: dict[str, dict[str, Any]] = {}
    for scan in scans:
        by_label.setdefault(scan.label, {})[scan.visit] = scan
    rows = [
        (v["post"].improvement, 100 * (v["post"].tissue[hab] / v["baseline"].tissue[hab] - 1))
        for v in by_label.values()
        if v["baseline"].arm == "ketamine"
    ]
    imp, change = np.asarray(rows).T
    assert len(imp) == 17
    assert np.corrcoef(imp, change)[0, 1] < -0.2
    placebo = [
        100 * (v["post"].tissue[hab] / v["baseline"].tissue[hab] - 1)
        for v in by_label.values()
        if v["baseline"].arm == "placebo"
    ]
    assert abs(np.mean(placebo)) < 3 and np.mean(change) < -3


def test_a_planted_response_predictor_raises_the_auc(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path,
        SMALL,
        lambda d: d["pet"]["effects"].update(
            response_predictor={"region": "acc", "correlation": 0.5}
        ),
    )
    entries = pet.truth(load_scenario(path))
    aucs = {
        (e["arm"], e["region"]): e for e in entries if e["analysis"] == "pet.response_prediction"
    }
    auc = aucs[("ketamine", "acc")]
    assert 0.6 < auc["planted_value"] < 0.85
    assert 0.5 < auc["value"] <= auc["planted_value"] + 0.01
    # Other regions and the placebo arm stay at chance; the forward model's spill-over is small.
    others = [e for k, e in aucs.items() if k != ("ketamine", "acc")]
    assert all(e["value"] == 0.5 for e in others)
    assert all(abs(e["forward_value"] - 0.5) < 0.02 for e in others)
    # The workflow pre-specifies the planted region when it runs this scenario.
    assert synth_options(path)["analyses"]["pet.response_prediction"] == {"regions": ["acc"]}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["sites"][0]["pet"].update(scanner="nope"), "not in pet.scanners"),
        (
            lambda d: d["sites"][1]["pet"].update(
                frame_times_in_minutes=[{"participant": 2, "visit": "post"}]
            ),
            "no post visit",
        ),
        (
            lambda d: d["sites"][1]["pet"].update(
                decay_corrected_to_scan_start=[{"participant": 99, "visit": "baseline"}]
            ),
            "does not exist",
        ),
        (
            lambda d: d["pet"]["effects"]["ketamine_x_time_pct"].append(
                {"region": "cerebellum", "value": 5}
            ),
            "reference region",
        ),
        (
            lambda d: d["pet"]["effects"]["trd_vs_hc_d"].append({"region": "v1", "value": 1}),
            "unknown region",
        ),
        (lambda d: d["pet"]["scanners"][0].update(orientation="LLS"), "each world axis once"),
        (lambda d: d["pet"]["frames"].update(duration_s=[600, 600]), "differ in length"),
        (lambda d: d["pet"]["scanners"][0].update(voxel_mm=[9, 9, 9]), None),
    ],
)
def test_bad_pet_scenarios_are_config_errors(
    tmp_path: Path, change: Any, message: str | None
) -> None:
    path = write_variant(tmp_path, SMALL, change)
    if message is None:  # the habenula vanishes on a 9 mm grid: caught when generating
        with pytest.raises(ConfigError, match="no voxel on the grid"):
            generate(path, tmp_path / "out")
        return
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_unknown_pet_key_is_named(tmp_path: Path) -> None:
    path = write_variant(tmp_path, SMALL, lambda d: d["pet"]["scanners"][0].update(fwhm=4))
    with pytest.raises(ConfigError, match=r"pet\.scanners\[0\]\.fwhm.*did you mean 'fwhm_mm'"):
        load_scenario(path)
