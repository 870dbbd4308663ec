"""A scenario's harmonized clinical and PET tables, drawn without writing a single file.

``ketamap synth`` writes what sites send (NIfTI, sidecars, TSVs) and the readers turn it into
tables; that round trip is what the workflow tests exercise. Calibrating the pooled statistics
needs hundreds of replicate consortia, so this module draws the same participants
(:func:`ketamap.synth.clinical.simulate_site`) and the same tissue values
(:func:`ketamap.synth.pet.simulate_scans`) from the same random streams and renders them the way the
reader would measure them: scanner offset, the scanner's blur as the forward model's region mixing
(:func:`ketamap.synth.pet_model.measured`), SUVR against the reference region, the reader's batch
label. What it leaves out is voxel noise (averaged away over a region's voxels) and the file
formats, which the reader tests cover. Tables carry the columns the pooled analyses read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ketamap.harmonize.pet.sidecar import batch_label
from ketamap.ids import pseudonymize
from ketamap.synth import clinical, pet
from ketamap.synth import pet_model as model

KEY = b"ketamap calibration key"


def _label_ids(site: dict[str, Any], people: list[Any], key: bytes) -> dict[str, str]:
    labels = [p.label for p in people]
    return dict(zip(labels, pseudonymize(site["id"], labels, key), strict=True))


def clinical_tables(
    scenario: dict[str, Any], key: bytes = KEY
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``subjects`` and ``clinical_scores`` of every human site with symptom scores."""
    subjects, scores = [], []
    for site in scenario["sites"]:
        if site["species"] != "human" or not clinical.applies(site):
            continue
        people = clinical.simulate_site(scenario, site)
        ids = _label_ids(site, people, key)
        scored = any(k in (site.get("groups") or {}) for k in clinical.SCORED_GROUPS)
        for p in people:
            subjects.append(
                {
                    "subject_id": ids[p.label],
                    "site": site["id"],
                    "trial": site["trial"],
                    "species": "human",
                    "group": p.group,
                    "arm": p.arm,
                    "sex": "female" if p.female else "male",
                    "age_years": None if p.age is None else float(p.age),
                }
            )
            if not scored or p.group not in clinical.SCORED_GROUPS:
                continue
            visits = [("baseline", p.madrs_baseline)]
            if p.madrs_post is not None and not p.post_missing:
                visits.append(("post", p.madrs_post))
            for visit, madrs in visits:
                seen = float(clinical.observed_madrs(site, np.asarray([madrs]))[0])
                scores.append(
                    {
                        "subject_id": ids[p.label],
                        "site": site["id"],
                        "visit": visit,
                        "scale": site["scale"],
                        "score_raw": float(madrs) if site["scale"] == "madrs" else None,
                        "madrs_equivalent": seen,
                        "converted": site["scale"] != "madrs",
                    }
                )
    return pd.DataFrame(subjects), pd.DataFrame(scores)


def pet_regional(scenario: dict[str, Any], key: bytes = KEY) -> pd.DataFrame:
    """``pet_regional`` rows (subject_id, site, visit, region, suvr, scanner, batch) of every PET site."""
    cfg = scenario["pet"]
    built = model.atlas(cfg["atlas"])
    ref = built.reference
    parts = []
    for site in scenario["sites"]:
        if not pet.applies(site):
            continue
        scanner = pet.scanner_of(scenario, site)
        scans = pet.simulate_scans(scenario, site)
        if not scans:
            continue
        ids = _label_ids(site, clinical.simulate_site(scenario, site), key)
        tissue = np.stack([pet.with_offset(s.tissue, scanner, ref) for s in scans])
        suvr = model.measured(model.grid(cfg["atlas"], scanner).mixing, tissue, ref)
        fields = pet.device_fields(int(scenario["seed"]), scanner)
        device = (
            ("serial", fields["DeviceSerialNumber"])
            if "DeviceSerialNumber" in fields
            else (
                "institution",
                "\x1f".join((fields["InstitutionName"], fields["InstitutionAddress"])),
            )
            if "InstitutionName" in fields
            else None
        )
        batch = batch_label(
            scanner["manufacturer"],
            scanner["model"],
            device=device,
            declared=None,
            site=site["id"],
            key=key,
        )
        n_regions = len(built.names)
        parts.append(
            pd.DataFrame(
                {
                    "subject_id": np.repeat([ids[s.label] for s in scans], n_regions),
                    "site": site["id"],
                    "visit": np.repeat([s.visit for s in scans], n_regions),
                    "region": np.tile(built.names, len(scans)),
                    "suvr": suvr.ravel(),
                    "reference_region": built.names[ref],
                    "scanner": f"{scanner['manufacturer']} {scanner['model']}",
                    "batch": batch,
                }
            )
        )
    columns = [
        "subject_id",
        "site",
        "visit",
        "region",
        "suvr",
        "reference_region",
        "scanner",
        "batch",
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def with_seed(scenario: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same scenario with another root seed (a replicate consortium)."""
    return {**scenario, "seed": int(seed)}
