"""Geometry and forward model of the synthetic PET: template atlas, scanner grids, recovery.

Everything here is deterministic (no random numbers) and cached per configuration, so the image
writer and the ground truth share one forward model:

- the **atlas**: region ellipsoids painted on an isotropic grid in world mm (RAS, origin near the
  centre of the brain); the white-matter region fills the brain ellipsoid wherever no other region
  lies, outside is background (label 0, no activity);
- the **fine template grid**: the atlas grid with every voxel subdivided ``supersample`` times per
  axis, so the tissue image is exactly piecewise constant by atlas label;
- a **scanner grid**: voxel size and field of view along world x, y, z, stored internally in RAS
  order (the writer permutes and flips it to the scanner's orientation);
- the **basis**: for every region, its indicator on the fine grid blurred with the scanner's
  Gaussian FWHM (``scipy.ndimage.gaussian_filter``) and sampled at the scanner voxel centres with
  linear interpolation (``scipy.ndimage.map_coordinates``). A noiseless scan is ``values @ basis``;
- the **mixing matrix** ``B[r, q]``: mean of basis ``q`` over the scan voxels whose nearest-neighbour
  atlas label is ``r`` (the atlas resampled to the scan grid with ``order=0``, as the reader does).
  A no-PVC pipeline measures ``m = B @ v`` for tissue values ``v``, and SUVR ``m_r / m_ref``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

from ketamap.errors import ConfigError

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
TRUNCATE = 4.0  # Gaussian kernel radius in sigmas


@dataclass(frozen=True)
class Atlas:
    """The template atlas.

    Attributes
    ----------
    names, kinds, hc_suvr
        Per region in label order (label = index + 1).
    labels
        int16 label array on the atlas grid (RAS axis order).
    affine
        Voxel-to-world affine of ``labels`` (diagonal, RAS).
    fine_labels, fine_affine
        The same labels on the fine template grid.
    reference
        Index (0-based) of the reference region.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    hc_suvr: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    fine_labels: np.ndarray
    fine_affine: np.ndarray
    reference: int

    def image(self) -> nib.Nifti1Image:
        """The atlas as a 3D int16 NIfTI-1 image with a deterministic header."""
        img = nib.Nifti1Image(self.labels, self.affine)
        header = img.header
        header.set_qform(self.affine, code=1)
        header.set_sform(self.affine, code=1)
        header.set_xyzt_units("mm")
        header["descrip"] = b"ketamap synthetic template atlas"
        return img


@dataclass(frozen=True)
class Grid:
    """A scanner's voxel grid in RAS axis order.

    Attributes
    ----------
    shape
        Voxels along world x, y, z.
    affine
        Voxel-to-world affine (diagonal, RAS).
    labels
        Flat (C order) nearest-neighbour atlas label of every voxel.
    basis
        ``(n_regions, n_voxels)`` float32: blurred region indicators.
    mixing
        ``(n_regions, n_regions)``: ``mixing[r, q]`` = mean of ``basis[q]`` over voxels labelled r.
    counts
        Voxels per label (index 0 = background), length ``n_regions + 1``.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    labels: np.ndarray
    basis: np.ndarray
    mixing: np.ndarray
    counts: np.ndarray


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def atlas(atlas_cfg: dict[str, Any]) -> Atlas:
    """Build (cached) the atlas of a scenario's ``pet.atlas`` section."""
    return _atlas(_key(atlas_cfg))


@functools.lru_cache(maxsize=4)
def _atlas(key: str) -> Atlas:
    cfg = json.loads(key)
    vox = float(cfg["voxel_mm"])
    lo = np.array([b[0] for b in cfg["bounds_mm"]], dtype=float)
    hi = np.array([b[1] for b in cfg["bounds_mm"]], dtype=float)
    shape = tuple(int(np.floor((h - lo_) / vox + 1e-9)) + 1 for lo_, h in zip(lo, hi, strict=True))
    axes = [lo[j] + vox * np.arange(shape[j]) for j in range(3)]
    labels = _paint(cfg, axes)
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = lo
    k = int(cfg["supersample"])
    fine = labels.repeat(k, 0).repeat(k, 1).repeat(k, 2)
    fine_affine = np.diag([vox / k, vox / k, vox / k, 1.0])
    fine_affine[:3, 3] = lo - vox / 2 + vox / (2 * k)
    regions = cfg["regions"]
    kinds = tuple(r["kind"] for r in regions)
    return Atlas(
        names=tuple(r["name"] for r in regions),
        kinds=kinds,
        hc_suvr=np.array([float(r["hc_suvr"]) for r in regions]),
        labels=labels,
        affine=affine,
        fine_labels=fine,
        fine_affine=fine_affine,
        reference=kinds.index("reference"),
    )


def _inside(axes: list[np.ndarray], centre: list[float], radii: list[float]) -> np.ndarray:
    """Boolean grid of voxel centres inside an axis-aligned ellipsoid (broadcast per axis)."""
    terms = [((axes[j] - centre[j]) / radii[j]) ** 2 for j in range(3)]
    return (terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :]) <= 1.0


def _paint(cfg: dict[str, Any], axes: list[np.ndarray]) -> np.ndarray:
    """Label grid: the white-matter filler inside the brain, then every region's blobs in order."""
    shape = tuple(len(a) for a in axes)
    labels = np.zeros(shape, dtype=np.int16)
    brain = cfg["brain"]
    for index, region in enumerate(cfg["regions"], start=1):
        if region["kind"] == "white_matter":
            labels[_inside(axes, brain["centre"], brain["radii"]) & (labels == 0)] = index
    for index, region in enumerate(cfg["regions"], start=1):
        for blob in region["blobs"]:
            centres = [list(blob["centre"])]
            if blob["mirror"]:
                centres.append([-blob["centre"][0], *blob["centre"][1:]])
            for centre in centres:
                labels[_inside(axes, centre, blob["radii"])] = index
    return labels


