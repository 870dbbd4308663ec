"""Bad-input corpus, PET: one-change copies of a synthetic PET site, harmonized as a job would.

Each case must end in one message naming the site, the file, the field and what was expected; never
a traceback, never a table computed from the changed bytes. keio_hc stores int16 with a scale
factor (LAS), ycu_obs float32 (PIL), so the header cases meet both kinds of image."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from badinput import Consortium
from ketamap import limits
from ketamap.errors import KetamapError

INT_SITE = "keio_hc"
FLOAT_SITE = "ycu_obs"


def scan(site: Path) -> Path:
    """The first PET image of a site folder."""
    return sorted(site.glob("sub-*/ses-*/pet/*_pet.nii.gz"))[0]


def shown(site: Path, path: Path) -> str:
    return f"file '{path.relative_to(site)}'"


def read_raw(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def write_raw(path: Path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(raw, mtime=0))


def edit_header(path: Path, change: Callable[[nib.Nifti1Header], None]) -> None:
    """Change header fields only; the voxel bytes stay as they are."""
    raw = read_raw(path)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    change(header)
    write_raw(path, header.binaryblock + raw[348:])


def shift_affine(mm: float, axis: int = 1) -> Callable[[nib.Nifti1Header], None]:
    def change(header: nib.Nifti1Header) -> None:
        affine = header.get_best_affine()
        affine[axis, 3] += mm
        header.set_qform(affine, code=int(header["qform_code"]))
        header.set_sform(affine, code=int(header["sform_code"]))

    return change


def set_field(name: str, value: object) -> Callable[[nib.Nifti1Header], None]:
    def change(header: nib.Nifti1Header) -> None:
        header[name] = value

    return change


def sform_only_shift(header: nib.Nifti1Header) -> None:
    affine = header.get_sform()
    affine[0, 3] += 4.0
    header.set_sform(affine, code=int(header["sform_code"]))


def rewrite_image(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Write the image again with changed float32 voxel values (same affine)."""
    img = nib.Nifti1Image.from_bytes(read_raw(path))
    data = change(np.asarray(img.dataobj, dtype=np.float32))
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_qform(img.affine, code=1)
    out.header.set_sform(img.affine, code=1)
    write_raw(path, out.to_bytes())


def as_complex(path: Path) -> None:
    img = nib.Nifti1Image.from_bytes(read_raw(path))
    data = np.asarray(img.dataobj).astype(np.complex64)
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_qform(img.affine, code=1)
    write_raw(path, out.to_bytes())


def nan_inside_brain(data: np.ndarray) -> np.ndarray:
    centre = tuple(s // 2 for s in data.shape[:3])
    data[centre] = np.nan
    return data


def flip_byte(path: Path, at: float) -> None:
    """Flip one bit of one compressed byte at fraction ``at`` of the file."""
    blob = bytearray(path.read_bytes())
    blob[int(len(blob) * at)] ^= 0x01
    path.write_bytes(bytes(blob))


def flip_trailer(path: Path, offset: int) -> None:
    """Flip a byte of the gzip trailer: offset -8..-5 is the CRC-32, -4..-1 the length."""
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x5A
    path.write_bytes(bytes(blob))


def truncate(path: Path, keep: float) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])


def edit_sidecar(path: Path, change: Callable[[dict], None]) -> None:
    sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
    data = json.loads(sidecar.read_text())
    change(data)
    sidecar.write_text(json.dumps(data))


def sparse(path: Path, size: int) -> None:
    """Make ``path`` a sparse file of ``size`` bytes (no disk used)."""
    with path.open("r+b") as fh:
        fh.truncate(size)


def link_outside(path: Path) -> None:
    """Replace ``path`` by a symbolic link to a copy of it outside the site folder."""
    outside = path.parents[5] / f"outside-{path.name}"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


def drop_frame(path: Path) -> None:
    img = nib.Nifti1Image.from_bytes(read_raw(path))
    data = np.asarray(img.dataobj, dtype=np.float32)[..., 1:]
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_qform(img.affine, code=1)
    write_raw(path, out.to_bytes())


def as_3d(path: Path) -> None:
    img = nib.Nifti1Image.from_bytes(read_raw(path))
    data = np.asarray(img.dataobj, dtype=np.float32)[..., -1]
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_qform(img.affine, code=1)
    write_raw(path, out.to_bytes())


def uncompressed_truncated(path: Path) -> None:
    """The image as .nii (no CRC to check), with the end of its last frame missing."""
    raw = read_raw(path)
    path.unlink()
    path.with_suffix("").write_bytes(raw[:-4000])


