"""Generate a whole synthetic consortium and the matching workflow site entries.

The consortium generator knows no modality: it runs every module of :data:`MODULES` that applies
to a site (see :mod:`ketamap.synth._modality`), then writes ``ground_truth.json`` from the truths
the modules planted. PET, iEEG and behaviour plug in here as further modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ketamap.errors import ConfigError
from ketamap.synth import behaviour, clinical, ieeg, pet
from ketamap.synth._io import write_json
from ketamap.synth._modality import Modality
from ketamap.synth.scenario import read_scenario

MODULES: tuple[Modality, ...] = (clinical, pet, ieeg, behaviour)
GROUND_TRUTH = "ground_truth.json"


def load_scenario(path: str | Path) -> dict[str, Any]:
    """Read, validate and complete a scenario file: the schema's checks and defaults
    (:func:`ketamap.synth.scenario.read_scenario`), then each modality generator's own checks
    (group consistency, participant labels, scale definitions) and that some generator writes
    data for every site.

    Raises
    ------
    ConfigError
        For the first problem found, naming the file and the dotted field, e.g.
        ``field 'sites[0].sexstyle': unknown key 'sexstyle'; expected one of the keys ...``.
    """
    scenario = read_scenario(path)
    for module in MODULES:
        module.validate(scenario, str(path))
    for i, site in enumerate(scenario["sites"]):
        if not any(module.applies(site) for module in MODULES):
            raise ConfigError(
                f"no generator writes data for a {site['species']} {site['modality']} site yet",
                site=site["id"],
                file=Path(path),
                field=f"sites[{i}]",
                expected="a human site (the clinical part)",
            )
    return scenario


def _prepare(out: Path, overwrite: bool) -> None:
    """Make ``out`` an empty folder, refusing to clear anything but a previous generator output."""
    if out.exists() and not out.is_dir():
        raise ConfigError("the output path is a file, not a folder", file=out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                "the output folder is not empty",
                file=out,
                hint="choose an empty or new folder, or pass overwrite=True to replace a "
                "previous generator output",
            )
        if not (out / GROUND_TRUTH).is_file():
            raise ConfigError(
                f"refusing to clear a folder that is not a generator output (no {GROUND_TRUTH})",
                file=out,
                hint="choose an empty or new folder",
            )
        for child in sorted(out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(scenario_path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write every site's dataset of a scenario and its ground truth.

    Parameters
    ----------
    scenario_path
        The scenario YAML (see ``schemas/scenario.schema.yaml``).
    out_dir
        Target folder; receives ``<site_id>/...`` per site, ``atlas/`` when a site writes PET
        (the shared atlas, a dataset of its own) and ``ground_truth.json``. It must be absent or
        empty.
    overwrite
        Clear ``out_dir`` first when it holds a previous generator output (recognised by its
        ``ground_truth.json``); any other non-empty folder is never cleared.

    Returns
    -------
    Path
        The ``ground_truth.json`` written.

    Raises
    ------
    ConfigError
        For an invalid scenario (nothing is written) or an output folder that cannot be used.
    """
    scenario = load_scenario(scenario_path)
    out = Path(out_dir)
    _prepare(out, overwrite)
    entries: list[dict[str, Any]] = []
    for site in scenario["sites"]:
        site_dir = out / site["id"]
        site_dir.mkdir()
        for module in MODULES:
            if module.applies(site):
                module.write_site(scenario, site, site_dir)
    for module in MODULES:
        # Optional hook for datasets shared by all sites (the PET atlas), written once.
        write_shared = getattr(module, "write_shared", None)
        if write_shared is not None:
            write_shared(scenario, out)
    for module in MODULES:
        entries.extend(module.truth(scenario))
    entries.sort(key=lambda e: (e["analysis"], e["term"], e["arm"] or ""))
    truth: dict[str, Any] = {
        "scenario": scenario["name"],
        "seed": int(scenario["seed"]),
        "entries": entries,
    }
    # Optional hook: strings planted in the files that must never reach an output (EDF names).
    canaries = [c for m in MODULES for c in getattr(m, "canaries", lambda s: [])(scenario)]
    if canaries:
        truth["canaries"] = canaries
    target = out / GROUND_TRUTH
    write_json(target, truth)
    return target


def site_configs(
    scenario: dict[str, Any] | str | Path, registry: str, revision: str
) -> list[dict[str, Any]]:
    """Return the workflow-config site entries that read what :func:`generate` wrote.

    Parameters
    ----------
    scenario
        A scenario from :func:`~ketamap.synth.load_scenario` (or the path of one).
    registry
        The data registry the datasets are pushed to, copied into every entry.
    revision
        The registry revision holding them, copied into every entry.

    Returns
    -------
    list of dict
        One entry per site, in scenario order: ``id``, ``modality``, ``species``, ``trial``,
        ``registry``, ``path`` (``datasets/<id>``), ``revision`` and ``reader`` (the options of
        every module writing the site, e.g. visits, scores, score_column, sex_codes).
    """
    if not isinstance(scenario, dict):
        scenario = load_scenario(scenario)
    entries = []
    for site in scenario["sites"]:
        reader: dict[str, Any] = {}
        for module in MODULES:
            if module.applies(site):
                reader.update(module.reader_options(site))
        entries.append(
            {
                "id": site["id"],
                "modality": _config_modality(site),
                "species": site["species"],
                "trial": site["trial"],
                "registry": registry,
                "path": f"datasets/{site['id']}",
                "revision": revision,
                "reader": reader,
            }
        )
    return entries


def analysis_options(scenario: dict[str, Any] | str | Path) -> dict[str, dict[str, Any]]:
    """The workflow-config options (by section) that the scenario's ground truth assumes, e.g. the
    remission threshold, the SUVR reference region and the eyelid analysis windows. ``make run
    SCENARIO=...`` applies them; a config that names the demo sites must agree with them."""
    if not isinstance(scenario, dict):
        scenario = load_scenario(scenario)
    out: dict[str, dict[str, Any]] = {}
    for module in MODULES:
        for section, options in getattr(module, "analysis_options", lambda s: {})(scenario).items():
            out.setdefault(section, {}).update(options)
    return out


def _config_modality(site: dict[str, Any]) -> str:
    """The workflow-config modality of what the generator writes for ``site``: its own, or
    ``clinical`` for a human site whose modality section is absent (participants and scores only)."""
    writes = {"pet": pet.applies(site), "ieeg": ieeg.applies(site)}
    if site["species"] == "human" and not writes.get(site["modality"], True):
        return "clinical"
    return str(site["modality"])
