"""BIDS-PET sidecars (``_pet.json``): required fields, the site's units, made consistent.

:func:`read_sidecar` checks one sidecar the way docs/site_data.md describes and returns a
:class:`PetSidecar` whose numbers are in ketamap's units (MBq, ug, kg, seconds as written). The unit
tables are data in ``schemas/pet_units.yaml``; nothing here hard-codes a conversion factor.

Decisions (documented in the report of the PET issue):

* Required fields follow BIDS-PET 1.9 including its two conditions: ``ReconMethodParameterUnits`` and
  ``ReconMethodParameterValues`` are required unless ``ReconMethodParameterLabels`` is ``"none"``, and
  ``ReconFilterSize`` unless ``ReconFilterType`` is ``"none"`` (as the BIDS validator does; the
  bids-examples pet006 phantom relies on it).
* ``"n/a"`` is legal for ``InjectedMass`` and ``SpecificRadioactivity`` (kept as missing); their unit
  fields are then not interpreted. ``MolarActivity`` and its units are optional and not interpreted,
  so every spelling seen in the wild (``nmol``, ``GBq/umol``, ``MBq/nmol``) passes.
* Images in ``SUV``/``g/ml`` are accepted and turned back into kBq/mL with
  ``SUV * InjectedRadioactivity[MBq] / BodyWeight[kg]`` (SUVR does not depend on it); ``BodyWeight`` is then
  required and the session carries a warning. ``CNTS`` is rejected: counts are not quantitative.
* A single number in ``FrameTimesStart``/``FrameDuration`` (what dcm2niix writes for a static scan) is
  read as a one-frame list.
* The acquisition batch (:func:`batch_label`) is the physical scanner: manufacturer and model, plus
  the device (``DeviceSerialNumber``), else a scanner id the site's config declares, else the
  institution (``InstitutionName`` + ``InstitutionAddress``), else the site. Serial and institution
  are kept in memory only and enter the label as a keyed hash (HMAC with the pseudonymization key);
  they never reach a table or a log.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ketamap.errors import SiteDataError
from ketamap.io import read_json, shown_path
from ketamap.paths import schema_dir

# Contract files this module reads (ketamap.codedeps adds them to the code input of the rules using it).
CONTRACTS = ("pet_units.yaml",)

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
    "ReconFilterType",
    "AttenuationCorrection",
]
# field -> (the field that makes it optional, when that field is "none")
CONDITIONAL = {
    "ReconMethodParameterUnits": "ReconMethodParameterLabels",
    "ReconMethodParameterValues": "ReconMethodParameterLabels",
    "ReconFilterSize": "ReconFilterType",
}
NA = "n/a"
BIDS = "a BIDS-PET sidecar with every required field (BIDS-PET 1.9)"


@functools.cache
def load_units() -> dict[str, Any]:
    """The unit tables of ``schemas/pet_units.yaml``."""
    data: dict[str, Any] = yaml.safe_load((schema_dir() / "pet_units.yaml").read_text())
    return data


def normalize_unit(text: str) -> str:
    """A unit spelling as looked up in the tables: blanks stripped, micro signs written ``u``."""
    return "".join(text.split()).replace("\u00b5", "u").replace("\u03bc", "u")


def image_unit_factor(units: str) -> float | None:
    """Factor from one image value in ``units`` to kBq/mL; None for SUV images; error text otherwise.

    Raises ``KeyError`` with the reason when the unit is rejected or unknown.
    """
    tables = load_units()
    key = normalize_unit(units)
    if key in tables["image_units"]:
        return float(tables["image_units"][key])
    if key in tables["suv_units"]:
        return None
    if key in tables["rejected_image_units"]:
        raise KeyError(f"Units {units!r}: {tables['rejected_image_units'][key]}")
    raise KeyError(f"unknown image Units {units!r}")


def dose_to_mbq(value: float, units: str) -> float:
    """An injected radioactivity in MBq; ``KeyError`` for an unknown unit."""
    return float(value) * float(load_units()["dose_units"][normalize_unit(units)])


def mass_to_ug(value: float, units: str) -> float:
    """An injected mass in micrograms; ``KeyError`` for an unknown unit."""
    return float(value) * float(load_units()["mass_units"][normalize_unit(units)])


def half_life_min(radionuclide: str) -> float:
    """Half-life in minutes of a radionuclide spelling (``C11``, ``11C``, ``[11C]`` ...); ``KeyError`` if unknown."""
    key = radionuclide.strip()
    for spec in load_units()["radionuclides"].values():
        if key in [str(s) for s in spec["spellings"]]:
            return float(spec["half_life_min"])
    raise KeyError(radionuclide)


@dataclass(frozen=True)
class PetSidecar:
    """One checked sidecar, its numbers in ketamap's units (times still as the site wrote them)."""

    file: str
    manufacturer: str
    model: str
    units: str
    kbq_ml_per_unit: float
    tracer: str
    radionuclide: str
    half_life_min: float
    injected_dose_mbq: float
    injected_mass_ug: float | None
    specific_radioactivity: float | None
    body_weight_kg: float | None
    scan_start: float
    injection_start: float
    frame_starts: np.ndarray
    frame_durations: np.ndarray
    decay_corrected: bool
    decay_correction_time: float | None
    warnings: list[str] = field(default_factory=list)
    # ("serial", DeviceSerialNumber) or ("institution", InstitutionName + address): private, used
    # only through batch_label's keyed hash, never printed.
    device: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def scanner(self) -> str:
        return f"{self.manufacturer} {self.model}"

    def batch(self, *, site: str, key: bytes, declared: str | None = None) -> str:
        """The acquisition batch of this scan (see :func:`batch_label`)."""
        return batch_label(
            self.manufacturer, self.model, device=self.device, declared=declared, site=site, key=key
        )

    @property
    def n_frames(self) -> int:
        return len(self.frame_starts)


