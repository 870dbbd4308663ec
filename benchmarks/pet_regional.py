"""Benchmark: ketamap's regional PET extraction against nilearn's NiftiLabelsMasker, reading included.

Builds a realistic test set in a temporary folder: an atlas of 20 regions on a 2 mm MNI-like grid
(91x109x91, LAS) and scans of 4 frames (float32, gzip) from two scanners, a 2.0 mm 90x110x90 RAS
grid and a 2.5 mm 76x92x76 LPS grid. Both grids are offset so that no voxel centre falls exactly
halfway between atlas voxels: nearest-neighbour label resampling is then unambiguous and both tools
average exactly the same voxels. Then, in one run, times (best of N after one warm-up; every timed
run handles all scans):

  (a) ketamap: open + header checks + frame-count check, atlas labels resampled once per scanner
      grid (fresh cache per run, as in one harmonize call), frames streamed from img.dataobj[..., i]
      into one np.bincount each;
  (a') ketamap.pet.harmonize_site on the same scans as a BIDS-PET site (sidecars, decay, units, SUVR);
  (b) nilearn.maskers.NiftiLabelsMasker(labels_img=atlas, resampling_target="data",
      strategy="mean").fit_transform(path) per scan - what a user would otherwise write;
  (b') the same with nilearn's gc.collect() calls disabled: nilearn's safe_get_data runs a full
      garbage collection on every call (several per image), whose cost grows with the number of live
      Python objects in the process - most of (b) in a process that has pandas, pyarrow and nilearn
      loaded. Shown so that the comparison does not rest on that alone;
  (c) reading only: np.asarray(nib.load(path).dataobj), i.e. decompressing and decoding the volume.

and prints the speed ratio nilearn/ketamap, the largest relative difference of the regional means
(must be <= 1e-6) and ketamap's time relative to the read-only time.

Run: .venv/bin/python benchmarks/pet_regional.py [--scans 10] [--repeat 5] [--repeat-nilearn 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy.spatial import cKDTree

from ketamap.harmonize import pet
from ketamap.harmonize.pet import image as pet_image

N_REGIONS = 20
FRAMES = 4
ATLAS_AFFINE = np.array([[-2.0, 0, 0, 90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]])
ATLAS_SHAPE = (91, 109, 91)
SCANNERS = {
    # name: (shape, affine); offsets chosen so that no voxel centre ties between two atlas voxels
    "ras_2.0mm": (
        (90, 110, 90),
        np.array([[2.0, 0, 0, -89.3], [0, 2.0, 0, -109.7], [0, 0, 2.0, -89.1], [0, 0, 0, 1]]),
    ),
    "lps_2.5mm": (
        (76, 92, 76),
        np.array([[-2.5, 0, 0, 94.6], [0, -2.5, 0, 118.3], [0, 0, 2.5, -91.2], [0, 0, 0, 1]]),
    ),
}


def make_atlas(folder: Path, rng: np.random.Generator) -> Path:
    """20 regions: a Voronoi partition of an ellipsoidal brain, region 20 = cerebellum."""
    ijk = np.indices(ATLAS_SHAPE).reshape(3, -1).T
    world = nib.affines.apply_affine(ATLAS_AFFINE, ijk)
    centre = np.array([0.0, -18.0, 8.0])
    radii = np.array([68.0, 86.0, 62.0])
    inside = (((world - centre) / radii) ** 2).sum(axis=1) <= 1.0
    seeds = world[inside][rng.choice(int(inside.sum()), N_REGIONS, replace=False)]
    labels = np.zeros(len(world), dtype=np.int16)
    labels[inside] = cKDTree(seeds).query(world[inside])[1] + 1
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(labels.reshape(ATLAS_SHAPE), ATLAS_AFFINE), folder / "atlas_dseg.nii.gz"
    )
    rows = ["index\tname\tkind"]
    rows += [f"{i}\tregion_{i:02d}\tcortical" for i in range(1, N_REGIONS)]
    rows.append(f"{N_REGIONS}\tcerebellum\treference")
    (folder / "atlas_dseg.tsv").write_text("\n".join(rows) + "\n")
    return folder


def make_site(folder: Path, atlas: pet.Atlas, n_scans: int, rng: np.random.Generator) -> list[Path]:
    """A BIDS-PET site: scans alternate between the two scanners; values in Bq/mL."""
    folder.mkdir(parents=True, exist_ok=True)
    subs = [f"sub-{i:02d}" for i in range(1, n_scans + 1)]
    lines = ["participant_id\tage\tsex\tgroup"] + [f"{s}\t40\tF\tTRD" for s in subs]
    (folder / "participants.tsv").write_text("\n".join(lines) + "\n")
    truth = rng.uniform(1.2, 1.7, N_REGIONS + 1) * 8000.0
    truth[0], truth[N_REGIONS] = 300.0, 8000.0
    bases = {}
    for name, (shape, affine) in SCANNERS.items():
        labels = np.asarray(resample_from_to(atlas.img, (shape, affine), order=0).dataobj)
        bases[name] = truth[labels].astype(np.float32)
    paths = []
    for n, sub in enumerate(subs):
        scanner = list(SCANNERS)[n % len(SCANNERS)]
        shape, affine = SCANNERS[scanner]
        base = bases[scanner]
        frames = [
            base * np.float32(f) + rng.normal(0, 400, size=shape).astype(np.float32)
            for f in (1.0, 0.98, 0.96, 0.94)
        ]
        pet_dir = folder / sub / "ses-pre" / "pet"
        pet_dir.mkdir(parents=True)
        path = pet_dir / f"{sub}_ses-pre_trc-K2_pet.nii.gz"
        nib.save(nib.Nifti1Image(np.stack(frames, axis=-1), affine), path)
        sidecar = {
            "Manufacturer": "Siemens",
            "ManufacturersModelName": scanner,
            "Units": "Bq/mL",
            "TracerName": "K-2",
            "TracerRadionuclide": "C11",
            "InjectedRadioactivity": 450,
            "InjectedRadioactivityUnits": "MBq",
            "InjectedMass": "n/a",
            "InjectedMassUnits": "n/a",
            "SpecificRadioactivity": "n/a",
            "SpecificRadioactivityUnits": "n/a",
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
            "ReconMethodParameterLabels": ["none"],
            "ReconFilterType": "none",
            "AttenuationCorrection": "CT-based",
        }
        (pet_dir / f"{sub}_ses-pre_trc-K2_pet.json").write_text(json.dumps(sidecar))
        paths.append(path)
    return paths


def ketamap_extract(paths: list[Path], atlas: pet.Atlas) -> list[np.ndarray]:
    """(a) read + reorient + cached label resampling + streamed bincount, per scan."""
    cache: dict[tuple, pet_image.LabelGrid] = {}
    out = []
    for path in paths:
        with pet_image.open_pet_image(path, site="bench", n_frames=FRAMES) as img:
            key = (img.shape[:3], img.affine.tobytes())
            grid = cache.get(key)
            if grid is None:
                grid = pet_image.label_grid(atlas.img, img.shape, img.affine, atlas.n_labels)
                cache[key] = grid
            means, _ = pet_image.regional_means(
                img.dataobj, grid, range(FRAMES), n_labels=atlas.n_labels
            )
        out.append(means[:, 1:])
    return out


def nilearn_extract(paths: list[Path], atlas_img: nib.Nifti1Image) -> list[np.ndarray]:
    """(b) nilearn's NiftiLabelsMasker on each scan, labels resampled to the data grid."""
    from nilearn.maskers import NiftiLabelsMasker

    out = []
    for path in paths:
        masker = NiftiLabelsMasker(labels_img=atlas_img, resampling_target="data", strategy="mean")
        out.append(np.asarray(masker.fit_transform(str(path)), dtype=float))
    return out


