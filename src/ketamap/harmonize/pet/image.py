"""PET images: checked before use, read one frame at a time, averaged per atlas region.

* :func:`sniff_nifti` looks at the file before nibabel does: missing, empty or a stub too small for a
  header, an HTML page saved under an image name, not a NIfTI at all. Compression is recognised from
  the content (gzip magic), not the name.
* :func:`open_pet_image` opens the image on one file handle (so a ``.nii.gz`` is decompressed once,
  front to back, however many frames are read) and checks the header: 3D or 4D, a sane shape, a
  real-valued data type, a usable ``scl_slope``, an invertible affine from a qform or sform (the two
  agreeing when both are set, in mm), and, when asked, the number of frames against the sidecar -
  before any voxel is read. When the caller is done it checks the file's integrity: a ``.nii.gz``
  is decompressed to its end, so gzip verifies the CRC-32 and length of everything (frames outside
  the SUVR window included) while only one chunk is in memory; a ``.nii`` must hold every byte the
  header declares.
* :func:`label_grid` brings the image to the atlas orientation (an axis permutation/flip from
  ``nibabel.orientations``, no interpolation), resamples the atlas labels onto that grid with nearest
  neighbour (voxels outside the atlas are background), and maps the labels back through the inverse
  permutation, so the frames themselves are never copied or reoriented. Callers cache the result per
  image geometry (shape + affine): the resampling runs once per scanner grid, never per subject.
* :func:`regional_means` streams frames from ``img.dataobj[..., i]`` and reduces each with one gather
  of the labelled voxels and one ``np.bincount``: memory stays at one frame plus the labelled voxels'
  indices. A frame that is all zeros is rejected; non-finite values are rejected inside the atlas
  regions and ignored in the background (tools that write NaN outside the brain are common).
* :class:`Alignment` checks that the image lies in the atlas space: the centre of its activity
  must fall within :data:`ALIGNMENT_TOLERANCE_MM` of the centre of the atlas regions on its grid.
  Images are expected registered to the atlas (any grid, orientation and voxel size); an affine
  that places the image elsewhere would average the wrong voxels without any other sign.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt
from nibabel.processing import resample_from_to

from ketamap import limits
from ketamap.errors import SiteDataError
from ketamap.io import check_inside, shown_path

NIFTI1_HEADER = 348
NIFTI2_HEADER = 540
MAX_SPATIAL = 4096
MAX_FRAMES = 10000
# qform and sform must place every corner of the grid within this distance of each other.
QFORM_SFORM_TOLERANCE_MM = 0.5
# The activity's centre must lie this close to the centre of the atlas regions on the image grid.
ALIGNMENT_TOLERANCE_MM = 10.0
# Decompressed bytes a .nii.gz may hold beyond what its header declares (extensions, padding).
TRAILING_SLACK = 1 << 20
DRAIN_CHUNK = 1 << 22
SCL_SLOPE_ZERO_WARNING = (
    "scl_slope 0 in the header: float voxel values read unscaled (the NIfTI convention)"
)
READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    zlib.error,
    nib.filebasedimages.ImageFileError,
)


@dataclass(frozen=True)
class LabelGrid:
    """Atlas labels on one image grid, kept as the labelled voxels only (background is never read).

    ``voxels``: flat indices (Fortran order of the grid, the order of a NIfTI frame) of the voxels
    with a label > 0; ``labels``: their labels; ``counts``: voxels per label (index 0 = background);
    ``centre``: the mean voxel coordinate (i, j, k) of the labelled voxels (NaN without any).
    """

    shape: tuple[int, int, int]
    voxels: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    centre: np.ndarray

    @classmethod
    def from_array(cls, labels: np.ndarray, n_labels: int | None = None) -> LabelGrid:
        """From an integer label array shaped like the image grid (x, y, z)."""
        if labels.ndim != 3:
            raise ValueError(f"labels must be 3D, got shape {labels.shape}")
        flat = np.ravel(labels, order="F")
        if flat.size and flat.min() < 0:
            raise ValueError("labels must be >= 0")
        voxels = np.flatnonzero(flat)
        values = flat[voxels].astype(np.intp)
        counts = np.bincount(values, minlength=n_labels or 0)
        counts[0] = flat.size - voxels.size
        shape = (int(labels.shape[0]), int(labels.shape[1]), int(labels.shape[2]))
        if voxels.size:
            centre = np.array([ax.mean() for ax in np.unravel_index(voxels, shape, order="F")])
        else:
            centre = np.full(3, np.nan)
        return cls(shape=shape, voxels=voxels, labels=values, counts=counts, centre=centre)


class Alignment:
    """Whether an image lies in the atlas space, from the frames :func:`regional_means` reads.

    Pass :meth:`add` as ``on_frame``; :meth:`check` then compares the centre of the activity
    (positive finite values, summed over the frames) with the centre of the atlas regions on the
    image grid. An affine that is off by a few voxels moves the one against the other by as much,
    while a registered image of any grid, orientation or voxel size keeps them together.
    """

    def __init__(self, grid: LabelGrid) -> None:
        self.grid = grid
        self.moments = np.zeros(3)
        self.total = 0.0

    def add(self, frame: np.ndarray) -> None:
        """Accumulate one frame (x, y, z) of the image."""
        weights = np.fmax(frame, 0)  # NaN (background written by some tools) counts as 0
        along_x = weights.sum(axis=(1, 2), dtype=np.float64)
        if not np.isfinite(along_x).all():  # inf outside the regions: ignored like NaN
            weights = np.where(np.isfinite(weights), weights, 0)
            along_x = weights.sum(axis=(1, 2), dtype=np.float64)
        yz = weights.sum(axis=0, dtype=np.float64)
        along = (along_x, yz.sum(axis=1), yz.sum(axis=0))
        self.moments += [a @ np.arange(a.size, dtype=np.float64) for a in along]
        self.total += float(along_x.sum())

    def offset_mm(self, affine: np.ndarray) -> np.ndarray:
        """World offset (x, y, z, mm) of the activity's centre from the atlas regions' centre."""
        if not self.total > 0:
            return np.zeros(3)
        return np.asarray(affine)[:3, :3] @ (self.moments / self.total - self.grid.centre)

    def check(
        self,
        affine: np.ndarray,
        atlas_affine: np.ndarray,
        where: dict[str, Any],
        tolerance_mm: float = ALIGNMENT_TOLERANCE_MM,
    ) -> None:
        """Raise a :class:`SiteDataError` naming the affine when the two centres are too far apart."""
        offset = self.offset_mm(affine)
        distance = float(np.linalg.norm(offset))
        if distance > tolerance_mm:
            shown = ", ".join(f"{v:+.1f}" for v in offset)
            atlas = np.array2string(
                np.asarray(atlas_affine, dtype=float).round(2), separator=", "
            ).replace("\n", "")
            raise SiteDataError(
                f"the image's activity is centred {distance:.1f} mm (x, y, z: {shown} mm) from the "
                "atlas regions on its grid: the affine does not place the image in the atlas space",
                field="affine",
                expected=f"an image registered to the atlas space (atlas affine {atlas}; any grid "
                f"or orientation), its activity centred on the atlas regions within "
                f"{tolerance_mm:g} mm",
                hint="register the image to the atlas template, or fix its qform/sform",
                **where,
            )


def sniff_nifti(path: Path, *, site: str, root: Path | None = None) -> tuple[bool, int]:
    """Check that ``path`` holds a single-file NIfTI (plain or gzip); return (gzipped, header size)."""
    shown = shown_path(path, root)
    where = {"site": site, "file": shown}
    check_inside(path, root, site=site, file=shown)
    if not path.is_file():
        raise SiteDataError("image file not found", expected="a NIfTI image", **where)
    size = path.stat().st_size
    if size == 0:
        raise SiteDataError("image file is empty (0 bytes)", expected="a NIfTI image", **where)
    limits.check_size(path, "image", site=site, file=shown)
    with path.open("rb") as fh:
        raw = fh.read(NIFTI2_HEADER)
    gzipped = raw[:2] == b"\x1f\x8b"
    head = raw
    if gzipped:
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(NIFTI2_HEADER)
        except (OSError, EOFError, zlib.error) as exc:
            raise SiteDataError(
                f"not a readable gzip file ({exc})",
                expected="a gzip-compressed NIfTI image",
                **where,
            ) from None
    if _looks_like_html(head):
        raise SiteDataError(
            "not a NIfTI image (looks like HTML)",
            expected="a NIfTI image",
            hint="the file is a web page saved under an image name; download the image itself",
            **where,
        )
    if len(head) < NIFTI1_HEADER:
        raise SiteDataError(
            f"not a NIfTI image (only {len(head)} byte{'s' if len(head) != 1 else ''}, "
            f"too small for a {NIFTI1_HEADER}-byte header)",
            expected="a NIfTI image",
            **where,
        )
    kind = _nifti_kind(head)
    if kind is None:
        raise SiteDataError(
            f"not a NIfTI image (starts with {head[:16]!r})",
            expected="a NIfTI-1 or NIfTI-2 image",
            **where,
        )
    if kind == "pair":
        raise SiteDataError(
            "a NIfTI header of a .hdr/.img pair, without its voxel data",
            expected="a single-file NIfTI image (.nii or .nii.gz)",
            **where,
        )
    if kind == "analyze":
        raise SiteDataError(
            "an Analyze 7.5 header, not NIfTI (no reliable orientation)",
            expected="a NIfTI-1 or NIfTI-2 image",
            **where,
        )
    return gzipped, NIFTI2_HEADER if kind == "nifti2" else NIFTI1_HEADER


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or (
        text.startswith(b"<") and b"<html" in text
    )


def _nifti_kind(head: bytes) -> str | None:
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == NIFTI1_HEADER:
            magic = head[344:348]
            if magic == b"n+1\x00":
                return "nifti1"
            if magic == b"ni1\x00":
                return "pair"
            return "analyze"
        if sizeof_hdr == NIFTI2_HEADER and len(head) >= 12 and head[4:8] == b"n+2\x00":
            return "nifti2"
    return None


@contextmanager
def open_pet_image(
    path: Path,
    *,
    site: str,
    root: Path | None = None,
    n_frames: int | None = None,
    warnings: list[str] | None = None,
) -> Iterator[Any]:
    """Open a checked PET image on one file handle; the header is read, no voxel yet.

    ``n_frames``: the number of frames the sidecar lists; a different 4th dimension is an error.
    ``warnings``: a list to which what the tables should record about the header is appended.
    On leaving the ``with`` block without an error the file's integrity is checked
    (:func:`check_integrity`): read the frames inside the block, use the results after it.
    """
    gzipped, header_size = sniff_nifti(path, site=site, root=root)
    shown = shown_path(path, root)
    where = {"site": site, "file": shown}
    klass = nib.Nifti2Image if header_size == NIFTI2_HEADER else nib.Nifti1Image
    with gzip.GzipFile(path, "rb") if gzipped else path.open("rb") as fh:
        try:
            # the header as written: a loaded image keeps its scaling in the data proxy only
            raw_header = klass.header_class.from_fileobj(fh, check=False)
            fh.seek(0)
            img: Any = klass.from_stream(fh)
        except (*READ_ERRORS, nib.spatialimages.HeaderDataError) as exc:
            raise SiteDataError(
                f"cannot read the NIfTI header ({limits.excerpt(str(exc), 120)})",
                expected="a valid NIfTI image",
                **where,
            ) from None
        check_header(img, raw_header, where)
        check_geometry(img, where)
        declared, limit = expected_bytes(img), limits.limit_mb("image")
        if declared > limit * 1e6:
            raise SiteDataError(
                f"the header declares {declared / 1e6:,.1f} MB of voxel data (shape "
                f"{tuple(int(d) for d in img.shape)}), above the {limit:g} MB limit for image files",
                field="dim",
                expected=f"an image of at most {limit:g} MB uncompressed",
                hint="check the header is not corrupt; a larger image needs "
                "`limits: {image_mb: ...}` in the config",
                **where,
            )
        if warnings is not None:
            warnings.extend(header_warnings(raw_header))
        if n_frames is not None:
            found = frame_count(img)
            if found != n_frames:
                raise SiteDataError(
                    f"the image has {found} frame{'s' if found != 1 else ''}"
                    f"{' (a 3D image)' if len(img.shape) == 3 else ''} but the sidecar lists "
                    f"{n_frames}",
                    field="dim",
                    expected="one volume per frame of FrameTimesStart/FrameDuration",
                    **where,
                )
        yield img
        check_integrity(fh, img, path, gzipped=gzipped, where=where)


def expected_bytes(img: Any) -> int:
    """Bytes from the start of the file to the end of the voxel data, as the header declares."""
    header = img.header
    n_voxels = int(np.prod([int(s) for s in img.shape], dtype=np.int64))
    return int(header.get_data_offset()) + n_voxels * header.get_data_dtype().itemsize


def check_integrity(fh: Any, img: Any, path: Path, *, gzipped: bool, where: dict[str, Any]) -> None:
    """The whole file is intact: a ``.nii.gz`` is decompressed to its end on the open handle (gzip
    then checks the CRC-32 and the length of the data), a ``.nii`` holds every declared byte."""
    need = expected_bytes(img)
    if not gzipped:
        size = path.stat().st_size
        if size < need:
            raise SiteDataError(
                f"the file is truncated: {size:,} bytes where the header declares {need:,}",
                field="size",
                expected="a complete NIfTI image",
                **where,
            )
        return
    bound = need + TRAILING_SLACK
    try:
        while fh.read(DRAIN_CHUNK):
            if fh.tell() > bound:
                raise SiteDataError(
                    f"the compressed file holds more than {bound:,} bytes where the header "
                    f"declares {need:,}",
                    field="size",
                    expected="one NIfTI image per file",
                    **where,
                )
    except (OSError, EOFError, zlib.error) as exc:
        raise SiteDataError(
            f"the compressed file is corrupt ({limits.excerpt(str(exc), 120)})",
            field="gzip",
            expected="a .nii.gz whose gzip CRC-32 and length check out",
            hint="copy or download the file again",
            **where,
        ) from None
    if fh.tell() < need:
        raise SiteDataError(
            f"the file is truncated: {fh.tell():,} bytes decompressed where the header declares "
            f"{need:,}",
            field="size",
            expected="a complete NIfTI image",
            **where,
        )


def check_header(img: Any, header: Any, where: dict[str, Any]) -> None:
    """Header fields (``header`` as written in the file) that would make the voxel values or their
    position silently wrong."""
    dtype = header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise SiteDataError(
            f"voxel data type {dtype_name(header)} cannot hold activity values",
            field="datatype",
            expected="a real-valued float or integer datatype (e.g. float32 or int16)",
            **where,
        )
    slope = float(header["scl_slope"])
    inter = float(header["scl_inter"])
    if np.isinf(slope) or (np.isfinite(slope) and slope != 0 and np.isinf(inter)):
        raise SiteDataError(
            f"scl_slope {slope:g}, scl_inter {inter:g}",
            field="scl_slope",
            expected="finite scaling (or NaN/0 for unscaled float data)",
            **where,
        )
    if slope == 0 and dtype.kind in "iu":
        raise SiteDataError(
            f"scl_slope 0 for {dtype_name(header)} voxel data: the stored integers cannot be "
            "turned into activity values",
            field="scl_slope",
            expected="a non-zero scl_slope for integer data (the factor to the image Units)",
            **where,
        )
    space = header.get_xyzt_units()[0]
    if space not in ("mm", "unknown"):
        raise SiteDataError(
            f"spatial units {space!r}",
            field="xyzt_units",
            expected="mm (or unset, read as mm)",
            **where,
        )
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        raise SiteDataError(
            "neither a qform nor an sform is set (qform_code and sform_code are 0), so the image "
            "has no position in space",
            field="affine",
            expected="a NIfTI with a qform or sform placing it in the atlas space",
            **where,
        )
    if qcode > 0 and scode > 0:
        shape = np.asarray([int(s) for s in img.shape[:3]], dtype=float)
        corners = np.array(np.meshgrid(*[[0.0, n - 1] for n in shape], indexing="ij")).reshape(
            3, -1
        )
        qform, sform = header.get_qform(), header.get_sform()
        gap = float(
            np.max(
                np.linalg.norm(
                    nib.affines.apply_affine(qform, corners.T)
                    - nib.affines.apply_affine(sform, corners.T),
                    axis=1,
                )
            )
        )
        if not gap <= QFORM_SFORM_TOLERANCE_MM:
            raise SiteDataError(
                f"the qform and the sform place the image {gap:.1f} mm apart (tools disagree on "
                "which one to use)",
                field="affine",
                expected=f"qform and sform agreeing within {QFORM_SFORM_TOLERANCE_MM:g} mm",
                **where,
            )


def header_warnings(header: Any) -> list[str]:
    """What a header as written says that the tables should record: ``scl_slope`` 0 on float data."""
    if float(header["scl_slope"]) == 0 and header.get_data_dtype().kind == "f":
        return [SCL_SLOPE_ZERO_WARNING]
    return []


def dtype_name(header: Any) -> str:
    """The NIfTI datatype of a header as a name (``complex64``, ``RGB``, ...)."""
    try:
        return str(header.get_value_label("datatype"))
    except (KeyError, ValueError, TypeError):
        return str(header.get_data_dtype())


def frame_count(img: Any) -> int:
    """Frames of a PET image: the 4th dimension, 1 for a 3D image."""
    return int(img.shape[3]) if len(img.shape) == 4 else 1


def check_geometry(img: Any, where: dict[str, str]) -> None:
    """A 3D or 4D image with a sane shape and an invertible, finite affine."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) not in (3, 4):
        raise SiteDataError(
            f"the image has {len(shape)} dimensions {shape}",
            expected="a 3D image or a 4D image with one volume per frame",
            **where,
        )
    if any(s < 1 or s > MAX_SPATIAL for s in shape[:3]) or (
        len(shape) == 4 and not 1 <= shape[3] <= MAX_FRAMES
    ):
        raise SiteDataError(
            f"implausible image shape {shape}",
            expected=f"1-{MAX_SPATIAL} voxels per axis and 1-{MAX_FRAMES} frames",
            **where,
        )
    affine = img.affine
    if (
        affine is None
        or not np.all(np.isfinite(affine))
        or abs(np.linalg.det(affine[:3, :3])) < 1e-12
    ):
        raise SiteDataError(
            "the image affine is missing, non-finite or singular",
            expected="a NIfTI with a valid qform or sform",
            **where,
        )