def batch_label(
    manufacturer: str,
    model: str,
    *,
    device: tuple[str, str] | None,
    declared: str | None,
    site: str,
    key: bytes,
) -> str:
    """The acquisition batch a scan belongs to, as written to the tables.

    Two scanners of the same make and model are different batches (each has its own calibration),
    so the label adds what identifies the physical device, in this order: the sidecar's
    ``DeviceSerialNumber`` (``device <hash>``); a scanner id declared in the site's config
    (``declared <id>``, written as given); the sidecar's institution (``institution <hash>``);
    else the site (``site <id>``: scanners of different sites are assumed to differ unless a
    serial, a declaration or an institution says they are the same). Hashes are
    HMAC-SHA256(key, ...) truncated to 8 hex digits: consistent across the sites of a consortium
    sharing the key, not reversible by trying serial numbers without it.
    """
    scanner = f"{manufacturer} {model}"
    if device is not None and device[0] == "serial":
        return f"{scanner} (device {_keyed(key, 'serial', scanner, device[1])})"
    if declared:
        return f"{scanner} (declared {declared})"
    if device is not None:
        return f"{scanner} (institution {_keyed(key, 'institution', device[1])})"
    return f"{scanner} (site {site})"


def _keyed(key: bytes, *parts: str) -> str:
    message = "\x1f".join(("ketamap scanner batch", *parts)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:8]


def read_sidecar(path: Path, *, site: str, root: Path | None = None) -> PetSidecar:
    """Read and check one ``_pet.json``; any problem is one :class:`SiteDataError` naming the field."""
    data = read_json(path, site=site, root=root)
    return parse_sidecar(data, site=site, file=shown_path(path, root))