def image(change: Callable[[Path], None]) -> Callable[[Path], str]:
    """A case changing one image; returns the image's file needle."""

    def apply(site: Path) -> str:
        path = scan(site)
        needle = shown(site, path)
        change(path)
        return needle

    return apply


def header(change: Callable[[nib.Nifti1Header], None]) -> Callable[[Path], str]:
    return image(lambda p: edit_header(p, change))


def sidecar(change: Callable[[dict], None]) -> Callable[[Path], str]:
    def apply(site: Path) -> str:
        path = scan(site)
        edit_sidecar(path, change)
        return shown(site, path).replace(".nii.gz", ".json")

    return apply


def sidecar_file(change: Callable[[Path], None]) -> Callable[[Path], str]:
    def apply(site: Path) -> str:
        path = scan(site).with_name(scan(site).name.replace(".nii.gz", ".json"))
        change(path)
        return shown(site, path)

    return apply


def truncated_nii(site: Path) -> str:
    path = scan(site)
    uncompressed_truncated(path)
    return shown(site, path.with_suffix(""))


# (case id, site, change(site folder) -> the file's needle, field, substrings of the expectation)
CASES: list[tuple[str, str, Callable[[Path], str], str, list[str]]] = [
    (
        "affine_shifted_20mm",
        INT_SITE,
        header(shift_affine(20.0)),
        "affine",
        ["atlas space", "atlas affine [["],
    ),
    (
        "affine_shifted_20mm_float",
        FLOAT_SITE,
        header(shift_affine(-20.0, axis=2)),
        "affine",
        ["atlas space", "within 10 mm"],
    ),
    (
        "scl_slope_zero_int16",
        INT_SITE,
        header(set_field("scl_slope", 0)),
        "scl_slope",
        ["non-zero"],
    ),
    ("scl_slope_inf", FLOAT_SITE, header(set_field("scl_slope", np.inf)), "scl_slope", ["finite"]),
    ("qform_sform_disagree", INT_SITE, header(sform_only_shift), "affine", ["qform and sform"]),
    (
        "no_qform_no_sform",
        FLOAT_SITE,
        header(lambda h: (h.__setitem__("qform_code", 0), h.__setitem__("sform_code", 0))),
        "affine",
        ["qform or sform"],
    ),
    (
        "spatial_units_micron",
        INT_SITE,
        header(lambda h: h.set_xyzt_units("micron", "sec")),
        "xyzt_units",
        ["mm"],
    ),
    ("complex64_voxels", FLOAT_SITE, image(as_complex), "datatype", ["real-valued"]),
    ("gzip_crc_flipped", INT_SITE, image(lambda p: flip_trailer(p, -8)), "gzip", ["CRC-32"]),
    ("gzip_length_flipped", FLOAT_SITE, image(lambda p: flip_trailer(p, -2)), "gzip", ["CRC-32"]),
    # a flipped byte in the first frame, which lies before the SUVR window: read only by the CRC check
    ("gzip_byte_flipped_first_frame", INT_SITE, image(lambda p: flip_byte(p, 0.2)), "", []),
    ("gzip_byte_flipped_last_frame", FLOAT_SITE, image(lambda p: flip_byte(p, 0.9)), "", []),
    ("gzip_truncated", INT_SITE, image(lambda p: truncate(p, 0.97)), "", ["complete"]),
    ("nii_truncated", FLOAT_SITE, truncated_nii, "", ["complete NIfTI"]),
    (
        "nan_inside_brain",
        FLOAT_SITE,
        image(lambda p: rewrite_image(p, nan_inside_brain)),
        "voxel data",
        ["finite"],
    ),
    (
        "all_zero_image",
        INT_SITE,
        image(lambda p: rewrite_image(p, np.zeros_like)),
        "voxel data",
        ["PET voxel values"],
    ),
    ("frame_missing", FLOAT_SITE, image(drop_frame), "dim", ["one volume per frame"]),
    ("3d_image_for_3_frames", INT_SITE, image(as_3d), "dim", ["one volume per frame"]),
    (
        "negative_frame_duration",
        FLOAT_SITE,
        sidecar(lambda d: d.__setitem__("FrameDuration", [600, -600, 600])),
        "FrameDuration",
        ["durations > 0"],
    ),
    (
        "frame_duration_count",
        INT_SITE,
        sidecar(lambda d: d.__setitem__("FrameDuration", [600, 600])),
        "FrameDuration",
        ["one duration per entry"],
    ),
    (
        "sidecar_over_size_limit",
        FLOAT_SITE,
        sidecar_file(lambda p: sparse(p, 2_000_000_000)),
        "size",
        ["at most 16 MB"],
    ),
    (
        "image_over_size_limit",
        INT_SITE,
        image(lambda p: sparse(p, 4_200_000_000)),
        "size",
        ["at most 4096 MB"],
    ),
    (
        "header_declares_huge_image",
        FLOAT_SITE,
        header(lambda h: h.set_data_shape((4000, 4000, 4000, 3))),
        "dim",
        ["at most 4096 MB uncompressed"],
    ),
    ("sidecar_links_outside", FLOAT_SITE, sidecar_file(link_outside), "path", ["inside the site"]),
    ("image_links_outside", INT_SITE, image(link_outside), "path", ["inside the site"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_pet_input_gets_one_clear_message(corpus: Consortium, tmp_path: Path, case) -> None:
    _, site, change, field, expected = case
    raw = corpus.copy(site, tmp_path)
    file_needle = change(raw)
    with pytest.raises(KetamapError) as err:
        corpus.harmonize(site, raw)
    message = str(err.value)
    needles = [f"site '{site}'", file_needle, "; expected", *expected]
    needles.append(f"field '{field}'" if field else "field '")
    for needle in needles:
        assert needle in message, message
    assert len(message) < 1000, message


def test_a_flipped_byte_never_reaches_a_table(corpus: Consortium, tmp_path: Path) -> None:
    """Ten single-byte flips spread over one compressed image: each is an error, none a table."""
    site = FLOAT_SITE
    for i in range(10):
        raw = corpus.copy(site, tmp_path / str(i))
        path = scan(raw)
        flip_byte(path, 0.05 + 0.09 * i)
        with pytest.raises(KetamapError, match=rf"site '{site}', {shown(raw, path)}"):
            corpus.harmonize(site, raw)


def test_a_small_affine_offset_is_accepted(corpus: Consortium, tmp_path: Path) -> None:
    """Below the tolerance (half an int16 voxel) the image is read, so a registered image with a
    slightly different grid passes."""
    raw = corpus.copy(INT_SITE, tmp_path)
    edit_header(scan(raw), shift_affine(2.0))
    tables = corpus.harmonize(INT_SITE, raw)
    assert len(tables["pet_sessions"]) == 6


def test_scl_slope_zero_on_float_data_is_recorded(corpus: Consortium, tmp_path: Path) -> None:
    """NIfTI reads scl_slope 0 as 'no scaling': float values are kept, and the session says so."""
    raw = corpus.copy(FLOAT_SITE, tmp_path)
    path = scan(raw)
    edit_header(path, set_field("scl_slope", 0))
    sessions = corpus.harmonize(FLOAT_SITE, raw)["pet_sessions"]
    reference = corpus.harmonize(FLOAT_SITE, corpus.root / FLOAT_SITE)["pet_sessions"]
    changed = sessions["warnings"] != reference["warnings"]
    assert changed.sum() == 1
    assert "scl_slope 0" in sessions.loc[changed, "warnings"].iloc[0]


def test_a_sidecar_with_a_byte_order_mark_is_read(corpus: Consortium, tmp_path: Path) -> None:
    raw = corpus.copy(FLOAT_SITE, tmp_path)
    for sidecar_path in raw.glob("sub-*/ses-*/pet/*_pet.json"):
        sidecar_path.write_bytes(b"\xef\xbb\xbf" + sidecar_path.read_bytes())
    tables = corpus.harmonize(FLOAT_SITE, raw)
    reference = corpus.harmonize(FLOAT_SITE, corpus.root / FLOAT_SITE)
    for name, table in reference.items():
        assert tables[name].equals(table), name


def test_a_link_inside_the_site_folder_is_read(corpus: Consortium, tmp_path: Path) -> None:
    raw = corpus.copy(FLOAT_SITE, tmp_path)
    path = scan(raw)
    moved = raw / "store" / path.name
    moved.parent.mkdir()
    path.rename(moved)
    path.symlink_to(moved)
    assert len(corpus.harmonize(FLOAT_SITE, raw)["pet_sessions"]) == 6


def test_size_limits_follow_the_config(tmp_path: Path) -> None:
    """The limit in the message is the configured one."""
    limits.configure({"json_mb": 0.001})
    try:
        big = tmp_path / "x_pet.json"
        big.write_text(json.dumps({"pad": "x" * 5000}))
        from ketamap.io import read_json

        with pytest.raises(KetamapError, match=r"field 'size'.*at most 0.001 MB"):
            read_json(big, site="s", root=tmp_path)
    finally:
        limits.configure(None)
