"""PET reader and harmonizer: BIDS-PET images + sidecars and the shared atlas -> regional SUVR tables.

read -> harmonize -> table, like the clinical module: :func:`harmonize_site` reads one site's PET
scans as the site sent them (docs/site_data.md), makes them consistent (units to kBq/mL, frame
times to seconds, decay correction to injection, any orientation and grid), and returns the rows of
the ``pet_sessions`` and ``pet_regional`` tables with pseudonymous ids. One scan that cannot be read
safely fails the whole site with one :class:`~ketamap.errors.SiteDataError` naming site, file and
field. The details live in :mod:`ketamap.pet_sidecar` (sidecar fields and units),
:mod:`ketamap.pet_timing` (frames, window, decay) and :mod:`ketamap.pet_image` (image checks,
atlas resampling, streamed regional means).

Decisions:

* SUVR = region window mean / reference-region window mean (``pet.reference_region``); activity is the
  window mean in kBq/mL decay-corrected to injection. The reference region's own row has SUVR 1.
* A region with no voxel on a scan's grid (a small region such as the habenula on a coarse grid) has
  no row for that scan, and the session's ``warnings`` names it; a reference region without voxels is
  an error.
* Non-finite values outside the atlas regions (NaN backgrounds written by some tools) are ignored;
  inside a region they are an error, as is a frame that is all zeros.
* Session folders are required (``sub-*/ses-*/pet/``), since the visit comes from the session label.
* Images must be registered to the atlas space (any grid, orientation and voxel size): the centre
  of a scan's activity must lie within ``ALIGNMENT_TOLERANCE_MM`` of the centre of the atlas
  regions on its grid, else the affine is wrong and the scan is an error (field ``affine``).
* Order of the checks per scan: participant and session, sidecar fields, image file (inside the
  site folder, within the size limit, exists, not a stub, not HTML, a NIfTI), header (data type,
  scaling, qform/sform, shape, affine, frame count against the sidecar), SUVR window, voxel data,
  alignment with the atlas, and last the file's integrity (gzip CRC-32 and length, or the size of
  a .nii). Any failure stops the site: the workflow keeps the other sites' tables.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ketamap.config import with_defaults
from ketamap.errors import ConfigError, SiteDataError
from ketamap.harmonize import ATLAS_IMAGES, ATLAS_TABLES
from ketamap.harmonize.bids import (
    REGION_PATTERN,
    SessionResolver,
    read_participants,
    session_files,
)
from ketamap.harmonize.pet import image as pet_image
from ketamap.harmonize.pet.image import LabelGrid, regional_means
from ketamap.harmonize.pet.sidecar import read_sidecar
from ketamap.harmonize.pet.timing import FRAME_TIME_UNITS, decay_correction, window_frames
from ketamap.harmonize.scatter import Piece, pair_with_pieces
from ketamap.ids import pseudonymize
from ketamap.io import read_tsv, shown_path
from ketamap.schemas import get_table, load_columns

log = logging.getLogger(__name__)

__all__ = ["Atlas", "PetTables", "harmonize_site", "read_atlas", "regional_means"]

ATLAS_SITE = "atlas"
ATLAS_KINDS = ("cortical", "subcortical", "reference", "white_matter")


@dataclass(frozen=True)
class Atlas:
    """The shared atlas: integer label image in template space, region names and kinds by index."""

    img: nib.Nifti1Image  # int32 labels, 0 = background
    names: dict[int, str]
    kinds: dict[int, str]
    source: str = ""

    @property
    def n_labels(self) -> int:
        """Length of a per-label array (largest index + 1)."""
        return max(self.names) + 1

    def index(self, name: str) -> int | None:
        for idx, region in self.names.items():
            if region == name:
                return idx
        return None


@dataclass(frozen=True)
class PetTables:
    """The harmonized rows one site contributes."""

    regional: pd.DataFrame
    sessions: pd.DataFrame


def read_atlas(atlas_dir: Path) -> Atlas:
    """Read and check the atlas: one ``*_dseg.nii[.gz]`` and one ``*_dseg.tsv`` (index, name, kind)."""
    atlas_dir = Path(atlas_dir)
    if not atlas_dir.is_dir():
        raise SiteDataError(
            "atlas folder not found", site=ATLAS_SITE, file=atlas_dir, expected="a folder"
        )
    # the files ketamap.harmonize.atlas_scope verifies before a job reads the atlas
    images = [p for pattern in ATLAS_IMAGES for p in sorted(atlas_dir.glob(pattern))]
    tables = [p for pattern in ATLAS_TABLES for p in sorted(atlas_dir.glob(pattern))]
    for found, what in (
        (images, "label image (*_dseg.nii.gz)"),
        (tables, "label table (*_dseg.tsv)"),
    ):
        if len(found) != 1:
            raise SiteDataError(
                f"found {len(found)} files {[p.name for p in found]}",
                site=ATLAS_SITE,
                file=atlas_dir,
                expected=f"exactly one {what}",
            )
    image_path, tsv_path = images[0], tables[0]
    img_name, tsv_name = image_path.name, tsv_path.name
    where = {"site": ATLAS_SITE, "file": img_name}

    pet_image.sniff_nifti(image_path, site=ATLAS_SITE, root=atlas_dir)
    try:
        img: Any = nib.load(image_path)
        data = np.asarray(img.dataobj)
    except pet_image.READ_ERRORS as exc:
        raise SiteDataError(f"cannot read the atlas image ({exc})", **where) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SiteDataError(
            f"the atlas has shape {data.shape}", expected="a 3D label image", **where
        )
    pet_image.check_geometry(img, where)
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)) or np.any(data < 0):
        raise SiteDataError(
            "the atlas holds non-integer or negative values",
            expected="integer labels >= 0 (0 = background)",
            **where,
        )
    labels = data.astype(np.int32)

    df = read_tsv(tsv_path, site=ATLAS_SITE, root=atlas_dir, required=["index", "name", "kind"])
    twhere = {"site": ATLAS_SITE, "file": tsv_name}
    for col in ("index", "name", "kind"):
        if df[col].isna().any():
            raise SiteDataError(
                "empty values", field=col, expected="a value on every row", **twhere
            )
    index = pd.to_numeric(df["index"], errors="coerce")
    bad = df["index"][index.isna() | (index != index.round()) | (index < 1)].tolist()
    if bad:
        raise SiteDataError(
            f"indices {bad[:5]} are not positive integers",
            field="index",
            expected="integers >= 1 (0 is the background and is not listed)",
            **twhere,
        )
    idx = index.astype(int).tolist()
    names = df["name"].tolist()
    kinds = df["kind"].tolist()
    for col, values in (("index", idx), ("name", names)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise SiteDataError(
                f"duplicate values {dupes[:5]}", field=col, expected="each listed once", **twhere
            )
    bad_names = [n for n in names if not re.fullmatch(REGION_PATTERN, n)]
    if bad_names:
        raise SiteDataError(
            f"names {bad_names[:5]} are not snake_case region ids",
            field="name",
            expected=f"names matching {REGION_PATTERN}",
            **twhere,
        )
    bad_kinds = sorted({k for k in kinds if k not in ATLAS_KINDS})
    if bad_kinds:
        raise SiteDataError(
            f"unknown kinds {bad_kinds}",
            field="kind",
            expected=f"one of {list(ATLAS_KINDS)}",
            **twhere,
        )
    present = set(np.unique(labels).tolist()) - {0}
    unlisted = sorted(present - set(idx))
    if unlisted:
        raise SiteDataError(
            f"labels {unlisted[:10]} in the image are not listed in {tsv_name}",
            expected="every label of the image listed in the table",
            **where,
        )
    empty = sorted(set(idx) - present)
    if empty:
        raise SiteDataError(
            f"regions {[names[idx.index(i)] for i in empty][:10]} (indices {empty[:10]}) have no voxel in the image",
            field="index",
            expected="every listed region present in the label image",
            **twhere,
        )
    label_img = nib.Nifti1Image(labels, img.affine)
    return Atlas(
        img=label_img,
        names=dict(zip(idx, names, strict=True)),
        kinds=dict(zip(idx, kinds, strict=True)),
        source=str(image_path),
    )


@dataclass
class _Scan:
    participant_id: str
    session_id: str
    image: Path
    sidecar: Path
    shown: str


@dataclass
class _Site:
    """What every job of one PET site needs before it reads a scan (options, pseudonyms, atlas)."""

    site_id: str
    atlas: Atlas
    window: tuple[float, float]
    reference: str
    pvc: str
    unit: str
    declared: str | None
    resolve: SessionResolver
    ref_index: int
    region_index: np.ndarray
    region_names: list[str]


def _site(site: dict, root: Path, atlas: Atlas, key: bytes, options: dict | None) -> _Site:
    site_id = site["id"]
    opts = with_defaults(options, "pet")
    reader = site.get("reader", {}) or {}
    window, reference, pvc = _check_options(opts, atlas)
    unit = reader.get("frame_time_unit", with_defaults({}, "sites", "reader")["frame_time_unit"])
    if unit not in FRAME_TIME_UNITS:
        raise ConfigError(
            f"frame_time_unit {unit!r}",
            file="config/config.yaml",
            field=f"sites[{site_id}].reader.frame_time_unit",
            expected=f"one of {list(FRAME_TIME_UNITS)}",
        )
    declared = reader.get("scanner_id")
    if declared is not None and (not isinstance(declared, str) or not declared.strip()):
        raise ConfigError(
            f"scanner_id {declared!r}",
            file="config/config.yaml",
            field=f"sites[{site_id}].reader.scanner_id",
            expected="a non-empty label naming the physical scanner",
        )
    visits: dict[str, str] | None = reader.get("visits")
    if not visits:
        raise ConfigError(
            "a PET site needs its session labels mapped to visits",
            file="config/config.yaml",
            field=f"sites[{site_id}].reader.visits",
            expected="a map such as {ses-pre: baseline, ses-post: post}",
        )

    participants = read_participants(site, root)
    local_ids = participants["participant_id"].tolist()
    pseudonyms = dict(zip(local_ids, pseudonymize(site_id, local_ids, key), strict=True))
    ref_index = atlas.index(reference)
    assert ref_index is not None
    region_index = np.array(sorted(atlas.names), dtype=int)
    return _Site(
        site_id=site_id,
        atlas=atlas,
        window=window,
        reference=reference,
        pvc=pvc,
        unit=unit,
        declared=declared,
        resolve=SessionResolver(site_id, pseudonyms, visits, "visits", "PET image"),
        ref_index=ref_index,
        region_index=region_index,
        region_names=[atlas.names[i] for i in region_index],
    )


@dataclass
class _Result:
    """One scan, harmonized: its ``pet_sessions`` row and its regional values (one per region
    with voxels on the scan's grid), from which the ``pet_regional`` rows are made."""

    shown: str
    row: dict[str, Any]
    regions: list[str]
    suvr: np.ndarray
    activity: np.ndarray
    n_voxels: np.ndarray
    options: dict[str, Any]  # window, reference region and PVC method the values were made with


def _options(ctx: _Site) -> dict[str, Any]:
    return {"window_min": list(ctx.window), "reference_region": ctx.reference, "pvc": ctx.pvc}


def _process(
    ctx: _Site,
    scan: _Scan,
    root: Path,
    subject_id: str,
    visit: str,
    key: bytes,
    cache: dict[tuple[tuple[int, ...], bytes], LabelGrid],
) -> _Result:
    """Read one scan and compute its regional values (``cache``: label grids by geometry)."""
    site_id, atlas, window, reference = ctx.site_id, ctx.atlas, ctx.window, ctx.reference
    where = {"site": site_id, "file": scan.shown}

    sidecar = read_sidecar(scan.sidecar, site=site_id, root=root)
    image_warnings: list[str] = []
    with pet_image.open_pet_image(
        scan.image, site=site_id, root=root, n_frames=sidecar.n_frames, warnings=image_warnings
    ) as img:
        frames = window_frames(sidecar, window, ctx.unit, site=site_id)
        affine = img.affine
        shape = tuple(int(s) for s in img.shape[:3])
        geometry = (shape, np.asarray(affine, dtype=float).tobytes())
        grid = cache.get(geometry)
        if grid is None:
            grid = pet_image.label_grid(atlas.img, shape, affine, atlas.n_labels)
            cache[geometry] = grid
        alignment = pet_image.Alignment(grid)
        means, counts = regional_means(
            img.dataobj,
            grid,
            frames.indices,
            n_labels=atlas.n_labels,
            site=site_id,
            file=scan.shown,
            on_frame=alignment.add,
        )
    # after the file's integrity check (on leaving the block): a corrupt file is named as such
    alignment.check(affine, atlas.img.affine, where)
    decay = decay_correction(sidecar, frames)
    weights = frames.durations_s * decay.factors
    with np.errstate(invalid="ignore"):
        window_mean = (weights[:, None] * means).sum(axis=0) / frames.durations_s.sum()
    activity = window_mean * sidecar.kbq_ml_per_unit

    warnings = [*sidecar.warnings, *frames.warnings, *image_warnings]
    if counts[ctx.ref_index] == 0:
        raise SiteDataError(
            f"the reference region {reference!r} has no voxel on this image's grid",
            expected="an image covering the reference region",
            **where,
        )
    ref_activity = activity[ctx.ref_index]
    if not ref_activity > 0:
        raise SiteDataError(
            f"the reference region {reference!r} has mean activity {ref_activity:g} kBq/mL",
            expected="a positive reference activity",
            **where,
        )
    present = counts[ctx.region_index] > 0
    if not present.all():
        missing = [n for n, p in zip(ctx.region_names, present, strict=True) if not p]
        warnings.append(f"regions without voxels on this grid (no row): {', '.join(missing)}")
    kept = ctx.region_index[present]
    negative = kept[activity[kept] < 0]
    if negative.size:
        raise SiteDataError(
            f"negative mean activity in regions {[atlas.names[i] for i in negative][:5]}",
            expected="activity concentrations >= 0",
            **where,
        )

    batch = sidecar.batch(site=site_id, key=key, declared=ctx.declared)
    row = {
        "subject_id": subject_id,
        "site": site_id,
        "visit": visit,
        "window_start_min": float(window[0]),
        "window_end_min": float(window[1]),
        "scanner": sidecar.scanner,
        "batch": batch,
        "tracer": sidecar.tracer,
        "frames_used": len(frames.indices),
        "injected_dose_mbq": sidecar.injected_dose_mbq,
        "injected_mass_ug": sidecar.injected_mass_ug,
        "body_weight_kg": sidecar.body_weight_kg,
        "source_units": sidecar.units,
        "source_frame_time_unit": frames.source_unit,
        "source_decay_reference": decay.reference,
        "decay_factor_applied": decay.summary,
        "orientation": pet_image.orientation(affine),
        "voxel_size_mm": pet_image.voxel_size(affine),
        "warnings": "; ".join(warnings),
    }
    return _Result(
        shown=scan.shown,
        row=row,
        regions=[atlas.names[i] for i in kept],
        suvr=activity[kept] / ref_activity,
        activity=activity[kept],
        n_voxels=counts[kept].astype(np.int64),
        options=_options(ctx),
    )


_COMMON = ("subject_id", "site", "visit", "window_start_min", "window_end_min")


def _tables(results: list[_Result]) -> PetTables:
    """The site's two tables from its scans' results, in scan order."""
    regional_parts = [
        pd.DataFrame(
            {
                **{k: r.row[k] for k in _COMMON},
                "region": r.regions,
                "suvr": r.suvr,
                "activity_kbq_ml": r.activity,
                "reference_region": r.options["reference_region"],
                "scanner": r.row["scanner"],
                "batch": r.row["batch"],
                "pvc_method": r.options["pvc"],
                "n_voxels": r.n_voxels,
            }
        )
        for r in results
    ]
    regional_fields = get_table("pet_regional").field_names
    session_fields = get_table("pet_sessions").field_names
    regional = pd.concat(regional_parts, ignore_index=True)[regional_fields]
    sessions = pd.DataFrame([r.row for r in results])[session_fields]
    sessions["injected_mass_ug"] = sessions["injected_mass_ug"].astype(float)
    sessions["body_weight_kg"] = sessions["body_weight_kg"].astype(float)
    return PetTables(regional=regional, sessions=sessions)


def harmonize_site(
    site: dict,
    root: Path,
    atlas: Atlas,
    key: bytes,
    options: dict | None = None,
    pieces: dict[str, list[_Result]] | None = None,
) -> PetTables:
    """Read every PET scan of one site at ``root`` into ``pet_regional`` and ``pet_sessions`` rows.

    With ``pieces`` (session id -> that session's results, from :func:`harmonize_session` in
    session jobs) no scan is read again: the scans found are checked against the pieces (every
    session with scans has its piece, the participant, visit and options each was made for, one
    scan per participant and visit) and the tables assembled from them, exactly as from scans
    read here."""
    root = Path(root)
    ctx = _site(site, root, atlas, key, options)
    scans = _find_scans(ctx.site_id, root)
    results: list[_Result] = []
    if pieces is None:
        cache: dict[tuple[tuple[int, ...], bytes], LabelGrid] = {}
        for scan in scans:
            subject_id, visit = ctx.resolve(scan)
            results.append(_process(ctx, scan, root, subject_id, visit, key, cache))
        return _tables(results)
    for scan, result in pair_with_pieces(ctx.site_id, scans, pieces, "PET scan(s)"):
        subject_id, visit = ctx.resolve(scan)
        got = (result.shown, result.row["subject_id"], result.row["visit"], result.options)
        if got != (scan.shown, subject_id, visit, _options(ctx)):
            raise SiteDataError(
                "the session job's scan, participant, visit or PET options differ from the site's",
                site=ctx.site_id,
                file=scan.shown,
                expected=f"{scan.shown}: {subject_id} {visit} with {_options(ctx)} "
                "(participants.tsv, the visits and the pet options as configured now)",
            )
        results.append(result)
    return _tables(results)


def harmonize_session(
    site: dict, root: Path, atlas: Atlas, key: bytes, options: dict | None, session: str
) -> list[_Result]:
    """The PET scans of one session folder (``sub-<label>_ses-<label>``), each read and its
    regional values computed: the work of one session job. The checks that need every session
    (PET files outside a session folder, a site without scans, one scan per participant and
    visit across sessions) are the gather's."""
    root = Path(root)
    ctx = _site(site, root, atlas, key, options)
    sub, _, ses = session.partition("_")
    cache: dict[tuple[tuple[int, ...], bytes], LabelGrid] = {}
    out = []
    for scan in _find_scans(ctx.site_id, root, only=(sub, ses)):
        subject_id, visit = ctx.resolve(scan)
        out.append(_process(ctx, scan, root, subject_id, visit, key, cache))
    return out


def _check_options(opts: dict[str, Any], atlas: Atlas) -> tuple[tuple[float, float], str, str]:
    where = {"file": "config/config.yaml"}
    window = opts["window_min"]
    try:
        w0, w1 = (float(window[0]), float(window[1]))
        ok = len(window) == 2 and 0 <= w0 < w1
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise ConfigError(
            f"window {window!r}",
            field="pet.window_min",
            expected="[start, end] minutes, 0 <= start < end",
            **where,
        )
    reference = opts["reference_region"]
    if atlas.index(reference) is None:
        raise ConfigError(
            f"the reference region {reference!r} is not in the atlas",
            field="pet.reference_region",
            expected=f"one of the atlas regions {sorted(atlas.names.values())}",
            **where,
        )
    pvc = opts["pvc"]
    allowed = load_columns()["pvc_method"].enum or ()
    if pvc not in allowed:
        raise ConfigError(
            f"pvc {pvc!r}", field="pet.pvc", expected=f"one of {list(allowed)}", **where
        )
    return (w0, w1), str(reference), str(pvc)


def _find_scans(site_id: str, root: Path, only: tuple[str, str] | None = None) -> list[_Scan]:
    """Every ``sub-*/ses-*/pet/*_pet.nii[.gz]`` with its sidecar; images and sidecars must pair up.

    With ``only`` (a participant and a session label), the scans of that session folder: none is
    no error there (the site-level checks are the gather's)."""
    sub, ses = only or ("sub-*", "ses-*")
    pet_dirs = sorted(root.glob(f"{sub}/{ses}/pet"))
    loose = [] if only else sorted(root.glob("sub-*/pet/*_pet.*"))
    if loose:
        raise SiteDataError(
            "PET files outside a session folder",
            site=site_id,
            file=shown_path(loose[0], root),
            expected="sub-<label>/ses-<label>/pet/ (the session gives the visit)",
        )
    by_dir: dict[Path, dict[str, tuple[Path, str]]] = {}
    for found in session_files(site_id, root, "pet", ("*_pet.nii.gz", "*_pet.nii"), only=only):
        suffix = "_pet.nii.gz" if found.path.name.endswith(".gz") else "_pet.nii"
        stem = found.path.name[: -len(suffix)]
        images = by_dir.setdefault(found.path.parent, {})
        if stem in images:
            nii, gz = sorted((images[stem][0], found.path), key=lambda p: len(p.name))
            raise SiteDataError(
                f"two images for one scan ({gz.name} and {nii.name})",
                site=site_id,
                file=shown_path(nii, root),
                expected="one image per sidecar",
            )
        images[stem] = (found.path, found.shown)
    scans = []
    for pet_dir in pet_dirs:
        images = by_dir.get(pet_dir, {})
        sidecars = {p.name[: -len("_pet.json")]: p for p in pet_dir.glob("*_pet.json")}
        orphans = sorted(set(sidecars) - set(images))
        if orphans:
            raise SiteDataError(
                "PET sidecar without its image",
                site=site_id,
                file=shown_path(sidecars[orphans[0]], root),
                expected=f"{orphans[0]}_pet.nii.gz next to it",
            )
        for stem, (image, shown) in sorted(images.items()):
            participant, session = pet_dir.parts[-3], pet_dir.parts[-2]
            sidecar = image.parent / f"{stem}_pet.json"
            scans.append(_Scan(participant, session, image, sidecar, shown))
    if not scans and only is None:
        raise SiteDataError(
            "no PET images found",
            site=site_id,
            file=str(root.name),
            expected="sub-<label>/ses-<label>/pet/*_pet.nii.gz with a _pet.json sidecar",
            hint="a site that sends participants and symptom scores only is configured with "
            "modality: clinical",
        )
    return scans


def step(
    site: dict,
    raw: Path,
    key: bytes,
    options: dict | None,
    atlas: Path | None,
    pieces: dict[str, Piece] | None = None,
) -> dict[str, pd.DataFrame]:
    """The workflow's harmonize step for one site (see :mod:`ketamap.harmonize`); with ``pieces``
    (session id -> :func:`session_step`'s piece) the site's gather."""
    results = None if pieces is None else {s: _from_piece(p) for s, p in pieces.items()}
    tables = harmonize_site(site, raw, _atlas(atlas), key, options, results)
    warned = int((tables.sessions["warnings"] != "").sum()) if len(tables.sessions) else 0
    log.info(
        "site %s: %d PET scans, %d regional values, %d scans with warnings",
        site["id"],
        len(tables.sessions),
        len(tables.regional),
        warned,
    )
    return {"pet_regional": tables.regional, "pet_sessions": tables.sessions}


def session_step(
    site: dict, raw: Path, key: bytes, options: dict | None, session: str, atlas: Path | None
) -> Piece:
    """The workflow's session step: one session folder's PET scans -> one piece."""
    return _to_piece(harmonize_session(site, raw, _atlas(atlas), key, options, session))


def _atlas(atlas: Path | None) -> Atlas:
    if atlas is None:
        raise ConfigError("a PET site needs the atlas", file="config/config.yaml", field="atlas")
    return read_atlas(atlas)


# A piece holds a session's results losslessly: the rows and options as JSON (str, int, float,
# None), the regional values as .npy arrays.
def _json_value(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if value is not None and not isinstance(value, str | int | float):
        raise TypeError(f"{type(value).__name__} in a PET session row")
    return value


def _to_piece(results: list[_Result]) -> Piece:
    meta: dict[str, Any] = {"scans": []}
    arrays: dict[str, np.ndarray] = {}
    for i, r in enumerate(results):
        meta["scans"].append(
            {
                "shown": r.shown,
                "row": {k: _json_value(v) for k, v in r.row.items()},
                "regions": r.regions,
                "options": r.options,
            }
        )
        arrays[f"{i}.suvr"] = r.suvr
        arrays[f"{i}.activity"] = r.activity
        arrays[f"{i}.n_voxels"] = r.n_voxels
    return meta, {}, arrays


def _from_piece(piece: Piece) -> list[_Result]:
    meta, _, arrays = piece
    return [
        _Result(
            shown=m["shown"],
            row=m["row"],
            regions=m["regions"],
            suvr=arrays[f"{i}.suvr"],
            activity=arrays[f"{i}.activity"],
            n_voxels=arrays[f"{i}.n_voxels"],
            options=m["options"],
        )
        for i, m in enumerate(meta["scans"])
    ]