def atlas_problems(atlas_cfg: dict[str, Any]) -> list[str]:
    """Regions covering fewer atlas voxels than ``min_voxels`` (as messages)."""
    built = atlas(atlas_cfg)
    counts = np.bincount(built.labels.ravel(), minlength=len(built.names) + 1)
    need = int(atlas_cfg["min_voxels"])
    return [
        f"region '{name}' covers {int(counts[i + 1])} atlas voxel(s)"
        for i, name in enumerate(built.names)
        if counts[i + 1] < need
    ]


def grid(atlas_cfg: dict[str, Any], scanner: dict[str, Any]) -> Grid:
    """Build (cached) a scanner's grid, basis and mixing matrix.

    Raises
    ------
    ConfigError
        When a region has no voxel on the scanner grid (the reader could not measure it).
    """
    keys = ("voxel_mm", "fov_mm", "fov_centre_mm", "fwhm_mm")
    return _grid(_key(atlas_cfg), _key({k: scanner[k] for k in keys}), scanner["id"])


@functools.lru_cache(maxsize=8)
def _grid(atlas_key: str, scanner_key: str, scanner_id: str) -> Grid:
    built = _atlas(atlas_key)
    sc = json.loads(scanner_key)
    vox = np.asarray(sc["voxel_mm"], dtype=float)
    fov = np.asarray(sc["fov_mm"], dtype=float)
    centre = np.asarray(sc["fov_centre_mm"], dtype=float)
    shape = tuple(max(1, round(float(f) / float(v))) for f, v in zip(fov, vox, strict=True))
    start = centre - (np.asarray(shape) - 1) / 2.0 * vox
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = start
    world = [start[j] + vox[j] * np.arange(shape[j]) for j in range(3)]

    nn = resample_from_to(built.image(), (shape, affine), order=0, mode="constant", cval=0)
    labels = np.rint(np.asarray(nn.dataobj)).astype(np.int64).ravel()
    n_regions = len(built.names)
    counts = np.bincount(labels, minlength=n_regions + 1)
    empty = [built.names[i] for i in range(n_regions) if counts[i + 1] == 0]
    if empty:
        raise ConfigError(
            f"region(s) {empty} have no voxel on the grid of scanner '{scanner_id}'",
            field="pet.scanners",
            expected="larger regions (pet.atlas.regions) or smaller scanner voxels",
        )

    fine = built.fine_labels
    fvox = float(built.fine_affine[0, 0])
    forigin = built.fine_affine[:3, 3]
    # Scan voxel centres in fine-grid voxel coordinates, per axis (both grids are RAS-diagonal).
    coords = [(world[j] - forigin[j]) / fvox for j in range(3)]
    sigma = float(sc["fwhm_mm"]) * FWHM_TO_SIGMA / fvox
    margin = int(np.ceil(TRUNCATE * sigma)) + 2
    basis = np.zeros((n_regions, int(np.prod(shape))), dtype=np.float32)
    for r in range(n_regions):
        where = np.nonzero(fine == r + 1)
        lo = [max(int(w.min()) - margin, 0) for w in where]
        hi = [min(int(w.max()) + margin + 1, fine.shape[j]) for j, w in enumerate(where)]
        crop = (fine[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == r + 1).astype(np.float32)
        blurred = ndimage.gaussian_filter(crop, sigma, mode="constant", cval=0.0, truncate=TRUNCATE)
        pick = [np.nonzero((c >= lo[j]) & (c <= hi[j] - 1))[0] for j, c in enumerate(coords)]
        if any(p.size == 0 for p in pick):
            continue
        sub = np.meshgrid(*[coords[j][pick[j]] - lo[j] for j in range(3)], indexing="ij")
        values = ndimage.map_coordinates(
            blurred, [s.ravel() for s in sub], order=1, mode="constant", cval=0.0
        ).reshape(tuple(p.size for p in pick))
        cube = basis[r].reshape(shape)
        cube[np.ix_(pick[0], pick[1], pick[2])] = values
    mixing = np.zeros((n_regions, n_regions))
    for q in range(n_regions):
        sums = np.bincount(labels, weights=basis[q], minlength=n_regions + 1)
        mixing[:, q] = sums[1:] / counts[1:]
    return Grid(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        affine=affine,
        labels=labels,
        basis=basis,
        mixing=mixing,
        counts=counts,
    )


# --------------------------------------------------------------------------- forward model


def measured(mixing: np.ndarray, values: np.ndarray, reference: int) -> np.ndarray:
    """Regional SUVR a no-PVC pipeline measures for tissue ``values`` (last axis: regions)."""
    m = np.asarray(values, dtype=float) @ mixing.T
    return m / m[..., reference : reference + 1]


def sensitivity(mixing: np.ndarray, values: np.ndarray, reference: int) -> np.ndarray:
    """``J[r, q]`` = d log(measured SUVR_r) / d log(tissue value_q) at ``values``.

    A small relative change ``x_q`` of the tissue values moves the measured SUVR of region r by
    ``sum_q J[r, q] x_q`` (relative). ``J[r, r]`` is the region's recovery of its own change.
    """
    v = np.asarray(values, dtype=float)
    m = mixing @ v
    share = mixing * v[None, :] / m[:, None]
    return share - share[reference][None, :]
