"""PET part of the synthetic consortium: [11C]K-2 scans in BIDS-PET, the shared atlas, PET truths.

Every session of every participant of a PET site (a site with ``modality: pet`` and a ``pet``
section) gets ``sub-<label>/ses-<label>/pet/sub-<label>_ses-<label>_trc-K2_pet.nii.gz`` (4D, one
volume per frame) and its ``_pet.json`` sidecar, as ``docs/site_data.md`` specifies. The shared
atlas is written once as ``out_dir/atlas/`` (``atlas_dseg.nii.gz`` + ``atlas_dseg.tsv``).

Generative model (every parameter in the scenario's ``pet`` section; geometry and the forward
model in :mod:`ketamap.synth.pet_model`):

- tissue SUVR of region r, participant i, session v (non-reference regions; the reference is 1)::

      s = mu_r * (1 + cv * (sqrt(rho) z_i + sqrt(1 - rho) z_ir))   between-subject
               * (1 + Delta_r [TRD only])                           baseline TRD vs HC
               * (1 + trt * e_irv)                                  test-retest
               * (1 + T_ir / 100 [ketamine, post only])             treatment

  with ``Delta_r = d_r * sqrt(cv^2 + trt^2)`` and ``T_ir = effect_r + slope_r * (improvement_i -
  mean improvement)``, improvement = -(latent MADRS change of :func:`clinical.simulate_site`);
- scanner offset ``s' = s * mul + add`` (non-reference regions);
- activity [kBq/mL, decay-corrected to injection] = ``s' * SUV_ref * dose / weight`` times a
  time-activity factor per frame shared by all regions, then decay as the session's
  ``ImageDecayCorrected``/``ImageDecayCorrectionTime`` dictate (C-11, 1222.8 s);
- piecewise constant by label on the fine template grid, blurred with the scanner's FWHM, sampled
  on the scanner grid, multiplicative voxel noise, written in the scanner's orientation and unit.

Random streams (:func:`ketamap.synth._rng.stream`) are named per participant and session
(``pet.subject.<label>``, ``pet.session.<label>.<ses>``, ``pet.voxels.<label>.<ses>``), so PET
never moves a clinical number and adding a participant moves no one else's scans.

Ground truth (:func:`truth`): one entry per analysis and non-reference region with the keys
``analysis, term, arm (null), region, value, planted_value, forward_value, recovery, pvc_method
("none"), unit``. ``forward_value`` is what a pipeline without partial-volume correction recovers,
from the population means forward-modelled through each scanner's blur and the reader's
nearest-neighbour regional means (scanner offsets taken as harmonised away); ``value`` equals it
where an effect is planted and is 0 for a planted null (the forward model's tiny spill-over into
neighbours stays in ``forward_value``); ``planted_value`` is the tissue truth; ``recovery`` the
region's fraction of a small change of its own tissue SUVR that the measurement recovers.
Analyses: ``pet.baseline_trd_vs_hc`` (trd_minus_hc, SUVR), ``pet.ketamine_x_time``
(ketamine_x_time, % change, ketamine minus placebo), ``pet.change_vs_improvement`` (slope, % change
per MADRS point, ketamine arm) and ``pet.response_prediction`` (auc per arm and region: 0.5 except
the planted predictor region in the ketamine arm).

Public helpers beyond the plug-in contract: :func:`atlas_config`, :func:`simulate_scans`,
:func:`forward_suvr`, :func:`recovery_factors`.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from ketamap.errors import ConfigError
from ketamap.synth import clinical
from ketamap.synth import pet_model as model
from ketamap.synth._io import write_json, write_tsv
from ketamap.synth._rng import stream

NAME = "pet"
ATLAS_DIR = "atlas"
ATLAS_IMAGE = "atlas_dseg.nii.gz"
ATLAS_TABLE = "atlas_dseg.tsv"
TRACER = "K2"
HALF_LIFE_S = 20.38 * 60.0  # C-11 [physics]
DECAY_CONSTANT = math.log(2.0) / HALF_LIFE_S
TAC_CENTRE_MIN = 40.0  # the time-activity factor is 1 here (any value works: it cancels in SUVR)
INT16_TOP = 32000.0
GZIP_LEVEL = 6
# Pixel value per kBq/mL in each image unit; injected-dose value per MBq in each dose unit.
UNIT_PER_KBQ_ML = {
    "Bq/mL": 1000.0,
    "Bq/ml": 1000.0,
    "BQML": 1000.0,
    "kBq/mL": 1.0,
    "kBq/ml": 1.0,
    "kBq/cc": 1.0,
    "MBq/mL": 0.001,
    "nCi/mL": 1000.0 / 37.0,
    "uCi/mL": 1.0 / 37.0,
}
DOSE_PER_MBQ = {"MBq": 1.0, "GBq": 0.001, "mCi": 1.0 / 37.0}
ANALYSES = {
    "baseline": "pet.baseline_trd_vs_hc",
    "ketamine": "pet.ketamine_x_time",
    "slope": "pet.change_vs_improvement",
    "auc": "pet.response_prediction",
}


@dataclass(frozen=True)
class Scan:
    """One PET session of one participant, with the draws that make its image.

    Attributes
    ----------
    label, session, visit, acq_time
        Participant label (no ``sub-``), session label (with ``ses-``), shared visit and the
        session's acq_time (ISO, from the clinical part).
    group, arm, improvement
        Diagnostic group, randomised arm (or None) and MADRS improvement (-latent change; None
        outside the randomisation).
    tissue
        Tissue SUVR per atlas region (label order), before the scanner offset.
    dose_mbq, weight_kg, reference_suv, specific_mbq_per_ug
        Injected radioactivity, body weight, window SUV of the reference region, specific
        radioactivity.
    """

    label: str
    session: str
    visit: str
    acq_time: str
    group: str
    arm: str | None
    improvement: float | None
    tissue: np.ndarray
    dose_mbq: float
    weight_kg: float
    reference_suv: float
    specific_mbq_per_ug: float


# --------------------------------------------------------------------------- plug-in contract


def applies(site: dict[str, Any]) -> bool:
    """PET scans are written for human sites with modality pet and a ``pet`` section."""
    return bool(
        site["species"] == "human" and site["modality"] == "pet" and site.get("pet") is not None
    )


def reader_options(site: dict[str, Any]) -> dict[str, Any]:
    """No PET reader option is needed: the reader's defaults (frame_time_unit auto) read it all."""
    return {}