def nilearn_extract_without_gc(paths: list[Path], atlas_img: nib.Nifti1Image) -> list[np.ndarray]:
    """(b') the same, with the gc.collect() that nilearn's safe_get_data runs on every call disabled."""
    import gc
    from unittest import mock

    with mock.patch.object(gc, "collect", lambda *args: 0):
        return nilearn_extract(paths, atlas_img)


def read_only(paths: list[Path]) -> list[np.ndarray]:
    """(c) decompress and decode every volume, nothing else."""
    return [np.asarray(nib.load(path).dataobj) for path in paths]


def best_of(func: Callable[[], object], repeat: int) -> float:
    func()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of (a), (a'), (c)")
    parser.add_argument(
        "--repeat-nilearn", type=int, default=2, help="timed runs of (b), about 20 s each"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # nilearn's deprecation notices are not what is measured
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory(prefix="ketamap-bench-") as tmp:
        root = Path(tmp)
        atlas = pet.read_atlas(make_atlas(root / "atlas", rng))
        paths = make_site(root / "site", atlas, args.scans, rng)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"{args.scans} scans x {FRAMES} frames (float32, gzip, {size_mb:.0f} MB on disk), grids "
            + ", ".join(f"{k} {v[0]}" for k, v in SCANNERS.items())
            + f"; atlas {N_REGIONS} regions on {ATLAS_SHAPE} at 2 mm"
        )

        ours = ketamap_extract(paths, atlas)
        theirs = nilearn_extract(paths, atlas.img)
        rel = max(
            float(np.max(np.abs(a - b) / np.abs(b))) for a, b in zip(ours, theirs, strict=True)
        )

        site = {
            "id": "bench",
            "trial": "t",
            "species": "human",
            "reader": {"visits": {"ses-pre": "baseline"}},
        }
        options = {"window_min": [30, 50], "reference_region": "cerebellum", "pvc": "none"}
        t_ketamap = best_of(lambda: ketamap_extract(paths, atlas), args.repeat)
        t_harmonize = best_of(
            lambda: pet.harmonize_site(site, root / "site", atlas, b"bench-key", options),
            args.repeat,
        )
        t_nilearn = best_of(lambda: nilearn_extract(paths, atlas.img), args.repeat_nilearn)
        t_nilearn_nogc = best_of(
            lambda: nilearn_extract_without_gc(paths, atlas.img), args.repeat_nilearn
        )
        t_read = best_of(lambda: read_only(paths), args.repeat)
        n_objects = len(gc.get_objects())

    per = 1000.0 / args.scans
    rows = [
        ("(a)  ketamap regional extraction incl. reading", t_ketamap),
        ("(a') ketamap harmonize_site (tables, SUVR)", t_harmonize),
        ("(b)  nilearn NiftiLabelsMasker.fit_transform", t_nilearn),
        ("(b') nilearn, its gc.collect() calls disabled", t_nilearn_nogc),
        ("(c)  read only (decompress + decode)", t_read),
    ]
    for label, seconds in rows:
        print(f"{label + ':':48s}{seconds:7.3f} s  ({seconds * per:6.1f} ms/scan)")
    print(f"{'speed ratio nilearn / ketamap:':48s}{t_nilearn / t_ketamap:7.1f}x")
    print(f"{'speed ratio nilearn without gc / ketamap:':48s}{t_nilearn_nogc / t_ketamap:7.1f}x")
    print(f"{'ketamap time / read-only time:':48s}{t_ketamap / t_read:7.2f}")
    print(f"{'gc-tracked Python objects in this process:':48s}{n_objects:7d}")
    print(f"{'max relative difference of regional means:':48s}{rel:.2e} (limit 1e-06)")
    if rel > 1e-6:
        raise SystemExit("regional means differ from nilearn's by more than 1e-6")


if __name__ == "__main__":
    main()