def orientation(affine: np.ndarray) -> str:
    """Axis codes of an affine, e.g. ``"LAS"``."""
    return "".join(str(c) for c in nib.aff2axcodes(affine))


def voxel_size(affine: np.ndarray) -> str:
    """Voxel size in mm as ``"2.50x2.50x2.50"``."""
    return "x".join(f"{v:.2f}" for v in nib.affines.voxel_sizes(affine))


def resample_labels(atlas_img: Any, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Atlas labels on the grid (shape, affine): nearest neighbour, background outside the atlas."""
    out = resample_from_to(atlas_img, (shape, affine), order=0, mode="constant", cval=0)
    return np.asarray(out.dataobj)


def label_grid(
    atlas_img: Any, shape: tuple[int, ...], affine: np.ndarray, n_labels: int
) -> LabelGrid:
    """Labels for an image grid: reorient the grid to the atlas, resample once, map back."""
    shape3 = tuple(int(s) for s in shape[:3])
    img_ornt = ornt.io_orientation(affine)
    atlas_ornt = ornt.io_orientation(atlas_img.affine)
    to_atlas = ornt.ornt_transform(img_ornt, atlas_ornt)
    # the image grid as the atlas orientation sees it: permuted shape, same world positions
    reoriented_shape = [0, 0, 0]
    for axis, (new_axis, _flip) in enumerate(to_atlas):
        reoriented_shape[int(new_axis)] = shape3[axis]
    reoriented_affine = affine @ ornt.inv_ornt_aff(to_atlas, shape3)
    labels = resample_labels(atlas_img, tuple(reoriented_shape), reoriented_affine)
    back = ornt.apply_orientation(labels, ornt.ornt_transform(atlas_ornt, img_ornt))
    if back.shape != shape3:
        raise AssertionError(f"reoriented labels have shape {back.shape}, grid {shape3}")
    return LabelGrid.from_array(back, n_labels)


def regional_means(
    dataobj: Any,
    labels: np.ndarray | LabelGrid,
    frames: Sequence[int] | np.ndarray | range | None = None,
    *,
    n_labels: int | None = None,
    site: str | None = None,
    file: str | None = None,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of every label in every requested frame, one frame in memory at a time.

    ``dataobj``: a nibabel ``img.dataobj`` (or any array) of shape (x, y, z[, t]); ``labels``: integer
    labels on the same grid (x, y, z), or a :class:`LabelGrid` prepared once per grid; ``frames``:
    frame numbers to read (default all). Returns ``means`` of shape (len(frames), n_labels) - NaN for a
    label without voxels and for the background (label 0, never averaged) - and ``counts`` (voxels
    per label). A frame that is all zeros, or non-finite values inside labelled voxels, is a
    :class:`SiteDataError`. No loop over regions or voxels: one gather and one ``np.bincount`` per frame.
    ``on_frame`` is called with every frame read (x, y, z), e.g. :meth:`Alignment.add`.
    """
    shape = tuple(int(s) for s in dataobj.shape)
    grid = labels if isinstance(labels, LabelGrid) else LabelGrid.from_array(labels, n_labels)
    if grid.shape != shape[:3]:
        raise ValueError(f"labels on grid {grid.shape}, image grid {shape[:3]}")
    n = n_labels if n_labels is not None else len(grid.counts)
    counts = np.zeros(n, dtype=np.int64)
    counts[: min(n, len(grid.counts))] = grid.counts[:n]
    is_4d = len(shape) == 4
    frame_list = (
        list(range(shape[3] if is_4d else 1)) if frames is None else [int(f) for f in frames]
    )
    where = {"site": site, "file": file}
    means = np.empty((len(frame_list), n))
    with np.errstate(invalid="ignore", divide="ignore"):
        for row, i in enumerate(frame_list):
            try:
                frame = np.asarray(dataobj[..., i] if is_4d else dataobj[...])
            except READ_ERRORS as exc:
                raise SiteDataError(
                    f"cannot read the voxel data of frame {i} (truncated or corrupt file: "
                    f"{limits.excerpt(str(exc), 120)})",
                    field="voxel data",
                    expected="a complete NIfTI image",
                    **where,
                ) from None
            if frame.dtype.kind not in "iuf":
                raise SiteDataError(
                    f"voxel data type {frame.dtype}",
                    field="datatype",
                    expected="a real-valued float or integer datatype (e.g. float32 or int16)",
                    **where,
                )
            values = np.ravel(frame, order="F")
            if not values.any():
                raise SiteDataError(
                    f"image is all zeros (frame {i})",
                    field="voxel data",
                    expected="PET voxel values (activity concentration)",
                    **where,
                )
            sums = np.bincount(grid.labels, weights=values[grid.voxels], minlength=n)[:n]
            if not np.all(np.isfinite(sums)):
                raise SiteDataError(
                    f"non-finite voxel values (NaN or inf) inside atlas regions in frame {i}",
                    field="voxel data",
                    expected="finite PET values inside the brain",
                    **where,
                )
            means[row] = sums / counts
            if on_frame is not None:
                on_frame(frame)
    means[:, 0] = np.nan
    return means, counts