def atlas_config(
    scenario: dict[str, Any] | str | Path, registry: str, revision: str
) -> dict[str, Any]:
    """The workflow-config ``atlas`` entry for the atlas :func:`generate` writes.

    Parameters
    ----------
    scenario
        A loaded scenario or the path of one (accepted for symmetry with ``site_configs``; the
        atlas is always ``datasets/atlas`` in the registry).
    registry, revision
        The registry and revision the generated datasets are released to.
    """
    return {"registry": registry, "path": f"datasets/{ATLAS_DIR}", "revision": revision}


def write_shared(scenario: dict[str, Any], out_dir: Path) -> None:
    """Write the shared atlas to ``out_dir/atlas/`` when any site writes PET scans."""
    if not any(applies(site) for site in scenario["sites"]):
        return
    cfg = scenario["pet"]["atlas"]
    built = model.atlas(cfg)
    target = Path(out_dir) / ATLAS_DIR
    target.mkdir(parents=True, exist_ok=True)
    _write_nifti(target / ATLAS_IMAGE, built.image())
    write_tsv(
        target / ATLAS_TABLE,
        ["index", "name", "kind"],
        [
            [str(i + 1), name, kind]
            for i, (name, kind) in enumerate(zip(built.names, built.kinds, strict=True))
        ],
    )