def parse_sidecar(data: dict[str, Any], *, site: str, file: str) -> PetSidecar:
    """Check a sidecar's fields (already parsed from JSON) and convert its units."""
    where = {"site": site, "file": file}

    missing = [f for f in REQUIRED if _absent(data, f)]
    for name, condition in CONDITIONAL.items():
        if _absent(data, name) and not _is_none(data.get(condition)):
            missing.append(name)
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise SiteDataError(
            f"missing required field{also}", field=missing[0], expected=BIDS, **where
        )

    manufacturer = _text(data, "Manufacturer", where)
    model = _text(data, "ManufacturersModelName", where)
    tracer = _text(data, "TracerName", where)
    radionuclide = _text(data, "TracerRadionuclide", where)
    try:
        t_half = half_life_min(radionuclide)
    except KeyError:
        known = sorted(load_units()["radionuclides"])
        raise SiteDataError(
            f"unknown radionuclide {radionuclide!r}",
            field="TracerRadionuclide",
            expected=f"one of {known} (any usual spelling, e.g. C11, 11C, [11C])",
            hint="add its half-life and spelling to schemas/pet_units.yaml",
            **where,
        ) from None

    dose_value = _number(data, "InjectedRadioactivity", where, positive=True)
    assert dose_value is not None
    dose_units = _text(data, "InjectedRadioactivityUnits", where)
    try:
        dose = dose_to_mbq(dose_value, dose_units)
    except KeyError:
        raise SiteDataError(
            f"unknown unit {dose_units!r}",
            field="InjectedRadioactivityUnits",
            expected=f"one of {sorted(load_units()['dose_units'])}",
            **where,
        ) from None

    mass_value = _number(data, "InjectedMass", where, allow_na=True, nonnegative=True)
    mass: float | None = None
    if mass_value is not None:
        mass_units = _text(data, "InjectedMassUnits", where)
        try:
            mass = mass_to_ug(mass_value, mass_units)
        except KeyError:
            raise SiteDataError(
                f"unknown unit {mass_units!r}",
                field="InjectedMassUnits",
                expected=f"one of {sorted(load_units()['mass_units'])}",
                **where,
            ) from None
    specific = _number(data, "SpecificRadioactivity", where, allow_na=True, nonnegative=True)
    weight = (
        None
        if _absent(data, "BodyWeight")
        else _number(data, "BodyWeight", where, allow_na=True, positive=True)
    )

    warnings: list[str] = []
    units = _text(data, "Units", where)
    try:
        factor = image_unit_factor(units)
    except KeyError as exc:
        tables = load_units()
        raise SiteDataError(
            str(exc.args[0]),
            field="Units",
            expected=f"one of {list(tables['image_units'])} or SUV ({tables['suv_units']})",
            **where,
        ) from None
    if factor is None:
        if weight is None:
            raise SiteDataError(
                f"the image is in {units!r} and cannot be converted to kBq/mL without a body weight",
                field="BodyWeight",
                expected="the body weight in kg when Units is SUV",
                **where,
            )
        factor = dose / weight
        warnings.append(
            f"image in {units} converted to kBq/mL with InjectedRadioactivity / BodyWeight"
        )

    scan_start = _number(data, "ScanStart", where)
    injection_start = _number(data, "InjectionStart", where)
    assert scan_start is not None and injection_start is not None
    starts = _numbers(data, "FrameTimesStart", where)
    durations = _numbers(data, "FrameDuration", where)
    if len(starts) != len(durations):
        raise SiteDataError(
            f"{len(durations)} frame durations for {len(starts)} frame start times",
            field="FrameDuration",
            expected="one duration per entry of FrameTimesStart",
            **where,
        )
    if (durations <= 0).any():
        raise SiteDataError(
            f"non-positive frame durations {durations[durations <= 0].tolist()[:5]}",
            field="FrameDuration",
            expected="durations > 0",
            **where,
        )
    if (np.diff(starts) <= 0).any():
        raise SiteDataError(
            "frame start times are not increasing",
            field="FrameTimesStart",
            expected="frames in acquisition order",
            **where,
        )

    corrected = _boolean(data, "ImageDecayCorrected", where)
    correction_time = _number(data, "ImageDecayCorrectionTime", where) if corrected else None
    device = _device(data, where)

    return PetSidecar(
        file=file,
        manufacturer=manufacturer,
        model=model,
        units=units,
        kbq_ml_per_unit=factor,
        tracer=tracer,
        radionuclide=radionuclide,
        half_life_min=t_half,
        injected_dose_mbq=dose,
        injected_mass_ug=mass,
        specific_radioactivity=specific,
        body_weight_kg=weight,
        scan_start=scan_start,
        injection_start=injection_start,
        frame_starts=starts,
        frame_durations=durations,
        decay_corrected=corrected,
        decay_correction_time=correction_time,
        warnings=warnings,
        device=device,
    )