def write_site(scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
    """Write every PET session of one site (image + sidecar)."""
    pet = scenario["pet"]
    scanner = scanner_of(scenario, site)
    grid = model.grid(pet["atlas"], scanner)
    units = site["pet"].get("units") or scanner["units"]
    minutes = _session_set(site, "frame_times_in_minutes")
    scan_start = _session_set(site, "decay_corrected_to_scan_start")
    labels = _numbers(site)
    for scan in simulate_scans(scenario, site):
        key = (labels[scan.label], scan.visit)
        correction = "scan_start" if key in scan_start else scanner["decay_correction"]
        data = _frames(scenario, site, scanner, grid, scan, correction, units)
        base = site_dir / f"sub-{scan.label}" / scan.session / "pet"
        stem = f"sub-{scan.label}_{scan.session}_trc-{TRACER}_pet"
        base.mkdir(parents=True, exist_ok=True)
        _write_nifti(base / f"{stem}.nii.gz", _scan_image(data, grid, scanner))
        write_json(
            base / f"{stem}.json",
            _sidecar(
                pet, site, scanner, scan, units, correction, key in minutes, int(scenario["seed"])
            ),
        )


# --------------------------------------------------------------------------- validation


def validate(scenario: dict[str, Any], source: str | None) -> None:
    """Check what the schema cannot: scanners, atlas, frames, effect regions, trap sessions.

    Raises
    ------
    ConfigError
        Naming the site (when there is one) and the dotted field of the first problem found.
    """
    pet = scenario["pet"]

    def fail(message: str, field: str, site: str | None = None, **kw: Any) -> None:
        raise ConfigError(message, site=site, file=source, field=field, **kw)

    for i, site in enumerate(scenario["sites"]):
        if site.get("pet") is not None and not (
            site["modality"] == "pet" and site["species"] == "human"
        ):
            fail(
                "only human sites with modality pet write PET scans",
                f"sites[{i}].pet",
                site["id"],
                hint="remove 'pet' or set modality: pet",
            )
    pet_sites = [(i, s) for i, s in enumerate(scenario["sites"]) if applies(s)]
    ids = [sc["id"] for sc in pet["scanners"]]
    for j, scanner in enumerate(pet["scanners"]):
        where = f"pet.scanners[{j}]"
        if ids.count(scanner["id"]) > 1:
            fail(f"scanner id '{scanner['id']}' is used twice", f"{where}.id")
        codes = scanner["orientation"]
        if sorted(_AXIS[c] for c in codes) != [0, 1, 2]:
            fail(
                f"'{codes}' does not name each world axis once",
                f"{where}.orientation",
                expected="one of L/R, one of A/P and one of S/I, e.g. LAS or PIL",
            )
        if any(v <= 0 for v in scanner["voxel_mm"]) or any(f <= 0 for f in scanner["fov_mm"]):
            fail("voxel sizes and field of view must be positive", where)
    if not pet_sites:
        return
    if any(s["id"] == ATLAS_DIR for s in scenario["sites"]):
        fail(
            f"a site id '{ATLAS_DIR}' would clash with the atlas dataset",
            "sites[].id",
            expected="another site id",
        )
    for i, site in pet_sites:
        if site["pet"]["scanner"] not in ids:
            fail(
                f"scanner '{site['pet']['scanner']}' is not in pet.scanners",
                f"sites[{i}].pet.scanner",
                site["id"],
                expected="one of " + (", ".join(ids) or "(no scanners defined)"),
            )
        _check_sessions(site, i, source)

    frames = pet["frames"]
    starts, durations = frames["start_s"], frames["duration_s"]
    if len(starts) != len(durations):
        fail("start_s and duration_s differ in length", "pet.frames")
    if any(starts[k] + durations[k] > starts[k + 1] + 1e-9 for k in range(len(starts) - 1)):
        fail("frames must be in time order without overlap", "pet.frames")
    for name in ("injected_mbq", "specific_radioactivity_mbq_per_ug"):
        if not 0 < pet[name]["min"] <= pet[name]["max"]:
            fail("need 0 < min <= max", f"pet.{name}")
    weight = pet["body_weight_kg"]
    if not 0 < weight["min"] < weight["max"]:
        fail("need 0 < min < max", "pet.body_weight_kg")

    _check_atlas(pet["atlas"], fail)
    names = [r["name"] for r in pet["atlas"]["regions"]]
    reference = next(r["name"] for r in pet["atlas"]["regions"] if r["kind"] == "reference")
    effects = pet["effects"]
    for key in ("trd_vs_hc_d", "ketamine_x_time_pct", "improvement_slope_pct"):
        seen: set[str] = set()
        for k, item in enumerate(effects[key]):
            field = f"pet.effects.{key}[{k}].region"
            if item["region"] not in names:
                fail(f"unknown region '{item['region']}'", field, expected="an atlas region")
            if item["region"] == reference:
                fail(
                    f"the reference region '{reference}' cannot carry an effect",
                    field,
                    hint="SUVR is relative to it; plant the effect elsewhere",
                )
            if item["region"] in seen:
                fail(f"region '{item['region']}' is listed twice", field)
            seen.add(item["region"])
    predictor = effects["response_predictor"]
    if predictor["region"] is not None:
        field = "pet.effects.response_predictor"
        if predictor["region"] not in names or predictor["region"] == reference:
            fail(f"'{predictor['region']}' is not a non-reference atlas region", f"{field}.region")
        if abs(_predictor_loading(pet)) > 1:
            fail(
                f"correlation {predictor['correlation']} is not reachable with cv "
                f"{pet['between_subject_cv']}, shared_fraction {pet['shared_fraction']} and "
                f"test_retest_sd {pet['test_retest_sd']}",
                f"{field}.correlation",
                expected="a smaller |correlation|",
            )


_AXIS = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def _check_atlas(cfg: dict[str, Any], fail: Any) -> None:
    regions = cfg["regions"]
    names = [r["name"] for r in regions]
    for k, name in enumerate(names):
        if names.count(name) > 1:
            fail(f"region '{name}' is listed twice", f"pet.atlas.regions[{k}].name")
    kinds = [r["kind"] for r in regions]
    for kind in ("reference", "white_matter"):
        if kinds.count(kind) != 1:
            fail(
                f"{kinds.count(kind)} regions of kind {kind}",
                "pet.atlas.regions",
                expected="exactly one",
            )
    for k, region in enumerate(regions):
        where = f"pet.atlas.regions[{k}]"
        if region["kind"] == "reference" and region["hc_suvr"] != 1:
            fail("the reference region's SUVR is 1 by definition", f"{where}.hc_suvr")
        if region["kind"] != "white_matter" and not region["blobs"]:
            fail(f"region '{region['name']}' has no blob", f"{where}.blobs")
        for b, blob in enumerate(region["blobs"]):
            if any(r <= 0 for r in blob["radii"]):
                fail("radii must be positive", f"{where}.blobs[{b}].radii")
    if any(r <= 0 for r in cfg["brain"]["radii"]):
        fail("radii must be positive", "pet.atlas.brain.radii")
    if any(b[0] >= b[1] for b in cfg["bounds_mm"]):
        fail("each bound needs min < max", "pet.atlas.bounds_mm")
    problems = model.atlas_problems(cfg)
    if problems:
        fail(
            "; ".join(problems),
            "pet.atlas",
            expected=f"at least min_voxels ({cfg['min_voxels']}) atlas voxels per region",
            hint="enlarge the region's blobs or use smaller atlas voxels",
        )


def _site_counts(site: dict[str, Any]) -> tuple[int, int]:
    """(number of randomised participants, total participants) of a site."""
    groups = site.get("groups") or {}
    trd = groups.get("trd") or {}
    randomised = sum(int(v) for v in (trd.get("arms") or {}).values())
    total = randomised + int(trd.get("n", 0)) + int((groups.get("hc") or {}).get("n", 0))
    return randomised, total


def _check_sessions(site: dict[str, Any], i: int, source: str | None) -> None:
    randomised, total = _site_counts(site)
    for key in ("frame_times_in_minutes", "decay_corrected_to_scan_start"):
        for k, ref in enumerate(site["pet"][key]):
            field = f"sites[{i}].pet.{key}[{k}]"
            if ref["participant"] > total:
                raise ConfigError(
                    f"participant {ref['participant']} does not exist (the site has {total})",
                    site=site["id"],
                    file=source,
                    field=f"{field}.participant",
                )
            if ref["visit"] == "post" and ref["participant"] > randomised:
                raise ConfigError(
                    f"participant {ref['participant']} is not randomised and has no post visit",
                    site=site["id"],
                    file=source,
                    field=f"{field}.visit",
                    expected=f"baseline, or a participant number up to {randomised}",
                )


def _predictor_loading(pet: dict[str, Any]) -> float:
    """Loading c of improvement on the predictor region's specific subject component."""
    cv, rho, trt = pet["between_subject_cv"], pet["shared_fraction"], pet["test_retest_sd"]
    corr = float(pet["effects"]["response_predictor"]["correlation"])
    if corr == 0:
        return 0.0
    if cv <= 0 or rho >= 1:
        return math.inf
    return corr * math.sqrt(cv**2 + trt**2) / (cv * math.sqrt(1 - rho))


# --------------------------------------------------------------------------- simulation


def scanner_of(scenario: dict[str, Any], site: dict[str, Any]) -> dict[str, Any]:
    """The scanner entry a PET site names."""
    wanted = site["pet"]["scanner"]
    return next(sc for sc in scenario["pet"]["scanners"] if sc["id"] == wanted)


def _numbers(site: dict[str, Any]) -> dict[str, int]:
    """Participant label -> running number n."""
    return {site["id_format"].format(n=n): n for n in range(1, _site_counts(site)[1] + 1)}


def _session_set(site: dict[str, Any], key: str) -> set[tuple[int, str]]:
    return {(int(ref["participant"]), str(ref["visit"])) for ref in site["pet"][key]}


def _effect_vector(pet: dict[str, Any], key: str) -> np.ndarray:
    names = [r["name"] for r in pet["atlas"]["regions"]]
    out = np.zeros(len(names))
    for item in pet["effects"][key]:
        out[names.index(item["region"])] = float(item["value"])
    return out


def group_shift(pet: dict[str, Any]) -> np.ndarray:
    """Relative TRD-vs-HC tissue shift per region: d * sqrt(cv^2 + trt^2)."""
    scale = math.hypot(pet["between_subject_cv"], pet["test_retest_sd"])
    return _effect_vector(pet, "trd_vs_hc_d") * scale


def _weight(rng: np.random.Generator, cfg: dict[str, Any]) -> float:
    for _ in range(10_000):
        w = float(rng.normal(cfg["mean"], cfg["sd"]))
        if cfg["min"] <= w <= cfg["max"]:
            return w
    raise ConfigError("body weight range is too unlikely", field="pet.body_weight_kg")


def _pet_dropouts(
    scenario: dict[str, Any], site: dict[str, Any], people: list[clinical.Participant]
) -> set[str]:
    """Labels of the randomised participants without a post scan (their own stream, so the
    fraction moves no other draw)."""
    fraction = float(site["pet"].get("missing_post_fraction", 0))
    randomised = [p.label for p in people if p.arm is not None]
    k = round(fraction * len(randomised))
    if not k:
        return set()
    rng = stream(int(scenario["seed"]), site["id"], "pet.dropouts")
    return {randomised[i] for i in rng.choice(len(randomised), size=k, replace=False)}


def simulate_scans(scenario: dict[str, Any], site: dict[str, Any]) -> list[Scan]:
    """Draw every PET session of a site (participants and sessions from the clinical part)."""
    pet = scenario["pet"]
    seed = int(scenario["seed"])
    built = model.atlas(pet["atlas"])
    n_regions = len(built.names)
    ref = built.reference
    mu = built.hc_suvr
    cv, rho, trt = pet["between_subject_cv"], pet["shared_fraction"], pet["test_retest_sd"]
    delta = group_shift(pet)
    effect = _effect_vector(pet, "ketamine_x_time_pct")
    slope = _effect_vector(pet, "improvement_slope_pct")
    change = scenario["clinical"]["change"].get("ketamine", {"mean": 0.0, "sd": 1.0})
    mean_improvement = -float(change["mean"])
    sd_improvement = float(change["sd"])
    predictor = pet["effects"]["response_predictor"]
    loading = _predictor_loading(pet)
    p_index = built.names.index(predictor["region"]) if predictor["region"] else None

    people = clinical.simulate_site(scenario, site)
    dropouts = _pet_dropouts(scenario, site, people)
    scans = []
    for person in people:
        srng = stream(seed, site["id"], f"pet.subject.{person.label}")
        z_global = float(srng.normal())
        z_region = srng.normal(size=n_regions)
        weight0 = _weight(srng, pet["body_weight_kg"])
        improvement = None if person.madrs_change is None else -float(person.madrs_change)
        if person.arm == "ketamine" and p_index is not None and improvement is not None:
            z_imp = (improvement - mean_improvement) / sd_improvement
            z_region[p_index] = loading * z_imp + math.sqrt(1 - loading**2) * z_region[p_index]
        subject = 1 + cv * (math.sqrt(rho) * z_global + math.sqrt(1 - rho) * z_region)
        group = 1 + delta if person.group == "trd" else np.ones(n_regions)
        for visit, session, when in person.sessions:
            if visit == "post" and person.label in dropouts:
                continue
            rng = stream(seed, site["id"], f"pet.session.{person.label}.{session}")
            noise = rng.normal(size=n_regions)
            dose = float(rng.uniform(pet["injected_mbq"]["min"], pet["injected_mbq"]["max"]))
            weight = weight0 + (
                float(rng.normal(0, pet["body_weight_kg"]["weight_change_sd_kg"]))
                if visit == "post"
                else 0.0
            )
            suv = max(
                float(rng.normal(pet["reference_suv"]["mean"], pet["reference_suv"]["sd"])), 0.2
            )
            sa = pet["specific_radioactivity_mbq_per_ug"]
            specific = float(rng.uniform(sa["min"], sa["max"]))
            tissue = mu * subject * group * (1 + trt * noise)
            if visit == "post" and person.arm == "ketamine" and improvement is not None:
                tissue = tissue * (1 + (effect + slope * (improvement - mean_improvement)) / 100)
            tissue = np.maximum(tissue, 0.05)
            tissue[ref] = 1.0
            scans.append(
                Scan(
                    label=person.label,
                    session=session,
                    visit=visit,
                    acq_time=when,
                    group=person.group,
                    arm=person.arm,
                    improvement=improvement,
                    tissue=tissue,
                    dose_mbq=dose,
                    weight_kg=weight,
                    reference_suv=suv,
                    specific_mbq_per_ug=specific,
                )
            )
    return scans


def with_offset(tissue: np.ndarray, scanner: dict[str, Any], reference: int) -> np.ndarray:
    """Tissue SUVR as the scanner renders it: ``s * mul + add`` except in the reference region."""
    out = np.asarray(tissue, dtype=float) * scanner["suvr_offset_mul"] + scanner["suvr_offset_add"]
    out[..., reference] = 1.0
    return out


def decay_factor(start_s: np.ndarray, duration_s: np.ndarray, correction: str) -> np.ndarray:
    """Pixel value over injection-corrected activity per frame, for a decay correction.

    ``injection``: 1. ``scan_start``: activity referred to the scan start ``T`` (first frame
    start), ``exp(-lambda T)``. ``none``: the frame-mean of the decaying activity,
    ``exp(-lambda t0) (1 - exp(-lambda d)) / (lambda d)``.
    """
    start_s = np.asarray(start_s, dtype=float)
    duration_s = np.asarray(duration_s, dtype=float)
    if correction == "injection":
        return np.ones_like(start_s)
    if correction == "scan_start":
        return np.full_like(start_s, math.exp(-DECAY_CONSTANT * float(start_s[0])))
    x = DECAY_CONSTANT * duration_s
    return np.exp(-DECAY_CONSTANT * start_s) * (-np.expm1(-x)) / x


def time_activity(pet: dict[str, Any]) -> np.ndarray:
    """Time-activity factor per frame, shared by every region."""
    start = np.asarray(pet["frames"]["start_s"], dtype=float)
    mid_min = (start + np.asarray(pet["frames"]["duration_s"], dtype=float) / 2) / 60.0
    return np.exp(-float(pet["washout_per_min"]) * (mid_min - TAC_CENTRE_MIN))


def noiseless_activity(
    scenario: dict[str, Any], scanner: dict[str, Any], tissue: np.ndarray, reference_kbq: float
) -> np.ndarray:
    """Window-level activity [kBq/mL, decay-corrected to injection] on the scanner's RAS grid."""
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    grid = model.grid(pet["atlas"], scanner)
    values = (with_offset(tissue, scanner, built.reference) * reference_kbq).astype(np.float32)
    # An explicit sum (not BLAS) so the float32 result does not depend on the BLAS build.
    out = np.zeros(grid.basis.shape[1], dtype=np.float32)
    for value, row in zip(values, grid.basis, strict=True):
        out += value * row
    return out.reshape(grid.shape)


def _frames(
    scenario: dict[str, Any],
    site: dict[str, Any],
    scanner: dict[str, Any],
    grid: model.Grid,
    scan: Scan,
    correction: str,
    units: str,
) -> np.ndarray:
    """Pixel values ``(x, y, z, frame)`` on the RAS grid, in the site's unit."""
    pet = scenario["pet"]
    reference_kbq = scan.reference_suv * scan.dose_mbq / scan.weight_kg
    activity = noiseless_activity(scenario, scanner, scan.tissue, reference_kbq).ravel()
    frames = pet["frames"]
    factor = time_activity(pet) * decay_factor(
        np.asarray(frames["start_s"]), np.asarray(frames["duration_s"]), correction
    )
    rng = stream(int(scenario["seed"]), site["id"], f"pet.voxels.{scan.label}.{scan.session}")
    data = rng.standard_normal((factor.size, activity.size), dtype=np.float32)
    data *= np.float32(pet["voxel_noise_sd"])
    data += np.float32(1.0)
    data *= activity[None, :]
    data *= (factor * UNIT_PER_KBQ_ML[units]).astype(np.float32)[:, None]
    data[:, activity < float(pet["mask_fraction"]) * float(activity.max())] = 0.0
    return np.moveaxis(data.reshape((factor.size, *grid.shape)), 0, -1)


# --------------------------------------------------------------------------- writing


def scanner_affine(grid: model.Grid, scanner: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Orientation transform and voxel-to-world affine of the grid as the scanner stores it."""
    ornt = ornt_transform(
        axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(scanner["orientation"]))
    )
    return ornt, grid.affine @ inv_ornt_aff(ornt, grid.shape)


def _scan_image(data: np.ndarray, grid: model.Grid, scanner: dict[str, Any]) -> nib.Nifti1Image:
    """Reorient RAS-ordered frames to the scanner's axes and store them in its data type."""
    ornt, affine = scanner_affine(grid, scanner)
    stored = apply_orientation(data, ornt)
    if scanner["dtype"] == "int16":
        top = float(np.abs(stored).max())
        slope = float(np.float32(top / INT16_TOP)) if top > 0 else 1.0
        array = np.rint(stored / slope).astype(np.int16)
        img = nib.Nifti1Image(array, affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(stored.astype(np.float32), affine)
    header = img.header
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"ketamap synthetic [11C]K-2 PET"
    return img


def _write_nifti(path: Path, img: nib.Nifti1Image) -> None:
    """Write a ``.nii.gz`` byte-identically for identical images (gzip mtime 0, no file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0))


def _num(value: float, digits: int) -> float | int:
    """Round for a sidecar; integral values are written as integers."""
    rounded = round(float(value), digits)
    return int(rounded) if rounded == int(rounded) else rounded


def device_fields(seed: int, scanner: dict[str, Any]) -> dict[str, str]:
    """DeviceSerialNumber, InstitutionName and InstitutionAddress a scanner writes (see the schema:
    derived from the seed and scanner id when absent, left out when null)."""
    digest = hashlib.sha256(f"{seed}/scanner/{scanner['id']}".encode()).hexdigest().upper()
    serial = scanner.get("serial_number", f"PET-{digest[:8]}")
    default_name = f"{scanner['id'].replace('_', ' ').title()} Canary Hospital {digest[8:12]}"
    institution = scanner.get("institution", default_name)
    out = {}
    if serial is not None:
        out["DeviceSerialNumber"] = str(serial)
    if institution is not None:
        out["InstitutionName"] = str(institution)
        out["InstitutionAddress"] = f"{int(digest[12:15], 16) % 90 + 1}-1 Canary Lane, Yokohama"
    return out


def canaries(scenario: dict[str, Any]) -> list[str]:
    """Serials, institution names and addresses of the scanners PET sites use (never in an output)."""
    used = {site["pet"]["scanner"] for site in _pet_sites(scenario)}
    return [
        value
        for scanner in scenario["pet"]["scanners"]
        if scanner["id"] in used
        for value in device_fields(int(scenario["seed"]), scanner).values()
    ]


def _sidecar(
    pet: dict[str, Any],
    site: dict[str, Any],
    scanner: dict[str, Any],
    scan: Scan,
    units: str,
    correction: str,
    in_minutes: bool,
    seed: int,
) -> dict[str, Any]:
    starts = [float(s) for s in pet["frames"]["start_s"]]
    durations = [float(d) for d in pet["frames"]["duration_s"]]
    scale = 60.0 if in_minutes else 1.0
    dose_unit = site["pet"]["injected_radioactivity_units"]
    if site["pet"]["injected_mass_na"]:
        mass: dict[str, Any] = {
            "InjectedMass": "n/a",
            "InjectedMassUnits": "n/a",
            "SpecificRadioactivity": "n/a",
            "SpecificRadioactivityUnits": "n/a",
        }
    else:
        mass = {
            "InjectedMass": _num(scan.dose_mbq / scan.specific_mbq_per_ug, 3),
            "InjectedMassUnits": "ug",
            "SpecificRadioactivity": _num(scan.specific_mbq_per_ug, 1),
            "SpecificRadioactivityUnits": "MBq/ug",
        }
    decay_time = starts[0] if correction == "scan_start" else 0
    return {
        "Manufacturer": scanner["manufacturer"],
        "ManufacturersModelName": scanner["model"],
        **device_fields(seed, scanner),
        "Units": units,
        "TracerName": "K-2",
        "TracerRadionuclide": "C11",
        "InjectedRadioactivity": _num(scan.dose_mbq * DOSE_PER_MBQ[dose_unit], 4),
        "InjectedRadioactivityUnits": dose_unit,
        **mass,
        "ModeOfAdministration": "bolus",
        "TimeZero": scan.acq_time.split("T", 1)[1],
        "ScanStart": _num(starts[0], 3),
        "InjectionStart": 0,
        "FrameTimesStart": [_num(s / scale, 4) for s in starts],
        "FrameDuration": [_num(d / scale, 4) for d in durations],
        "AcquisitionMode": scanner["acquisition_mode"],
        "ImageDecayCorrected": correction != "none",
        "ImageDecayCorrectionTime": _num(decay_time, 3),
        "ReconMethodName": scanner["recon_method"],
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"],
        "ReconMethodParameterValues": [scanner["recon_subsets"], scanner["recon_iterations"]],
        "ReconFilterType": scanner["recon_filter_type"],
        "ReconFilterSize": scanner["recon_filter_size"],
        "AttenuationCorrection": scanner["attenuation_correction"],
        "BodyWeight": _num(scan.weight_kg, 1),
    }


# --------------------------------------------------------------------------- ground truth


def _pet_sites(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [site for site in scenario["sites"] if applies(site)]


def batch_key(scenario: dict[str, Any], site: dict[str, Any]) -> tuple[str, ...]:
    """What the reader's acquisition batch of ``site``'s scans is (:func:`ketamap.pet_sidecar.batch_label`):
    make, model and the serial, else the institution, else the site."""
    scanner = scanner_of(scenario, site)
    fields = device_fields(int(scenario["seed"]), scanner)
    make = (scanner["manufacturer"], scanner["model"])
    if "DeviceSerialNumber" in fields:
        return (*make, "serial", fields["DeviceSerialNumber"])
    if "InstitutionName" in fields:
        return (*make, "institution", fields["InstitutionName"], fields["InstitutionAddress"])
    return (*make, "site", site["id"])


def _scanner_counts(scenario: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per acquisition batch (named by the scanner id of its first site, plus the site when batches
    are per site): participants by trd, hc, ketamine, placebo, and the scanner id (``scanner``)."""
    counts: dict[str, dict[str, Any]] = {}
    names: dict[tuple[str, ...], str] = {}
    for site in _pet_sites(scenario):
        key = batch_key(scenario, site)
        scanner_id = site["pet"]["scanner"]
        name = names.setdefault(
            key, scanner_id if key[2] != "site" else f"{scanner_id}@{site['id']}"
        )
        c = counts.setdefault(
            name, {"trd": 0, "hc": 0, "ketamine": 0, "placebo": 0, "scanner": scanner_id}
        )
        groups = site["groups"]
        trd = groups.get("trd") or {}
        arms = trd.get("arms") or {}
        c["trd"] += sum(int(v) for v in arms.values()) + int(trd.get("n", 0))
        c["hc"] += int((groups.get("hc") or {}).get("n", 0))
        c["ketamine"] += int(arms.get("ketamine", 0))
        c["placebo"] += int(arms.get("placebo", 0))
    return counts


def _weighted(per_scanner: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean over scanners (weights need not sum to 1; at least one is positive)."""
    total = float(sum(weights.values()))
    out = np.zeros_like(np.asarray(next(iter(per_scanner.values())), dtype=float))
    for scanner_id, w in weights.items():
        if w > 0:
            out = out + w / total * per_scanner[scanner_id]
    return out


def recovery_factors(scenario: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per scanner, per non-reference region: the fraction of a small planted % change of the
    region's tissue SUVR that a no-PVC pipeline measures in that region (at HC means)."""
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    out = {}
    for scanner in pet["scanners"]:
        grid = model.grid(pet["atlas"], scanner)
        jac = model.sensitivity(grid.mixing, built.hc_suvr, built.reference)
        out[scanner["id"]] = {
            name: float(jac[r, r]) for r, name in enumerate(built.names) if r != built.reference
        }
    return out


def forward_suvr(
    scenario: dict[str, Any], scanner_id: str, tissue: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Regional SUVR a no-PVC reader measures on a noiseless scan of ``scanner_id``.

    ``tissue`` overrides the HC mean tissue SUVR of some regions; the scanner offset is applied
    as in the images.
    """
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    scanner = next(sc for sc in pet["scanners"] if sc["id"] == scanner_id)
    values = built.hc_suvr.copy()
    for name, value in (tissue or {}).items():
        values[built.names.index(name)] = float(value)
    grid = model.grid(pet["atlas"], scanner)
    rendered = with_offset(values, scanner, built.reference)
    return dict(
        zip(
            built.names,
            model.measured(grid.mixing, rendered, built.reference).tolist(),
            strict=True,
        )
    )


def analysis_options(scenario: dict[str, Any]) -> dict[str, Any]:
    """The workflow options the PET truths assume: the SUVR reference region of the atlas, and the
    planted response predictor among the pre-specified prediction regions."""
    if not _pet_sites(scenario):
        return {}
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    out: dict[str, Any] = {"pet": {"reference_region": built.names[built.reference]}}
    predictor = pet["effects"]["response_predictor"]
    if predictor["region"] is not None and predictor["correlation"] != 0:
        out["analyses"] = {"pet.response_prediction": {"regions": [predictor["region"]]}}
    return out


def truth(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Planted PET truths (see the module docstring); empty when no site writes PET.

    Batch weights (batches as the reader forms them, :func:`batch_key`): a TRD-vs-HC difference is
    identified within batches holding both groups (weight n_trd * n_hc / (n_trd + n_hc), the
    precision weight of the within-batch contrast under batch fixed effects); when no batch holds
    both groups the difference is not identifiable and has no truth. Ketamine effects are weighted
    by the ketamine participants per batch. Scanner offsets are taken as removed by the batch
    effects. The reference region has no entry (its SUVR is 1 by definition).
    """
    sites = _pet_sites(scenario)
    if not sites:
        return []
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    ref = built.reference
    counts = _scanner_counts(scenario)
    scanners = {sc["id"]: sc for sc in pet["scanners"]}
    mixing = {
        name: model.grid(pet["atlas"], scanners[c["scanner"]]).mixing for name, c in counts.items()
    }
    hc = built.hc_suvr
    trd = hc * (1 + group_shift(pet))
    trd[ref] = 1.0
    effect = _effect_vector(pet, "ketamine_x_time_pct")
    slope = _effect_vector(pet, "improvement_slope_pct")
    post = trd * (1 + effect / 100)
    post[ref] = 1.0

    base_w = {
        s: c["trd"] * c["hc"] / (c["trd"] + c["hc"]) if c["trd"] + c["hc"] else 0.0
        for s, c in counts.items()
    }
    ket_w = {s: float(c["ketamine"]) for s, c in counts.items()}
    any_ket = any(ket_w.values())
    any_pbo = any(c["placebo"] for c in counts.values())

    def per(fn: Any) -> dict[str, np.ndarray]:
        return {s: np.asarray(fn(m)) for s, m in mixing.items()}

    recovery_w = {s: float(c["trd"] + c["hc"]) for s, c in counts.items()}
    recovery = _weighted(per(lambda m: np.diag(model.sensitivity(m, hc, ref))), recovery_w)

    entries: list[dict[str, Any]] = []

    def add(analysis: str, term: str, unit: str, planted: np.ndarray, forward: np.ndarray) -> None:
        for r, name in enumerate(built.names):
            if r == ref:
                continue
            is_planted = planted[r] != 0
            entries.append(
                {
                    "analysis": analysis,
                    "term": term,
                    "arm": None,
                    "region": name,
                    "value": _clean(forward[r] if is_planted else 0.0),
                    "planted_value": _clean(planted[r]),
                    "forward_value": _clean(forward[r]),
                    "recovery": _clean(recovery[r]),
                    "pvc_method": "none",
                    "unit": unit,
                }
            )

    if any(base_w.values()):  # else every batch holds one group: not identifiable, no truth
        planted = trd - hc
        forward = _weighted(
            per(lambda m: model.measured(m, trd, ref) - model.measured(m, hc, ref)), base_w
        )
        add(ANALYSES["baseline"], "trd_minus_hc", "SUVR", planted, forward)
    if any_ket and any_pbo:
        forward = _weighted(
            per(lambda m: 100 * (model.measured(m, post, ref) / model.measured(m, trd, ref) - 1)),
            ket_w,
        )
        add(ANALYSES["ketamine"], "ketamine_x_time", "% change", effect, forward)
    if any_ket:
        forward = _weighted(per(lambda m: model.sensitivity(m, trd, ref) @ slope), ket_w)
        add(ANALYSES["slope"], "slope", "% change per MADRS point", slope, forward)
    entries.extend(_auc_entries(scenario, mixing, counts))
    return entries


def _clean(value: float) -> float:
    return round(float(value), 12) + 0.0


def _auc_entries(
    scenario: dict[str, Any], mixing: dict[str, np.ndarray], counts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """``pet.response_prediction`` truths: per randomised arm and non-reference region, the AUC of
    the region's baseline SUVR for response (MADRS reduction >= 50 %).

    The planted predictor (``pet.effects.response_predictor``) acts in the ketamine arm only;
    every other (arm, region) is 0.5. The predictor region's value is a fixed-seed Monte Carlo of
    the generative model (clinical rounding and response rule included) as measured without PVC,
    weighted over batches by their ketamine participants; ``forward_value`` holds that Monte
    Carlo for every ketamine-arm region (a neighbour of the predictor picks up a little of it
    through the scanner's blur), ``planted_value`` the tissue AUC.
    """
    pet = scenario["pet"]
    built = model.atlas(pet["atlas"])
    ref = built.reference
    predictor = pet["effects"]["response_predictor"]
    planted = predictor["region"] is not None and predictor["correlation"] != 0
    arms = [a for a in ("ketamine", "placebo") if any(c[a] for c in counts.values())]
    tissue_auc = np.full(len(built.names), 0.5)
    forward_auc = np.full(len(built.names), 0.5)
    if planted and "ketamine" in arms:
        tissue_auc, forward_auc = _ketamine_auc(scenario, mixing, counts)
    entries = []
    for arm in arms:
        for r, name in enumerate(built.names):
            if r == ref:
                continue
            is_planted = arm == "ketamine" and planted and name == predictor["region"]
            forward = float(forward_auc[r]) if arm == "ketamine" else 0.5
            entries.append(
                {
                    "analysis": ANALYSES["auc"],
                    "term": "auc",
                    "arm": arm,
                    "region": name,
                    "value": _clean(forward if is_planted else 0.5),
                    "planted_value": _clean(tissue_auc[r] if is_planted else 0.5),
                    "forward_value": _clean(forward),
                    "recovery": None,
                    "pvc_method": "none",
                    "unit": "AUC",
                    # One truth per possible pre-specified question; a run answers some of them.
                    "optional": True,
                }
            )
    return entries


def _ketamine_auc(
    scenario: dict[str, Any], mixing: dict[str, np.ndarray], counts: dict[str, dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and measured AUC per region in the ketamine arm (Monte Carlo, fixed seed)."""
    pet = scenario["pet"]
    predictor = pet["effects"]["response_predictor"]
    built = model.atlas(pet["atlas"])
    ref = built.reference
    p = built.names.index(predictor["region"])
    n = 200_000
    rng = stream(int(scenario["seed"]), "pet", "truth.response_prediction")
    cl = scenario["clinical"]
    b = np.clip(
        np.round(rng.normal(cl["baseline"]["trd"]["mean"], cl["baseline"]["trd"]["sd"], n)), 0, 60
    )
    change = rng.normal(cl["change"]["ketamine"]["mean"], cl["change"]["ketamine"]["sd"], n)
    after = np.clip(np.round(b + change), 0, 60)
    site = next(
        s
        for s in _pet_sites(scenario)
        if (s["groups"].get("trd") or {}).get("arms", {}).get("ketamine")
    )
    fb, fp = clinical.observed_madrs(site, b), clinical.observed_madrs(site, after)
    response = (fb > 0) & (fb - fp >= 0.5 * fb - 1e-9)
    cv, rho, trt = pet["between_subject_cv"], pet["shared_fraction"], pet["test_retest_sd"]
    loading = _predictor_loading(pet)
    z_imp = (-change + cl["change"]["ketamine"]["mean"]) / cl["change"]["ketamine"]["sd"]
    z_region = rng.standard_normal((n, len(built.names)))
    z_region[:, p] = loading * z_imp + math.sqrt(1 - loading**2) * z_region[:, p]
    subject = 1 + cv * (
        math.sqrt(rho) * rng.standard_normal((n, 1)) + math.sqrt(1 - rho) * z_region
    )
    tissue = built.hc_suvr * (1 + group_shift(pet)) * subject
    tissue = tissue * (1 + trt * rng.standard_normal(tissue.shape))
    tissue[:, ref] = 1.0
    tissue_auc = np.array([_auc(tissue[:, r], response) for r in range(len(built.names))])
    weights = {name: float(c["ketamine"]) for name, c in counts.items()}
    forward = _weighted(
        {
            name: np.array([_auc(col, response) for col in model.measured(m, tissue, ref).T])
            for name, m in mixing.items()
            if weights[name] > 0
        },
        {k: w for k, w in weights.items() if w > 0},
    )
    return tissue_auc, forward


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for ``positive`` (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