def _device(data: dict[str, Any], where: dict[str, str]) -> tuple[str, str] | None:
    """What identifies the physical scanner, when the sidecar says: its serial, else its institution.

    Both fields are optional in BIDS; a value that is neither text nor a number is an error (so a
    malformed header is not silently read as "no serial"). The values are never put in a message.
    """
    found: dict[str, str] = {}
    for name in ("DeviceSerialNumber", "InstitutionName", "InstitutionAddress"):
        value = data.get(name)
        if value is None or isinstance(value, bool):
            if isinstance(value, bool):
                raise SiteDataError(
                    "a boolean", field=name, expected="a text value or a number", **where
                )
            continue
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise SiteDataError(
                f"a {type(value).__name__}",
                field=name,
                expected="a text value or a number",
                **where,
            )
        text = " ".join(value.split())
        if text and text.lower() not in (NA, "unknown", "none"):
            found[name] = text
    if "DeviceSerialNumber" in found:
        return ("serial", found["DeviceSerialNumber"])
    if "InstitutionName" in found:
        return (
            "institution",
            "\x1f".join((found["InstitutionName"], found.get("InstitutionAddress", ""))),
        )
    return None


def _absent(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    return value is None or (isinstance(value, str) and not value.strip())


def _is_none(value: Any) -> bool:
    """``"none"`` or a list holding ``"none"``: the BIDS way of saying a conditional field does not apply."""
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and v.strip().lower() == "none" for v in values)


def _text(data: dict[str, Any], name: str, where: dict[str, str]) -> str:
    value = data[name]
    if not isinstance(value, str) or not value.strip():
        raise SiteDataError(
            f"{value!r} is not a text value", field=name, expected="a non-empty string", **where
        )
    return value.strip()


def _number(
    data: dict[str, Any],
    name: str,
    where: dict[str, str],
    *,
    allow_na: bool = False,
    positive: bool = False,
    nonnegative: bool = False,
) -> float | None:
    value = data[name]
    if allow_na and isinstance(value, str) and value.strip().lower() == NA:
        return None
    number = _as_float(value)
    wanted = "a number > 0" if positive else "a number >= 0" if nonnegative else "a number"
    if allow_na:
        wanted += ' or "n/a"'
    if number is None or (positive and number <= 0) or (nonnegative and number < 0):
        raise SiteDataError(f"value {value!r} cannot be used", field=name, expected=wanted, **where)
    return number


def _numbers(data: dict[str, Any], name: str, where: dict[str, str]) -> np.ndarray:
    value = data[name]
    items = value if isinstance(value, list) else [value]
    numbers = [_as_float(v) for v in items]
    if not items or any(n is None for n in numbers):
        bad = [v for v, n in zip(items, numbers, strict=True) if n is None][:3]
        raise SiteDataError(
            f"not a list of numbers (bad entries {bad})" if items else "empty list",
            field=name,
            expected="a list of numbers in seconds, one per frame",
            **where,
        )
    return np.asarray(numbers, dtype=float)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _boolean(data: dict[str, Any], name: str, where: dict[str, str]) -> bool:
    value = data[name]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SiteDataError(
        f"value {value!r} is not a boolean", field=name, expected="true or false", **where
    )
